"""Training data of the artist-mesh model: (dense input surface points, target mesh tokens) pairs.

Targets:
* the shared corpus's static meshes (data_prep.corpus, kind "static") with at most `max_faces`
  faces after quantisation and cleaning; the TRAIN split is augmented, the DEV split is written
  once, unaugmented, to separate dev shards and is never mixed into training;
* procedural low-poly shapes (`procedural_shape`): unions of coarse boxes, prisms, cones and
  spheres, the kind of parts Quaternius props are built from.

Inputs: each target's marching-cubes remesh (mesh3d.remesh.marching_cubes_surface, once per
target), so the encoder sees a dense, closed, uniformly triangulated surface as users give at
inference, never the target's own triangles. Each augmentation (rotation about the up axis Y,
per-axis scale, applied identically to the target and its remesh) is then normalised separately
(bounding box centred, longest side 1: as at inference, where only the input is known) and the
remesh sampled: `n_points` points with face normals, jittered.

Targets are tokenised here (VST, 7 bits by default); examples longer than `max_tokens` are
dropped. Shards are safetensors files (no pickle), one per source mesh, plus index.json; the same
options give byte-identical shards. Rebuild with:

    python -m data_prep.mesh_data --out runs/mesh_data
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep import shards as shard_io
from data_prep.corpus import records
from mesh3d.asset import Mesh
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.geometry.sampling import sample_surface
from mesh3d.remesh import marching_cubes_surface
from mesh3d.tokenizers import get_tokenizer, quantize_mesh


@dataclass
class DataConfig:
    max_faces: int = 1600  # targets with more faces (after 7-bit quantisation and cleaning) are skipped
    max_tokens: int = 2304  # examples with longer token sequences are dropped (the model's block)
    augment: int = 6  # examples per training target: the target as made, then augmented copies
    procedural: int = 400  # procedural low-poly shapes (each gets augment // 2 examples)
    n_points: int = 2048  # surface points stored per example
    resolution: int = 64  # marching-cubes grid of the input remesh (cells along the longest side)
    scale_low: float = 0.75  # per-axis scale drawn from [scale_low, scale_high]
    scale_high: float = 1.25
    jitter: float = 0.002  # std of Gaussian noise on the points, in normalised units
    tokenizer: str = "vst"
    bits: int = 7
    seed: int = 0


def yaw_scale(yaw_degrees: float, scale) -> np.ndarray:
    """(3, 3) matrix: rotate about Y by yaw_degrees, then scale each axis."""
    a = np.radians(yaw_degrees)
    rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    return np.diag(np.asarray(scale, dtype=np.float64)) @ rot


def surface_points(mesh: Mesh, n_points: int, rng: np.random.Generator, jitter: float = 0.0) -> np.ndarray:
    """(n_points, 6) float32: xyz + face normals of `mesh` normalised by its own bounding box."""
    normalised, _, _ = normalize_unit_cube(mesh.vertices)
    points, normals = sample_surface(normalised, mesh.faces, n_points, rng)
    if jitter:
        points = points + rng.normal(0.0, jitter, points.shape)
    return np.concatenate([points, normals], axis=1).astype(np.float32)


def target_examples(target: Mesh, n: int, cfg: DataConfig, rng: np.random.Generator, tok) -> list[tuple[np.ndarray, np.ndarray]]:
    """(points (n_points, 6), tokens (T,)) for the target and n - 1 augmented copies.

    The first example is never rotated, scaled or jittered. Copies whose tokens exceed
    cfg.max_tokens are left out (so fewer than n may come back).
    """
    remesh = marching_cubes_surface(target.vertices, target.faces, cfg.resolution, cfg.seed)
    out = []
    for i in range(n):
        m = np.eye(3) if i == 0 else yaw_scale(rng.uniform(-180.0, 180.0), rng.uniform(cfg.scale_low, cfg.scale_high, 3))
        tokens = tok.encode(Mesh(target.vertices @ m.T, target.faces))
        points = surface_points(Mesh(remesh.vertices @ m.T, remesh.faces), cfg.n_points, rng, cfg.jitter if i else 0.0)
        if len(tokens) <= cfg.max_tokens:
            out.append((points, tokens))
    return out


def procedural_shape(seed: int) -> Mesh:
    """A low-poly prop: 1-4 coarse parts (box, n-gon prism, cone, low sphere) stacked and offset.

    Parts sit on top of or beside each other, touching or overlapping like the separate pieces of
    the corpus's artist meshes (they are not merged into one shell).
    """
    import trimesh

    rng = np.random.default_rng([7, seed])
    parts, top = [], 0.0
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.choice(["box", "prism", "cone", "sphere"])
        size = rng.uniform(0.2, 1.0, 3)
        if kind == "box":
            part = trimesh.creation.box(extents=size)
        elif kind == "prism":
            part = trimesh.creation.cylinder(radius=size[0] / 2, height=size[1], sections=int(rng.integers(3, 13)))
        elif kind == "cone":
            part = trimesh.creation.cone(radius=size[0] / 2, height=size[1], sections=int(rng.integers(3, 13)))
        else:
            part = trimesh.creation.icosphere(subdivisions=int(rng.integers(0, 2)), radius=size[0] / 2)
        if kind in ("prism", "cone"):  # trimesh builds them along Z; stand them up along Y
            part.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
        v = np.asarray(part.vertices)
        v = v - [0.0, v[:, 1].min(), 0.0]  # base at y = 0
        lateral = rng.uniform(-0.3, 0.3, 2) if parts else np.zeros(2)
        parts.append((v + [lateral[0], top, lateral[1]], np.asarray(part.faces)))
        top += (v[:, 1].max()) * rng.uniform(0.6, 1.0)
    vertices, faces, base = [], [], 0
    for v, f in parts:
        vertices.append(v)
        faces.append(f + base)
        base += len(v)
    return Mesh(np.concatenate(vertices), np.concatenate(faces))


def write_shard(path: Path, examples: list, metadata: dict) -> None:
    """Examples (points (N, 6), tokens (T,)) as one shard (data_prep.shards)."""
    shard_io.write_shard(path, {"points": np.stack([e[0] for e in examples]).astype(np.float16)},
                         {"tokens": [e[1].astype(np.int64) for e in examples]}, metadata)


def read_shards(folder, split: str) -> list[dict]:
    """Examples of a split: dicts with points (N, 6) float32, tokens (T,) int64, source."""
    return shard_io.read_shards(folder, split, ("points",), ("tokens",), "python -m data_prep.mesh_data")


def corpus_targets(split: str, max_faces: int, bits: int) -> list[tuple[str, Mesh]]:
    """(file, mesh) of the corpus statics of `split` with 1..max_faces faces after quantisation."""
    from mesh3d.io import load

    out = []
    for rec in records(kind="static", split=split):
        if rec.triangles > 4 * max_faces:  # cleaning rarely removes more; skip loading the rest
            continue
        mesh = load(rec.path).mesh
        if 0 < len(quantize_mesh(mesh, bits).faces) <= max_faces:
            out.append((rec.file, Mesh(mesh.vertices, mesh.faces)))
    return out


def build(out: Path, cfg: DataConfig, targets: dict | None = None, log=print) -> dict:
    """Write train and dev shards and index.json into `out`; returns the index.

    targets: {"train": [(name, Mesh)], "dev": [(name, Mesh)]}; default: the corpus statics of each
    split (`corpus_targets`). Procedural shapes are added to train.
    """
    out = Path(out)
    tok = get_tokenizer(cfg.tokenizer, cfg.bits)
    shards = []
    if targets is None:
        targets = {split: corpus_targets(split, cfg.max_faces, cfg.bits) for split in ("train", "dev")}
    targets = {"train": list(targets.get("train", [])), "dev": list(targets.get("dev", []))}
    for s in range(cfg.procedural):
        mesh = procedural_shape(s)
        if len(quantize_mesh(mesh, cfg.bits).faces) <= cfg.max_faces:
            targets["train"].append((f"procedural/{s}", mesh))

    def add(split, source, examples):
        name = f"{split}/{len(shards):04d}.safetensors"
        write_shard(out / name, examples, {"source": source, "split": split})
        shards.append({"file": name, "split": split, "source": source, "examples": len(examples)})

    for split in ("train", "dev"):
        for i, (source, mesh) in enumerate(targets[split]):
            n = 1 if split == "dev" else cfg.augment // 2 if source.startswith("procedural/") else cfg.augment
            rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, i])
            examples = target_examples(mesh, max(n, 1), cfg, rng, tok)
            if examples:
                add(split, source, examples)
            if i % 50 == 0:
                log(f"{split} {i}/{len(targets[split])} {source}: {len(examples)} examples")
    return shard_io.write_index(out, cfg, shards)


def main(argv=None) -> None:
    shard_io.build_command(argv, "Build the mesh model's training shards (train split + augmentation + procedural) and dev shards.", "runs/mesh_data", DataConfig, build)


if __name__ == "__main__":
    main()
