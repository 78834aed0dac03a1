"""Learned skeletons: the shared decoder writes a joint tree token by token, conditioned on the shape.

Model = shape encoder (surface points with normals -> latent tokens, the prefix) + the one decoder
of mesh3d.nn.model, over the tokens of rigging.skeleton.tokenizer. Training is a `Task` for the
shared trainer (`SkeletonTask`, data from data_prep.skeleton_data):

    python -m data_prep.skeleton_data --out runs/skeleton_data
    mesh3d train skeleton rigging/weights/skeleton_train.toml   # = python -m mesh3d.nn.trainer the same file

Inference (`learned_skeleton`) normalises the mesh exactly as the data was (bounding box centred,
longest side 1), samples surface points, decodes greedily with the KV cache and the tokenizer's
grammar (so the result is always a tree), maps the joints back to the mesh's frame and checks
the result (`skeleton_problems`: joint count, joints inside or near the surface).

Dev metrics (CD-J2J, CD-J2B, CD-B2B x100 on the 11 dev rigs, rigging.eval):

    python -m rigging.skeleton.learned evaluate --weights rigging/weights/skeleton.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from mesh3d.asset import Mesh, Skeleton
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.distance import mean_nearest
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.geometry.sampling import face_normals_areas, sample_surface, subsample, winding_number
from mesh3d.nn.model import ConditionedGPT
from mesh3d.nn.shape_encoder import shape_conditioned_gpt
from mesh3d.nn.trainer import batch_indices
from mesh3d.nn.weights import load_weights, read_metadata, save_weights
from rigging.skeleton.tokenizer import BOS, EOS, PAD, SkeletonTokenizer

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "skeleton.safetensors"
TASK_SPEC = "rigging.skeleton.learned:SkeletonTask"
BEAM = 1  # default decoding: greedy (the card's dev table compares beams)
# `auto` rejects a learned skeleton whose bones lie this much farther from the surface than the
# geometric skeleton's (measured on held-out procedural creatures and the dev rigs: see skeleton_problems).
COVERAGE_RATIO = 1.5

# Options that fix the architecture (stored in the weights' metadata; everything else is training).
MODEL_DEFAULTS = dict(bits=7, max_joints=64, n_points=2048, n_latents=64, queries="fps", enc_embd=128,
                      enc_layers=1, n_layer=4, n_head=4, n_embd=256, dropout=0.0)


@dataclass
class SkeletonModel:
    """A skeleton model ready to use: the network, its tokenizer and its number of input points."""

    net: ConditionedGPT
    tok: SkeletonTokenizer
    n_points: int


def build_model(options: dict) -> SkeletonModel:
    """The encoder + decoder and the tokenizer described by model options (MODEL_DEFAULTS keys)."""
    o = MODEL_DEFAULTS | {k: v for k, v in options.items() if k in MODEL_DEFAULTS}
    tok = SkeletonTokenizer(o["bits"], o["max_joints"])
    return SkeletonModel(shape_conditioned_gpt(tok.vocab_size, tok.max_tokens, o), tok, o["n_points"])


def pad_tokens(sequences: list[np.ndarray]) -> torch.Tensor:
    """(B, T) long: sequences padded with PAD to the longest."""
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = torch.from_numpy(s)
    return out


def generate_joints(model: ConditionedGPT, tok: SkeletonTokenizer, points: torch.Tensor, beam: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grammar-constrained skeletons for normalised points (B, N, 6): (joints, parents) each.

    beam: 1 decodes greedily; more keeps that many candidates and returns the most likely skeleton.
    """
    prompt = torch.full((points.size(0), 1), BOS, dtype=torch.long)
    if beam > 1:
        rows = [row for row, _ in model.beam_search(points, prompt, tok.max_tokens - 1, beam, grammar=tok.grammar(), eos_id=EOS)]
    else:
        rows = model.generate(points, prompt, tok.max_tokens - 1, greedy=True, grammar=tok.grammar(), eos_id=EOS)
    return [tok.decode(row.tolist()) for row in rows]


