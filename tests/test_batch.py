"""``mesh3d batch``: shared rigs mixed with broken inputs, kill -9 and resume, timeouts, memory caps,
crashes, the rig and animate tasks, and the same batch on a local Ray instance."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.batch import TMP_DIR, Task, read_report, run_batch
from app.cli import main
from mesh3d.errors import Mesh3DError
from mesh3d.io import load

REPO = Path(__file__).resolve().parent.parent
CUBE_OBJ = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nv 1 0 1\nv 1 1 1\nv 0 1 1\n" + "".join(
    f"f {a} {b} {c}\n" for a, b, c in [(1, 3, 2), (1, 4, 3), (5, 6, 7), (5, 7, 8), (1, 2, 6), (1, 6, 5), (2, 3, 7), (2, 7, 6), (3, 4, 8), (3, 8, 7), (4, 1, 5), (4, 5, 8)]
)


def misbehaving_convert(src, dst, up_axis=None, progress=None):
    """A task for the isolation test: ``convert``, except for inputs named hang, hog or crash."""
    from app.pipeline import convert

    name = Path(src).stem
    if name == "hang":
        time.sleep(3600)
    if name == "hog":
        np.ones(8 * 1024**3, dtype=np.uint8)
    if name == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    return convert(src, dst, up_axis, progress)


@pytest.fixture(scope="module")
def small_rigs(rig_records):
    """The 8 smallest shared rigs (fast to convert), smallest first."""
    return sorted(rig_records, key=lambda r: r.path.stat().st_size)[:8]


def tree_digest(root: Path) -> dict:
    """{relative path (bytes): sha256} of every regular file under root, hidden ones included."""
    out = {}
    for dirpath, _, files in os.walk(os.fsencode(root)):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out[os.path.relpath(p, os.fsencode(root))] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def last_records(report: Path) -> dict:
    return {r["input"]: r for r in read_report(report)}


def test_mixed_folder_cli(small_rigs, tmp_path, capsys):
    """Shared rigs in nested folders plus every kind of bad entry: the good ones are converted into
    a mirrored tree, each bad one is reported, nothing crashes, inputs stay as they were."""
    src = tmp_path / "in"
    good = {}
    for i, r in enumerate(small_rigs[:3]):
        p = src / ("a" if i < 2 else "b/c") / r.path.name
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r.path, p)
        good[p] = r
    (src / "a" / "cube.obj").write_text(CUBE_OBJ)  # a.obj + a.ply: two inputs, one stem
    (src / "a" / "cube.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                                        "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    weird = os.fsencode(src / "b") + b"/caf\xe9.glb"  # not UTF-8
    shutil.copy(small_rigs[3].path, weird)
    (src / "empty.glb").write_bytes(b"")
    (src / "garbage.obj").write_text("this is not a mesh\n")
    (src / "truncated.glb").write_bytes(small_rigs[0].path.read_bytes()[:200])
    (src / "notes.txt").write_text("not a mesh")
    os.symlink(src / "does-not-exist.glb", src / "dangling.glb")
    os.mkfifo(src / "pipe.glb")  # reading it would block forever
    os.symlink("..", src / "b" / "loop")  # b/loop -> in: a symlink loop
    (src / "empty_folder").mkdir()
    out = src / "out"  # OUT_DIR inside IN_DIR: must not be read back as input
    before = tree_digest(src)

    rc = main(["batch", str(src), str(out), "--jobs", "2", "--timeout", "120"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "100%" in captured.err and ("file/s" in captured.err or "s/file" in captured.err)  # the progress bar
    assert "5 failed" in captured.out and "6 done now" in captured.out, captured.out
    assert tree_digest(src).keys() - before.keys() == {k for k in tree_digest(src) if k.startswith(b"out/")}
    assert {k: v for k, v in tree_digest(src).items() if not k.startswith(b"out/")} == before  # inputs untouched

    recs = last_records(out / "batch-report.jsonl")
    assert not any(k.startswith(str(out)) for k in recs)  # outputs never re-ingested
    for p, r in good.items():
        rec = recs[str(p)]
        assert rec["status"] == "ok", rec
        dst = out / p.relative_to(src).with_suffix(".glb")
        assert rec["output"] == str(dst) and rec["sha256"] == hashlib.sha256(dst.read_bytes()).hexdigest()
        assert rec["joints"] == r.joints and rec["faces"] == r.triangles and set(rec["timings"]) == {"load", "export"}
        assert len(load(dst).skeleton) == r.joints
    assert recs[str(src / "a" / "cube.obj")]["output"] == str(out / "a" / "cube.obj.glb")
    assert recs[str(src / "a" / "cube.ply")]["output"] == str(out / "a" / "cube.ply.glb")
    assert recs[os.fsdecode(weird)]["status"] == "ok" and os.path.isfile(os.fsencode(out) + b"/b/caf\xe9.glb")
    for name, words in [("empty.glb", "empty"), ("garbage.obj", "garbage.obj"), ("truncated.glb", "truncated.glb"),
                        ("dangling.glb", "not found"), ("pipe.glb", "not a regular file")]:
        rec = recs[str(src / name)]
        assert rec["status"] == "failed" and words in rec["error"], rec
        assert f"failed: {rec['error']}" in captured.err
    assert recs[str(src / "notes.txt")]["status"] == "skipped"
    assert "symlink loop" in recs[str(src / "b" / "loop")]["error"]
    assert not list(out.rglob(".*"))  # no temporary files left

    # Again: done inputs are skipped, failed ones retried (and fail again), nothing is reported twice.
    lines = len((out / "batch-report.jsonl").read_text().splitlines())
    rc = main(["batch", str(src), str(out), "--jobs", "2"])
    assert rc == 2 and "0 done now, 6 already done, 5 failed" in capsys.readouterr().out
    assert len((out / "batch-report.jsonl").read_text().splitlines()) == lines + 5

    for name in ["empty.glb", "garbage.obj", "truncated.glb", "dangling.glb", "pipe.glb"]:
        os.unlink(src / name)
    assert main(["batch", str(src), str(out)]) == 0


def test_kill_and_resume(small_rigs, rig_records, tmp_path):
    """kill -9 a real batch mid-way, start it again: it skips what was done (by report, output and
    checksum), redoes what was not, and ends with the bytes of an uninterrupted run."""
    src = tmp_path / "in"
    rigs = sorted(rig_records, key=lambda r: r.file)[::5][:16]
    for r in rigs:
        (src / r.file).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(r.path, src / r.file)
    ref = run_batch(src, tmp_path / "ref", jobs=2, report=tmp_path / "ref.jsonl", progress=False)
    assert ref.ok == len(rigs), [r.get("error") for r in ref.records]

    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "batch", str(src), str(out), "--jobs", "2", "--report", str(report)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if report.exists() and report.read_bytes().count(b'"status": "ok"') >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Done = recorded and renamed; the kill may fall between the two (then that input is redone).
    done = [r for r in read_report(report) if r["status"] == "ok" and Path(r["output"]).exists()]
    assert 3 <= len(done) < len(rigs), "the run was not killed mid-way"
    ref_files = tree_digest(tmp_path / "ref")
    for rel, digest in tree_digest(out).items():  # every output in place is complete
        if not rel.startswith(TMP_DIR.encode() + b"/"):
            assert ref_files[rel] == digest

    with open(report, "ab") as f:
        f.write(b'{"status": "ok", "input": "/torn')  # a record cut short by the kill
    Path(done[0]["output"]).write_bytes(b"damaged")  # checksum no longer matches: must be redone

    summary = run_batch(src, out, jobs=2, report=report, progress=False)
    assert summary.failed == 0 and summary.already_done == len(done) - 1
    assert summary.ok == len(rigs) - len(done) + 1
    assert tree_digest(out) == ref_files  # byte-identical, no temporary files
    lines = report.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone
    assert all(r["status"] == "ok" for r in last_records(report).values())


def test_hang_memory_and_crash_are_isolated(small_rigs, tmp_path):
    """A hanging, a memory-hungry and a crashing input each fail alone (timeout, memory cap,
    signal) while the good inputs around them are converted."""
    src = tmp_path / "in"
    src.mkdir()
    for name, r in zip(["hang", "hog", "crash", "good1", "good2"], small_rigs):
        shutil.copy(r.path, src / f"{name}.glb")
    task = Task("misbehave", "test_batch:misbehaving_convert", (".glb",))
    t = time.perf_counter()
    s = run_batch(src, tmp_path / "out", task, jobs=2, timeout=8, max_memory=4, progress=False)
    recs = {Path(r["input"]).stem: r for r in s.records}
    assert "timed out after 8 s" in recs["hang"]["error"]
    assert "ran out of memory (cap 4 GiB" in recs["hog"]["error"]
    assert "killed by SIGSEGV" in recs["crash"]["error"]
    assert recs["good1"]["status"] == recs["good2"]["status"] == "ok"
    assert (s.ok, s.failed) == (2, 3) and time.perf_counter() - t < 60
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["batch-report.jsonl", "good1.glb", "good2.glb"]


def test_tasks_and_options_are_checked(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(Mesh3DError, match="task generate is not available yet in this version"):
        run_batch(tmp_path / "in", tmp_path / "out", "generate")
    with pytest.raises(Mesh3DError, match="--skeleton does not apply to task convert"):
        run_batch(tmp_path / "in", tmp_path / "out", "convert", {"skeleton": "auto"})
    with pytest.raises(Mesh3DError, match="OUT_DIR must differ"):
        run_batch(tmp_path / "in", tmp_path / "in")
    with pytest.raises(Mesh3DError, match="not a folder"):
        run_batch(tmp_path / "nowhere", tmp_path / "out")
    s = run_batch(tmp_path / "in", tmp_path / "out", progress=False)  # an empty folder is no error
    assert (s.inputs, s.failed) == (0, 0)
    assert main(["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--format", "fbx", "--task", "convert"]) == 0


def test_existing_outputs_are_kept_without_overwrite(small_rigs, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    shutil.copy(small_rigs[0].path, src / "x.glb")
    (out / "x.glb").write_bytes(b"the user's own file")
    s = run_batch(src, out, progress=False)
    assert s.failed == 1 and "use --overwrite" in s.records[0]["error"]
    assert (out / "x.glb").read_bytes() == b"the user's own file"
    s = run_batch(src, out, overwrite=True, progress=False)
    assert s.ok == 1 and len(load(out / "x.glb").skeleton) == small_rigs[0].joints


def test_ray_local(small_rigs, tmp_path):
    """The same batch on a local Ray instance gives the same outputs as local workers."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mesh3d[ray]')")
    src = tmp_path / "in"
    src.mkdir()
    for r in small_rigs[:3]:
        os.symlink(r.path, src / r.path.name)
    (src / "bad.glb").write_bytes(b"glTF")
    local = run_batch(src, tmp_path / "local", jobs=2, progress=False)
    on_ray = run_batch(src, tmp_path / "ray", ray="local", progress=False)
    assert (on_ray.ok, on_ray.failed) == (local.ok, local.failed) == (3, 1)
    strip = lambda d: {k: v for k, v in d.items() if not k.endswith(b".jsonl")}  # noqa: E731
    assert strip(tree_digest(tmp_path / "ray")) == strip(tree_digest(tmp_path / "local"))


