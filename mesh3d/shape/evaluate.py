"""Measurements of the shape tokenizer (reconstruction) and the shape generator (COV, MMD, 1-NNA).

Reconstruction (`mesh3d eval shape --reconstruction`): every dev static of the corpus is
normalised, tokenized at each resolution and decoded; we report
* IoU of the decoded grid against the shape's solid (rigging.skeleton.volume.voxelise at 128³)
  at 50,000 uniform points of the normalised cube;
* chamfer distance x100 (mean of the two one-way mean nearest distances, normalised units) and
  F-scores at tau = 0.02 and 0.05 between 10,000 points on the marching-cubes surface and 10,000
  points on the source surface (which keeps the inner faces a solid's surface lacks);
* tokens and bytes per shape (one byte per octree mask: the token stream is the file).

Generation (`mesh3d eval shape`): for each category of the model, as many shapes as the dev split
has of it are sampled (seeds fixed) and compared with those dev shapes by chamfer distance
between 2,048 surface points each (source surfaces for dev, marching-cubes surfaces for samples):
* COV: fraction of dev shapes that are the nearest dev shape of at least one sample;
* MMD: mean over dev shapes of the chamfer distance to the closest sample (x100);
* 1-NNA: leave-one-out 1-nearest-neighbour accuracy of telling samples from dev shapes in their
  union (50 % = indistinguishable, 100 % = always told apart).
Figures are per category, and overall as their means weighted by dev count. The same figures for
*training shapes* of each category (through the same tokenizer and mesher) show what a model that
had learned the training distribution exactly would score: the floor this data allows.
A grid image of samples (one row per category) is written with the project's renderer
(rigging.animate.preview.render).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from mesh3d.asset import Mesh
from mesh3d.geometry.distance import chamfer as chamfer_distance
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.geometry.sampling import sample_surface
from mesh3d.shape.tokenizer import decode, encode, grid_to_mesh, occupancy

F_SCORE_TAUS = (0.02, 0.05)  # normalised units: 2 % and 5 % of the longest side
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest distances of points a (N, 3) to b (M, 3), and of b to a."""
    return cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric chamfer distance x100 (mesh3d.geometry.distance.chamfer)."""
    return 100 * chamfer_distance(a, b)


def f_score(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """F-score at distance tau: harmonic mean of the fractions of a near b (precision) and b near a (recall)."""
    ab, ba = distances(a, b)
    p, r = (ab < tau).mean(), (ba < tau).mean()
    return float(2 * p * r / (p + r)) if p + r else 0.0


def surface_points(mesh: Mesh, n: int, seed: int = 0) -> np.ndarray:
    """n points (n, 3) sampled on a mesh's surface after the project's normalisation."""
    normalised, _, _ = normalize_unit_cube(mesh.vertices)
    return sample_surface(normalised, mesh.faces, n, np.random.default_rng(seed))[0]


def grid_points(grid: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n points on the marching-cubes surface of an occupancy grid, after the project's normalisation."""
    return surface_points(grid_to_mesh(grid), n, seed)


# ----------------------------------------------------------------------------- reconstruction