class SkeletonTask:
    """`mesh3d.nn.trainer.Task` of the skeleton model.

    data_dir: shards of data_prep.skeleton_data. shuffle_siblings: probability that an example's
    siblings are shuffled (augmentation) rather than in the canonical spatial order. dev_examples:
    how many dev examples `evaluate` uses (all 11 dev rigs by default). best_path: where evaluate
    saves the weights with the lowest dev loss so far ("" to skip). Model options: MODEL_DEFAULTS.
    """

    def __init__(self, data_dir: str = "runs/skeleton_data", shuffle_siblings: float = 0.5, dev_examples: int = 0,
                 best_path: str = "", seed: int = 0, **model_options):
        unknown = set(model_options) - set(MODEL_DEFAULTS)
        if unknown:
            raise Mesh3DError(f"unknown skeleton task options {sorted(unknown)}; known: {sorted(MODEL_DEFAULTS)}")
        from data_prep.skeleton_data import read_shards

        self.options = MODEL_DEFAULTS | model_options
        self.train_set = read_shards(data_dir, "train")
        self.dev_set = read_shards(data_dir, "dev")
        if dev_examples:
            self.dev_set = self.dev_set[:dev_examples]
        self.shuffle_siblings, self.seed, self.best_path = shuffle_siblings, seed, best_path
        self.best = read_metadata(best_path).get("dev_loss", float("inf")) if best_path and Path(best_path).is_file() else float("inf")
        self.tok = SkeletonTokenizer(self.options["bits"], self.options["max_joints"])

    def build_model(self) -> ConditionedGPT:
        return build_model(self.options).net

    def _points(self, example: dict, rng: np.random.Generator | None) -> torch.Tensor:
        """n_points of the stored points: a random subset (training) or the first ones (evaluation)."""
        return subsample(example["points"], self.options["n_points"], rng)

    def batch(self, step, rank, world_size, batch_size):
        index = batch_indices(len(self.train_set), batch_size, step, rank, world_size, self.seed)
        points, tokens = [], []
        for i in index.tolist():
            ex = self.train_set[i]
            rng = np.random.default_rng([self.seed, step, i])
            points.append(self._points(ex, rng))
            shuffle = rng if rng.random() < self.shuffle_siblings else None
            tokens.append(self.tok.encode(ex["joints"].numpy(), ex["parents"].numpy(), shuffle))
        return {"points": torch.stack(points), "tokens": pad_tokens(tokens)}

    def loss(self, model, batch):
        return model(batch["points"], batch["tokens"], pad_id=PAD)

    def evaluate(self, model) -> dict:
        """Dev loss (canonical order) and, from greedy generation, the mean joint-count error.

        The skeleton metrics (CD-J2J, ...) are measured on the full dev assets by `evaluate_dev`.
        """
        points = torch.stack([self._points(ex, None) for ex in self.dev_set])
        tokens = pad_tokens([self.tok.encode(ex["joints"].numpy(), ex["parents"].numpy()) for ex in self.dev_set])
        dev_loss = model(points, tokens, pad_id=PAD).item()
        count = [abs(len(joints) - len(ex["joints"])) for ex, (joints, _) in zip(self.dev_set, generate_joints(model, self.tok, points))]
        metrics = {"dev_loss": dev_loss, "dev_joint_count_error": float(np.mean(count))}
        if self.best_path and dev_loss < self.best:
            self.best = dev_loss
            save_weights(model, self.best_path, {"task": TASK_SPEC, "task_options": self.options, "dev_loss": dev_loss})
        return metrics


# ----------------------------------------------------------------------------- inference


def load_skeleton_model(weights=DEFAULT_WEIGHTS) -> SkeletonModel:
    """The model stored in a weights file (its metadata holds the model options)."""
    weights = Path(weights)
    if not weights.is_file():
        raise Mesh3DError(f"skeleton model weights not found: {weights}")
    meta = read_metadata(weights)
    model = build_model(meta.get("task_options", {}))
    load_weights(model.net, weights)
    model.net.eval()
    return model