def test_animate_task_and_changed_options(rig_records, tmp_path):
    """A second real task plugs in by name: ``animate`` on two small shared rigs; a run with other
    options redoes every input and replaces the outputs it wrote, the same options skip them."""
    src = tmp_path / "in"
    src.mkdir()
    for r in rig_records:
        if r.file in ("fish_pack/Whale.glb", "platformer_game_pack/Lever.glb"):
            os.symlink(r.path, src / r.path.name)
    out = tmp_path / "out"
    with pytest.raises(Mesh3DError, match="task animate needs --motion"):
        run_batch(src, out, "animate")
    s = run_batch(src, out, "animate", {"motions": ["idle"]}, jobs=2, progress=False)
    assert (s.ok, s.failed) == (2, 0), s.records
    assert all(r["motions"] == ["idle"] for r in s.records)
    for r in s.records:
        assert "idle" in [a.name for a in load(r["output"]).animations]
    assert run_batch(src, out, "animate", {"motions": ["idle"]}, progress=False).already_done == 2
    s = run_batch(src, out, "animate", {"motions": ["wave"]}, jobs=2, progress=False)
    assert (s.ok, s.already_done, s.failed) == (2, 0, 0)
    for r in s.records:
        assert "wave" in [a.name for a in load(r["output"]).animations]


