"""Retarget a clip from any rigged asset onto another rig by optimisation.

1. Map chains: both rigs are labelled (:func:`label_chains`); spine, neck, head and tail pair by
   kind, limbs (legs, arms, wings, fins) by kind, side and front-to-back order. Each target chain
   joint corresponds to the source chain point at the same fraction of chain length.
2. Targets, normalised: every mapped chain's shape relative to its first joint, scaled by the
   ratio of chain lengths; the root's trajectory and the feet's trajectories as displacements from
   rest scaled by the ratio of leg lengths (body lengths without legs), so a planted source foot
   gives a planted target foot; the root's orientation.
3. Solve per-frame rotations of every body joint plus a root offset by differentiable forward
   kinematics in torch (L-BFGS), starting from the source's world rotations copied across the map,
   with smoothness terms (joint accelerations, rotation accelerations) and foot-contact terms.
   Contact frames are the source foot's (within ``CONTACT_HEIGHT`` of its lowest point); during
   each run of them the target foot's goal is pinned to one spot of the ground, flat at the run's
   lowest height, and moves only with the ground (the median step of the source's contact feet:
   zero over still ground, the treadmill speed of an in-place loop), so a source whose feet slide
   does not pass its sliding on. Bone lengths hold exactly: the unknowns are rotations (see
   :mod:`rigging.animate.kinematics`); ``quality.clip_metrics`` measures the drift.
4. Plant the feet: inverse kinematics on the leg joints alone, the body fixed, pulls each foot
   onto its pinned goal (the whole-body solve trades a few percent of foot position against
   everything else, which would show as sliding).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from mesh3d.asset import Animation, Asset
from mesh3d.errors import Mesh3DError
from mesh3d.nn.threads import one_thread
from rigging.animate.chains import Chain, Labels, chain_length, foot_point, label_chains, leg_length
from rigging.animate.kinematics import (
    axis_angle_to_matrix,
    body_order,
    deltas_from_world,
    pose,
    to_animation,
    world_pose,
)
from rigging.animate.quality import CONTACT_HEIGHT

# Loss weights (terms are squared distances over the target's size squared).
W_ROOT_ROTATION = 0.1
W_CONTACT = 20.0
W_PIN = 10.0  # a contact frame's foot goal, relative to a free foot's
W_PLANT = 100.0  # the feet's final inverse kinematics: contact frames
W_SWING = 10.0  # and the other frames
W_SMOOTH = 100.0
W_SMOOTH_ROTATION = 1.0
W_REST = 1e-3


def find_clip(asset: Asset, name: str) -> Animation:
    """The clip called ``name`` (exactly, or after an ``Armature|`` prefix, case-insensitive)."""
    for a in asset.animations:
        if a.name == name:
            return a
    for a in asset.animations:
        if a.name.split("|")[-1].lower() == name.lower():
            return a
    names = ", ".join(a.name for a in asset.animations) or "none"
    raise Mesh3DError(f"no animation {name!r} in the source file (it has: {names})")


def map_chains(src: Labels, dst: Labels) -> list[tuple[Chain, Chain]]:
    """Pairs (source chain, target chain) of the same kind; limbs by side and front-to-back order."""
    pairs = []
    for kind in ("spine", "neck", "head", "tail"):
        a, b = src.first(kind), dst.first(kind)
        if a and b:
            pairs.append((a, b))
    for kind in ("leg", "arm", "wing", "fin"):
        for side in (1, -1, 0):
            a = [c for c in src.get(kind) if c.side == side]
            b = [c for c in dst.get(kind) if c.side == side]
            if len(a) > len(b) and len(b) == 2:  # e.g. four legs onto two: the hind pair drives
                a = a[-2:]
            pairs += list(zip(a, b))
    return pairs


def _fractions(points: np.ndarray) -> np.ndarray:
    d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    return d / (d[-1] or 1.0)


def _resample(track: np.ndarray, at_src: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Points (F, K, 3) at chain fractions ``at`` by linear interpolation along (F, N, 3) ``track``."""
    if len(at_src) == 1:
        return np.repeat(track, len(at), 1)
    k = np.clip(np.searchsorted(at_src, at, side="right") - 1, 0, len(at_src) - 2)
    w = ((at - at_src[k]) / np.maximum(at_src[k + 1] - at_src[k], 1e-12))[None, :, None]
    return track[:, k] * (1 - w) + track[:, k + 1] * w