def skeleton_problems(skeleton: Skeleton, mesh: Mesh, max_joints: int = 64, surface_distance: float = 0.1,
                      reference: Skeleton | None = None, coverage_ratio: float = COVERAGE_RATIO) -> list[str]:
    """Why a predicted skeleton should not be used (empty when it looks sane).

    Checks a sane joint count (2 .. max_joints), joints inside the mesh's bounding box (5 %
    margin), and every joint inside the mesh (winding number > 0.5) or within `surface_distance`
    (fraction of the longest bounding-box side) of its surface. On the shared rigs' own
    skeletons only the two toy rigs whose artist joints float beside the mesh (Bouncer,
    Enemy_Flying) fail the last check.

    reference: a skeleton known to reach every part of the shape (the geometric one, which follows
    the medial axis). The predicted one fails when its bones are on average more than
    `coverage_ratio` times farther from the surface than the reference's: it left out a limb, a
    wing or a tail. (On held-out procedural creatures this catches the dragons, spiders and birds
    whose wings or legs the model dropped; on the dev rigs it rejects none but the Bouncer.)
    """
    problems = []
    n = len(skeleton)
    if not 2 <= n <= max_joints:
        problems.append(f"{n} joints (expected 2 to {max_joints})")
    normalised, center, scale = normalize_unit_cube(mesh.vertices)
    joints = (skeleton.joints - center) / scale
    outside = int((np.abs(joints) > 0.55).any(1).sum())
    if outside:
        problems.append(f"{outside} joint(s) outside the mesh's bounding box")
    points, normals = sample_surface(normalised, mesh.faces, 4096, np.random.default_rng(0))
    area = face_normals_areas(normalised, mesh.faces)[1].sum()
    inside = winding_number(joints, points, normals, area) > 0.5
    near = cKDTree(points).query(joints)[0] <= surface_distance
    stray = int((~inside & ~near).sum())
    if stray:
        problems.append(f"{stray} joint(s) outside the mesh and farther than {surface_distance:g} of its size from the surface")
    if reference is not None:
        ratio = _bone_distance(skeleton, points, center, scale) / max(_bone_distance(reference, points, center, scale), 1e-9)
        if ratio > coverage_ratio:
            problems.append(f"its bones are {ratio:.1f}x farther from the surface than the geometric skeleton's (a part of the shape has no bone)")
    return problems


def _bone_distance(skeleton: Skeleton, points: np.ndarray, center: np.ndarray, scale: float) -> float:
    """Mean distance from `points` (normalised frame) to the nearest bone of `skeleton` (mesh frame)."""
    from rigging.eval import sample_bones

    joints = (skeleton.joints - center) / scale
    bones = np.array([(p, j) for j, p in enumerate(skeleton.parents) if p >= 0], dtype=np.int64).reshape(-1, 2)
    return mean_nearest(points, sample_bones(joints, bones, 0.005))


def learned_skeleton(mesh: Mesh, weights=DEFAULT_WEIGHTS, seed: int = 0, check: bool = True, model=None,
                     reference: Skeleton | None = None, beam: int = BEAM) -> Skeleton:
    """A skeleton for `mesh` (Y up) written by the learned model, in the mesh's own frame.

    weights: a file saved by training (ignored when `model`, a loaded SkeletonModel, is given). seed: surface sampling seed (same seed, same skeleton).
    check: raise Mesh3DError when `skeleton_problems` finds any, so callers can fall back.
    reference: passed to `skeleton_problems` (the coverage check against another skeleton).
    beam: candidates kept while decoding (1: greedy; see `generate_joints`).
    Joints are named joint_0 .. in breadth-first order from the root; frames are world-aligned.
    """
    model = model if model is not None else load_skeleton_model(weights)
    normalised, center, scale = normalize_unit_cube(mesh.vertices)
    points, normals = sample_surface(normalised, mesh.faces, model.n_points, np.random.default_rng(seed))
    cond = torch.from_numpy(np.concatenate([points, normals], 1)).float()[None]
    joints, parents = generate_joints(model.net, model.tok, cond, beam)[0]
    skeleton = Skeleton(joints * scale + center, parents, [f"joint_{i}" for i in range(len(joints))])
    if check:
        problems = skeleton_problems(skeleton, mesh, model.tok.max_joints, reference=reference)
        if problems:
            raise Mesh3DError("the learned skeleton failed its checks: " + "; ".join(problems))
    return skeleton


# ----------------------------------------------------------------------------- dev evaluation


