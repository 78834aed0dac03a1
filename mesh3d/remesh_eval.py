"""Evaluation of remeshing: `mesh3d eval mesh [--split dev | --data DIR]`.

Each target is an artist mesh. The input every method gets is the target's marching-cubes remesh
(mesh3d.remesh.marching_cubes_surface: dense, closed, uniformly triangulated, like a scan or a
generated shape), and each output is compared with the target:

* learned -- the learned model (best of --samples candidates by chamfer to the input);
* qem -- quadric decimation of the input to the learned mesh's face count (the target's when the
  learned model wrote nothing), the classic baseline at equal budget;
* mc -- the marching-cubes input itself, undecimated.

Metrics (mesh3d.remesh.surface_metrics, in the target's normalised frame: fractions of its longest
side): chamfer, edge chamfer (sharp and boundary edges), normal consistency; face and vertex
counts; validity (watertight where the target is, no degenerate or duplicate faces); seconds per
mesh (the learned time includes its candidates' scoring; qem's and mc's their own step only).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from mesh3d.asset import Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.remesh import DEFAULT_WEIGHTS, load_mesh_model, marching_cubes_surface, qem_decimate, remesh, surface_metrics, validity

METHODS = ("learned", "qem", "mc")


def dev_targets(max_faces: int = 1600) -> list[tuple[str, Mesh]]:
    """(file, mesh) of the shared corpus's DEV statics with at most max_faces faces after 7-bit
    quantisation (the learned model's training budget), as in data_prep.mesh_data."""
    from data_prep.mesh_data import corpus_targets

    return corpus_targets("dev", max_faces, 7)


def folder_targets(folder) -> list[tuple[str, Mesh]]:
    """(relative path, mesh) of every mesh file under `folder`, sorted by path."""
    from mesh3d.io import LOAD_FORMATS, load

    folder = Path(folder)
    if not folder.is_dir():
        raise Mesh3DError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in LOAD_FORMATS and p.is_file())
    if not files:
        raise Mesh3DError(f"{folder}: no mesh files ({', '.join(LOAD_FORMATS)})")
    return [(str(p.relative_to(folder)), load(p).mesh) for p in files]


def evaluate(targets: list[tuple[str, Mesh]], methods=METHODS, weights=DEFAULT_WEIGHTS, samples: int = 4, model=None,
             faces: int = 1600, log=print) -> dict:
    """Rows (one per target and method) and per-method means; see the module docstring.

    faces: the learned model's face budget (it usually stops earlier, at its own EOS).
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise Mesh3DError(f"unknown eval methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if "learned" in methods and model is None:
        model = load_mesh_model(weights)
    rows = []
    for name, target in targets:
        target = Mesh(target.vertices, target.faces)
        t0 = time.perf_counter()
        dense = marching_cubes_surface(target.vertices, target.faces)
        mc_seconds = time.perf_counter() - t0
        target_valid = validity(target)
        outputs = {}
        if "learned" in methods:
            t0 = time.perf_counter()
            try:
                outputs["learned"] = (remesh(dense, faces, "learned", samples, model=model)[0], time.perf_counter() - t0)
            except Mesh3DError as e:  # no usable candidate: counted, never hidden
                log(f"{name}: learned: {e}")
                outputs["learned"] = (None, time.perf_counter() - t0)
        if "qem" in methods:
            learned = outputs.get("learned", (None, 0))[0]
            budget = len(learned.faces) if learned is not None else len(target.faces)
            t0 = time.perf_counter()
            outputs["qem"] = (qem_decimate(dense, budget), time.perf_counter() - t0)
        if "mc" in methods:
            outputs["mc"] = (dense, mc_seconds)
        for method, (out, seconds) in outputs.items():
            row = {"target": name, "method": method, "target_faces": target_valid["faces"], "target_watertight": target_valid["watertight"],
                   "seconds": seconds, "failed": out is None}
            if out is not None:
                row |= surface_metrics(out, target) | validity(out)
            rows.append(row)
            if out is not None:
                log(f"{name:50s} {method:8s} {row['faces']:6d} faces  CD {row['chamfer']:.4f}  ECD {row['edge_chamfer']:.4f}  "
                    f"NC {row['normal_consistency']:.3f}  {seconds:6.2f} s")
    return {"rows": rows, "summary": summarize(rows, methods)}


def summarize(rows: list[dict], methods=METHODS) -> dict:
    """Per method: means of the metrics over the meshes it produced, failures, validity rates."""
    out = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        ok = [r for r in mine if not r["failed"]]
        closed = [r for r in ok if r["target_watertight"]]
        out[m] = {
            "meshes": len(mine), "failed": len(mine) - len(ok),
            "chamfer": _mean(ok, "chamfer"), "edge_chamfer": _mean(ok, "edge_chamfer"),
            "normal_consistency": _mean(ok, "normal_consistency"), "faces": _mean(ok, "faces"), "vertices": _mean(ok, "vertices"),
            "seconds": float(np.mean([r["seconds"] for r in mine])) if mine else float("nan"),
            "watertight_where_target_is": f"{sum(r['watertight'] for r in closed)}/{len(closed)}",
            "with_degenerate_faces": sum(r["degenerate_faces"] > 0 for r in ok),
            "with_duplicate_faces": sum(r["duplicate_faces"] > 0 for r in ok),
        }
    return out


def _mean(rows: list[dict], key: str) -> float:
    """Mean of rows[key] ignoring NaN (no sharp edges); NaN when there is no value at all."""
    values = [r[key] for r in rows if not math.isnan(r[key])]
    return float(np.mean(values)) if values else float("nan")


def format_table(summary: dict) -> str:
    """The summary as a Markdown table."""
    lines = ["| method | meshes (failed) | chamfer | edge chamfer | normal consistency | faces | vertices | watertight where target is | with degenerate / duplicate faces | s per mesh |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for m, s in summary.items():
        lines.append(f"| {m} | {s['meshes']} ({s['failed']}) | {s['chamfer']:.4f} | {s['edge_chamfer']:.4f} | {s['normal_consistency']:.3f} | "
                     f"{s['faces']:.0f} | {s['vertices']:.0f} | {s['watertight_where_target_is']} | {s['with_degenerate_faces']} / "
                     f"{s['with_duplicate_faces']} | {s['seconds']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="mesh3d eval mesh", description="Remeshing quality: learned vs QEM at the same face count vs marching cubes.")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, help="folder of target meshes (default: the shared corpus's dev statics)")
    src.add_argument("--split", default="dev", choices=["dev"], help="shared corpus split (default dev; train is what the model learned)")
    parser.add_argument("--max-faces", type=int, default=1600, help="dev targets with at most this many faces (default 1600, the training budget)")
    parser.add_argument("--faces", type=int, default=1600, help="the learned model's face budget (default 1600; it usually stops earlier)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N targets (0: all)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of learned,qem,mc")
    parser.add_argument("--samples", type=int, default=4, help="learned candidates per mesh (best by chamfer to the input)")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--out", default=None, help="also write rows and summary to this JSON file")
    args = parser.parse_args(argv)
    targets = folder_targets(args.data) if args.data else dev_targets(args.max_faces)
    if args.limit:
        targets = targets[:args.limit]
    result = evaluate(targets, tuple(m for m in args.methods.split(",") if m), args.weights, args.samples, faces=args.faces)
    print(format_table(result["summary"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
