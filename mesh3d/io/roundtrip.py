"""Measure how faithfully rigged glTF files load and re-export (``mesh3d bench roundtrip``).

For each file: load it, pose it at sampled frames of every clip and compare with the spec-literal
reference (:mod:`mesh3d.io.gltf_reference`); write our GLB, load that again and compare joints,
weights and poses. Pose errors are in units of the posed mesh's bounding-box diagonal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mesh3d.io import load, save
from mesh3d.io.gltf_reference import posed_reference


def sample_frames(num_frames: int, n: int = 3) -> np.ndarray:
    """``n`` frame indices spread over a clip, first and last included."""
    return np.unique(np.linspace(0, num_frames - 1, n).round().astype(int))


def measure_rig(path: str | Path, out_dir: str | Path, frames_per_clip: int = 3) -> dict:
    """Round-trip figures for one rigged glTF file; writes ``out_dir/<name>.glb``."""
    path = Path(path)
    t0 = time.perf_counter()
    asset = load(path)
    exported = Path(out_dir) / f"{path.stem}.glb"
    save(asset, exported)
    again = load(exported)
    sk, j = asset.skeleton, len(asset.skeleton)
    # Vertices whose weights the file gives as NaN have no defined pose there: leave them out.
    ref0 = posed_reference(path, None, [0.0])[0]
    valid = np.isfinite(ref0).all(1) & (np.abs(ref0).max(1) > 0)
    pose_load = pose_trip = 0.0
    for i, anim in enumerate(asset.animations):
        frames = sample_frames(anim.num_frames, frames_per_clip)
        ref = posed_reference(path, i, frames / anim.fps)[:, valid]
        diag = float(np.linalg.norm(np.ptp(ref.reshape(-1, 3), 0)))
        ours = asset.posed_vertices(anim, frames)[:, valid]
        trip = again.posed_vertices(again.animations[i], frames)[:, valid]
        pose_load = max(pose_load, float(np.linalg.norm(ours - ref, axis=-1).max()) / diag)
        pose_trip = max(pose_trip, float(np.linalg.norm(trip - ref, axis=-1).max()) / diag)
    return {
        "file": str(path),
        "exported": str(exported),
        "joints": j,
        "helpers": int(sk.helper.sum()),
        "clips": len(asset.animations),
        "repaired_vertices": int((~valid).sum()),
        "same_names_and_parents": again.skeleton.names == sk.names and bool(np.array_equal(again.skeleton.parents, sk.parents)),
        "joint_error": float(np.abs(again.skeleton.joints - sk.joints).max()),
        "weight_error": float(np.abs(again.skin.dense(j) - asset.skin.dense(j)).sum(1).max()),
        "pose_error_load": pose_load,
        "pose_error_roundtrip": pose_trip,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def main(argv: list[str] | None = None) -> int:
    from data_prep import corpus

    p = argparse.ArgumentParser(prog="mesh3d bench roundtrip", description=__doc__)
    p.add_argument("--data", help="folder of rigged .glb files (default: every rig of the shared corpus)")
    p.add_argument("--frames", type=int, default=3, help="frames sampled per clip")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    args = p.parse_args(argv)
    files = sorted(Path(args.data).rglob("*.glb")) if args.data else [r.path for r in corpus.records("rig")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            row = measure_rig(f, tmp, args.frames)
            rows.append(row)
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{Path(f).name:50s} joints {row['joints']:3d} clips {row['clips']:2d}  joint {row['joint_error']:.1e}  "
                      f"weight {row['weight_error']:.1e}  pose(load) {row['pose_error_load']:.1e}  pose(trip) {row['pose_error_roundtrip']:.1e}")
    if not args.json and rows:
        worst = {k: max(r[k] for r in rows) for k in ("joint_error", "weight_error", "pose_error_load", "pose_error_roundtrip")}
        print(f"{len(rows)} rigs, worst: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
