"""Training data of the learned skeleton model: posed, augmented shapes with their joint trees.

Sources:
* the shared rigs' TRAIN split (data_prep.corpus; the dev split is written separately, bind pose
  only, for held-out evaluation, and is never mixed into training shards);
* pose augmentation from each rig's own animations: random (clip, frame) pairs posed by forward
  kinematics and linear blend skinning (Asset.posed_vertices), joints moved with their frames;
* procedural creatures (data_prep.procedural.make_creature), which have no clips: each gets
  random poses (every joint turned about a random axis by up to `procedural_max_angle`).

Every example is then rotated about the up axis (Y), scaled per axis, normalised (bounding box
centred, longest side 1: mesh3d.geometry.normalize, as at inference) and sampled: `n_points`
surface points with face normals, jittered. Joints are the weighted joints (tokenizer.target_joints).

Shards are safetensors files (no pickle), one per source asset, plus index.json; the same options
give byte-identical shards. Rebuild with:

    python -m data_prep.skeleton_data --out runs/skeleton_data
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep import shards as shard_io
from data_prep.corpus import records
from data_prep.procedural import CREATURE_KINDS, make_creature, pose_animation
from mesh3d.asset import Animation, Asset, Skeleton, forward_kinematics
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.geometry.sampling import sample_surface
from rigging.skeleton.tokenizer import target_joints


@dataclass
class DataConfig:
    poses_per_rig: int = 40  # examples per training rig: the bind pose, then animation frames
    procedural_per_kind: int = 32  # procedural creatures per kind (data_prep.procedural), poses_per_rig // 4 examples each
    procedural_max_angle: float = 0.35  # radians: random pose of procedural creatures, per joint
    n_points: int = 4096  # surface points stored per example (training may use a subset)
    max_yaw_degrees: float = 30.0  # rotation about Y drawn from [-max, max]
    scale_range: float = 0.15  # per-axis scale drawn from [1 - r, 1 + r]
    jitter: float = 0.002  # std of Gaussian noise on the points, in normalised units
    seed: int = 0


def shape_example(vertices: np.ndarray, faces: np.ndarray, joints: np.ndarray, rng: np.random.Generator,
                  n_points: int, yaw_degrees: float = 0.0, scale=(1.0, 1.0, 1.0), jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One normalised example: points (n_points, 6) float32 = xyz + normals, joints (J, 3) float32.

    The mesh and joints are rotated by `yaw_degrees` about Y, scaled per axis, then normalised by
    the mesh's bounding box (centred, longest side 1); points get Gaussian noise of std `jitter`.
    """
    a = np.radians(yaw_degrees)
    rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    m = np.diag(np.asarray(scale, dtype=np.float64)) @ rot  # rotate, then scale each axis
    v = vertices @ m.T
    normalised, center, size = normalize_unit_cube(v)
    points, normals = sample_surface(normalised, faces, n_points, rng)
    if jitter:
        points = points + rng.normal(0.0, jitter, points.shape)
    j = (joints @ m.T - center) / size
    return np.concatenate([points, normals], axis=1).astype(np.float32), j.astype(np.float32)