def reconstruction(resolutions=(8, 16, 32), limit: int = 0, log=print) -> dict:
    """Reconstruction figures of the octree tokenizer on the dev statics, per resolution.

    limit: use only the first `limit` dev statics (0: all). Returns {"rows": per (shape, resolution),
    "mean": {resolution: {metric: mean}}}.
    """
    from data_prep.corpus import records
    from mesh3d.io import load
    from rigging.skeleton.volume import voxelise

    rng = np.random.default_rng(0)
    queries = rng.random((50_000, 3)) - 0.5
    rows = []
    recs = records(kind="static", split="dev")
    recs = recs[:limit] if limit else recs
    for rec in recs:
        mesh = load(rec.path).mesh
        normalised, _, _ = normalize_unit_cube(mesh.vertices)
        truth = voxelise(normalised, mesh.faces, 128).inside(queries)
        source = sample_surface(normalised, mesh.faces, 10_000, np.random.default_rng(1))[0]
        for res in resolutions:
            depth = int(np.log2(res))
            tokens = encode(occupancy(normalised, mesh.faces, res))  # as data_prep.shape_data makes them
            grid = decode(tokens, depth)  # exact: the round trip is lossless
            cell = np.clip(((queries + 0.5) * res).astype(int), 0, res - 1)
            pred = grid[tuple(cell.T)]
            union = (pred | truth).sum()
            surface = grid_to_mesh(grid)  # in the source's normalised frame: no renormalisation here
            points = sample_surface(surface.vertices, surface.faces, 10_000, np.random.default_rng(2))[0]
            rows.append({"file": rec.file, "resolution": res, "iou": float((pred & truth).sum() / union) if union else 1.0,
                         "chamfer": chamfer(points, source), **{f"f_score@{t}": f_score(points, source, t) for t in F_SCORE_TAUS},
                         "tokens": len(tokens), "bytes": len(tokens) - 2})
        log(f"{rec.file:55s} " + "  ".join(f"{r['resolution']}: IoU {r['iou']:.3f} CD {r['chamfer']:.2f} {r['bytes']} B"
                                         for r in rows[-len(resolutions):]))
    keys = ["iou", "chamfer", *(f"f_score@{t}" for t in F_SCORE_TAUS), "tokens", "bytes"]
    mean = {res: {k: float(np.mean([r[k] for r in rows if r["resolution"] == res])) for k in keys} for res in resolutions}
    for res, m in mean.items():
        log(f"mean {res:3d}³: IoU {m['iou']:.3f}  chamfer x100 {m['chamfer']:.2f}  "
            + "  ".join(f"F@{t} {m[f'f_score@{t}']:.3f}" for t in F_SCORE_TAUS)
            + f"  {m['tokens']:.0f} tokens  {m['bytes']:.0f} bytes per shape ({len(recs)} dev statics)")
    return {"rows": rows, "mean": mean}


# ----------------------------------------------------------------------------- generation


def set_metrics(samples: list[np.ndarray], refs: list[np.ndarray]) -> dict:
    """COV, MMD (x100) and 1-NNA of sample point sets against reference point sets (chamfer)."""
    pts = samples + refs
    n = len(pts)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = chamfer(pts[i], pts[j])
    g, r = len(samples), len(refs)
    cross = d[:g, g:]  # (samples, refs)
    cov = len(set(cross.argmin(1).tolist())) / r
    mmd = float(cross.min(0).mean())
    np.fill_diagonal(d, np.inf)
    labels = np.array([0] * g + [1] * r)
    nna = float((labels[d.argmin(1)] == labels).mean())
    return {"cov": cov, "mmd": mmd, "1nna": nna}


