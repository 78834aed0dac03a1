"""Blender as a subprocess: read and write FBX, and check that our files import into real Blender.

Blender's Python module (``bpy==5.0.1``) needs Python 3.11 and numpy<2, which clash with mesh3d's
own environment, so it lives in a second virtualenv (``make blender`` creates ``.venv-blender/`` in
the repository root) and is only ever run as a separate process on ``blender_script.py``. The two
sides exchange JSON: the request goes in as an argument, answers come back in a JSON file.

Set ``MESH3D_BLENDER_PYTHON`` to use another Python that can ``import bpy``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Optional

import numpy as np

from mesh3d.asset import Asset, Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError
from mesh3d.io.gltf_read import read_gltf
from mesh3d.io.gltf_write import write_glb

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("blender_script.py")
IMPORTABLE = (".glb", ".gltf", ".fbx")
EXPORTABLE = (".glb", ".fbx")
# Imports of the corpus rigs take about a second; five minutes means Blender is stuck.
DEFAULT_TIMEOUT = 300.0


def blender_python() -> Path:
    """The Python interpreter of the Blender venv (it may not exist)."""
    env = os.environ.get("MESH3D_BLENDER_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-blender" / "bin" / "python"


@functools.lru_cache(maxsize=None)
def _can_import_bpy(python: Path) -> bool:
    try:
        run = subprocess.run([str(python), "-c", "import bpy"], capture_output=True, timeout=120, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


def blender_available() -> bool:
    """True when the Blender Python exists and can ``import bpy`` (checked once per interpreter)."""
    python = blender_python()
    return python.is_file() and _can_import_bpy(python)


def _clean_env() -> dict:
    # Our own venv's Python settings must not leak into Blender's interpreter.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _require_blender(what: str) -> Path:
    python = blender_python()
    if not blender_available():
        raise Mesh3DError(
            f"{what}: needs Blender, which is not set up ({python} cannot `import bpy`): run `make blender` "
            "in the mesh3d repository (creates .venv-blender with bpy==5.0.1, ~1 GB), or set "
            "MESH3D_BLENDER_PYTHON to a Python 3.11 that can `import bpy`"
        )
    return python


def _run(request: dict, what: str, timeout: float) -> None:
    """Run blender_script.py on one request; raise Mesh3DError with Blender's last words on failure."""
    python = _require_blender(what)
    cmd = [str(python), str(SCRIPT), json.dumps(request)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_clean_env())
    except subprocess.TimeoutExpired:
        raise Mesh3DError(f"{what}: Blender did not finish within {timeout:g} s") from None
    if run.returncode != 0:
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {run.returncode}, no message"
        raise Mesh3DError(f"{what}: Blender failed: {last}")


def _check_input(path: Path, allowed: tuple[str, ...]) -> Path:
    path = Path(path).resolve()
    if path.suffix.lower() not in allowed:
        raise Mesh3DError(f"{path}: Blender route reads {', '.join(allowed)} files, not {path.suffix or 'no extension'}")
    if not path.is_file():
        raise Mesh3DError(f"{path}: no such file")
    return path


