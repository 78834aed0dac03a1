"""The motion library: parametric motions that adapt to a rig's labelled chains (no data files).

Every motion is a function of the phase ``phi`` in [0, 1] over one loop: periodic ones (gaits, swim,
fly, idle) are sums of whole-period terms, one-shot ones (jump, wave, attack) start and end in the
rest pose with zero velocity, so the last frame equals the first and loops close seamlessly.
Sizes scale with the rig: strides and step heights with leg length, waves with body length.

A motion returns rotation deltas in world axes for the body tree (see
:mod:`rigging.animate.kinematics`), a root offset and foot targets; feet are then placed by inverse
kinematics, a few L-BFGS steps of differentiable forward kinematics in torch over all frames at
once (any number of joints per leg; knees keep the bend of the rest pose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from mesh3d.asset import Animation, Asset, Skeleton
from mesh3d.errors import Mesh3DError
from rigging.animate.chains import Chain, Labels, chain_length, foot_point, label_chains, leg_length
from mesh3d.nn.threads import one_thread
from rigging.animate.kinematics import axis_angle_to_matrix, body_order, pose, rotation, rotation_between, to_animation

DEG = np.pi / 180


@dataclass
class Rig:
    """A skeleton with its labels and the quantities motions scale with."""

    skeleton: Skeleton
    labels: Labels
    order: list[int]

    @property
    def joints(self) -> np.ndarray:
        return self.skeleton.joints

    def length(self, chain: list[int]) -> float:
        return chain_length(self.joints, chain)

    @property
    def leg_length(self) -> float:
        """Mean length of the legs (:func:`leg_length`; 0 without legs)."""
        legs = self.labels.get("leg")
        return float(np.mean([leg_length(self.skeleton, self.labels, c) for c in legs])) if legs else 0.0

    @property
    def body_length(self) -> float:
        """Length of the body axis (tail tip to head)."""
        return max(chain_length(self.joints, _axis_order(self.labels)), 0.05 * self.labels.size)

    @property
    def scale(self) -> float:
        """The length strides and bobs are measured in: legs when there are any, else the body."""
        return self.leg_length or 0.5 * self.body_length


@dataclass
class Pose:
    """What a motion builds: deltas (F, J, 3, 3), root offset (F, 3), and foot goals: (joint, offset
    (3,) of the point from the joint at rest, (F, 3) targets of that point)."""

    deltas: np.ndarray
    root: np.ndarray
    goals: list[tuple[int, np.ndarray, np.ndarray]]


@dataclass
class Motion:
    name: str
    description: str
    seconds: float
    build: Callable[[Rig, np.ndarray], Pose]  # (rig, phase (F,) in [0, 1]) -> pose
    needs: Callable[[Labels], Optional[str]]  # why the motion does not apply, or None


MOTIONS: dict[str, Motion] = {}


def _register(name: str, description: str, seconds: float, needs=lambda labels: None):
    def wrap(fn):
        MOTIONS[name] = Motion(name, description, seconds, fn, needs)
        return fn

    return wrap


def list_motions() -> list[tuple[str, str]]:
    """(name, description) of every motion."""
    return [(m.name, m.description) for m in MOTIONS.values()]


def make_motion(name: str, asset_or_skeleton, labels: Optional[Labels] = None, fps: float = 30, seconds: Optional[float] = None) -> Animation:
    """Animation ``name`` for a rig (an :class:`Asset` with a skeleton, or a :class:`Skeleton`).

    labels: from :func:`label_chains` (computed when None). fps: frames per second. seconds: loop
    length (the motion's natural length when None). The clip has ``round(seconds * fps) + 1``
    frames, the last one equal to the first.
    """
    if name not in MOTIONS:
        raise Mesh3DError(f"unknown motion {name!r}; choose from {', '.join(MOTIONS)}")
    if isinstance(asset_or_skeleton, Asset):
        if asset_or_skeleton.skeleton is None:
            raise Mesh3DError("this asset has no skeleton: rig it first (mesh3d rig)")
        skeleton, mesh = asset_or_skeleton.skeleton, asset_or_skeleton.mesh
    else:
        skeleton, mesh = asset_or_skeleton, None
    labels = labels or label_chains(skeleton, mesh)
    motion = MOTIONS[name]
    why = motion.needs(labels)
    if why:
        raise Mesh3DError(f"motion {name!r} does not fit this rig ({labels.kind}): {why}")
    seconds = float(seconds or motion.seconds)
    if not seconds > 0 or not fps > 0:
        raise Mesh3DError("motion length and fps must be positive")
    frames = max(2, int(round(seconds * fps)) + 1)
    phi = np.linspace(0.0, 1.0, frames)
    rig = Rig(skeleton, labels, body_order(labels.parents))
    built = motion.build(rig, phi)
    deltas = torch.from_numpy(built.deltas)
    root = torch.from_numpy(built.root)
    if built.goals:
        deltas = solve_ik(rig, deltas, root, built.goals)
    g, p = pose(skeleton.joints, labels.parents, rig.order, deltas, root)
    g, p = _flat_feet(rig, deltas, root, g, p)
    return to_animation(skeleton, labels.parents, g, p, name, fps)


# ---------------------------------------------------------------------------------------------
# inverse kinematics


def solve_ik(rig: Rig, deltas: torch.Tensor, root: torch.Tensor, goals: list[tuple[int, np.ndarray, np.ndarray]], iters: int = 40) -> torch.Tensor:
    """Deltas with the leg joints rotated so the goal points reach their targets (F, 3).

    Minimises, over a rotation vector per frame and leg joint, the squared distance to the targets
    (in leg lengths) plus small terms keeping rotations near the motion's and frames smooth. The
    last frame equals the first (a loop), so frames are solved once with cyclic smoothness.
    """
    legs = rig.labels.get("leg")
    free = sorted({j for c in legs for j in _leg_joints(rig, c)[: None if _on_shin(rig, c) else -1]})
    if not free:
        return deltas
    scale = rig.scale or 1.0
    n = deltas.shape[0] - 1
    init = torch.zeros(n, len(free), 3, dtype=torch.float64)
    for c in legs:  # a straight leg has no preferred bend: start with knees slightly forward
        js = _leg_joints(rig, c)
        points = rig.joints[js]
        if _on_shin(rig, c):  # the sole ends the leg
            tip, offset = foot_point(rig.skeleton, rig.labels, c)
            points = np.vstack([points, rig.joints[tip] + offset])
        if len(points) >= 3 and _straightness(points) < 0.02:
            knees = js[1:] if _on_shin(rig, c) else js[1:-1]
            for j in knees:
                init[:, free.index(j)] = torch.from_numpy(0.1 * rig.labels.left)
    r = init.clone().requires_grad_(True)
    targets = torch.from_numpy(np.stack([t[:n] for _, _, t in goals], 1))
    offsets = torch.from_numpy(np.stack([o for _, o, _ in goals]))
    idx = [j for j, _, _ in goals]
    # Only the goals' ancestors matter here.
    need = set()
    for j in idx:
        while j >= 0 and j not in need:
            need.add(j)
            j = int(rig.labels.parents[j])
    order = [j for j in rig.order if j in need]
    base, d0, root = deltas[:n, free], deltas[:n], root[:n]

    def closure():
        opt.zero_grad()
        d = d0.clone()
        d[:, free] = base @ axis_angle_to_matrix(r)
        g, p = pose(rig.joints, rig.labels.parents, order, d, root)
        point = p[:, idx] + (g[:, idx] @ offsets[..., None])[..., 0]
        loss = ((point - targets) ** 2).sum(-1).mean() / scale**2
        loss = loss + 1e-4 * (r**2).sum(-1).mean() + 1e-2 * ((r.roll(-1, 0) - r) ** 2).sum(-1).mean()
        loss.backward()
        return loss

    opt = torch.optim.LBFGS([r], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")
    with one_thread():
        opt.step(closure)
    out = deltas.clone()
    out[:n, free] = base @ axis_angle_to_matrix(r.detach())
    out[n] = out[0]
    return out


def _straightness(points: np.ndarray) -> float:
    """Largest distance of inner points from the first-last line, relative to the line's length."""
    a, b = points[0], points[-1]
    d = b - a
    length = np.linalg.norm(d) or 1.0
    off = np.linalg.norm(np.cross(points - a, d / length), axis=1)
    return float(off.max()) / length


def _leg_joints(rig: Rig, chain: Chain) -> list[int]:
    """A leg's joints below the trunk (the trunk joint it hangs from excluded)."""
    trunk = {j for kind in ("spine", "neck", "head", "tail") for c in rig.labels.get(kind) for j in c.joints}
    return [j for j in chain.joints if j not in trunk]


def _on_shin(rig: Rig, chain: Chain) -> bool:
    """Whether the leg stands on a shin hanging from its tip joint (see :func:`foot_point`)."""
    return bool(foot_point(rig.skeleton, rig.labels, chain)[1].any())


def _foot(rig: Rig, chain: Chain) -> list[tuple[int, np.ndarray]]:
    """The points a foot goal pins, as (joint, offset): the sole; the ankle and toe tip when the
    last bone is a short foot or hoof (so the foot stays level)."""
    js = _leg_joints(rig, chain)
    if _on_shin(rig, chain):
        return [foot_point(rig.skeleton, rig.labels, chain)]
    if len(js) >= 3 and np.linalg.norm(rig.joints[js[-1]] - rig.joints[js[-2]]) < 0.3 * rig.length(js):
        return [(js[-2], np.zeros(3)), (js[-1], np.zeros(3))]
    return [(js[-1], np.zeros(3))]


def _goal(rig: Rig, joint: int, offset: np.ndarray, shift: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """A goal moving the point (joint + offset) by ``shift`` (F, 3) from its rest position."""
    return joint, offset, rig.joints[joint] + offset + shift


def _flat_feet(rig: Rig, deltas, root, g, p):
    """Keep each leg's tip joint at its rest orientation (soles stay level), unless a shin hangs from it."""
    tips = [_leg_joints(rig, c)[-1] for c in rig.labels.get("leg") if not _on_shin(rig, c)]
    if not tips:
        return g, p
    d = deltas.clone()
    for j in tips:
        q = int(rig.labels.parents[j])
        if q >= 0:
            d[:, j] = g[:, q].transpose(1, 2)
    return pose(rig.joints, rig.labels.parents, rig.order, d, root)


# ---------------------------------------------------------------------------------------------
# building blocks


def _identity(rig: Rig, n: int) -> np.ndarray:
    return np.tile(np.eye(3), (n, len(rig.skeleton), 1, 1))


def _turn(deltas: np.ndarray, j: int, rot: np.ndarray) -> None:
    """Apply ``rot`` (F, 3, 3) after joint ``j``'s current delta."""
    deltas[:, j] = rot @ deltas[:, j]


def _hermite(keys: list[tuple[float, float, float]], x: np.ndarray) -> np.ndarray:
    """Cubic Hermite curve through keys (x, value, slope), x increasing; flat outside."""
    xs = np.array([k[0] for k in keys])
    out = np.full_like(x, keys[0][1], dtype=np.float64)
    for (x0, y0, m0), (x1, y1, m1) in zip(keys[:-1], keys[1:]):
        sel = (x >= x0) & (x <= x1)
        h = x1 - x0
        s = (x[sel] - x0) / h
        out[sel] = (2 * s**3 - 3 * s**2 + 1) * y0 + (s**3 - 2 * s**2 + s) * h * m0 + (-2 * s**3 + 3 * s**2) * y1 + (s**3 - s**2) * h * m1
    out[x > xs[-1]] = keys[-1][1]
    return out


def _envelope(phi: np.ndarray, rise: float = 0.2) -> np.ndarray:
    """0 -> 1 over [0, rise], 1, then 1 -> 0 over [1 - rise, 1], with zero slopes at the joins."""
    return _hermite([(0, 0, 0), (rise, 1, 0), (1 - rise, 1, 0), (1, 0, 0)], phi)


def _axis_order(labels: Labels) -> list[int]:
    """Body-axis joints from the tail tip to the head."""
    tail = [j for c in labels.get("tail") for j in c.joints][::-1]
    rest = [j for kind in ("spine", "neck", "head") for c in labels.get(kind) for j in c.joints]
    return tail + rest


def _bone_dir(rig: Rig, chain: list[int], k: int) -> np.ndarray:
    a, b = rig.joints[chain[k]], rig.joints[chain[min(k + 1, len(chain) - 1)]]
    d = b - a
    return d / (np.linalg.norm(d) or 1.0)


def _upper_arm(rig: Rig, chain: Chain) -> int:
    """Index in the chain of the upper arm: past a short clavicle, past the trunk joint."""
    js = chain.joints
    k = 0
    trunk = {j for kind in ("spine", "neck", "head", "tail") for c in rig.labels.get(kind) for j in c.joints}
    while k < len(js) - 1 and js[k] in trunk:
        k += 1
    bones = np.linalg.norm(np.diff(rig.joints[js], axis=0), axis=1)
    if k + 1 < len(bones) and bones[k] < 0.5 * bones[k + 1]:
        k += 1
    return k


def _relaxed(rig: Rig, d: np.ndarray) -> np.ndarray:
    """Where an upper arm pointing along ``d`` hangs when relaxed: 25 degrees from vertical, out to
    its side; an arm already hanging (within 35 degrees of vertical) stays as it is."""
    u = rig.labels.up
    if np.degrees(np.arccos(np.clip(np.dot(d, -u), -1, 1))) < 35:
        return d
    out = d - np.dot(d, u) * u
    out = out / (np.linalg.norm(out) or 1.0)
    return -u * np.cos(25 * DEG) + out * np.sin(25 * DEG)


def _relax_arms(rig: Rig, deltas: np.ndarray) -> None:
    """Lower arms held out (T-pose) to their relaxed direction."""
    for c in rig.labels.get("arm"):
        k = _upper_arm(rig, c)
        d = _bone_dir(rig, c.joints, k)
        _turn(deltas, c.joints[k], np.broadcast_to(rotation_between(d, _relaxed(rig, d)), deltas.shape[:1] + (3, 3)))


def _rotvec(m: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) of a rotation matrix (3, 3)."""
    angle = np.arccos(np.clip((np.trace(m) - 1) / 2, -1, 1))
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    if np.linalg.norm(axis) < 1e-9:  # 180 degrees
        axis = np.linalg.eigh(m + m.T)[1][:, -1]
    return axis / np.linalg.norm(axis) * angle


def _arm_dir_after_relax(rig: Rig, chain: Chain) -> np.ndarray:
    return _relaxed(rig, _bone_dir(rig, chain.joints, _upper_arm(rig, chain)))


def _turn_towards(deltas: np.ndarray, joint: int, d: np.ndarray, target: np.ndarray, amount: np.ndarray) -> None:
    """Turn ``joint`` so direction ``d`` moves towards ``target`` by the fraction ``amount`` (F,)."""
    rv = _rotvec(rotation_between(d, target))
    angle = np.linalg.norm(rv)
    if angle > 1e-9:
        _turn(deltas, joint, rotation(rv / angle, angle * amount))


def _swing_axis(d: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Axis rotating direction ``d`` towards ``forward`` (positive angle = forward)."""
    a = np.cross(d, forward)
    n = np.linalg.norm(a)
    return a / n if n > 1e-6 else np.cross(forward, np.array([0.0, 1.0, 0.0]))


def _spread(deltas: np.ndarray, joints: list[int], axis: np.ndarray, angle: np.ndarray) -> None:
    """Rotate a chain by ``angle`` (F,) in total, shared evenly among its joints."""
    if joints:
        for j in joints:
            _turn(deltas, j, rotation(axis, angle / len(joints)))


def _trunk(rig: Rig, *kinds: str) -> list[int]:
    return [j for k in kinds for c in rig.labels.get(k) for j in c.joints]


def _tail_sway(rig: Rig, deltas: np.ndarray, phi: np.ndarray, amplitude: float, cycles: int = 1) -> None:
    for c in rig.labels.get("tail"):
        for k, j in enumerate(c.joints):
            _turn(deltas, j, rotation(rig.labels.up, amplitude * (k + 1) / len(c.joints) * np.sin(2 * np.pi * (cycles * phi - 0.1 * k))))


def _planted(rig: Rig, n: int, skip: tuple[int, ...] = ()) -> list[tuple[int, np.ndarray]]:
    """Goals holding every foot (but legs in ``skip``) at its rest position."""
    goals = []
    for i, c in enumerate(rig.labels.get("leg")):
        if i not in skip:
            goals += [_goal(rig, j, o, np.zeros((n, 3))) for j, o in _foot(rig, c)]
    return goals


# ---------------------------------------------------------------------------------------------
# gaits


def _legs_needed(labels: Labels) -> Optional[str]:
    return None if labels.get("leg") else "it has no legs touching the ground; try swim, slither or fly"


def _gait_offsets(rig: Rig, pattern: str) -> list[float]:
    """Phase offset of each leg. ``wave``: back to front on each side, sides half a cycle apart
    (walk; tetrapod lateral sequence, insect wave gait). ``alternate``: neighbours in antiphase
    (biped run, trot, tripod gait)."""
    legs = rig.labels.get("leg")
    f = rig.labels.forward
    out = []
    for c in legs:
        same = sorted([x for x in legs if x.side == c.side], key=lambda x: -float(np.dot(rig.joints[x.joints[0]], f)))
        k, n = same.index(c), len(same)
        side = 0.5 if c.side < 0 else 0.0
        out.append((side + (n - 1 - k) / (2 * n)) % 1 if pattern == "wave" else (side + 0.5 * (k % 2)) % 1)
    return out


def _foot_path(phi: np.ndarray, duty: float, stride: float, lift: float) -> tuple[np.ndarray, np.ndarray]:
    """Foot displacement along forward and up over a cycle: stance from +stride/2 to -stride/2 at
    constant speed, then a swing back with matching horizontal end velocities, lifting at once."""
    phi = phi % 1.0
    x = np.empty_like(phi)
    y = np.zeros_like(phi)
    st = phi < duty
    x[st] = stride / 2 - stride * phi[st] / duty
    s = (phi[~st] - duty) / (1 - duty)
    v = -stride / duty * (1 - duty)  # stance speed in swing-time units
    x[~st] = (2 * s**3 - 3 * s**2 + 1) * (-stride / 2) + (s**3 - 2 * s**2 + s) * v + (-2 * s**3 + 3 * s**2) * (stride / 2) + (s**3 - s**2) * v
    y[~st] = lift * np.sin(np.pi * s)  # a brisk lift-off: the foot clears the ground at once
    return x, y


def _gait(rig: Rig, phi: np.ndarray, pattern: str, duty: float, stride: float, lift: float, bob: float, arm_swing: float, elbow: float, lean: float) -> Pose:
    lab, n = rig.labels, len(phi)
    L = rig.leg_length
    deltas = _identity(rig, n)
    goals = []
    disp = []
    for c, off in zip(lab.get("leg"), _gait_offsets(rig, pattern)):
        x, y = _foot_path(phi + off, duty, stride * L, lift * L)
        disp.append(x)
        for j, o in _foot(rig, c):
            goals.append(_goal(rig, j, o, x[:, None] * lab.forward + y[:, None] * lab.up))
    legs = len(lab.get("leg"))
    steps = 2 if legs <= 2 else 4  # the body dips at each support change
    root = (-0.04 * L - bob * L * (1 + np.cos(2 * np.pi * steps * phi)) / 2)[:, None] * lab.up
    if legs == 2:  # shift the weight over the stance foot
        root = root + (0.02 * L * np.sin(2 * np.pi * phi))[:, None] * lab.left
    _spread(deltas, _trunk(rig, "spine"), lab.left, np.full(n, lean))
    _spread(deltas, _trunk(rig, "spine"), lab.up, 4 * DEG * np.sin(2 * np.pi * phi))
    _spread(deltas, _trunk(rig, "neck", "head"), lab.left, -lean - 2 * DEG * np.cos(2 * np.pi * steps * phi))
    _tail_sway(rig, deltas, phi, 12 * DEG)
    _relax_arms(rig, deltas)
    leg_side = {c.side: x for c, x in zip(lab.get("leg"), disp)}
    for c in lab.get("arm"):
        x = leg_side.get(c.side, np.zeros(n))
        k = _upper_arm(rig, c)
        d = _arm_dir_after_relax(rig, c)
        _turn(deltas, c.joints[k], rotation(_swing_axis(d, lab.forward), -arm_swing * x / (stride * L / 2)))
        if k + 1 < len(c.joints) - 1:
            fore = _bone_dir(rig, c.joints, k + 1)
            _turn(deltas, c.joints[k + 1], rotation(_swing_axis(fore, lab.forward), np.full(n, elbow)))
    return Pose(deltas, root, goals)


@_register("walk", "walk cycle in place: biped, quadruped or many-legged wave gait, strides scaled to leg length", 1.1, _legs_needed)
def _walk(rig: Rig, phi: np.ndarray) -> Pose:
    return _gait(rig, phi, "wave", duty=0.65, stride=0.45, lift=0.1, bob=0.01, arm_swing=18 * DEG, elbow=12 * DEG, lean=2 * DEG)


@_register("run", "run cycle in place: biped run, trot or tripod gait with a flight phase", 0.66, _legs_needed)
def _run(rig: Rig, phi: np.ndarray) -> Pose:
    return _gait(rig, phi, "alternate", duty=0.42, stride=0.6, lift=0.22, bob=0.04, arm_swing=35 * DEG, elbow=70 * DEG, lean=8 * DEG)


# ---------------------------------------------------------------------------------------------
# in place


def _breathe(rig: Rig, deltas: np.ndarray, phi: np.ndarray, cycles: int = 1) -> np.ndarray:
    """Breathing and a slow sway; returns the root offset (F, 3)."""
    lab = rig.labels
    w = np.sin(2 * np.pi * cycles * phi)
    _spread(deltas, _trunk(rig, "spine"), lab.left, -2 * DEG * w)
    _spread(deltas, _trunk(rig, "neck", "head"), lab.left, 2 * DEG * w)
    _tail_sway(rig, deltas, phi, 8 * DEG, cycles)
    _relax_arms(rig, deltas)
    for c in lab.get("arm"):
        k = _upper_arm(rig, c)
        _turn(deltas, c.joints[k], rotation(_swing_axis(_arm_dir_after_relax(rig, c), lab.forward), 3 * DEG * w))
    for c in lab.get("wing") + lab.get("fin"):
        _turn(deltas, c.joints[0], rotation(lab.forward, c.side * 6 * DEG * np.sin(2 * np.pi * 2 * cycles * phi)))
    return (-0.012 * rig.scale * (1 - np.cos(2 * np.pi * cycles * phi)) / 2)[:, None] * lab.up


@_register("idle", "breathing idle: chest rise, slow sway, feet planted", 3.5)
def _idle(rig: Rig, phi: np.ndarray) -> Pose:
    deltas = _identity(rig, len(phi))
    root = _breathe(rig, deltas, phi)
    return Pose(deltas, root, _planted(rig, len(phi)))


def _has_head(labels: Labels) -> Optional[str]:
    return None if labels.get("head") or labels.get("neck") else "it has no neck or head chain"


@_register("look_around", "turn the head left and right, with a glance up", 4.0, _has_head)
def _look_around(rig: Rig, phi: np.ndarray) -> Pose:
    lab = rig.labels
    deltas = _identity(rig, len(phi))
    root = _breathe(rig, deltas, phi)
    neck = _trunk(rig, "neck", "head")
    _spread(deltas, neck, lab.up, 40 * DEG * np.sin(2 * np.pi * phi))
    _spread(deltas, neck, lab.left, -8 * DEG * np.sin(2 * np.pi * 2 * phi))
    return Pose(deltas, root, _planted(rig, len(phi)))


@_register("wave", "raise a right arm (or wing, front leg, head) and wave", 2.4)
def _wave(rig: Rig, phi: np.ndarray) -> Pose:
    lab, n = rig.labels, len(phi)
    deltas = _identity(rig, n)
    root = _breathe(rig, deltas, phi)
    e = _envelope(phi)
    wag = 25 * DEG * np.sin(2 * np.pi * 3 * phi) * e
    limbs = [c for c in lab.get("arm") + lab.get("wing") if c.side < 0] or lab.get("arm") + lab.get("wing")
    legs = lab.get("leg")
    skip: tuple[int, ...] = ()
    if limbs:
        c = limbs[0]
        k = _upper_arm(rig, c) if c.kind == "arm" else 0
        d = _arm_dir_after_relax(rig, c) if c.kind == "arm" else _bone_dir(rig, c.joints, 0)
        out = d - np.dot(d, lab.up) * lab.up
        out = out / (np.linalg.norm(out) or 1.0)
        _turn_towards(deltas, c.joints[k], d, lab.up * 0.8 + out * 0.6, e)
        if k + 1 < len(c.joints):
            _turn(deltas, c.joints[k + 1], rotation(lab.forward, -c.side * wag))
    elif len(legs) >= 4:  # a front leg paws the air; the others stay planted
        front = [i for i, c in enumerate(legs) if c.side < 0][0]
        c = legs[front]
        js = _leg_joints(rig, c)
        _turn(deltas, js[0], rotation(_swing_axis(_bone_dir(rig, js, 0), lab.forward), 60 * DEG * e))
        if len(js) > 2:
            _turn(deltas, js[1], rotation(lab.left, wag - 40 * DEG * e))
        skip = (front,)
    else:
        _spread(deltas, _trunk(rig, "neck", "head"), lab.forward, 1.5 * wag)
    return Pose(deltas, root, _planted(rig, n, skip))


@_register("attack", "wind up and strike: punch, head-butt or lunge", 1.2)
def _attack(rig: Rig, phi: np.ndarray) -> Pose:
    lab, n = rig.labels, len(phi)
    deltas = _identity(rig, n)
    wind = _hermite([(0, 0, 0), (0.35, 1, 0), (0.5, 0, 0)], phi)
    strike = _hermite([(0, 0, 0), (0.35, 0, 0), (0.5, 1, 0), (0.65, 1, 0), (1, 0, 0)], phi)
    pitch = -10 * DEG * wind + 18 * DEG * strike
    _spread(deltas, _trunk(rig, "spine"), lab.left, pitch)
    _spread(deltas, _trunk(rig, "neck", "head"), lab.left, pitch)
    _relax_arms(rig, deltas)
    for c in lab.get("arm"):
        k = _upper_arm(rig, c)
        d = _arm_dir_after_relax(rig, c)
        if c.side < 0:  # the right arm punches forward
            _turn_towards(deltas, c.joints[k], d, lab.forward, strike - 0.35 * wind)
        else:
            _turn(deltas, c.joints[k], rotation(_swing_axis(d, lab.forward), 30 * DEG * (wind + strike)))
    for c in lab.get("wing") + lab.get("fin"):
        _turn(deltas, c.joints[0], rotation(lab.forward, c.side * (30 * DEG * wind - 20 * DEG * strike)))
    if not lab.get("leg"):  # fish and snakes lunge with the body
        axis = _axis_order(lab)
        for k, j in enumerate(axis[: len(axis) // 2]):
            _turn(deltas, j, rotation(lab.up, 12 * DEG * (wind - strike) * (1 - k / max(1, len(axis) // 2))))
    lunge = (0.12 * rig.scale * (strike - 0.5 * wind))[:, None] * lab.forward
    root = lunge - (0.05 * rig.scale * wind)[:, None] * lab.up
    return Pose(deltas, root, _planted(rig, n))


@_register("jump", "crouch, jump, land and recover", 1.3)
def _jump(rig: Rig, phi: np.ndarray) -> Pose:
    lab, n = rig.labels, len(phi)
    s = rig.scale
    deltas = _identity(rig, n)
    c, h = 0.18 * s, 0.5 * s
    body = _hermite([(0, 0, 0), (0.28, -c, 0), (0.42, 0.1 * h, 9 * h), (0.62, h, 0), (0.8, 0.1 * h, -9 * h), (0.9, -0.6 * c, 0), (1, 0, 0)], phi)
    feet = _hermite([(0, 0, 0), (0.4, 0, 0), (0.62, 0.85 * h, 0), (0.82, 0, 0), (1, 0, 0)], phi)
    crouch = np.clip(-body / c, 0, None)
    air = feet / (0.85 * h)
    _spread(deltas, _trunk(rig, "spine"), lab.left, 12 * DEG * crouch - 4 * DEG * air)
    _spread(deltas, _trunk(rig, "neck", "head"), lab.left, -8 * DEG * crouch)
    _relax_arms(rig, deltas)
    for arm in lab.get("arm"):
        k = _upper_arm(rig, arm)
        _turn(deltas, arm.joints[k], rotation(_swing_axis(_arm_dir_after_relax(rig, arm), lab.forward), 50 * DEG * air - 25 * DEG * crouch))
    for w in lab.get("wing") + lab.get("fin"):
        _turn(deltas, w.joints[0], rotation(lab.forward, w.side * 35 * DEG * (air - crouch)))
    _tail_sway(rig, deltas, phi, 5 * DEG)
    for t in lab.get("tail"):
        _spread(deltas, t.joints, lab.left, 15 * DEG * air)
    goals = []
    for leg in lab.get("leg"):
        for j, o in _foot(rig, leg):
            goals.append(_goal(rig, j, o, feet[:, None] * lab.up))
    return Pose(deltas, body[:, None] * lab.up, goals)


# ---------------------------------------------------------------------------------------------
# bodies without legs


def _wave_body(rig: Rig, phi: np.ndarray, amplitude: Callable[[np.ndarray], np.ndarray], wavelength: float) -> np.ndarray:
    """Deltas bending the body axis into a lateral travelling wave running head -> tail.

    The wave is a displacement: a point at fraction ``s`` of the body axis from the head (0) to the
    tail tip (1) is moved sideways by ``amplitude(s) * sin(2 pi (phi - s / wavelength))``, in body
    lengths (amplitude: (K,) -> (K,)). Each axis bone turns about up so that its far end sits at
    its neighbour's displacement, whatever the number and spacing of joints (a whale with four
    tail joints and a snake with forty get the same shape); everything else follows its parent.
    """
    lab, n = rig.labels, len(phi)
    axis = _axis_order(lab)[::-1]  # head first
    pts = rig.joints[axis]
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    length = s[-1] or 1.0
    s = s / length
    y = amplitude(s)[None, :] * np.sin(2 * np.pi * (phi[:, None] - s[None, :] / wavelength)) * length  # (F, K)
    world = {}
    for k in range(len(axis) - 1):
        a, b = axis[k], axis[k + 1]
        # The bone joining them belongs to whichever is the other's parent; it turns so that its
        # child end moves sideways (along left) by the child's displacement minus its own.
        for owner, child, move in ((a, b, y[:, k + 1] - y[:, k]), (b, a, y[:, k] - y[:, k + 1])):
            if int(lab.parents[child]) == owner:
                d = rig.joints[child] - rig.joints[owner]
                side = np.sign(np.dot(np.cross(lab.up, d), lab.left)) or 1.0
                world[owner] = rotation(lab.up, side * np.arcsin(np.clip(move / max(seg[k], 1e-9), -1, 1)))
    deltas = _identity(rig, n)
    g = {}
    for j in rig.order:  # deltas giving these world rotations; everything else follows its parent
        q = int(lab.parents[j])
        gp = g[q] if q >= 0 else np.tile(np.eye(3), (n, 1, 1))
        if j in world:
            deltas[:, j] = np.swapaxes(gp, 1, 2) @ world[j]
        g[j] = gp @ deltas[:, j]
    return deltas


def _axis_needed(labels: Labels) -> Optional[str]:
    return None if len(_axis_order(labels)) >= 3 else "its body axis has fewer than 3 joints"


@_register("swim", "fish swim (cruising): a travelling wave growing towards the tail, fins paddling", 3.5, _axis_needed)
def _swim(rig: Rig, phi: np.ndarray) -> Pose:
    lab = rig.labels
    # Slow cruising: the sideways amplitude grows as the cube of the distance from the head to 0.07
    # body lengths at the tail tip (thunniform-like: the front half barely moves), on a wave one
    # body long; fins scull gently. The head barely yaws and the body does not bob, as in the
    # artist clips of the shared fish.
    deltas = _wave_body(rig, phi, lambda s: 0.07 * s**3, 1.0)
    for c in lab.get("fin") + lab.get("wing"):
        for k, j in enumerate(c.joints):
            _turn(deltas, j, rotation(lab.forward, c.side * 5 * DEG * np.sin(2 * np.pi * phi - 0.6 * k)))
    for c in lab.get("leg"):
        _turn(deltas, c.joints[0], rotation(lab.left, 25 * DEG * np.ones_like(phi)))
    return Pose(deltas, np.zeros((len(phi), 3)), [])


@_register("slither", "snake undulation: two lateral waves running down the body", 1.6, _axis_needed)
def _slither(rig: Rig, phi: np.ndarray) -> Pose:
    # Lateral undulation: an even sideways amplitude of 0.05 body lengths on waves half a body long.
    deltas = _wave_body(rig, phi, lambda s: np.full_like(s, 0.05), 0.5)
    return Pose(deltas, np.zeros((len(phi), 3)), [])


@_register("fly", "wing flaps with a lagging tip, body bobbing, legs tucked", 0.6, lambda lab: None if lab.get("wing") else "it has no wings")
def _fly(rig: Rig, phi: np.ndarray) -> Pose:
    lab = rig.labels
    deltas = _identity(rig, len(phi))
    for c in lab.get("wing"):
        for k, j in enumerate(c.joints):
            amp = (35 if k == 0 else 15) * DEG
            _turn(deltas, j, rotation(lab.forward, c.side * (amp * np.sin(2 * np.pi * phi - 0.8 * k) + (10 * DEG if k == 0 else 0))))
    for c in lab.get("leg"):
        _turn(deltas, _leg_joints(rig, c)[0], rotation(lab.left, 30 * DEG * np.ones_like(phi)))
    _tail_sway(rig, deltas, phi, 6 * DEG)
    root = (0.04 * rig.body_length * np.cos(2 * np.pi * phi))[:, None] * lab.up
    return Pose(deltas, root, [])