def posed_examples(asset: Asset, n_poses: int, cfg: DataConfig, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(points, joints, parents) for the bind pose and n_poses - 1 random animation frames.

    Without animations every example is the bind pose (with its own augmentation). The first
    example is never rotated or scaled, so each asset is also seen as the artist made it.
    """
    kept, parents = target_joints(asset.skeleton, asset.skin)
    if len(kept) < 2:
        raise Mesh3DError(f"{asset.name}: only {len(kept)} weighted joint(s); a skeleton model needs at least 2")
    mesh = asset.mesh
    out = []
    for i in range(n_poses):
        vertices, joints = mesh.vertices, asset.skeleton.joints[kept]
        if i > 0 and asset.animations:
            anim = asset.animations[rng.integers(len(asset.animations))]
            frame = int(rng.integers(anim.num_frames))
            vertices = asset.posed_vertices(anim, [frame])[0]
            world = forward_kinematics(asset.skeleton.parents, anim.translations[[frame]], anim.rotations[[frame]], anim.scales[[frame]])
            joints = world[0, kept, :3, 3]
        yaw = 0.0 if i == 0 else rng.uniform(-cfg.max_yaw_degrees, cfg.max_yaw_degrees)
        scale = np.ones(3) if i == 0 else rng.uniform(1 - cfg.scale_range, 1 + cfg.scale_range, 3)
        points, j = shape_example(vertices, mesh.faces, joints, rng, cfg.n_points, yaw, scale, cfg.jitter if i else 0.0)
        out.append((points, j, parents))
    return out


def random_poses(skeleton: Skeleton, n: int, max_angle: float, rng: np.random.Generator) -> list[Animation]:
    """n one-frame clips turning every non-root joint about a random axis by up to max_angle radians."""
    clips = []
    for i in range(n):
        axes = rng.normal(size=(len(skeleton), 3))
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        angles = rng.uniform(0.0, max_angle, len(skeleton))
        turns = {name: axes[j] * angles[j] for j, name in enumerate(skeleton.names) if skeleton.parents[j] >= 0}
        clips.append(pose_animation(skeleton, turns, name=f"random_{i}"))
    return clips


def write_shard(path: Path, examples: list, metadata: dict) -> None:
    """Examples (points (N, 6), joints (J, 3), parents (J,)) as one shard (data_prep.shards)."""
    shard_io.write_shard(path, {"points": np.stack([e[0] for e in examples]).astype(np.float16)},
                         {"joints": [e[1] for e in examples], "parents": [np.asarray(e[2], dtype=np.int64) for e in examples]}, metadata)


def read_shards(folder, split: str) -> list[dict]:
    """Examples of a split: dicts with points (N, 6) float32, joints (J, 3) float32, parents (J,), source."""
    return shard_io.read_shards(folder, split, ("points",), ("joints", "parents"), "python -m data_prep.skeleton_data")


def build(out: Path, cfg: DataConfig, rigs: dict | None = None, log=print) -> dict:
    """Write train and dev shards and index.json into `out`; returns the index.

    rigs: {"train": [Record], "dev": [Record]}; default: the corpus's rig records of each split.
    """
    from mesh3d.io import load

    out = Path(out)
    shards = []
    rigs = rigs if rigs is not None else {split: records(kind="rig", split=split) for split in ("train", "dev")}

    def add(split, source, examples):
        name = f"{split}/{len(shards):04d}.safetensors"
        write_shard(out / name, examples, {"source": source, "split": split})
        shards.append({"file": name, "split": split, "source": source, "examples": len(examples)})

    for split in ("train", "dev"):
        for i, rec in enumerate(rigs.get(split, [])):
            asset = load(rec.path)
            rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, i])
            try:
                examples = posed_examples(asset, cfg.poses_per_rig if split == "train" else 1, cfg, rng)
            except Mesh3DError as e:
                log(f"skip {rec.file}: {e}")
                continue
            add(split, rec.file, examples)
            log(f"{split} {rec.file}: {len(examples)} examples, {len(examples[0][1])} joints")
    n_poses = max(1, cfg.poses_per_rig // 4)
    for k, kind in enumerate(CREATURE_KINDS):
        for s in range(cfg.procedural_per_kind):
            asset = make_creature(kind, s)
            rng = np.random.default_rng([cfg.seed, 2, k, s])
            asset.animations = random_poses(asset.skeleton, n_poses, cfg.procedural_max_angle, rng)
            add("train", f"procedural/{kind}/{s}", posed_examples(asset, n_poses, cfg, rng))
    if cfg.procedural_per_kind:
        log(f"procedural: {cfg.procedural_per_kind} creatures x {len(CREATURE_KINDS)} kinds, {n_poses} examples each")
    return shard_io.write_index(out, cfg, shards)


def main(argv=None) -> None:
    shard_io.build_command(argv, "Build the skeleton model's training shards (train split + augmentation) and dev shards.", "runs/skeleton_data", DataConfig, build)


if __name__ == "__main__":
    main()
