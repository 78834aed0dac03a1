"""Batch throughput on the shared rigs: ``mesh3d bench batch`` (or ``python -m app.batch_bench``).

Runs the same batch (all shared rigs, task ``convert`` by default) with 1 and with 2 local workers
into fresh output folders and prints files/min, the speed-up between them and the peak memory of a
worker (its resident set, shared library pages included). The worker server's one-time start
(importing torch and the pipeline) is timed separately and left out of the throughput; starting each
run's workers, and their first-call costs, are included.

On a shared machine the speed-up is capped by the CPU others leave: before each run the same number
of busy loops measures the cores free, and their ratio is printed as the machine's own speed-up,
the ceiling for the batch's at that time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from app.batch import _context, run_batch


def _spin(seconds: float) -> float:
    """Busy-loop for ``seconds`` of wall time; returns the CPU seconds this process got."""
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def cores_obtained(n: int, seconds: float = 2.0) -> float:
    """Cores that ``n`` busy processes get together right now: ``n`` on an idle machine, less when
    other work competes (the ceiling for any speed-up measured at the same time)."""
    with _context().Pool(n) as pool:
        return sum(pool.map(_spin, [seconds] * n)) / seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mesh3d bench batch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="worker counts to compare (default 1 2)")
    ap.add_argument("--task", default="convert")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N rigs")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)

    from data_prep.corpus import records

    rigs = records("rig")[: args.limit]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mesh3d-batch-bench-") as tmp:
        tmp = Path(tmp)
        in_dir = tmp / "in"
        for r in rigs:  # links, not copies: the corpus stays where it is
            (in_dir / r.file).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(r.path, in_dir / r.file)
        # Start the worker server once, on one file, outside the measured runs.
        (tmp / "warm_in").mkdir()
        os.symlink(rigs[0].path, tmp / "warm_in" / rigs[0].path.name)
        t = time.perf_counter()
        run_batch(tmp / "warm_in", tmp / "warm_out", args.task, jobs=1, progress=False)
        startup = time.perf_counter() - t
        for n in args.jobs:
            cores = cores_obtained(n)
            s = run_batch(in_dir, tmp / f"out{n}", args.task, jobs=n, progress=False)
            ok = [r for r in s.records if r["status"] == "ok"]
            rows.append({
                "jobs": n,
                "files": s.inputs,
                "ok": s.ok,
                "failed": s.failed,
                "seconds": s.seconds,
                "files_per_min": round(s.ok / s.seconds * 60, 1),
                # CPU the machine gave the workers, in cores: below ``jobs`` when others compete.
                "cores_used": round(sum(r["cpu_seconds"] for r in ok) / s.seconds, 2),
                "cores_free": round(cores, 2),  # what n busy loops got just before
                # Share of the run each worker had an input in hand: 1.0 = the batch never let one idle.
                "busy": round(sum(r["seconds"] for r in s.records if "seconds" in r) / (s.seconds * n), 2),
                "worker_peak_rss_mb": max((r["worker_peak_rss_mb"] for r in ok), default=0.0),
            })
    base = rows[0]["files_per_min"]
    for row in rows:
        row["speedup"] = round(row["files_per_min"] / base, 2)
        row["machine_speedup"] = round(row["cores_free"] / rows[0]["cores_free"], 2)  # the ceiling
    if args.json:
        print(json.dumps({"task": args.task, "server_start_s": round(startup, 2), "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "rows": rows}, indent=2))
        return 0
    print(f"batch {args.task} on {len(rigs)} shared rigs; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; worker server start {startup:.1f} s (not counted)")
    print(f"{'jobs':>4} {'files':>5} {'failed':>6} {'seconds':>8} {'files/min':>9} {'speedup':>7} {'cores used':>10} "
          f"{'cores free':>10} {'machine speedup':>15} {'busy':>5} {'worker peak RSS MB':>18}")
    for r in rows:
        print(f"{r['jobs']:>4} {r['files']:>5} {r['failed']:>6} {r['seconds']:>8.1f} {r['files_per_min']:>9.1f} {r['speedup']:>6.2f}x "
              f"{r['cores_used']:>10.2f} {r['cores_free']:>10.2f} {r['machine_speedup']:>14.2f}x {r['busy']:>5.2f} {r['worker_peak_rss_mb']:>18.0f}")
    print("cores used: CPU the workers got during the run; cores free: what as many busy loops got just before it;\n"
          "machine speedup: the ceiling for 'speedup' on this machine at this time (2.00x when idle);\n"
          "busy: share of the run each worker had an input in hand")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