def _pin(goal: np.ndarray, contact: np.ndarray, ground: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Foot goals (F, 3) with each run of contact frames (F,) held at one spot of a ground moving by
    ``ground`` (3,) per frame (zero for still ground): horizontally, the run's mean of ``goal``
    carried along with the ground; vertically, the run's lowest goal. Between runs the horizontal
    correction eases from one run's to the next (smoothstep), so lift-off and touch-down do not jerk."""
    t = np.arange(len(goal))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], contact.astype(int), [0]])))
    if not len(edges):
        return goal
    fix = np.zeros_like(goal)
    for t0, t1 in zip(edges[::2], edges[1::2]):
        run = slice(t0, t1)
        spot = (goal[run] - (t[run] - t0)[:, None] * ground).mean(0)  # where each frame puts the spot at t0
        fix[run] = spot + (t[run] - t0)[:, None] * ground - goal[run]
        # Flat on the ground: the whole run at its lowest height.
        h = goal[run] @ up
        fix[run] += (h.min() - h)[:, None] * up - (fix[run] @ up)[:, None] * up
    horizontal = fix - (fix @ up)[:, None] * up
    ends, starts = edges[1::2] - 1, edges[::2]
    horizontal[: starts[0]] = horizontal[starts[0]]
    horizontal[ends[-1] + 1:] = horizontal[ends[-1]]
    for a, b in zip(ends[:-1], starts[1:]):
        w = ((t[a + 1: b] - a) / (b - a))[:, None]
        horizontal[a + 1: b] = horizontal[a] + (horizontal[b] - horizontal[a]) * (3 * w**2 - 2 * w**3)
    return goal + horizontal + np.where(contact[:, None], fix - horizontal, 0.0)


