"""Rig evaluation: the skeleton metrics of RigNet / Puppeteer.

All distances are measured after normalising by the *ground-truth mesh's* bounding box (centred,
longest side 1, so coordinates lie in [-0.5, 0.5]) and reported x100, as the papers do:

* CD-J2J: symmetric chamfer distance between the two joint sets;
* CD-J2B: joints of each skeleton to points sampled on the other's bones, averaged both ways;
* CD-B2B: symmetric chamfer distance between the bone samples.

Bones are sampled every ``BONE_STEP`` (ends included) and joints closer than ``MERGE_DISTANCE`` are
merged first. Only ground-truth joints that carry skin weight count (helpers such as IK targets or
a bare root at the feet are dropped, their children reattached to the nearest kept ancestor).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

from mesh3d.asset import Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.normalize import normalize_unit_cube

BONE_STEP = 0.005
MERGE_DISTANCE = 0.0025


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


def _one_way(src: np.ndarray, dst: np.ndarray) -> float:
    """Mean distance from each point of ``src`` to its nearest point of ``dst``."""
    return float(cKDTree(dst).query(src)[0].mean())


def chamfer_j2j(joints_a: np.ndarray, joints_b: np.ndarray) -> float:
    """CD-J2J x100 between two normalised joint sets (J, 3)."""
    return 100 * (_one_way(joints_a, joints_b) + _one_way(joints_b, joints_a)) / 2


def chamfer_j2b(joints_a: np.ndarray, bones_a: np.ndarray, joints_b: np.ndarray, bones_b: np.ndarray) -> float:
    """CD-J2B x100: each skeleton's joints to the other's bone samples, averaged both ways."""
    return 100 * (_one_way(joints_a, sample_bones(joints_b, bones_b)) + _one_way(joints_b, sample_bones(joints_a, bones_a))) / 2


def chamfer_b2b(joints_a: np.ndarray, bones_a: np.ndarray, joints_b: np.ndarray, bones_b: np.ndarray) -> float:
    """CD-B2B x100: symmetric chamfer distance between the two skeletons' bone samples."""
    sa, sb = sample_bones(joints_a, bones_a), sample_bones(joints_b, bones_b)
    return 100 * (_one_way(sa, sb) + _one_way(sb, sa)) / 2


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


def skin_l1(pred: Skin, gt: Skin, num_joints: int) -> float:
    """Mean over vertices of sum_j |pred_j - gt_j| (0 = identical, 2 = disjoint)."""
    return float(np.abs(pred.dense(num_joints) - gt.dense(num_joints)).sum(1).mean())


def evaluate_rig(path) -> dict:
    """One row of the geometric rigger against a rigged file's ground truth.

    Skeleton metrics compare our skeleton with the file's; the skin L1 compares our weights,
    computed on the file's own skeleton, with the file's weights. Times in seconds. A failure is
    recorded in ``error`` instead of raising.
    """
    from mesh3d.io import load
    from rigging.skeleton.geometric import geometric_skeleton
    from rigging.skinning.geometric import geometric_skin

    asset = load(path)
    row = {"file": str(path), "faces": len(asset.mesh.faces), "gt_joints": int(weighted_joints(asset.skin, len(asset.skeleton)).sum())}
    try:
        t = time.perf_counter()
        skeleton = geometric_skeleton(asset.mesh)
        row["skeleton_s"] = time.perf_counter() - t
        row["joints"] = len(skeleton)
        row.update(skeleton_metrics(skeleton, asset.skeleton, asset.mesh, asset.skin))
        t = time.perf_counter()
        skin = geometric_skin(asset.mesh, asset.skeleton)
        row["skin_s"] = time.perf_counter() - t
        row["skin_l1"] = skin_l1(skin, asset.skin, len(asset.skeleton))
    except Exception as e:  # the harness counts failures rather than stopping at the first
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def summarise(rows: list[dict]) -> dict:
    """Means of every numeric metric over the rows without errors, and the failure count."""
    ok = [r for r in rows if "error" not in r]
    keys = ["cd_j2j", "cd_j2b", "cd_b2b", "skin_l1", "skeleton_s", "skin_s", "joints"]
    out = {k: float(np.mean([r[k] for r in ok])) if ok else float("nan") for k in keys}
    out.update(assets=len(rows), failures=len(rows) - len(ok))
    return out


def benchmark(min_faces: int, source: str = "modular_women/Worker.glb") -> dict:
    """Time and peak memory of skeleton + skin on a shared rig's mesh subdivided (each triangle
    into four) until it has at least ``min_faces`` faces. Peak memory is this process's maximum
    resident set size, so run it in a fresh process."""
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
    geometric_skin(mesh, skeleton)
    t_skin = time.perf_counter() - t
    return {
        "faces": len(faces),
        "vertices": len(vertices),
        "joints": len(skeleton),
        "skeleton_s": t_skel,
        "skin_s": t_skin,
        "total_s": t_skel + t_skin,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m rigging.eval [--split dev|train|all] [--out REPORT.json]`` evaluates the
    geometric rigger on the shared rigs and prints a table; ``--bench FACES`` instead prints the
    speed and peak memory of rigging a mesh of at least FACES faces."""
    import argparse
    import json

    from data_prep import corpus

    parser = argparse.ArgumentParser(prog="python -m rigging.eval", description=main.__doc__)
    parser.add_argument("--split", default="dev", choices=["dev", "train", "all"])
    parser.add_argument("--out", help="write the rows and summary as JSON here")
    parser.add_argument("--bench", type=int, metavar="FACES", help="benchmark instead of evaluating")
    args = parser.parse_args(argv)
    if args.bench:
        print(json.dumps(benchmark(args.bench), indent=1))
        return
    rows = []
    for r in corpus.records("rig", None if args.split == "all" else args.split):
        row = evaluate_rig(r.path)
        row["file"] = r.file
        rows.append(row)
        if "error" in row:
            print(f"{r.file:<60} FAILED {row['error']}", flush=True)
        else:
            print(
                f"{r.file:<60} J {row['joints']:2d}/{row['gt_joints']:2d}  J2J {row['cd_j2j']:6.2f}  J2B {row['cd_j2b']:6.2f}"
                f"  B2B {row['cd_b2b']:6.2f}  skinL1 {row['skin_l1']:.3f}  {row['skeleton_s'] + row['skin_s']:.2f}s",
                flush=True,
            )
    summary = summarise(rows)
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
