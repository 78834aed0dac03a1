"""Posing a skeleton's *body tree* with world-axis rotation deltas, and turning poses into clips.

The body tree is the skeleton without helper joints, with detached pieces (IK feet that artists
hang under the root instead of under the leg) re-attached to the joint they sit on
(:func:`body_parents`). Motions and the retargeting solver pose this tree with one rotation ``D[j]``
per joint, expressed in world axes at rest: ``G[j] = G[parent] @ D[j]`` is the joint's world
rotation relative to its bind orientation, and ``P[j] = P[parent] + G[parent] @ (p[j] - p[parent])``
its position. Bone lengths are therefore kept exactly. :func:`to_animation` converts such a pose
into glTF-style local tracks of the real skeleton (whatever its bind frames), helpers following
their real parent rigidly.
"""

from __future__ import annotations

import numpy as np
import torch

from mesh3d.asset import Animation, Skeleton
from mesh3d.geometry.transforms import matrix_to_trs


def body_parents(skeleton: Skeleton) -> np.ndarray:
    """(J,) parent of each joint in the body tree: ``-1`` for the body's root(s), ``-2`` for helpers.

    Non-helper joints whose real ancestors are all helpers start a piece; the piece with the most
    joints is the body, every other piece is re-attached to the nearest body joint (a foot hung
    under the armature root sits on its shin). Real parents are kept everywhere else.
    """
    j = len(skeleton)
    helper = skeleton.helper
    par = np.where(helper, -2, skeleton.parents).astype(np.int64)
    # A joint's nearest non-helper ancestor; -1 when there is none (it starts a piece).
    for i in range(j):
        p = skeleton.parents[i]
        while p >= 0 and helper[p]:
            p = skeleton.parents[p]
        if not helper[i]:
            par[i] = p
    tops = [i for i in range(j) if not helper[i] and par[i] == -1]
    if len(tops) <= 1:
        return par
    piece = np.full(j, -1)
    for i in range(j):
        if helper[i]:
            continue
        piece[i] = i if par[i] == -1 else piece[par[i]]
    sizes = {t: int((piece == t).sum()) for t in tops}
    body = max(tops, key=lambda t: (sizes[t], -t))
    in_body = piece == body
    for t in tops:
        if t == body:
            continue
        cand = np.flatnonzero(in_body)
        par[t] = int(cand[np.argmin(np.linalg.norm(skeleton.joints[cand] - skeleton.joints[t], axis=1))])
    return par


