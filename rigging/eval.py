"""Rig evaluation: the skeleton and skinning metrics of RigNet / Puppeteer, and deformation error.

All distances are measured after normalising by the *ground-truth mesh's* bounding box (centred,
longest side 1, so coordinates lie in [-0.5, 0.5]) and reported x100, as the papers do:

* CD-J2J: symmetric chamfer distance between the two joint sets;
* CD-J2B: joints of each skeleton to points sampled on the other's bones, averaged both ways;
* CD-B2B: symmetric chamfer distance between the bone samples.

Skinning is judged with the ground-truth skeleton given (L1, precision and recall of the set of
influencing joints) and by deformation: the ground-truth clips pose the mesh with the predicted
and with the ground-truth weights, and the vertex distance is reported in % of the bbox diagonal.
Rigs without clips (and, for a second look, every rig) can also be posed by our own motion
library (`library_clips`).

Bones are sampled every ``BONE_STEP`` (ends included) and joints closer than ``MERGE_DISTANCE`` are
merged first. Only ground-truth joints that carry skin weight count (helpers such as IK targets or
a bare root at the feet are dropped, their children reattached to the nearest kept ancestor).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

from mesh3d.asset import Asset, Mesh, Skeleton, Skin, forward_kinematics, linear_blend_skinning
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.distance import chamfer, mean_nearest
from mesh3d.geometry.normalize import normalize_unit_cube

BONE_STEP = 0.005
MERGE_DISTANCE = 0.0025
# A joint influences a vertex when its weight exceeds this (RigNet's precision/recall threshold).
INFLUENCE = 1e-4
# Frames sampled per clip for the deformation error (evenly spread, ends included).
POSE_FRAMES = 4
SKIN_METHODS = ("geometric", "blender", "learned")
SKELETON_METHODS = ("geometric", "learned", "auto")  # rigging.skeleton.auto.make_skeleton


def normalised_skeleton(
    skeleton: Skeleton, mesh: Mesh, keep: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Joints and bones ready for the metrics.

    skeleton: in ``mesh``'s frame. mesh: the (ground-truth) mesh whose bounding box normalises.
    keep: (J,) bool joints to keep (default all); a dropped joint's children hang from its nearest
    kept ancestor. Returns joints (J', 3) in the normalised frame, after merging joints closer
    than ``MERGE_DISTANCE`` into their mean, and bones (B, 2) index pairs (parent, child).
    """
    _, centre, scale = normalize_unit_cube(mesh.vertices)
    joints = (skeleton.joints - centre) / scale
    keep = np.ones(len(joints), bool) if keep is None else np.asarray(keep, bool)
    bones = []
    for j, p in enumerate(skeleton.parents):
        while p >= 0 and not keep[p]:
            p = skeleton.parents[p]
        if keep[j] and p >= 0:
            bones.append((p, j))
    bones = np.array(bones, np.int64).reshape(-1, 2)

    # Merge near-coincident joints: clusters of the "closer than MERGE_DISTANCE" graph.
    kept = np.flatnonzero(keep)
    slot = -np.ones(len(joints), np.int64)
    slot[kept] = np.arange(len(kept))
    joints, bones = joints[kept], slot[bones]
    pairs = cKDTree(joints).query_pairs(MERGE_DISTANCE, output_type="ndarray") if len(joints) else np.zeros((0, 2), int)
    n = len(joints)
    _, label = connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)), directed=False)
    merged = np.zeros((label.max(initial=-1) + 1, 3))
    np.add.at(merged, label, joints)
    merged /= np.bincount(label)[:, None]
    bones = label[bones]
    bones = np.unique(bones[bones[:, 0] != bones[:, 1]], axis=0)
    return merged, bones


def sample_bones(joints: np.ndarray, bones: np.ndarray, step: float = BONE_STEP) -> np.ndarray:
    """(N, 3) points every ``step`` along each bone, both ends included; the joints alone when there
    are no bones (a one-joint skeleton is still a point set)."""
    out = [joints[np.setdiff1d(np.arange(len(joints)), bones.ravel())]]
    for a, b in bones:
        n = max(int(np.round(np.linalg.norm(joints[b] - joints[a]) / step)), 1)
        t = np.arange(n + 1)[:, None] / n
        out.append(joints[a] + t * (joints[b] - joints[a]))
    return np.concatenate(out)