def inspect_many_with_blender(paths, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    """:func:`inspect_with_blender` for many files in one Blender process (Blender starts once).

    ``timeout`` is per file. Fails as a whole, naming the file, if any file does not import.
    """
    srcs = [str(_check_input(p, IMPORTABLE)) for p in paths]
    with tempfile.TemporaryDirectory(prefix="mesh3d-blender-") as tmp:
        reply = Path(tmp) / "reply.json"
        what = f"inspecting {Path(srcs[0]).name}" if len(srcs) == 1 else f"inspecting {len(srcs)} files"
        _run({"op": "inspect", "srcs": srcs, "reply": str(reply)}, what, timeout * len(srcs))
        return json.loads(reply.read_text())


def inspect_with_blender(path, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Import ``path`` (GLB/glTF/FBX) with Blender's own importer and report what it built.

    Returns a dict with
      ``armatures``: [{name, bone_count, bone_names, parents, deform, heads, tails (world space,
      metres, Blender's Z-up frame), lengths, near_zero_bones, on_parent_bones (head on the parent's
      head: a zero-length segment the importer hid)}],
      ``meshes``: [{name, vertex_count, triangle_count, vertex_groups, weighted_groups, armature,
      parent, parent_armature}] without the importer's bone display shapes,
      ``actions``: [{name, frame_range (frames), armature, poses ({frame: world-space bone heads
      in the armature's bone order} at frames start + 0, 1, 2, 4, 8, ...; None if the action moves
      no bones)}],
      ``fps`` and ``blender_version``.
    """
    return inspect_many_with_blender([path], timeout)[0]


def convert_with_blender(src, dst, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Convert between GLB/glTF and FBX through Blender, keeping armature, weights and animations.

    FBX -> GLB lets mesh3d load FBX (its GLB loader reads the result); GLB -> FBX lets it write FBX
    (Y-up, unit scale in the file, no leaf bones, one take per animation: imports cleanly in Unity and
    Blender). ``src`` is never modified; ``dst`` is written to a temporary file beside it and moved
    into place only when Blender succeeded, so a failure never leaves a half-written ``dst``.
    """
    return _convert(src, dst, timeout, what=None)


def _convert(src, dst, timeout: float, what: Optional[str]) -> Path:
    src = _check_input(src, IMPORTABLE)
    dst = Path(dst).resolve()
    if dst.suffix.lower() not in EXPORTABLE:
        raise Mesh3DError(f"{dst}: Blender route writes {', '.join(EXPORTABLE)} files, not {dst.suffix or 'no extension'}")
    if dst == src:
        raise Mesh3DError(f"{dst}: output would overwrite the input; choose another output path")
    dst.parent.mkdir(parents=True, exist_ok=True)  # as mesh3d's other writers do
    # Same folder, same extension: Blender's exporters insist on the extension, and os.replace is
    # only atomic within one file system. Blender creates the file, so it gets normal permissions.
    tmp = dst.parent / f".{dst.stem}.{uuid.uuid4().hex[:12]}.tmp{dst.suffix.lower()}"
    what = what or f"converting {src.name} to {dst.suffix}"
    try:
        _run({"op": "convert", "src": str(src), "dst": str(tmp)}, what, timeout)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise Mesh3DError(f"{what}: Blender wrote nothing")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def read_fbx(path, timeout: float = DEFAULT_TIMEOUT) -> Asset:
    """Load an FBX file: Blender converts it to a temporary GLB, which the glTF reader loads."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="mesh3d-fbx-") as tmp:
        glb = _convert(path, Path(tmp) / f"{path.stem}.glb", timeout, what=f"{path.name}: reading FBX")
        try:
            asset = read_gltf(glb)
        except Mesh3DError as e:
            raise Mesh3DError(f"{path.name}: the glTF Blender made from it does not load: {e}") from None
    return asset


def write_fbx(asset: Asset, path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Save ``asset`` as FBX: written as a temporary GLB, which Blender converts (atomically)."""
    path = Path(path)
    _require_blender(f"{path.name}: writing FBX")  # fail before any work
    with tempfile.TemporaryDirectory(prefix="mesh3d-fbx-") as tmp:
        glb = Path(tmp) / f"{path.stem}.glb"
        write_glb(asset, glb)
        _convert(glb, path, timeout, what=f"{path.name}: writing FBX")


def bone_heat_with_blender(mesh: Mesh, skeleton: Skeleton, skin: Skin, timeout: float = DEFAULT_TIMEOUT) -> np.ndarray:
    """Blender's automatic weights (bone heat) for ``mesh`` on ``skeleton``: the baseline for our skinning.

    ``skin`` is any valid skin (e.g. the ground truth): it only makes the temporary GLB a rigged
    file Blender imports with its armature; Blender clears it before weighting. Blender's glTF
    import may reorder or split vertices, so its vertices are matched back to ours by position
    (coincident vertices get the same weights). Returns dense (V, J) weights normalised per vertex,
    all of Blender's influences kept; a vertex Blender left unweighted (bone heat "failed to find
    solution for one or more bones") has an all-zero row, which a :class:`Skin` cannot hold.
    """
    with tempfile.TemporaryDirectory(prefix="mesh3d-boneheat-") as tmp:
        glb, reply = Path(tmp) / "rig.glb", Path(tmp) / "reply.json"
        write_glb(Asset(mesh=mesh, skeleton=skeleton, skin=skin), glb)
        _run({"op": "bone_heat", "src": str(glb), "reply": str(reply)}, "Blender bone heat", timeout)
        found = json.loads(reply.read_text())["meshes"]
    joint = {n: j for j, n in enumerate(skeleton.names)}
    positions, rows = [], []
    for m in found:
        positions += m["positions"]
        rows += [[(joint[g], w) for g, w in zip(gs, ws) if g in joint] for gs, ws in zip(m["groups"], m["weights"])]
    if not positions:
        raise Mesh3DError("Blender bone heat: the imported file has no mesh")
    # Blender's glTF import turns Y-up into Z-up: (x, y, z) -> (x, -z, y).
    pos = np.asarray(positions, np.float64)[:, [0, 2, 1]] * [1, 1, -1]
    from scipy.spatial import cKDTree

    match = cKDTree(pos).query(mesh.vertices)[1]
    dense = np.zeros((len(rows), len(skeleton)))
    for v, r in enumerate(rows):
        for j, w in r:
            dense[v, j] += w
    total = dense.sum(1, keepdims=True)
    dense = np.divide(dense, total, out=np.zeros_like(dense), where=total > 0)
    return dense[match]


def compare_inspections(before: dict, after: dict) -> dict:
    """What a round trip changed, from two ``inspect_with_blender`` results of one-armature files.

    Returns bone and action counts of both, the bone and clip names lost or gained, the armature's extent
    (longest side of the box around the rest bones, scene units) and the largest distance between
    same-named bones' heads at rest (``rest_error``) and at the sample frames a clip has on both
    sides (``pose_error``, infinite when a clip lost its motion or shares no frame), scene units.
    """
    a, b = before["armatures"], after["armatures"]
    if len(a) != 1 or len(b) != 1:
        raise Mesh3DError(f"compare_inspections needs one armature on each side, got {len(a)} and {len(b)}")
    a, b = a[0], b[0]
    rest_a, rest_b = dict(zip(a["bone_names"], a["heads"])), dict(zip(b["bone_names"], b["heads"]))
    shared = [n for n in a["bone_names"] if n in rest_b]
    points = np.array(a["heads"] + a["tails"]).reshape(-1, 3)
    acts_a = {x["name"]: x for x in before["actions"]}
    acts_b = {x["name"]: x for x in after["actions"]}
    pose_error = 0.0
    for name in acts_a.keys() & acts_b.keys():
        pa, pb = acts_a[name]["poses"], acts_b[name]["poses"]
        if pa is None and pb is None:
            continue
        frames = (pa or {}).keys() & (pb or {}).keys()
        if not frames:
            pose_error = float("inf")
        for f in frames:
            posed_a, posed_b = dict(zip(a["bone_names"], pa[f])), dict(zip(b["bone_names"], pb[f]))
            pose_error = max([pose_error] + [_dist(posed_a[n], posed_b[n]) for n in shared])
    return {
        "bones": (a["bone_count"], b["bone_count"]),
        "actions": (len(acts_a), len(acts_b)),
        "bones_lost": sorted(rest_a.keys() - rest_b.keys()),
        "bones_gained": sorted(rest_b.keys() - rest_a.keys()),
        "actions_lost": sorted(acts_a.keys() - acts_b.keys()),
        "actions_gained": sorted(acts_b.keys() - acts_a.keys()),
        "extent": float(np.ptp(points, axis=0).max()) if len(points) else 0.0,
        "rest_error": max([0.0] + [_dist(rest_a[n], rest_b[n]) for n in shared]),
        "pose_error": pose_error,
    }


def _dist(p, q) -> float:
    return float(np.linalg.norm(np.subtract(p, q)))


def main(argv: Optional[list] = None) -> None:
    """``python -m mesh3d.io.blender [--roundtrip] FILE...``: inspect files in Blender and time it.

    With ``--roundtrip`` each file also goes GLB -> FBX -> GLB (in a temporary folder) and the
    result is compared with the original: "ok" means the same bones and clips, and rest and sampled
    poses within 1e-4 of the rig's size. The timing of every Blender call is printed.
    """
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m mesh3d.io.blender", description=main.__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--roundtrip", action="store_true", help="also convert to FBX and back and compare")
    args = parser.parse_args(argv)

    def timed(fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        times.setdefault(fn.__name__, []).append(time.perf_counter() - t)
        return out

    times: dict = {}
    failed = 0
    for path in args.files:
        info = timed(inspect_with_blender, path)
        line = f"{path}: armatures={[x['bone_count'] for x in info['armatures']]} actions={len(info['actions'])}"
        if args.roundtrip:
            with tempfile.TemporaryDirectory(prefix="mesh3d-roundtrip-") as tmp:
                fbx = timed(convert_with_blender, path, Path(tmp) / "out.fbx")
                glb = timed(convert_with_blender, fbx, Path(tmp) / "out.glb")
                diff = compare_inspections(info, timed(inspect_with_blender, glb))
            ok = (
                not diff["bones_lost"]
                and not diff["bones_gained"]
                and not diff["actions_lost"]
                and not diff["actions_gained"]
                and max(diff["rest_error"], diff["pose_error"]) <= 1e-4 * diff["extent"]
            )
            failed += not ok
            line += (
                f" roundtrip {'ok' if ok else 'CHANGED'}: bones {diff['bones']} actions {diff['actions']}"
                f" rest_err/extent={diff['rest_error'] / max(diff['extent'], 1e-12):.1e}"
                f" pose_err/extent={diff['pose_error'] / max(diff['extent'], 1e-12):.1e}"
            )
            line += "".join(f" {k}={diff[k]}" for k in ("bones_lost", "bones_gained", "actions_lost", "actions_gained") if diff[k])
        print(line, flush=True)
    for name, ts in times.items():
        print(f"{name}: {len(ts)} calls, mean {np.mean(ts):.2f} s, max {np.max(ts):.2f} s", flush=True)
    if failed:
        raise SystemExit(f"{failed} of {len(args.files)} files changed in the round trip")


if __name__ == "__main__":
    main()