def body_order(parents: np.ndarray) -> list[int]:
    """Body joints (``parents >= -1``) ordered so that every parent comes before its children."""
    order, seen = [], set()
    todo = [i for i in range(len(parents)) if parents[i] == -1]
    children = {i: [] for i in range(len(parents))}
    for i, p in enumerate(parents):
        if p >= 0:
            children[int(p)].append(i)
    while todo:
        i = todo.pop(0)
        order.append(i)
        seen.add(i)
        todo.extend(children[i])
    return order


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` from rotation vectors ``(..., 3)`` (radians); smooth at 0."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-20)
    x, y, z = v.unbind(-1)
    k = torch.stack([torch.zeros_like(x), -z, y, z, torch.zeros_like(x), -x, -y, x, torch.zeros_like(x)], -1).reshape(v.shape[:-1] + (3, 3))
    # sin(t)/t and (1-cos t)/t^2 with their Taylor series near 0 (keeps gradients finite).
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-20))
    return torch.eye(3, dtype=v.dtype) + a * k + b * (k @ k)


def rotation(axis, angle) -> np.ndarray:
    """(..., 3, 3) rotations by ``angle`` (radians, any shape) about the unit vector ``axis`` (3,)."""
    angle = np.asarray(angle, dtype=np.float64)
    v = np.asarray(axis, dtype=np.float64)[None] * angle.reshape(-1, 1)
    return axis_angle_to_matrix(torch.from_numpy(v)).numpy().reshape(angle.shape + (3, 3))


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) shortest rotation taking direction ``a`` to direction ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        ortho = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        return rotation(ortho / np.linalg.norm(ortho), np.pi)
    return rotation(axis / s, np.arctan2(s, c))


def pose(joints, parents, order: list[int], deltas, root_offset):
    """World rotations ``G`` (F, J, 3, 3) and positions ``P`` (F, J, 3) of the body tree.

    joints: (J, 3) bind positions. parents: body parents (:func:`body_parents`). deltas: (F, J, 3, 3)
    rotations in world axes at rest. root_offset: (F, 3) translation added to the body's root(s).
    Torch in, torch out (differentiable); entries of joints outside the body are the bind pose.
    """
    joints = torch.as_tensor(joints, dtype=deltas.dtype)
    n = deltas.shape[0]
    g = [None] * len(parents)
    p = [None] * len(parents)
    for j in order:
        q = int(parents[j])
        if q < 0:
            g[j] = deltas[:, j]
            p[j] = joints[j].expand(n, 3) + root_offset
        else:
            g[j] = g[q] @ deltas[:, j]
            p[j] = p[q] + (g[q] @ (joints[j] - joints[q]))
    eye = torch.eye(3, dtype=deltas.dtype).expand(n, 3, 3)
    g = [eye if x is None else x for x in g]
    p = [joints[j].expand(n, 3) if x is None else x for j, x in enumerate(p)]
    return torch.stack(g, 1), torch.stack(p, 1)


def deltas_from_world(parents, order: list[int], world: np.ndarray) -> np.ndarray:
    """Inverse of the rotation part of :func:`pose`: (F, J, 3, 3) deltas giving world rotations ``world``."""
    d = np.tile(np.eye(3), world.shape[:2] + (1, 1))
    for j in order:
        q = int(parents[j])
        d[:, j] = world[:, j] if q < 0 else np.swapaxes(world[:, q], 1, 2) @ world[:, j]
    return d


def world_pose(skeleton: Skeleton, animation: Animation) -> tuple[np.ndarray, np.ndarray]:
    """(F, J, 3, 3) world rotations relative to bind and (F, J, 3) positions of every joint of a clip."""
    from mesh3d.asset import forward_kinematics

    world = forward_kinematics(skeleton.parents, animation.translations, animation.rotations, animation.scales)
    bind = skeleton.bind_matrices()
    rot = world[..., :3, :3] @ np.swapaxes(bind[:, :3, :3], 1, 2)[None]
    # Artist clips may carry scale; keep the rotation only (polar decomposition by SVD).
    u, _, vt = np.linalg.svd(rot)
    rot = u @ vt
    return rot, world[..., :3, 3]


def to_animation(skeleton: Skeleton, parents: np.ndarray, g, p, name: str, fps: float) -> Animation:
    """A clip of the real skeleton from a body-tree pose ``g`` (F, J, 3, 3), ``p`` (F, J, 3)."""
    g = np.asarray(g.detach() if isinstance(g, torch.Tensor) else g, dtype=np.float64)
    p = np.asarray(p.detach() if isinstance(p, torch.Tensor) else p, dtype=np.float64)
    n, j = g.shape[:2]
    bind = skeleton.bind_matrices()
    world = np.tile(np.eye(4), (n, j, 1, 1))
    body = parents >= -1
    world[:, body, :3, :3] = g[:, body] @ bind[None, body, :3, :3]
    world[:, :, :3, 3][:, body] = p[:, body]
    for i in range(j):  # helpers ride rigidly on their real parent (index order: parents come first)
        if body[i]:
            continue
        q = skeleton.parents[i]
        world[:, i] = bind[i] if q < 0 else world[:, q] @ (np.linalg.inv(bind[q]) @ bind[i])
    local = world.copy()
    has = skeleton.parents >= 0
    local[:, has] = np.linalg.inv(world[:, skeleton.parents[has]]) @ world[:, has]
    t, r, s = matrix_to_trs(local)
    return Animation(name, float(fps), t, r, np.ones_like(s))