def chamfer_j2j(joints_a: np.ndarray, joints_b: np.ndarray) -> float:
    """CD-J2J x100 between two normalised joint sets (J, 3)."""
    return 100 * chamfer(joints_a, joints_b)


def chamfer_j2b(joints_a: np.ndarray, bones_a: np.ndarray, joints_b: np.ndarray, bones_b: np.ndarray) -> float:
    """CD-J2B x100: each skeleton's joints to the other's bone samples, averaged both ways."""
    return 100 * (mean_nearest(joints_a, sample_bones(joints_b, bones_b)) + mean_nearest(joints_b, sample_bones(joints_a, bones_a))) / 2


def chamfer_b2b(joints_a: np.ndarray, bones_a: np.ndarray, joints_b: np.ndarray, bones_b: np.ndarray) -> float:
    """CD-B2B x100: symmetric chamfer distance between the two skeletons' bone samples."""
    return 100 * chamfer(sample_bones(joints_a, bones_a), sample_bones(joints_b, bones_b))


def weighted_joints(skin: Skin, num_joints: int) -> np.ndarray:
    """(J,) bool: joints that carry weight on at least one vertex."""
    return skin.dense(num_joints).max(0) > 1e-6


def skeleton_metrics(pred: Skeleton, gt: Skeleton, gt_mesh: Mesh, gt_skin: Optional[Skin] = None) -> dict:
    """CD-J2J, CD-J2B and CD-B2B (x100) of a predicted skeleton against the ground truth.

    Both skeletons are in ``gt_mesh``'s frame. With ``gt_skin``, only ground-truth joints carrying
    weight count (else joints not flagged ``helper``). Returns ``{"cd_j2j", "cd_j2b", "cd_b2b"}``.
    """
    keep = weighted_joints(gt_skin, len(gt)) if gt_skin is not None else ~gt.helper
    ja, ba = normalised_skeleton(pred, gt_mesh)
    jb, bb = normalised_skeleton(gt, gt_mesh, keep)
    return {
        "cd_j2j": chamfer_j2j(ja, jb),
        "cd_j2b": chamfer_j2b(ja, ba, jb, bb),
        "cd_b2b": chamfer_b2b(ja, ba, jb, bb),
    }


