"""Training data of the shape generator: the occupancy grid of every static shape of the corpus.

Every static record (data_prep.corpus, kind "static", both splits, every pack) is loaded,
normalised (mesh3d.geometry.normalize: bounding box centred, longest side 1) and voxelised as the
union of its parts (mesh3d.shape.tokenizer.occupancy) on one resolution³ grid. Coarser grids
are the octree levels of this one (tokenizer.pyramid), and the 8 augmentations (quarter turns
about up, mirror) are exact grid maps (tokenizer.dihedral), so they are applied at batch time and
one grid per shape is all that is stored.

One safetensors file per split (grids bit-packed, no pickle) plus index.json with each grid's
file, pack and split. The same options give byte-identical files. Rebuild with:

    python -m data_prep.shape_data --out runs/shape_data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from data_prep.corpus import Record, records
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.shape.tokenizer import occupancy


def shape_grid(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> np.ndarray:
    """Occupancy (resolution³ bool) of a mesh in any frame, after the project's normalisation."""
    normalised, _, _ = normalize_unit_cube(vertices)
    return occupancy(normalised, faces, resolution)


def build(out: Path, resolution: int = 16, recs: list[Record] | None = None, log=print) -> dict:
    """Write {split}.safetensors (key "grids": (S, resolution³ / 8) uint8 packed bits) and index.json.

    recs: the records to use (default: every static record of the corpus). Returns the index.
    """
    from mesh3d.io import load

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recs = recs if recs is not None else records(kind="static")
    index = {"resolution": resolution, "splits": {}}
    for split in ("train", "dev"):
        rows, grids = [], []
        t0 = time.perf_counter()
        for rec in (r for r in recs if r.split == split):
            mesh = load(rec.path).mesh
            if not len(mesh.faces):
                log(f"skip {rec.file}: no faces")
                continue
            grids.append(np.packbits(shape_grid(mesh.vertices, mesh.faces, resolution).reshape(-1)))
            rows.append({"file": rec.file, "pack": rec.pack})
        if not grids:
            continue
        save_file({"grids": torch.from_numpy(np.stack(grids))}, str(out / f"{split}.safetensors"))
        index["splits"][split] = rows
        log(f"{split}: {len(rows)} shapes in {time.perf_counter() - t0:.0f} s")
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def read_split(folder, split: str) -> tuple[np.ndarray, list[dict]]:
    """Grids (S, R, R, R) bool and their rows ({"file", "pack"}) of one split of a built folder."""
    folder = Path(folder)
    if not (folder / "index.json").is_file():
        raise Mesh3DError(f"no shape data in {folder}: build it with `python -m data_prep.shape_data --out {folder}`")
    index = json.loads((folder / "index.json").read_text())
    if split not in index["splits"]:
        raise Mesh3DError(f"{folder}: no {split} shapes")
    r = index["resolution"]
    packed = load_file(str(folder / f"{split}.safetensors"))["grids"].numpy()
    grids = np.unpackbits(packed, axis=1)[:, : r ** 3].reshape(-1, r, r, r).astype(bool)
    return grids, index["splits"][split]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Voxelise every static shape of the corpus for the shape generator.")
    parser.add_argument("--out", default="runs/shape_data", help="output folder (default runs/shape_data)")
    parser.add_argument("--resolution", type=int, default=16, help="grid cells along each axis (a power of two; default 16, the generator's)")
    args = parser.parse_args(argv)
    index = build(Path(args.out), args.resolution)
    print(f"wrote {args.out}: " + ", ".join(f"{len(v)} {k}" for k, v in index["splits"].items()))


if __name__ == "__main__":
    main()