def test_rig_task(static_records, tmp_path, capsys):
    """``--task rig`` on small shared statics: each output has a skeleton and skin, the report has
    the rig's stages and counts, and a second run (other worker count) gives the same bytes."""
    src = tmp_path / "in"
    src.mkdir()
    for r in static_records:
        if r.file in ("survival_pack/WoodLog.glb", "modular_dungeon_pack/ModularFloor.glb"):
            os.symlink(r.path, src / r.path.name)
    assert main(["batch", str(src), str(tmp_path / "a"), "--task", "rig", "--skeleton", "geometric", "--jobs", "2"]) == 0
    assert "2 done now" in capsys.readouterr().out
    recs = read_report(tmp_path / "a" / "batch-report.jsonl")
    for rec in recs:
        asset = load(rec["output"])
        assert asset.skeleton is not None and asset.skin is not None
        assert rec["joints"] == len(asset.skeleton) > 0 and rec["skeleton_method"] == rec["skin_method"] == "geometric"
        assert set(rec["timings"]) == {"load", "skeleton", "skin", "export"}
    s = run_batch(src, tmp_path / "b", "rig", {"skeleton": "geometric"}, jobs=1, report=tmp_path / "b.jsonl", progress=False)
    assert s.ok == 2
    strip = lambda d: {k: v for k, v in d.items() if not k.endswith(b".jsonl")}  # noqa: E731
    assert strip(tree_digest(tmp_path / "a")) == tree_digest(tmp_path / "b")


def test_previews_beside_outputs_and_resume_restores_a_missing_one(static_records, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for r in static_records:
        if r.file in ("survival_pack/WoodLog.glb", "modular_dungeon_pack/ModularFloor.glb"):
            os.symlink(r.path, src / r.path.name)
    s = run_batch(src, tmp_path / "out", "convert", jobs=1, progress=False, preview=True)
    assert s.ok == 2
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(p.stem for p in src.iterdir())
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert run_batch(src, tmp_path / "out", "convert", jobs=1, progress=False, preview=True).already_done == 2
    pngs[0].unlink()
    again = run_batch(src, tmp_path / "out", "convert", jobs=1, progress=False, preview=True)
    assert again.ok == 1 and again.already_done == 1 and pngs[0].exists()
