"""Run one pipeline task over every supported file of a folder tree: ``mesh3d batch IN_DIR OUT_DIR``.

Inputs are found recursively under IN_DIR (extensions in :data:`mesh3d.io.LOAD_FORMATS`) and each
gives one output at the same relative place under OUT_DIR. Every input is recorded in a JSON-lines
report; the last record of an input is its state.

How a batch stays robust:

- Isolation. Inputs run in worker processes forked from a server process that imported the
  pipeline once (a fork costs milliseconds, not the seconds of importing torch). A crash, a hang
  (killed after ``timeout`` seconds) or a memory blow-up (``RLIMIT_AS`` cap per worker) fails that
  input only, and its worker is replaced by a fresh one.
- Atomic outputs, report first. The worker writes the output under its own name in the hidden
  folder ``OUT_DIR/.mesh3d-batch-tmp`` (removed when a run ends or starts); the main process
  appends the input's record to the report (flush + fsync) and only then renames that file over
  the output. So an existing output whose checksum matches an ``ok`` record is complete, and an
  output that no record claims was not written by a batch (it is only replaced with --overwrite).
- Resume. On start the report is read (a line torn by ``kill -9`` is cut off). An input is skipped
  when its last record is ``ok`` with the same options hash and input checksum and its output
  exists with the recorded checksum; everything else runs again. Outputs are deterministic, so a
  resumed batch ends with the same bytes as an uninterrupted one.
- Inputs are only read. OUT_DIR inside IN_DIR is not walked; symlinked folders are followed once
  (loops are cut and reported); names that are not UTF-8 are kept as Python's surrogate escapes,
  which JSON stores as ``\\udcXX``.

Tasks are pipeline functions ``fn(src, dst, **options, progress=None) -> Report`` (see
:mod:`app.pipeline`); their keyword parameters are the options that define "the same options".
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import multiprocessing
import os
import queue
import resource
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from mesh3d import __version__
from mesh3d.errors import Mesh3DError
from mesh3d.io import LOAD_FORMATS, SAVE_FORMATS

GIB = 1024**3
RIG_FORMATS = (".glb", ".fbx")  # the formats that hold a skeleton, skin and animations


@dataclass(frozen=True)
class Task:
    """A batch task: the pipeline function ``function`` ("module:name") and its output formats
    (the first is the default)."""

    name: str
    function: str
    formats: tuple[str, ...]

    def resolve(self) -> Callable:
        """The task's function; a clear error when this version of mesh3d does not have it yet."""
        module, name = self.function.split(":")
        fn = getattr(importlib.import_module(module), name, None)
        if fn is None:
            raise Mesh3DError(f"task {self.name} is not available yet in this version (mesh3d {__version__})")
        return fn


TASKS = {
    "convert": Task("convert", "app.pipeline:convert", SAVE_FORMATS),
    "rig": Task("rig", "app.pipeline:rig", RIG_FORMATS),
    "animate": Task("animate", "app.pipeline:animate", RIG_FORMATS),
    "remesh": Task("remesh", "mesh3d.remesh:remesh_file", SAVE_FORMATS),
    "generate": Task("generate", "app.pipeline:generate", SAVE_FORMATS),
}


FLAGS = {"up_axis": "--up", "motions": "--motion"}  # command-line flags whose name is not the option's


def flag(option: str) -> str:
    """The ``mesh3d batch`` flag that sets a task option."""
    return FLAGS.get(option, "--" + option.replace("_", "-"))


def task_options(task: Task, given: dict) -> dict:
    """All options of ``task`` (defaults filled in) after checking ``given`` against its function.

    These are what "the same options" means on resume: two runs with the same values hash alike
    whether a default was spelled out or not.
    """
    params = inspect.signature(task.resolve()).parameters
    names = [n for n in list(params)[2:] if n != "progress"]  # after (src, dst)
    for k in given:
        if k not in names:
            raise Mesh3DError(f"{flag(k)} does not apply to task {task.name} (it takes {', '.join(map(flag, names)) or 'no options'})")
    for n in names:
        if params[n].default is inspect.Parameter.empty and n not in given:
            raise Mesh3DError(f"task {task.name} needs {flag(n)}")
    options = {n: params[n].default for n in names if params[n].default is not inspect.Parameter.empty}
    options.update(given)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}  # JSON-shaped


