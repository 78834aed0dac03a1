"""Training data of the learned skinning model: posed, augmented shapes with their skeletons and weights.

Sources:
* the shared rigs' TRAIN split (data_prep.corpus; loaded by mesh3d.io.load, which takes the bind
  pose from the inverse bind matrices and repairs NaN weights). The dev split is never written;
* pose augmentation from each rig's own animations: random (clip, frame) pairs posed by forward
  kinematics and linear blend skinning, joints moved with their frames, the same weights. Rigs
  without clips (the modular characters) get random poses (every joint turned about a random axis
  by up to `max_angle`);
* procedural creatures (data_prep.procedural.make_creature) with random poses likewise;
* coarser skeletons of the same assets (`reduced`, `reduce_skeleton`): some joints removed, their
  weight given to the nearest kept ancestor, so the model also meets 2-joint props and skeletons
  as sparse as the geometric or learned ones.

Every example is rotated about the up axis (Y), scaled per axis, normalised (bounding box centred,
longest side 1, as at inference) and sampled: `n_points` surface points with smooth normals
(rigging.skinning.learned.surface_points) and the ground-truth weights interpolated to each
point from its triangle's vertices (top-4, renormalised), points jittered. The geometric weights
(rigging.skinning.geometric) are stored the same way: the model's input prior. They are computed on
the bind pose and carried to every pose by vertex (`posed_prior` False, the default), because
users give meshes in their rest pose: a prior computed on a posed mesh is worse than any the model
meets at inference, and teaches it to override the prior too readily.

Shards are safetensors files (no pickle), one per source asset, plus index.json; the same options
give byte-identical shards. Rebuild with:

    python -m data_prep.skin_data --out runs/skin_data
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from data_prep import shards as shard_io
from data_prep.corpus import records
from data_prep.procedural import CREATURE_KINDS, make_creature
from data_prep.skeleton_data import random_poses
from mesh3d.asset import Asset, Mesh, Skeleton, forward_kinematics
from mesh3d.geometry.normalize import normalize_unit_cube
from rigging.skinning.geometric import _vertex_normals, geometric_skin
from rigging.skinning.learned import surface_points, top_k


@dataclass
class DataConfig:
    poses_per_rig: int = 16  # examples per training rig: the bind pose, then animation frames / random poses
    procedural_per_kind: int = 12  # procedural creatures per kind
    procedural_poses: int = 4  # examples per procedural creature
    max_angle: float = 0.4  # radians: random poses of rigs without clips and of creatures, per joint
    n_points: int = 2048  # surface points stored per example (training uses a subset)
    n_queries: int = 1024  # mesh vertices stored per example, where the loss is measured as at inference
    max_yaw_degrees: float = 45.0  # rotation about Y drawn from [-max, max]
    scale_range: float = 0.15  # per-axis scale drawn from [1 - r, 1 + r]
    jitter: float = 0.002  # std of Gaussian noise on the points, in normalised units
    posed_prior: bool = False  # geometric prior of each pose on its own (True) or of the bind pose, carried by vertex
    reduced: float = 0.4  # share of each asset's posed examples whose skeleton is first reduced (`reduce_skeleton`)
    seed: int = 0


def skin_example(vertices: np.ndarray, faces: np.ndarray, dense: np.ndarray, prior: np.ndarray, joints: np.ndarray,
                 rng: np.random.Generator, n_points: int, n_queries: int, yaw_degrees: float = 0.0, scale=(1.0, 1.0, 1.0),
                 jitter: float = 0.0) -> dict:
    """One normalised example.

    vertices (V, 3) and joints (J, 3) of a posed asset, faces (F, 3), dense (V, J) weights, prior
    (V, J) the geometric weights the model gets as input (see `posed_examples` for which pose's).
    Returns points (n_points, 6) float32 surface samples (xyz + unit normal) with point_index /
    point_weight (n_points, K) the weights interpolated from their triangle's vertices and
    point_prior_index / point_prior_weight the prior likewise; queries (n_queries, 6) randomly
    chosen mesh vertices (with their normals; repeated when the mesh has fewer) with query_index /
    query_weight their own weights (what inference predicts) and query_prior_*; and joints (J, 3)
    float32. All in the frame where the mesh's bounding box is centred with longest side 1, after
    rotating by `yaw_degrees` about Y and scaling each axis by `scale`. Rows without weight are 0.
    """
    a = np.radians(yaw_degrees)
    rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    m = np.diag(np.asarray(scale, dtype=np.float64)) @ rot
    normalised, center, size = normalize_unit_cube(vertices @ m.T)
    points, normals, face, bary = surface_points(normalised, faces, n_points, rng)
    if jitter:
        points = points + rng.normal(0.0, jitter, points.shape)
    point_index, point_weight = top_k(np.einsum("nc,ncj->nj", bary, dense[faces[face]]))
    point_prior_index, point_prior_weight = top_k(np.einsum("nc,ncj->nj", bary, prior[faces[face]]))
    used = np.unique(faces)  # vertices in no face have no normal and no surface to sample
    chosen = rng.choice(used, n_queries, replace=len(used) < n_queries)
    queries = np.concatenate([normalised[chosen], _vertex_normals(normalised, faces)[chosen]], 1)
    query_index, query_weight = top_k(dense[chosen])
    query_prior_index, query_prior_weight = top_k(prior[chosen])
    return {"points": np.concatenate([points, normals], 1).astype(np.float32), "point_index": point_index, "point_weight": point_weight,
            "point_prior_index": point_prior_index, "point_prior_weight": point_prior_weight,
            "queries": queries.astype(np.float32), "query_index": query_index, "query_weight": query_weight,
            "query_prior_index": query_prior_index, "query_prior_weight": query_prior_weight,
            "joints": ((joints @ m.T - center) / size).astype(np.float32)}


def reduce_skeleton(skeleton: Skeleton, dense: np.ndarray, keep: np.ndarray) -> tuple[Skeleton, np.ndarray, np.ndarray]:
    """The skeleton with only the joints in `keep` (J,) bool (roots always kept), and the weights
    dense (V, J) it implies: a removed joint's weight goes to its nearest kept ancestor, as if the
    artist had rigged the shape with fewer bones. Returns the skeleton (parents re-linked to kept
    ancestors; helper: kept joints that still carry no weight), the (V, J') weights and the (J',)
    indices of the kept joints. Teaches the model coarse skeletons (a 2-joint prop, a geometric
    skeleton) that no artist rig in the data has."""
    keep = np.asarray(keep, bool) | (skeleton.parents < 0)
    target = np.arange(len(skeleton))
    for j, p in enumerate(skeleton.parents):  # parents precede children: target[p] is final
        if not keep[j]:
            target[j] = target[p]
    kept = np.flatnonzero(keep)
    new_index = np.full(len(skeleton), -1)
    new_index[kept] = np.arange(len(kept))
    reduced = np.zeros((len(dense), len(kept)))
    np.add.at(reduced.T, new_index[target], dense.T)
    parents = np.array([new_index[target[p]] if p >= 0 else -1 for p in skeleton.parents[kept]])
    helper = skeleton.helper[kept] & (reduced.max(0) <= 0)
    return Skeleton(skeleton.joints[kept], parents, [skeleton.names[k] for k in kept], helper), reduced, kept


def random_keep(skeleton: Skeleton, rng: np.random.Generator) -> np.ndarray:
    """(J,) bool joints to keep for `reduce_skeleton`: either the joints up to a random depth, or
    each joint with a random probability (0.15-0.85 per example); at least two deforming joints."""
    depth = skeleton.depths()
    for _ in range(20):
        if rng.random() < 0.5:
            keep = depth <= rng.integers(1, max(2, depth.max()))
        else:
            keep = rng.random(len(skeleton)) < rng.uniform(0.15, 0.85)
        if (keep & ~skeleton.helper).sum() >= 2:
            return keep
    return np.ones(len(skeleton), bool)


def posed_examples(asset: Asset, n_poses: int, cfg: DataConfig, rng: np.random.Generator) -> list[dict]:
    """Examples of the bind pose and n_poses - 1 poses: frames of the asset's clips, or random poses without clips.

    The first example is never rotated or scaled, so each asset is also seen as the artist made it.
    The model's prior, the geometric weights (rigging.skinning.geometric), is the bind pose's for
    every example, or each pose's own with cfg.posed_prior. The last round(cfg.reduced * (n_poses - 1))
    examples have a reduced skeleton (`reduce_skeleton`, `random_keep`), with its own prior. Each
    example carries its skeleton's parents and helper flags.
    """
    sk, full_dense = asset.skeleton, asset.skin.dense(len(asset.skeleton))
    clips = asset.animations or random_poses(sk, max(n_poses - 1, 1), cfg.max_angle, rng)
    first_reduced = n_poses - int(round(cfg.reduced * (n_poses - 1)))
    out = []
    for i in range(n_poses):
        vertices, joints = asset.mesh.vertices, sk.joints
        if i > 0:
            anim = clips[rng.integers(len(clips))]
            frame = int(rng.integers(anim.num_frames))
            vertices = asset.posed_vertices(anim, [frame])[0]
            world = forward_kinematics(sk.parents, anim.translations[[frame]], anim.rotations[[frame]], anim.scales[[frame]])
            joints = np.asarray(world)[0, :, :3, 3]
        example_sk, dense, kept = sk, full_dense, np.arange(len(sk))
        reduced = i >= first_reduced
        if reduced:
            example_sk, dense, kept = reduce_skeleton(sk, full_dense, random_keep(sk, rng))
        if i == 0 or reduced or cfg.posed_prior:
            at = (vertices, joints[kept]) if cfg.posed_prior else (asset.mesh.vertices, sk.joints[kept])
            prior = geometric_skin(Mesh(at[0], asset.mesh.faces),
                                   Skeleton(at[1], example_sk.parents, example_sk.names, example_sk.helper)).dense(len(example_sk))
        else:
            prior = bind_prior  # the bind pose's, carried by vertex
        if i == 0:
            bind_prior = prior
        yaw = 0.0 if i == 0 else rng.uniform(-cfg.max_yaw_degrees, cfg.max_yaw_degrees)
        scale = np.ones(3) if i == 0 else rng.uniform(1 - cfg.scale_range, 1 + cfg.scale_range, 3)
        example = skin_example(vertices, asset.mesh.faces, dense, prior, joints[kept], rng, cfg.n_points, cfg.n_queries, yaw, scale,
                               cfg.jitter if i else 0.0)
        out.append(example | {"parents": example_sk.parents, "helper": example_sk.helper})
    return out


INDEX = ("point_index", "query_index", "point_prior_index", "query_prior_index")
HALF = ("points", "queries", "point_weight", "query_weight", "point_prior_weight", "query_prior_weight")  # stored as float16
FIXED = INDEX + HALF


def write_shard(path: Path, examples: list[dict], metadata: dict) -> None:
    """Examples of one asset (each with its skeleton's joints, parents and helper flags) as one shard (data_prep.shards)."""
    fixed = {key: np.stack([e[key] for e in examples]) for key in FIXED}
    fixed |= {key: fixed[key].astype(np.float16) for key in HALF}
    ragged = {"joints": [np.asarray(e["joints"], np.float32) for e in examples],
              "parents": [np.asarray(e["parents"], np.int64) for e in examples],
              "helper": [np.asarray(e["helper"], np.uint8) for e in examples]}
    shard_io.write_shard(path, fixed, ragged, metadata)


def read_shards(folder) -> list[dict]:
    """Training examples: dicts with points (N, 6), point_index (N, K) long, point_weight (N, K),
    queries (M, 6), query_index (M, K) long, query_weight (M, K), the same four for the geometric
    prior (point_prior_*, query_prior_*), joints (J, 3) float32, parents (J,) long, helper (J,) bool,
    and source."""
    examples = shard_io.read_shards(folder, "train", FIXED, ("joints", "parents", "helper"), "python -m data_prep.skin_data")
    for e in examples:
        e.update({key: e[key].long() for key in INDEX}, helper=e["helper"].bool())
    return examples


def build(out: Path, cfg: DataConfig, rigs: list | None = None, log=print) -> dict:
    """Write the training shards and index.json into `out`; returns the index.

    rigs: corpus Records to use (default: every rig record of the TRAIN split; never dev).
    """
    from mesh3d.io import load

    out = Path(out)
    shards = []
    rigs = rigs if rigs is not None else records(kind="rig", split="train")

    def add(source, asset, examples):
        name = f"train/{len(shards):04d}.safetensors"
        write_shard(out / name, examples, {"source": source, "split": "train"})
        shards.append({"file": name, "split": "train", "source": source, "examples": len(examples), "joints": len(asset.skeleton)})

    for i, rec in enumerate(rigs):
        asset = load(rec.path)
        if asset.skeleton is None or asset.skin is None or len(asset.skeleton) < 2:
            log(f"skip {rec.file}: no skeleton with at least 2 joints and skin")
            continue
        add(rec.file, asset, posed_examples(asset, cfg.poses_per_rig, cfg, np.random.default_rng([cfg.seed, 0, i])))
        log(f"{rec.file}: {cfg.poses_per_rig} examples, {len(asset.skeleton)} joints")
    for k, kind in enumerate(CREATURE_KINDS):
        for s in range(cfg.procedural_per_kind):
            asset = make_creature(kind, s)
            add(f"procedural/{kind}/{s}", asset, posed_examples(asset, cfg.procedural_poses, cfg, np.random.default_rng([cfg.seed, 2, k, s])))
    log(f"procedural: {cfg.procedural_per_kind} creatures x {len(CREATURE_KINDS)} kinds, {cfg.procedural_poses} examples each")
    return shard_io.write_index(out, cfg, shards)


def main(argv=None) -> None:
    shard_io.build_command(argv, "Build the skinning model's training shards (train split + augmentation).", "runs/skin_data", DataConfig, build)


if __name__ == "__main__":
    main()