def _plant_feet(labels: Labels, joints: np.ndarray, order: list[int], d0: torch.Tensor, r: torch.Tensor,
                off: torch.Tensor, feet: list, iters: int) -> torch.Tensor:
    """Rotations ``r`` (F, J, 3) with the leg joints re-solved (inverse kinematics) so that every
    foot sits on its pinned goal during contact, up to a tiny fraction of the leg, and keeps its
    path elsewhere. The whole-body solve weighs the feet against everything else and leaves them a
    few percent off, which is foot sliding; here only the legs move, so the body keeps its motion.

    feet: (tip joint, sole offset (3,), goal (F, 3), contact (F,) 0/1) as torch tensors.
    """
    trunk = {j for kind in ("spine", "neck", "head", "tail") for c in labels.get(kind) for j in c.joints}
    free = sorted({j for c in labels.get("leg") for j in c.joints if j not in trunk})
    if not free or not feet:
        return r
    size = labels.size
    leg = torch.zeros(r.shape[0], len(free), 3, dtype=r.dtype, requires_grad=True)

    def closure():
        opt.zero_grad()
        full = r.clone()
        full[:, free] = r[:, free] + leg
        g, p = pose(joints, labels.parents, order, d0 @ axis_angle_to_matrix(full), off)
        loss = 0.0
        for j, o, goal, contact in feet:
            foot = p[:, j] + g[:, j] @ o
            loss = loss + (((foot - goal) ** 2).sum(-1) * (W_PLANT * contact + W_SWING * (1 - contact))).mean()
        if len(p) >= 3:
            acc = p[2:, free] - 2 * p[1:-1, free] + p[:-2, free]
            loss = loss + W_SMOOTH * (acc**2).sum(-1).mean()
        loss = loss / size**2 + W_REST * (leg**2).sum(-1).mean()
        loss.backward()
        return loss

    opt = torch.optim.LBFGS([leg], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")
    opt.step(closure)
    out = r.clone()
    out[:, free] = r[:, free] + leg.detach()
    return out


def retarget(source: Asset, clip: Animation | str, target: Asset, iters: int = 300,
             src_labels: Optional[Labels] = None, dst_labels: Optional[Labels] = None) -> Animation:
    """``clip`` of ``source`` (an Animation or its name) replayed on ``target``'s skeleton."""
    if source.skeleton is None or target.skeleton is None:
        raise Mesh3DError("retargeting needs a rigged source and a rigged target")
    anim = find_clip(source, clip) if isinstance(clip, str) else clip
    ss, ts = source.skeleton, target.skeleton
    ls = src_labels or label_chains(ss, source.mesh)
    lt = dst_labels or label_chains(ts, target.mesh)
    pairs = map_chains(ls, lt)
    if not pairs:
        raise Mesh3DError(f"no chains in common between the source ({ls.kind}) and the target ({lt.kind}) rigs")

    g_src, p_src = world_pose(ss, anim)
    n = len(p_src)
    # The source's (forward, up, left) onto the target's: a turn about up when both stand on +Y,
    # more when one was bound lying on its side.
    align = np.stack([lt.forward, lt.up, lt.left], 1) @ np.stack([ls.forward, ls.up, ls.left], 1).T
    p_src = p_src @ align.T
    g_src = align[None, None] @ g_src @ align.T[None, None]
    bind_src = ss.joints @ align.T

    legs_s, legs_t = ls.get("leg"), lt.get("leg")
    if legs_s and legs_t:
        ratio = np.mean([leg_length(ts, lt, c) for c in legs_t]) / np.mean([leg_length(ss, ls, c) for c in legs_s])
    else:
        ratio = lt.size / ls.size

    # Correspondences and initial world rotations.
    world0 = np.tile(np.eye(3), (n, len(ts), 1, 1))
    shape_terms = []  # (target joints (K,), target start joint, wanted offsets (F, K, 3))
    for a, b in pairs:
        fa, fb = _fractions(ss.joints[a.joints]), _fractions(ts.joints[b.joints])
        src_pts = _resample(p_src[:, a.joints], fa, fb)
        scale = chain_length(ts.joints, b.joints) / max(chain_length(ss.joints, a.joints), 1e-9)
        if len(b.joints) > 1:
            shape_terms.append((b.joints[1:], b.joints[0], (src_pts[:, 1:] - src_pts[:, :1]) * scale))
        near = np.clip(np.searchsorted(fa, fb), 0, len(a.joints) - 1)
        for j, k in zip(b.joints, near):
            world0[:, j] = g_src[:, a.joints[k]]
    world0[:, lt.root] = g_src[:, ls.root]
    parents = lt.parents
    order = body_order(parents)
    # Joints off every chain follow their parent: fill world rotations down the tree.
    mapped = {j for _, b in pairs for j in b.joints} | {lt.root}
    for j in order:
        if j not in mapped and parents[j] >= 0:
            world0[:, j] = world0[:, parents[j]]
    d0 = torch.from_numpy(deltas_from_world(parents, order, world0))

    root_goal = ts.joints[lt.root] + (p_src[:, ls.root] - bind_src[ls.root]) * ratio
    feet = []  # (target tip, sole offset, goal (F, 3), source contact (F,))
    ground_steps = []
    for a, b in [(a, b) for a, b in pairs if a.kind == "leg"]:
        sa, so = foot_point(ss, ls, a)
        tb, to = foot_point(ts, lt, b)
        src_foot = p_src[:, sa] + g_src[:, sa] @ (align @ so)
        goal = ts.joints[tb] + to + (src_foot - (bind_src[sa] + align @ so)) * ratio
        h = src_foot @ lt.up  # source positions are in the target's axes now
        contact = h - h.min() < CONTACT_HEIGHT * leg_length(ss, ls, a)
        ground_steps.append(np.diff(src_foot, axis=0)[contact[1:] & contact[:-1]])
        feet.append((tb, to, goal, contact))
    # The ground under the source's contact feet: still, or a treadmill for in-place clips.
    steps = np.concatenate(ground_steps) if ground_steps else np.zeros((0, 3))
    ground = np.median(steps, axis=0) * ratio if len(steps) else np.zeros(3)
    ground = ground - np.dot(ground, lt.up) * lt.up
    # A source foot that slides while down must not make the target's slide: during each contact
    # the target's goal is pinned to one spot of the ground (moving with it), the mean of where
    # the source would put it, and weighs W_PIN times more than a free foot's goal.
    feet = [(j, o, _pin(goal, contact, ground, lt.up), contact) for j, o, goal, contact in feet]
    size = lt.size
    t_root_goal = torch.from_numpy(root_goal)
    t_root_rot = torch.from_numpy(g_src[:, ls.root])
    shape_t = [(list(js), s, torch.from_numpy(w)) for js, s, w in shape_terms]
    feet_t = [(j, torch.from_numpy(o), torch.from_numpy(g), torch.from_numpy(c).double()) for j, o, g, c in feet]
    t_ground = torch.from_numpy(ground)
    up = torch.from_numpy(lt.up)
    r = torch.zeros(n, len(ts), 3, dtype=torch.float64, requires_grad=True)
    off = torch.from_numpy(root_goal - ts.joints[lt.root]).clone().requires_grad_(True)
    joints = ts.joints

    def closure():
        opt.zero_grad()
        d = d0 @ axis_angle_to_matrix(r)
        g, p = pose(joints, parents, order, d, off)
        loss = 0.0
        for js, s, want in shape_t:
            loss = loss + (((p[:, js] - p[:, s : s + 1]) - want) ** 2).sum(-1).mean()
        loss = loss + ((p[:, lt.root] - t_root_goal) ** 2).sum(-1).mean()
        loss = loss + W_ROOT_ROTATION * size**2 * ((g[:, lt.root] - t_root_rot) ** 2).sum((-1, -2)).mean()
        for j, offset, goal, contact in feet_t:
            foot = p[:, j] + g[:, j] @ offset
            loss = loss + (((foot - goal) ** 2).sum(-1) * (1 + (W_PIN - 1) * contact)).mean()
            # While the source foot is down, the target foot moves with the ground (not with
            # whatever the source foot slid): horizontal steps equal the ground's.
            step = foot[1:] - foot[:-1] - t_ground
            flat = step - (step @ up)[:, None] * up
            loss = loss + W_CONTACT * ((flat**2).sum(-1) * contact[1:] * contact[:-1]).mean()
        if n >= 3:
            acc = p[2:] - 2 * p[1:-1] + p[:-2]
            loss = loss + W_SMOOTH * (acc**2).sum(-1).mean()
            # Joints no position term reaches (a head, ears) must not wobble either.
            loss = loss + W_SMOOTH_ROTATION * size**2 * ((r[2:] - 2 * r[1:-1] + r[:-2]) ** 2).sum(-1).mean()
        loss = loss / size**2 + W_REST * (r**2).sum(-1).mean()
        loss.backward()
        return loss

    opt = torch.optim.LBFGS([r, off], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")
    with one_thread():
        opt.step(closure)
        r = _plant_feet(lt, joints, order, d0, r.detach(), off.detach(), feet_t, iters)
        with torch.no_grad():
            g, p = pose(joints, parents, order, d0 @ axis_angle_to_matrix(r), off)
    name = anim.name.split("|")[-1]
    return to_animation(ts, parents, g, p, name, anim.fps)
