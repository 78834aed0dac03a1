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

from typing import Optional

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

from mesh3d.asset import Mesh, Skeleton, Skin
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