def options_hash(task: Task, options: dict, fmt: str) -> str:
    """16 hex digits naming the task, its options, the output format and the mesh3d version."""
    blob = json.dumps({"task": task.name, "options": options, "format": fmt, "mesh3d": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shown(path: str | os.PathLike) -> str:
    """``path`` printable on any terminal: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------------
# Finding inputs


def find_inputs(in_dir: Path, out_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Supported files under ``in_dir`` in sorted order, and ``(path, reason)`` for what was skipped.

    Symlinked folders are followed, each real folder once, which cuts symlink loops; ``out_dir``
    is never entered, so a batch writing inside its own input does not read its outputs back.
    """
    inputs, skipped = [], []
    out_key = _dir_key(out_dir)
    seen = set()

    def onerror(e: OSError) -> None:
        skipped.append((Path(e.filename), f"cannot read folder: {e.strerror}"))

    for root, dirs, files in os.walk(in_dir, onerror=onerror, followlinks=True):
        key = _dir_key(Path(root))
        if key == out_key:
            dirs[:] = []
            continue
        if key in seen:
            skipped.append((Path(root), "folder already visited (symlink loop or second link to it)"))
            dirs[:] = []
            continue
        seen.add(key)
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            ext = path.suffix.lower()
            if ext in LOAD_FORMATS:
                inputs.append(path)
            else:
                skipped.append((path, f"unsupported file type {ext or '(none)'}; mesh3d reads {', '.join(LOAD_FORMATS)}"))
    return inputs, skipped


def _dir_key(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def output_paths(inputs: list[Path], in_dir: Path, out_dir: Path, fmt: str) -> dict[Path, Path]:
    """Output of every input: same relative place under ``out_dir``, extension ``fmt``.

    Inputs differing only by extension (``a.obj``, ``a.ply``) would share ``a.glb``; those keep
    their full name instead (``a.obj.glb``, ``a.ply.glb``), whatever else is in the folder, so an
    output's name never depends on which other files exist.
    """
    rel = {p: p.relative_to(in_dir) for p in inputs}
    plain = {p: out_dir / r.with_suffix(fmt) for p, r in rel.items()}
    count: dict[Path, int] = {}
    for o in plain.values():
        count[o] = count.get(o, 0) + 1
    return {p: plain[p] if count[plain[p]] == 1 else out_dir / rel[p].parent / (rel[p].name + fmt) for p in inputs}


TMP_DIR = ".mesh3d-batch-tmp"  # under OUT_DIR: outputs in progress, with their final names


# ---------------------------------------------------------------------------------------------
# The report


def read_report(path: Path) -> list[dict]:
    """Records of a JSON-lines report. A last line without its newline (the run was killed while
    writing it) is cut off the file, so the next record starts on a line of its own."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    records = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # garbage in the middle (disk trouble, hand edits): not a record
            continue
        if isinstance(rec, dict) and "input" in rec:
            records.append(rec)
    return records


class ReportWriter:
    """Appends one JSON line per record and makes it durable (flush + fsync) before returning."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "ab")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record).encode() + b"\n")  # ASCII: \udcXX keeps non-UTF-8 names
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------------------------------------
# Worker processes


@dataclass(frozen=True)
class Job:
    """One input to run: where from, where to, what, and how long it may take (seconds; None = no limit)."""

    src: str
    dst: str
    tmp: str  # where the worker writes; renamed to dst once the report holds the record
    task: Task
    options: dict
    timeout: Optional[float] = None
    preview: bool = False  # also render dst's preview (a PNG strip beside it)


def _context():
    """A forkserver that has imported the pipeline once: each worker is a cheap fork of it, and
    never a fork of the (threaded) main process."""
    # One thread per worker: parallelism comes from the workers, and threads beyond the cores
    # would only contend. Set before the server starts, which reads them when importing numpy/torch.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["app.pipeline"])
    return ctx


class Worker:
    """A worker process that runs jobs one at a time, with an address-space cap of ``max_memory``
    bytes (None: no cap). It is kept while jobs succeed (a warm process saves the first-call costs
    of numpy and torch) and replaced after any failure, timeout or crash, so a bad input never
    leaves a broken or bloated process behind for the next one."""

    def __init__(self, max_memory: Optional[int] = None) -> None:
        self.max_memory = max_memory
        self.proc = None
        self.exitcode: Optional[int] = None

    def run(self, job: Job) -> dict:
        """Run ``job``; returns ``{"status": "ok"|"failed", ...}`` and never raises. The output goes
        to ``job.tmp``."""
        if self.proc is None:
            ctx = _context()
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_worker_loop, args=(child, self.max_memory), daemon=True)
            self.proc.start()
            child.close()
        t = time.perf_counter()
        result = None
        try:
            self.conn.send(job)
            if self.conn.poll(job.timeout):
                result = self.conn.recv()
            else:
                result = {"status": "failed", "error": f"timed out after {job.timeout:g} s (raise --timeout)"}
        except (EOFError, OSError):  # the worker died without a word
            pass
        if result is None:
            self.stop()
            result = {"status": "failed", "error": _death_message(self.exitcode, self.max_memory)}
        if result["status"] != "ok":
            self.stop()
        result["seconds"] = round(time.perf_counter() - t, 4)
        return result

    def kill(self) -> None:
        """Kill the process from another thread; the thread in :meth:`run` then cleans up."""
        proc = self.proc
        if proc is not None:
            proc.kill()

    def stop(self) -> None:
        """End the process (killed: it may be stuck in a hanging input)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.exitcode = self.proc.exitcode
            self.conn.close()
            self.proc = None


def _death_message(exitcode: Optional[int], max_memory: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0 and exitcode != -signal.SIGKILL:
        return f"worker process killed by {signal.Signals(-exitcode).name}"
    cap = f" or hit the memory cap of {max_memory / GIB:.3g} GiB (raise --max-memory)" if max_memory else ""
    return f"worker process died (exit status {exitcode}): the input crashed it{cap}, or the system ran out of memory"


def _worker_loop(conn, max_memory: Optional[int]) -> None:
    """Body of a worker process: set limits, then run jobs until the main process hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process, which kills us
    if sys.platform == "linux":  # die with the forkserver, which dies with the main process
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if max_memory:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            break
        conn.send(_run_job(job, max_memory))
    os._exit(0)  # skip interpreter teardown (torch threads, atexit hooks): the work is done


def _run_job(job: Job, max_memory: Optional[int]) -> dict:
    cpu = _cpu_seconds()
    try:
        report = job.task.resolve()(job.src, job.tmp, **job.options)
        # Hashed after the task, which has checked that it is a regular file (a FIFO would block).
        result = {"status": "ok", "report": report.to_dict(), "sha256": sha256_file(job.tmp), "input_sha256": sha256_file(job.src)}
        if job.preview:
            try:
                from rigging.animate.preview import preview

                preview(job.tmp, preview_path(job.tmp))
            except Mesh3DError as e:  # the output is fine without its picture
                result["report"]["warnings"].append(f"no preview: {e}")
    except Mesh3DError as e:
        result = {"status": "failed", "error": str(e)}
    except MemoryError:
        cap = f" (cap {max_memory / GIB:.3g} GiB per worker; raise --max-memory)" if max_memory else ""
        result = {"status": "failed", "error": f"{shown(job.src)}: ran out of memory{cap}"}
    except Exception as e:  # a bug in a step: this input fails, the batch goes on
        result = {"status": "failed", "error": f"internal error: {type(e).__name__}: {e}"}
    result["cpu_seconds"] = round(_cpu_seconds() - cpu, 4)
    result["worker_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


# ---------------------------------------------------------------------------------------------
# Backends: local processes or Ray


def run_local(jobs: list[Job], n: int, max_memory: Optional[int]) -> Iterator[tuple[Job, dict]]:
    """Run ``jobs`` on ``n`` worker processes; yields ``(job, result)`` as they finish. Closing the
    iterator early (Ctrl-C in the main process) kills the workers and returns at once."""
    workers = [Worker(max_memory) for _ in range(n)]
    idle: queue.Queue = queue.Queue()
    for w in workers:
        idle.put(w)
    stopping = threading.Event()

    def run(job: Job) -> dict:
        worker = idle.get()
        try:
            return {"status": "failed", "error": "batch stopped"} if stopping.is_set() else worker.run(job)
        finally:
            idle.put(worker)

    pool = ThreadPoolExecutor(n)
    futures = {pool.submit(run, j): j for j in jobs}
    try:
        for f in as_completed(futures):
            yield futures[f], f.result()
    finally:
        stopping.set()
        for f in futures:
            f.cancel()
        for w in workers:  # a job in progress ends: its thread sees the worker die
            w.kill()
        pool.shutdown(wait=True)
        for w in workers:
            w.stop()


_ray_worker: Optional[Worker] = None  # one per Ray worker process, kept warm across its tasks


def _run_on_ray(job: Job, max_memory: Optional[int]) -> dict:
    global _ray_worker
    if _ray_worker is None or _ray_worker.max_memory != max_memory:
        _ray_worker = Worker(max_memory)
    return _ray_worker.run(job)


def run_ray(jobs: list[Job], address: str, max_memory: Optional[int]) -> Iterator[tuple[Job, dict]]:
    """Run ``jobs`` as Ray tasks (one CPU each) on the cluster at ``address``: ``auto`` joins the
    cluster this machine belongs to, ``local`` starts a private one here. Each Ray worker runs
    its jobs in a :class:`Worker` process, so limits and isolation are those of a local batch.
    Input and output paths must be the same on every node (a shared file system)."""
    try:
        import ray
    except ImportError:
        raise Mesh3DError("--ray needs Ray: pip install 'mesh3d[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == "local" else address, log_to_driver=False, include_dashboard=False)
    try:
        remote = ray.remote(num_cpus=1)(_run_on_ray)
        pending = {remote.remote(j, max_memory): j for j in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # Ray lost the task (node or Ray worker died): this input fails
                    result = {"status": "failed", "error": f"Ray task failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                yield job, result
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# The batch


@dataclass
class Summary:
    """Counts of one batch run, and the records it wrote."""

    inputs: int = 0
    ok: int = 0
    failed: int = 0
    already_done: int = 0
    unsupported: int = 0
    seconds: float = 0.0
    report: str = ""
    records: list[dict] = field(default_factory=list)

    def format(self) -> str:
        rate = self.ok / self.seconds * 60 if self.seconds > 0 else 0.0
        return (
            f"{self.inputs} inputs: {self.ok} done now, {self.already_done} already done, {self.failed} failed; "
            f"{self.unsupported} other entries skipped; {self.seconds:.1f} s ({rate:.1f} files/min); report: {shown(self.report)}"
        )


def default_memory_cap(jobs: int) -> int:
    """Address-space cap per worker: physical memory shared by ``jobs`` workers, so that they
    together cannot take the machine down (bytes)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(jobs, 1)


def run_batch(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    task: str | Task = "convert",
    options: Optional[dict] = None,
    fmt: Optional[str] = None,
    jobs: Optional[int] = None,
    timeout: Optional[float] = 600.0,
    max_memory: Optional[float] = None,
    report: Optional[str | os.PathLike] = None,
    overwrite: bool = False,
    ray: Optional[str] = None,
    progress: bool = True,
    preview: bool = False,
) -> Summary:
    """Run ``task`` on every supported file under ``in_dir``, writing mirrored outputs under ``out_dir``.

    options: the task's keyword options (e.g. ``{"up_axis": "Z"}``). fmt: output extension
    (default: the task's first format). jobs: worker processes (default: CPU cores). timeout:
    seconds per input (None or 0: no limit). max_memory: GiB of address space per worker (None:
    physical memory / jobs; 0: no cap). report: JSON-lines path (default ``out_dir/batch-report.jsonl``).
    overwrite: run every input again and replace outputs this batch did not write. ray: a Ray
    address (``auto``, ``local``, ``host:port``) to run there instead of local processes.
    preview: also write a preview image beside each output (``NAME.png``; see ``mesh3d preview``).
    """
    t0 = time.perf_counter()
    task = TASKS[task] if isinstance(task, str) else task
    fmt = (fmt or task.formats[0]).lower()
    fmt = fmt if fmt.startswith(".") else f".{fmt}"
    if fmt not in task.formats:
        raise Mesh3DError(f"task {task.name} cannot write {fmt}; it writes {', '.join(task.formats)}")
    opts = task_options(task, options or {})
    ohash = options_hash(task, {**opts, "preview": True} if preview else opts, fmt)
    jobs = jobs or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    timeout = timeout or None
    cap = default_memory_cap(jobs) if max_memory is None else int(max_memory * GIB) or None

    in_dir, out_dir = Path(os.path.abspath(in_dir)), Path(os.path.abspath(out_dir))
    if not in_dir.is_dir():
        raise Mesh3DError(f"{shown(in_dir)}: not a folder")
    if _dir_key(in_dir) == _dir_key(out_dir):
        raise Mesh3DError("OUT_DIR must differ from IN_DIR: outputs would replace inputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = Path(os.path.abspath(report)) if report else out_dir / "batch-report.jsonl"

    inputs, skipped = find_inputs(in_dir, out_dir)
    outputs = output_paths(inputs, in_dir, out_dir, fmt)
    previous = read_report(report_path)
    last = {r["input"]: r for r in previous}
    claimed = {r["output"] for r in previous if r.get("status") == "ok" and r.get("output")}
    input_set = {str(p) for p in inputs}

    tmp_root = out_dir / TMP_DIR
    shutil.rmtree(tmp_root, ignore_errors=True)  # what a killed run left
    summary = Summary(inputs=len(inputs), unsupported=len(skipped), report=str(report_path))
    writer = ReportWriter(report_path)
    todo: list[Job] = []

    def record(rec: dict) -> None:
        writer.write(rec)
        summary.records.append(rec)

    try:
        for path, reason in skipped:  # once in the report, not again on every resume
            prev = last.get(str(path))
            if not (prev and prev["status"] == "skipped" and prev.get("error") == reason):
                record({"status": "skipped", "input": str(path), "error": reason})
        for src in inputs:
            dst = outputs[src]
            prev = last.get(str(src))
            if not overwrite and _is_done(prev, ohash, src, dst, preview):
                summary.already_done += 1
                continue
            error = None
            if str(dst) in input_set:
                error = f"{shown(dst)}: output would replace an input of this batch; choose another OUT_DIR"
            elif dst.exists() and str(dst) not in claimed and not overwrite:
                error = f"{shown(dst)}: exists and was not written by this batch; use --overwrite to replace it"
            if error:
                record({"status": "failed", **_base_record(Job(str(src), str(dst), "", task, opts), fmt, ohash), "error": error})
                summary.failed += 1
                continue
            todo.append(Job(str(src), str(dst), str(tmp_root / dst.relative_to(out_dir)), task, opts, timeout, preview))
        # Largest first: the long files start early instead of ending the batch on one busy worker.
        todo.sort(key=lambda j: -_size(j.src))
        results = run_ray(todo, ray, cap) if ray else run_local(todo, jobs, cap)
        _run(results, todo, record, summary, ohash, fmt, progress)
    finally:
        writer.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _run(results, todo: list[Job], record, summary: Summary, ohash: str, fmt: str, progress: bool) -> None:
    """Record each result (report first, then the rename), updating the progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="file", file=sys.stderr, disable=not progress or not todo, mininterval=0.5, dynamic_ncols=True)
    try:
        for job, res in results:
            rec = {"status": res["status"], **_base_record(job, fmt, ohash)}
            if res["status"] == "ok":
                rep = res["report"]
                rec.update(sha256=res["sha256"], input_sha256=res["input_sha256"])
                rec.update({k: v for k, v in rep.items() if k not in ("input", "output")})
                summary.ok += 1
            else:
                rec["error"] = res["error"]
                summary.failed += 1
            rec.update({k: res.get(k) for k in ("seconds", "cpu_seconds", "worker_peak_rss_mb")}, mesh3d=__version__)
            record(rec)
            if res["status"] == "ok":
                Path(job.dst).parent.mkdir(parents=True, exist_ok=True)
                if os.path.exists(preview_path(job.tmp)):
                    os.replace(preview_path(job.tmp), preview_path(job.dst))
                os.replace(job.tmp, job.dst)
            bar.update(1)
            bar.set_postfix(ok=summary.ok, failed=summary.failed, refresh=False)
    finally:
        results.close()  # stops the workers now, also when interrupted
        bar.close()


def _base_record(job: Job, fmt: str, ohash: str) -> dict:
    return {"input": job.src, "output": job.dst, "task": job.task.name, "options": job.options, "format": fmt, "options_hash": ohash}


def _is_done(prev: Optional[dict], ohash: str, src: Path, dst: Path, preview: bool = False) -> bool:
    """Whether ``src`` was done with the same options: an ``ok`` record, its output present with
    the recorded checksum (and its preview, when asked for), and the input unchanged since."""
    if not prev or prev.get("status") != "ok" or prev.get("options_hash") != ohash or prev.get("output") != str(dst):
        return False
    if preview and not preview_path(dst).exists():
        return False
    try:
        return sha256_file(dst) == prev.get("sha256") and sha256_file(src) == prev.get("input_sha256")
    except OSError:
        return False


def preview_path(output: str | os.PathLike) -> Path:
    """Where the preview image of ``output`` goes: beside it, as ``NAME.png``."""
    return Path(output).with_suffix(".png")


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