def skin_l1(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over vertices of sum_j |pred_j - gt_j| for dense (V, J) weights (0 = identical, 2 = disjoint)."""
    return float(np.abs(pred - gt).sum(1).mean())


def skin_precision_recall(pred: np.ndarray, gt: np.ndarray, threshold: float = INFLUENCE) -> tuple[float, float]:
    """Precision and recall of the joints influencing each vertex, averaged over vertices.

    pred, gt: dense (V, J) weights; joint j influences vertex v when its weight is above
    ``threshold``. Per vertex, precision = |pred & gt| / |pred| and recall = |pred & gt| / |gt|;
    a vertex with no predicted influence (a skinning failure) has precision 0.
    """
    p, g = pred > threshold, gt > threshold
    both = (p & g).sum(1)
    precision = np.divide(both, p.sum(1), out=np.zeros(len(p)), where=p.any(1))
    recall = np.divide(both, g.sum(1), out=np.ones(len(g)), where=g.any(1))
    return float(precision.mean()), float(recall.mean())


def deformation_error(asset: Asset, pred: np.ndarray, frames_per_clip: int = POSE_FRAMES) -> tuple[float, float]:
    """Mean and max vertex distance (% of the mesh's bbox diagonal) between the mesh posed with
    ``pred`` (dense (V, J) weights) and with the asset's own weights, over ``frames_per_clip``
    frames of each of its clips. Unweighted vertices stay at rest, as in Blender; (nan, nan)
    without clips."""
    if not asset.animations:
        return float("nan"), float("nan")
    k = max(1, int((pred > 0).sum(1).max()))
    indices = np.argsort(-pred, axis=1, kind="stable")[:, :k]
    weights = np.take_along_axis(pred, indices, 1)
    rest = asset.mesh.vertices * (1 - weights.sum(1, keepdims=True))
    bind = asset.skeleton.bind_matrices()
    diagonal = float(np.linalg.norm(np.ptp(asset.mesh.vertices, axis=0)))
    dists = []
    for anim in asset.animations:
        frames = np.unique(np.linspace(0, len(anim.translations) - 1, frames_per_clip).round().astype(int))
        gt = asset.posed_vertices(anim, frames)
        world = forward_kinematics(asset.skeleton.parents, anim.translations[frames], anim.rotations[frames], anim.scales[frames])
        posed = linear_blend_skinning(asset.mesh.vertices, bind, world, indices, weights) + rest
        dists.append(np.linalg.norm(np.asarray(posed) - np.asarray(gt), axis=-1).ravel())
    d = 100 * np.concatenate(dists) / diagonal
    return float(d.mean()), float(d.max())


def predict_skin(asset: Asset, method: str) -> np.ndarray:
    """Dense (V, J) weights for the asset's mesh on its own skeleton by ``method``
    (``geometric``: ours; ``blender``: Blender's bone heat, rows of 0 where it failed; ``learned``:
    rigging.skinning.learned with the shipped weights)."""
    if method == "geometric":
        from rigging.skinning.geometric import geometric_skin

        return geometric_skin(asset.mesh, asset.skeleton).dense(len(asset.skeleton))
    if method == "blender":
        from mesh3d.io.blender import bone_heat_with_blender

        return bone_heat_with_blender(asset.mesh, asset.skeleton, asset.skin)
    if method == "learned":
        from rigging.skinning.learned import learned_skin

        return learned_skin(asset.mesh, asset.skeleton).dense(len(asset.skeleton))
    raise Mesh3DError(f"unknown skinning method {method!r}; use one of {', '.join(SKIN_METHODS)}")


def library_clips(asset: Asset) -> list:
    """One clip of every library motion that suits the asset's rig (`rigging.animate.quality.motions_for`:
    legged bodies walk, legless ones swim, ...): poses for the deformation error of rigs that come without clips."""
    from rigging.animate.chains import label_chains
    from rigging.animate.motions import make_motion
    from rigging.animate.quality import motions_for

    labels = label_chains(asset.skeleton, asset.mesh)
    return [make_motion(name, asset, labels) for name in motions_for(labels)]


def skin_metrics(asset: Asset, pred: np.ndarray, library: Optional[list] = None) -> dict:
    """Skinning and deformation metrics of dense (V, J) weights against the asset's own; with
    ``library`` (clips from `library_clips`) also ``deform_library``, the mean deformation error under them."""
    gt = asset.skin.dense(len(asset.skeleton))
    precision, recall = skin_precision_recall(pred, gt)
    mean, worst = deformation_error(asset, pred)
    extra = {} if library is None else {"deform_library": deformation_error(dataclasses.replace(asset, animations=library), pred)[0]}
    return extra | {
        "skin_l1": skin_l1(pred, gt),
        "skin_precision": precision,
        "skin_recall": recall,
        "deform_mean": mean,
        "deform_max": worst,
        "unweighted": int((pred.sum(1) == 0).sum()),
    }


def evaluate_rig(path, skin: str = "geometric", skeleton: str = "geometric", library_motions: bool = False) -> dict:
    """One row of a rigger against a rigged file's ground truth.

    Skeleton metrics compare the skeleton by ``skeleton`` (one of ``SKELETON_METHODS``, made by
    :func:`rigging.skeleton.auto.make_skeleton`; ``skeleton_method`` records what ``auto`` picked)
    with the file's; the skinning metrics compare weights by
    ``skin`` (see :func:`predict_skin`), computed on the file's own skeleton, with the file's.
    Times in seconds. A failure is recorded in ``error`` instead of raising; vertices the skinning
    left without weight are counted in ``unweighted`` (Blender's bone heat failures).
    library_motions: also the deformation error under our motion library (`library_clips`).
    """
    from mesh3d.io import load
    from rigging.skeleton.auto import make_skeleton

    asset = load(path)
    row = {"file": str(path), "faces": len(asset.mesh.faces), "vertices": len(asset.mesh.vertices), "gt_joints": int(weighted_joints(asset.skin, len(asset.skeleton)).sum())}
    try:
        t = time.perf_counter()
        predicted, row["skeleton_method"], _ = make_skeleton(asset.mesh, skeleton)
        row["skeleton_s"] = time.perf_counter() - t
        row["joints"] = len(predicted)
        row.update(skeleton_metrics(predicted, asset.skeleton, asset.mesh, asset.skin))
        t = time.perf_counter()
        pred = predict_skin(asset, skin)
        row["skin_s"] = time.perf_counter() - t
        row.update(skin_metrics(asset, pred, library_clips(asset) if library_motions else None))
    except Exception as e:  # the harness counts failures rather than stopping at the first
        row["error"] = f"{type(e).__name__}: {e}"
    return row


SUMMARY_KEYS = ["cd_j2j", "cd_j2b", "cd_b2b", "skin_l1", "skin_precision", "skin_recall", "deform_mean", "deform_max", "deform_library", "skeleton_s", "skin_s", "joints"]


def summarise(rows: list[dict]) -> dict:
    """Means of every numeric metric over the rows without errors (``deform_max``: the worst),
    the failure count (errors) and the assets with unweighted vertices."""
    ok = [r for r in rows if "error" not in r]

    def over_rows(stat, key: str) -> float:
        values = np.array([r.get(key, np.nan) for r in ok], float)
        values = values[~np.isnan(values)]  # deformation is nan for files without clips (deform_library when not asked)
        return float(stat(values)) if len(values) else float("nan")

    out = {k: over_rows(np.mean, k) for k in SUMMARY_KEYS}
    out["deform_max"] = over_rows(np.max, "deform_max")
    out.update(assets=len(rows), failures=len(rows) - len(ok), assets_with_unweighted=sum(r["unweighted"] > 0 for r in ok))
    return out


def benchmark(min_faces: int, source: str = "modular_women/Worker.glb") -> dict:
    """Time and peak memory of skeleton + skin on a shared rig's mesh subdivided (each triangle
    into four) until it has at least ``min_faces`` faces. Peak memory is this process's maximum
    resident set size, so run it in a fresh process. With the Blender venv, also Blender's bone
    heat on the same mesh and skeleton (``blender_skin_s``, including Blender's start) and
    ``skin_vs_blender``, our skinning time over Blender's."""
    import resource

    import trimesh

    from data_prep import corpus
    from mesh3d.asset import Mesh
    from mesh3d.io import load
    from rigging.skeleton.geometric import geometric_skeleton
    from rigging.skinning.geometric import geometric_skin

    root = corpus.corpus_dir()
    if root is None:
        raise Mesh3DError("shared corpus not found: set MESH3D_DATA to the folder holding manifest.json")
    mesh = load(root / source).mesh
    vertices, faces = mesh.vertices, mesh.faces
    while len(faces) < min_faces:
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    mesh = Mesh(vertices, faces)
    t = time.perf_counter()
    skeleton = geometric_skeleton(mesh)
    t_skel = time.perf_counter() - t
    t = time.perf_counter()
    skin = geometric_skin(mesh, skeleton)
    t_skin = time.perf_counter() - t
    out = {
        "faces": len(faces),
        "vertices": len(vertices),
        "joints": len(skeleton),
        "skeleton_s": t_skel,
        "skin_s": t_skin,
        "total_s": t_skel + t_skin,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    from mesh3d.io.blender import blender_available, bone_heat_with_blender

    if blender_available():  # Blender runs in a subprocess: our peak memory above is unaffected
        t = time.perf_counter()
        bone_heat_with_blender(mesh, skeleton, skin)
        out["blender_skin_s"] = time.perf_counter() - t
        out["skin_vs_blender"] = t_skin / out["blender_skin_s"]
    return out


def print_row(row: dict) -> None:
    """One line per asset: skeleton, skinning and deformation figures, or the failure."""
    if "error" in row:
        print(f"{row['file']:<44} FAILED {row['error']}", flush=True)
        return
    print(
        f"{row['file']:<44} J {row['joints']:2d}/{row['gt_joints']:2d}  J2J {row['cd_j2j']:5.2f}  J2B {row['cd_j2b']:5.2f}"
        f"  B2B {row['cd_b2b']:5.2f}  L1 {row['skin_l1']:.3f}  P {row['skin_precision']:.3f}  R {row['skin_recall']:.3f}"
        f"  def {row['deform_mean']:.3f}/{row['deform_max']:.2f}%" + (f"  lib {row['deform_library']:.3f}%" if "deform_library" in row else "")
        + f"  unw {row['unweighted']:5d}  skin {row['skin_s']:.2f}s",
        flush=True,
    )


def print_summary(summaries: dict) -> None:
    """A table with one line per skinning method."""
    cols = ["assets", "failures", "assets_with_unweighted"] + SUMMARY_KEYS
    print("method     " + " ".join(f"{c:>14}" for c in cols))
    for method, s in summaries.items():
        print(f"{method:<10} " + " ".join(f"{s[c]:>14.3f}" if isinstance(s[c], float) else f"{s[c]:>14}" for c in cols))


def main(argv: Optional[list[str]] = None) -> None:
    """``mesh3d eval rig`` (or ``python -m rigging.eval``) ``[--split dev|train|all | --data DIR]
    [--skeleton geometric|learned|auto] [--skin geometric|blender|learned|both] [--library-motions] [--out REPORT.json]`` evaluates
    a skeleton method and our geometric skinning (and/or Blender's bone heat weights) on
    rigged GLBs and prints per-asset rows and a summary table; ``--bench FACES`` instead prints the
    speed and peak memory of rigging a mesh of at least FACES faces (and, with the Blender venv,
    our skinning time over Blender's bone heat on it)."""
    import argparse
    import json
    from pathlib import Path

    from data_prep import corpus

    parser = argparse.ArgumentParser(prog="mesh3d eval rig", description=main.__doc__)
    parser.add_argument("--split", default="dev", choices=["dev", "train", "all"], help="shared rigs of this split (default dev)")
    parser.add_argument("--data", type=Path, help="evaluate every .glb in this folder instead of the shared rigs")
    parser.add_argument("--skeleton", default="geometric", choices=SKELETON_METHODS, help="skeleton method (default geometric)")
    parser.add_argument("--skin", default="both", choices=[*SKIN_METHODS, "both"], help="skinning method(s) on the GT skeleton (default both)")
    parser.add_argument("--library-motions", action="store_true",
                        help="also the deformation error under our motion library's clips (deform_library; for rigs that come without clips)")
    parser.add_argument("--out", help="write the rows and summary as JSON here")
    parser.add_argument("--bench", type=int, metavar="FACES", help="benchmark instead of evaluating")
    args = parser.parse_args(argv)
    if args.bench:
        print(json.dumps(benchmark(args.bench), indent=1))
        return
    if args.data is not None:
        if not args.data.is_dir():
            raise Mesh3DError(f"{args.data}: not a folder of rigged GLB files")
        files = [(p.name, p) for p in sorted(args.data.glob("*.glb"))]
    else:
        files = [(r.file, r.path) for r in corpus.records("rig", None if args.split == "all" else args.split)]
    if not files:
        raise Mesh3DError("no rigged files to evaluate (set MESH3D_DATA to the shared data, or pass --data DIR)")
    methods = list(SKIN_METHODS) if args.skin == "both" else [args.skin]
    report = {}
    for method in methods:
        print(f"== skeleton: {args.skeleton}, skin: {method}", flush=True)
        rows = []
        for name, path in files:
            row = evaluate_rig(path, method, args.skeleton, args.library_motions)
            row["file"] = name
            rows.append(row)
            print_row(row)
        report[method] = {"skeleton": args.skeleton, "rows": rows, "summary": summarise(rows)}
    print_summary({m: r["summary"] for m, r in report.items()})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