def evaluate_dev(weights=DEFAULT_WEIGHTS, geometric: bool = False, procedural_seed: int | None = None, beam: int = BEAM,
                 log=print) -> dict:
    """CD-J2J, CD-J2B, CD-B2B (x100, rigging.eval) of the learned skeleton on every dev rig.

    geometric: also measure rigging.skeleton.geometric's skeleton on the same rigs, and what `auto`
    picks (learned unless its checks, with the geometric skeleton as coverage reference, fail).
    procedural_seed: instead of the dev rigs, one procedural creature of each kind made with this
    seed (pick one the training data did not use: seeds >= DataConfig.procedural_per_kind).
    beam: decoding of the learned skeleton (1: greedy).
    Returns {"rows": [per-rig dicts], "mean": {method: {metric: mean}}}; a learned skeleton that
    fails its checks is still measured (and its problems listed), so the figures hide nothing.
    """
    from data_prep.corpus import records
    from mesh3d.io import load
    from rigging.eval import skeleton_metrics

    model = load_skeleton_model(weights)
    methods = {"learned": lambda mesh: learned_skeleton(mesh, model=model, check=False, beam=beam)}
    if geometric:
        from rigging.skeleton.geometric import geometric_skeleton

        methods["geometric"] = geometric_skeleton
    rows = []
    if procedural_seed is None:
        cases = ((rec.file, lambda rec=rec: load(rec.path)) for rec in records(kind="rig", split="dev"))
    else:
        from data_prep.procedural import CREATURE_KINDS, make_creature

        cases = ((f"procedural/{k}/{procedural_seed}", lambda k=k: make_creature(k, procedural_seed)) for k in CREATURE_KINDS)
    for label, make in cases:
        asset = make()
        preds = {}
        for name, method in methods.items():
            t0 = time.perf_counter()
            preds[name] = method(asset.mesh)
            seconds = time.perf_counter() - t0
            rows.append({"rig": label, "method": name, "joints": len(preds[name]), "seconds": seconds,
                         **skeleton_metrics(preds[name], asset.skeleton, asset.mesh, asset.skin)})
        learned_row = rows[-len(methods)]
        learned_row["problems"] = skeleton_problems(preds["learned"], asset.mesh, model.tok.max_joints, reference=preds.get("geometric"))
        if geometric:  # what `auto` (rigging.skeleton.auto) picks: learned unless its checks fail
            picked = rows[-1] if learned_row["problems"] else learned_row
            rows.append(picked | {"method": "auto", "picked": picked["method"],
                                  "seconds": rows[-1]["seconds"] + learned_row["seconds"]})
        for row in rows[-len(methods) - geometric:]:
            _log_row(log, row)
    mean = {m: {k: float(np.mean([r[k] for r in rows if r["method"] == m])) for k in ("cd_j2j", "cd_j2b", "cd_b2b", "seconds")}
            for m in dict.fromkeys(r["method"] for r in rows)}
    for m, v in mean.items():
        log(f"mean {m:9s} J2J {v['cd_j2j']:.2f}  J2B {v['cd_j2b']:.2f}  B2B {v['cd_b2b']:.2f}  ({v['seconds']:.2f} s per rig)")
    return {"rows": rows, "mean": mean}


def _log_row(log, row: dict) -> None:
    log(f"{row['rig']:45s} {row['method']:9s} {row['joints']:3d} joints {row['seconds']:5.2f} s  "
        f"J2J {row['cd_j2j']:6.2f}  J2B {row['cd_j2b']:6.2f}  B2B {row['cd_b2b']:6.2f}"
        + (f"  -> {row['picked']}" if "picked" in row else "")
        + (f"  problems: {'; '.join(row['problems'])}" if row.get("problems") and "picked" not in row else ""))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Learned skeletons: dev-split evaluation and generation speed.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("evaluate", help="CD-J2J/J2B/B2B x100 on the 11 dev rigs")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--geometric", action="store_true", help="also measure the geometric skeleton and auto's pick")
    p.add_argument("--procedural-seed", type=int, default=None,
                   help="evaluate on one procedural creature per kind made with this seed instead of the dev rigs")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--beam", type=int, default=BEAM, help=f"beam width of the decoding (1: greedy; default {BEAM})")
    p = sub.add_parser("speed", help="time learned_skeleton (load excluded) on one rig of the corpus")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--rig", default="modular_women/Suit.glb", help="corpus file (default: a 50-joint dev character)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--beam", type=int, default=BEAM, help=f"beam width of the decoding (1: greedy; default {BEAM})")
    args = parser.parse_args(argv)
    if args.command == "speed":
        from data_prep.corpus import corpus_dir
        from mesh3d.io import load

        if corpus_dir() is None:
            raise Mesh3DError("shared corpus not found: set MESH3D_DATA to the folder holding manifest.json")
        mesh, model = load(corpus_dir() / args.rig).mesh, load_skeleton_model(args.weights)
        seconds = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            skeleton = learned_skeleton(mesh, model=model, check=False, beam=args.beam)
            seconds.append(time.perf_counter() - t0)
        print(f"{args.rig}: {len(skeleton)} joints, median {np.median(seconds):.2f} s over {args.repeat} runs "
              f"(min {min(seconds):.2f}, max {max(seconds):.2f}), {torch.get_num_threads()} torch threads")
        return
    result = evaluate_dev(args.weights, args.geometric, args.procedural_seed, args.beam)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