def generation(weights=None, data_dir="runs/shape_data", n_points: int = 2048, seed: int = 0, temperature: float = 1.0,
               clean: bool = True, grid_image: str | None = "docs/shape_samples.png", columns: int = 6, log=print) -> dict:
    """COV, MMD, 1-NNA of generated shapes vs the dev shapes of each category, and of training shapes (the floor).

    data_dir: data_prep.shape_data folder, for the training shapes of the floor rows ("" skips them).
    """
    from data_prep.corpus import records
    from mesh3d.io import load
    from mesh3d.shape.model import DEFAULT_WEIGHTS, category_grids, generate_grids, load_shape_model

    model = load_shape_model(weights or DEFAULT_WEIGHTS)
    dev = {}
    for rec in records(kind="static", split="dev"):
        if rec.pack in model.categories:
            dev.setdefault(rec.pack, []).append(surface_points(load(rec.path).mesh, n_points))
    train = None
    if data_dir:
        grids, cats = category_grids(data_dir, "train", model.categories, model.depth)
        train = (grids, cats)
    rows, samples_for_grid = [], {}
    rng = np.random.default_rng(seed)
    for c, name in enumerate(model.categories):
        refs = dev.get(name, [])
        if len(refs) < 2:
            log(f"{name}: {len(refs)} dev shape(s), skipped (1-NNA needs two)")
            continue
        t0 = time.perf_counter()
        grids = generate_grids(model, [name] * len(refs), seed=seed + c, temperature=temperature, clean=clean)
        seconds = time.perf_counter() - t0
        samples = [grid_points(g, n_points) for g in grids]
        row = {"category": name, "dev_shapes": len(refs), "seconds_per_shape": seconds / len(refs), **set_metrics(samples, refs)}
        if train is not None:
            pool = np.flatnonzero(train[1] == c)
            pick = rng.choice(pool, min(len(refs), len(pool)), replace=False)
            floor = set_metrics([grid_points(train[0][i], n_points) for i in pick], refs)
            row.update({f"train_{k}": v for k, v in floor.items()})
        rows.append(row)
        samples_for_grid[name] = grids[:columns]
        log(f"{name:28s} n={len(refs):2d}  COV {row['cov']:.2f}  MMD {row['mmd']:.2f}  1-NNA {row['1nna']:.2f}"
            + (f"   | train shapes: COV {row['train_cov']:.2f}  MMD {row['train_mmd']:.2f}  1-NNA {row['train_1nna']:.2f}" if train is not None else "")
            + f"   ({seconds / len(refs):.1f} s/shape)")
    weights_n = np.array([r["dev_shapes"] for r in rows], dtype=float)
    keys = [k for k in rows[0] if k not in ("category", "dev_shapes")]
    overall = {k: float(np.average([r[k] for r in rows], weights=weights_n)) for k in keys}
    log(f"overall ({int(weights_n.sum())} dev shapes, {len(rows)} categories): COV {overall['cov']:.3f}  MMD {overall['mmd']:.2f}  "
        f"1-NNA {overall['1nna']:.3f}" + (f"   | train shapes: COV {overall['train_cov']:.3f}  MMD {overall['train_mmd']:.2f}  "
                                          f"1-NNA {overall['train_1nna']:.3f}" if train is not None else ""))
    result = {"rows": rows, "overall": overall, "seed": seed, "temperature": temperature, "clean": clean, "n_points": n_points}
    if grid_image:
        result["grid_image"] = str(sample_grid(samples_for_grid, grid_image))
        log(f"sample grid: {result['grid_image']}")
    return result


def sample_grid(samples: dict, out, size: int = 128) -> Path:
    """PNG with one row per category of rendered sample grids (rigging.animate.preview.render), its name on the left."""
    from PIL import Image, ImageDraw

    from rigging.animate.preview import render

    label_width = 190
    columns = max(len(v) for v in samples.values())
    sheet = Image.new("RGB", (label_width + columns * size, len(samples) * size), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, grids) in enumerate(samples.items()):
        draw.text((6, r * size + size // 2 - 6), name, fill=(0, 0, 0))
        for c, grid in enumerate(grids):
            mesh = grid_to_mesh(grid, smooth=0.6)
            colours = np.full((len(mesh.faces), 3), 0.75)
            img, _ = render(mesh.vertices, mesh.faces, colours, 30.0, np.zeros(3), 0.75, size)
            sheet.paste(Image.fromarray(img), (label_width + c * size, r * size))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="mesh3d eval shape",
                                     description="Shape generator: COV/MMD/1-NNA vs dev shapes and a sample grid; or the tokenizer's reconstruction.")
    parser.add_argument("--reconstruction", action="store_true", help="measure the octree tokenizer on the dev statics instead")
    parser.add_argument("--resolutions", default="8,16,32", help="reconstruction: grid resolutions (powers of two)")
    parser.add_argument("--limit", type=int, default=0, help="reconstruction: only the first N dev statics")
    parser.add_argument("--weights", default=None, help="generator weights (default: the shipped mesh3d/weights/shape.safetensors)")
    parser.add_argument("--data", default="runs/shape_data", help="data_prep.shape_data folder for the training-shape floor ('' to skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--no-clean", action="store_true", help="keep the specks sampling leaves (tokenizer.drop_fragments)")
    parser.add_argument("--grid", default="docs/shape_samples.png", help="sample grid image ('' to skip)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.reconstruction:
        result = reconstruction(tuple(int(r) for r in args.resolutions.split(",")), args.limit)
    else:
        result = generation(args.weights, args.data, seed=args.seed, temperature=args.temperature, clean=not args.no_clean,
                            grid_image=args.grid or None)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
