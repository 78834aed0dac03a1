"""Procedural creatures: skinned primitives with known skeletons and skin weights.

Each creature is a low-poly mesh made of capsules, ellipsoids and boxes, one or more per bone,
merged into one mesh (``part_ids`` name the primitive of every face; parts overlap like in the real
corpus). Joints sit where an artist puts them (hips, spine chain, neck, head, shoulders, elbows,
wrists, knees, ankles, toes, tail chain, wing joints, fins, leg segments), named like
``spine_01`` or ``upper_arm.L``. Frame: Y up, facing +Z, left side (``.L``) at +X, standing on
``y = 0``, sizes in metres (a humanoid is 1.5-1.9 m tall).

Skin weights come from the construction: every vertex of a primitive belongs to the primitive's
bone, blended smoothly (half and half at the joint) with the parent bone near the bone's joint and
with the next bone of the chain near the child joint; then top-4 and normalised. Every joint
carries weight, so no joint is a helper.

The same kind and seed give byte-identical arrays. Uses: ``make demo`` (a creature to rig and
animate) and training data for the learned skeleton and skinning models.

Preview (for a human check, not committed)::

    python -m data_prep.procedural --png out/creatures.png --seed 0
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from mesh3d.asset import Animation, Asset, Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.transforms import quat_multiply

CREATURE_KINDS = ("humanoid", "quadruped", "dragon", "bird", "fish", "snake", "spider", "insect")

SIDES = ((1.0, ".L"), (-1.0, ".R"))  # the left side of a creature facing +Z is at +X


# ---------------------------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------------------------


def _lathe(z: np.ndarray, r: np.ndarray, sections: int, phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A closed surface of revolution about +z.

    z, r: (N,) profile from pole to pole (``r[0] = r[-1] = 0``); rings of ``sections`` vertices in
    between. Returns vertices (2 + (N-2) * sections, 3) and outward-facing faces (M, 3).
    """
    theta = phase + 2 * np.pi * np.arange(sections) / sections
    ring = np.stack([np.cos(theta), np.sin(theta)], 1)
    inner = len(z) - 2
    verts = [np.array([[0.0, 0.0, z[0]]])]
    for i in range(1, len(z) - 1):
        verts.append(np.column_stack([r[i] * ring, np.full(sections, z[i])]))
    verts.append(np.array([[0.0, 0.0, z[-1]]]))
    k = np.arange(sections)
    k1 = (k + 1) % sections
    top = 1 + inner * sections
    faces = [np.column_stack([np.zeros(sections, int), 1 + k1, 1 + k])]
    for i in range(inner - 1):
        a, b = 1 + i * sections, 1 + (i + 1) * sections
        faces.append(np.column_stack([a + k, a + k1, b + k1]))
        faces.append(np.column_stack([a + k, b + k1, b + k]))
    b = 1 + (inner - 1) * sections
    faces.append(np.column_stack([np.full(sections, top), b + k, b + k1]))
    return np.concatenate(verts), np.concatenate(faces)


def _profile(shape: str, length: float, r0: float, r1: float, cap: float, sections: int) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Profile (z, r), sections and phase of a unit-aspect primitive along +z from 0 to ``length``.

    capsule: tube of radius r0 -> r1 with round caps of height ``cap * r`` beyond both ends.
    ellipsoid: spans exactly 0..length, equatorial radius r0. box: spans 0..length, half-width r0.
    Fewer ``sections`` (around the axis) also mean fewer rings, for small parts like fingers.
    """
    if shape == "capsule":
        phi = np.linspace(0, np.pi / 2, 4 if sections > 6 else 3)
        mid = np.linspace(0, 1, 2 + int(np.clip(round(length / (2.5 * max(r0, r1))), 1, 3)))[1:-1]
        z = np.concatenate([-cap * r0 * np.cos(phi), mid * length, length + cap * r1 * np.cos(phi[::-1])])
        r = np.concatenate([r0 * np.sin(phi), r0 + (r1 - r0) * mid, r1 * np.sin(phi[::-1])])
        return z, r, sections, 0.0
    if shape == "ellipsoid":
        phi = np.linspace(0, np.pi, 8 if sections > 6 else 5)
        return length / 2 * (1 - np.cos(phi)), r0 * np.sin(phi), sections, 0.0
    if shape == "box":
        # A square prism whose corners lie at (+-r0, +-r0): 4 sections turned by 45 degrees.
        c = r0 * np.sqrt(2)
        return np.array([0.0, 0.0, length, length]), np.array([0.0, c, c, 0.0]), 4, np.pi / 4
    raise ValueError(f"unknown primitive {shape!r}")


def _frame(d: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(3, 3) rows x', y', z' of a right-handed frame with z' = d and y' as close to ``up`` as possible."""
    up = np.asarray(up, float)
    if abs(float(np.dot(up, d))) > 0.95 * np.linalg.norm(up):
        up = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    y = up - np.dot(up, d) * d
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, d), y, d])


def _ramp(x: np.ndarray) -> np.ndarray:
    """Smooth step from 0 (x <= -1) through 0.5 (x = 0) to 1 (x >= 1)."""
    t = np.clip((x + 1) / 2, 0.0, 1.0)
    return t * t * (3 - 2 * t)


class _Builder:
    """Collects joints and skinned primitives, then assembles an :class:`Asset`."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.joints: list[np.ndarray] = []
        self.parents: list[int] = []
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # vertices, faces, dense weights

    def joint(self, name: str, pos, parent: Optional[str]) -> np.ndarray:
        """Add a joint at ``pos`` (metres) under ``parent`` (a name, or None for the root)."""
        self.names.append(name)
        self.joints.append(np.asarray(pos, float))
        self.parents.append(-1 if parent is None else self.names.index(parent))
        return self.joints[-1]

    def pos(self, name: str) -> np.ndarray:
        return self.joints[self.names.index(name)]

    def part(
        self,
        bone: str,
        a,
        b,
        r0: float,
        r1: Optional[float] = None,
        shape: str = "capsule",
        aspect: float = 1.0,
        up=(0.0, 1.0, 0.0),
        child: Optional[str] = None,
        cap: float = 1.0,
        sections: int = 10,
    ) -> None:
        """Add a primitive from point ``a`` to ``b`` skinned to ``bone``.

        r0, r1: cross radius (half-width) at a and b (r1 only for capsules); the cross-section is
        ``aspect`` times thicker along the direction nearest to ``up`` than across it. Vertices
        blend with the bone's parent around the bone's joint and with ``child`` around the child
        joint, over a width equal to the local radius, measured along a -> b. sections: vertices
        around the axis (even, so that mirrored parts are mirror images).
        """
        a, b = np.asarray(a, float), np.asarray(b, float)
        r1 = r0 if r1 is None else r1
        length = float(np.linalg.norm(b - a))
        d = (b - a) / length
        z, r, sections, phase = _profile(shape, length, r0, r1, cap, sections)
        local, faces = _lathe(z, r, sections, phase)
        local[:, 1] *= aspect
        verts = a + local @ _frame(d, up)

        j = self.names.index(bone)
        s = local[:, 2]
        w = np.zeros((len(verts), len(self.names)))
        w[:, j] = 1.0
        if self.parents[j] >= 0:
            s0 = float(np.dot(self.joints[j] - a, d))
            h0 = min(r0, length / 2)
            wp = _ramp((s0 - s) / h0)
            w[:, self.parents[j]] += wp
            w[:, j] -= wp
        if child is not None:
            c = self.names.index(child)
            s1 = float(np.dot(self.joints[c] - a, d))
            h1 = min(r1, length / 2)
            wc = np.minimum(_ramp((s - s1) / h1), w[:, j])
            w[:, c] += wc
            w[:, j] -= wc
        self.parts.append((verts, faces, w))

    def chain(self, names: list[str], points, parent: Optional[str], radii, **part_kw) -> None:
        """A line of joints ``names`` at ``points[:len(names)]``, each the child of the one before
        (the first of ``parent``), with a capsule from each point to the next.

        points: (len(names) or len(names) + 1, 3); an extra last point is the tip of the last
        bone. radii: radius at each point; capsules are made for the first ``len(radii) - 1``
        segments only (``[]`` for joints alone), each blending into the next joint of the line.
        part_kw: passed to :meth:`part`.
        """
        points = np.asarray(points, float)
        for i, name in enumerate(names):
            self.joint(name, points[i], names[i - 1] if i else parent)
        for i in range(len(radii) - 1):
            child = names[i + 1] if i + 1 < len(names) else None
            self.part(names[i], points[i], points[i + 1], radii[i], radii[i + 1], child=child, **part_kw)

    def asset(self, name: str) -> Asset:
        """Merge the parts, put the lowest vertex on y = 0 and return the rigged asset.

        Joints come out in depth-first order (children in the order they were added), the order
        a glTF scene traversal gives, so a saved and reloaded creature keeps its joint indices.
        """
        num_joints = len(self.names)
        order, stack = [], [j for j in reversed(range(num_joints)) if self.parents[j] < 0]
        while stack:
            j = stack.pop()
            order.append(j)
            stack.extend(c for c in reversed(range(num_joints)) if self.parents[c] == j)
        new_index = np.argsort(order)
        parents = np.array([-1 if self.parents[j] < 0 else new_index[self.parents[j]] for j in order])

        verts, faces, weights, part_ids = [], [], [], []
        offset = 0
        for i, (v, f, w) in enumerate(self.parts):
            verts.append(v)
            faces.append(f + offset)
            weights.append(np.pad(w, ((0, 0), (0, num_joints - w.shape[1])))[:, order])
            part_ids.append(np.full(len(f), i, np.int32))
            offset += len(v)
        verts = np.concatenate(verts)
        lift = np.array([0.0, verts[:, 1].min(), 0.0])
        mesh = Mesh(verts - lift, np.concatenate(faces), part_ids=np.concatenate(part_ids))
        skeleton = Skeleton(np.stack(self.joints)[order] - lift, parents, [self.names[j] for j in order])
        return Asset(mesh, skeleton, Skin.from_dense(np.concatenate(weights), k=4), name=name)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------------
# Species
# ---------------------------------------------------------------------------------------------


def _humanoid(rng: np.random.Generator) -> _Builder:
    u = rng.uniform
    height = u(1.5, 1.9)
    thick = u(0.8, 1.3)  # limb and body thickness factor
    head_h = height * u(0.115, 0.19)  # realistic (1/8 of the height) to stylised game characters
    neck_len = height * u(0.03, 0.055)
    leg = height * u(0.45, 0.52)  # hip joint height
    ankle_y = height * 0.045
    knee_y = ankle_y + (leg - ankle_y) * u(0.47, 0.53)
    hip_w = height * u(0.05, 0.065)
    stance = height * u(0.0, 0.04)
    foot_len = height * u(0.13, 0.16)
    shoulder_w = height * u(0.075, 0.13)  # upper arm joint from the midline
    clavicle = shoulder_w * u(0.25, 0.6)  # shoulder (clavicle) joint from the midline
    shoulder_drop = height * u(0.02, 0.045)  # upper arm joint below the neck
    arm = [height * u(0.16, 0.19), height * u(0.14, 0.16), height * u(0.09, 0.11)]
    drop = np.radians(u(0.0, 45.0))  # 0 = T-pose, 45 = A-pose
    n_fingers = int(rng.choice([0, 4, 5]))  # mitten, cartoon (thumb + 3) or full hand
    n_spine = int(rng.integers(2, 5))
    waist = height * u(0.07, 0.09) * thick
    chest = shoulder_w * u(0.75, 0.9) * np.sqrt(thick)
    depth = u(0.55, 0.75)  # torso depth / width
    head_r = head_h * u(0.36, 0.42)
    head_aspect = u(1.05, 1.25)

    bld = _Builder()
    neck_y = height - head_h - neck_len
    hips = bld.joint("hips", (0, leg + 0.03 * height, 0), None)
    # Spine joints from just above the hips to the chest, bending slightly backwards; then the neck.
    frac = 0.12 + 0.6 * np.arange(n_spine) / (n_spine - 1)
    spine = np.stack([np.zeros(n_spine), hips[1] + frac * (neck_y - hips[1]), -0.01 * height * np.sin(np.pi * frac)], 1)
    names = [f"spine_{i + 1:02d}" for i in range(n_spine)]
    radii = waist + (chest - waist) * np.arange(n_spine + 1) / n_spine
    bld.chain(names + ["neck"], np.vstack([spine, [0, neck_y, 0]]), "hips", radii, aspect=depth, up=(0, 0, 1), cap=0.35)
    bld.part("hips", hips - (0, 0.07 * height, 0), hips + (0, 0.05 * height, 0), waist * 1.1, shape="ellipsoid", aspect=depth, up=(0, 0, 1), child=names[0])
    head = bld.joint("head", (0, neck_y + neck_len, 0.01 * height), "neck")
    bld.part("neck", bld.pos("neck"), head, 0.035 * height * thick, child="head")
    bld.part("head", head - (0, 0.15 * head_h, -0.01 * height), head + (0, 0.9 * head_h, 0.01 * height), head_r, shape="ellipsoid", aspect=head_aspect, up=(0, 0, 1))

    shoulder_y = neck_y - shoulder_drop
    for s, tag in SIDES:
        direction = np.array([s * np.cos(drop), -np.sin(drop), 0.0])
        upper = np.array([s * shoulder_w, shoulder_y, 0])
        elbow = upper + arm[0] * direction - (0, 0, 0.01 * height)
        wrist = elbow + arm[1] * direction + (0, 0, 0.01 * height)
        arm_names = [n + tag for n in ("shoulder", "upper_arm", "forearm", "hand")]
        arm_r = np.array([0.04, 0.033, 0.026, 0.02]) * height * thick
        bld.chain(arm_names, [(s * clavicle, shoulder_y - 0.3 * shoulder_drop, 0.005 * height), upper, elbow, wrist], names[-1], arm_r)
        _hand(bld, tag, wrist, direction, arm[2], 0.03 * height, n_fingers)

        hip = (s * hip_w, leg, 0)
        knee = (s * (hip_w + stance / 2), knee_y, 0.012 * height)
        ankle = np.array([s * (hip_w + stance), ankle_y, -0.01 * height])
        ball = np.array([ankle[0], 0.018 * height, ankle[2] + 0.62 * foot_len])
        leg_names = [n + tag for n in ("thigh", "shin", "foot", "toe")]
        bld.chain(leg_names, [hip, knee, ankle, ball], "hips", np.array([0.058, 0.04, 0.026]) * height * thick)
        heel = ankle - (0, ankle_y - 0.002 * height, 0.025 * height)
        bld.part("foot" + tag, heel + (0, 0.02 * height, 0), ball + (0, 0.003 * height, 0), 0.03 * height, shape="box", aspect=0.7, child="toe" + tag)
        bld.part("toe" + tag, ball, ball + (0, -0.004 * height, 0.3 * foot_len), 0.03 * height, shape="box", aspect=0.45)
    return bld


def _hand(bld: _Builder, tag: str, wrist: np.ndarray, direction: np.ndarray, length: float, half_width: float, n_fingers: int) -> None:
    """A palm-down hand along ``direction`` from ``wrist``: a box, or a palm with a thumb (pointing
    forward, +Z) and ``n_fingers - 1`` fingers of three joints each."""
    hand = "hand" + tag
    if n_fingers == 0:
        bld.part(hand, wrist, wrist + length * direction, half_width, shape="box", aspect=0.35)
        return
    knuckle = wrist + 0.45 * length * direction
    bld.part(hand, wrist, knuckle, half_width, shape="box", aspect=0.4)
    forward = np.array([0.0, 0.0, 1.0])
    fingers = ["index", "middle", "ring", "pinky"][: n_fingers - 1]
    reach = [0.9, 1.0, 0.93, 0.75]
    chains = [("thumb", wrist + 0.12 * length * direction + 0.6 * half_width * forward, _unit(0.55 * direction + 0.8 * forward), 0.5 * length, 0.23 * half_width)]
    for k, name in enumerate(fingers):
        across = 0.75 * half_width * (1 - 2 * k / (len(fingers) - 1))
        chains.append((name, knuckle + across * forward, direction, 0.55 * length * reach[k], 0.18 * half_width))
    for name, root, along, finger_len, radius in chains:
        points = root + finger_len * np.cumsum([0.0, 0.45, 0.3, 0.25])[:, None] * along
        bld.chain([f"{name}_{i + 1:02d}{tag}" for i in range(3)], points, hand, radius * np.array([1.0, 0.95, 0.9, 0.85]), sections=6)


def _wing(bld: _Builder, tag: str, names: tuple[str, ...], parent: str, root, upper, half_span: float, chord: float, dihedral: float, bone_r: float) -> None:
    """A spread wing: a root bone from ``root`` to ``upper``, then upper wing, forearm and hand
    bones reaching sideways ``half_span`` metres, with flat panels of width ``chord`` trailing
    backwards. names: the four joint names from the root outwards."""
    side = np.sign(upper[0] - root[0])
    out = np.array([side * np.cos(dihedral), np.sin(dihedral), -0.1])
    elbow = upper + 0.3 * half_span * out
    wrist = elbow + 0.33 * half_span * out + (0, 0, 0.03 * half_span)
    tip = wrist + 0.37 * half_span * out - (0, 0, 0.05 * half_span)
    names = [n + tag for n in names]
    bld.chain(names, [root, upper, elbow, wrist], parent, [bone_r, bone_r])
    back = np.array([0.0, 0.0, -1.0])
    bld.part(names[1], upper + 0.35 * chord * back, elbow + 0.35 * chord * back, 0.5 * chord, shape="box", aspect=0.08, child=names[2])
    bld.part(names[2], elbow + 0.35 * chord * back, wrist + 0.35 * chord * back, 0.5 * chord, shape="box", aspect=0.08, child=names[3])
    bld.part(names[3], wrist + 0.3 * chord * back, tip + 0.2 * chord * back, 0.45 * chord, shape="ellipsoid", aspect=0.1)


def _line(start, direction, length: float, n: int) -> np.ndarray:
    """(n + 1, 3) evenly spaced points from ``start`` along unit ``direction`` over ``length``."""
    return np.asarray(start, float) + np.linspace(0, length, n + 1)[:, None] * np.asarray(direction, float)


def _quadruped(rng: np.random.Generator, winged: bool = False) -> _Builder:
    """A four-legged animal; ``winged`` makes a dragon (long tail, horns, wings on the back)."""
    u = rng.uniform
    withers = u(0.4, 1.6)  # shoulder height
    leg_frac = u(0.45, 0.7)
    body_len = withers * u(1.0, 1.6)
    depth = withers * (1 - leg_frac) * u(0.85, 1.05)  # body depth
    width = depth * u(0.55, 0.8)
    thick = u(0.7, 1.3)
    n_spine = int(rng.integers(2, 5))
    n_neck = int(rng.integers(1, 4))
    n_tail = int(rng.integers(2, 8))
    neck_len = withers * u(0.2, 0.6)
    neck_angle = np.radians(u(20, 65))
    neck_r = width * u(0.22, 0.32) * thick
    head_len = withers * u(0.25, 0.4)
    head_r = head_len * u(0.22, 0.3)
    head_aspect = u(0.9, 1.2)
    snout_drop = np.radians(u(0, 40))
    tail_len = body_len * u(0.2, 0.8)
    tail_r = width * u(0.1, 0.22)
    tail_droop = np.radians(u(-40, 60))  # negative: a tail carried up (husky), positive: hanging
    leg_r = withers * u(0.04, 0.065) * thick
    has_jaw = rng.random() < 0.5
    has_ears = rng.random() < 0.6
    ear_len = head_len * u(0.2, 0.6)
    if winged:
        n_tail = int(rng.integers(5, 9))
        tail_len = body_len * u(0.9, 1.6)
        tail_r = width * u(0.25, 0.35)
        half_span = body_len * u(0.8, 1.4)
        chord = body_len * u(0.3, 0.5)
        dihedral = np.radians(u(0, 35))
        horn = withers * u(0.08, 0.25)

    bld = _Builder()
    spine_y = withers - 0.2 * depth
    hips = bld.joint("hips", (0, spine_y, -body_len / 2), None)
    spine = [f"spine_{i + 1:02d}" for i in range(n_spine)]
    spine_pos = np.stack([np.zeros(n_spine), spine_y + 0.03 * depth * np.arange(n_spine), -body_len / 2 + body_len * np.arange(1, n_spine + 1) / (n_spine + 0.5)], 1)
    bld.chain(spine, spine_pos, "hips", [])
    chest = spine_pos[-1]
    # The torso hangs below the spine: its primitives are shifted down, perpendicular to the
    # spine, so that blending along the spine is unchanged.
    down = np.array([0.0, -0.3 * depth, 0.0])
    neck_base = np.array([0.0, spine_y, body_len / 2])
    torso = np.vstack([hips - (0, 0, 0.25 * width), spine_pos, neck_base + (0, 0, 0.1 * width)]) + down
    radii = np.full(n_spine + 2, width / 2)
    radii[0], radii[-1] = 0.95 * width / 2, 1.05 * width / 2
    for i, bone in enumerate(["hips"] + spine):
        bld.part(bone, torso[i], torso[i + 1], radii[i], radii[i + 1], aspect=depth / width, child=spine[i] if i < n_spine else None, cap=0.6)

    neck_dir = np.array([0.0, np.sin(neck_angle), np.cos(neck_angle)])
    necks = [f"neck_{i + 1:02d}" for i in range(n_neck)] + ["head"]
    bld.chain(necks, _line(neck_base, neck_dir, neck_len, n_neck), spine[-1], neck_r * np.linspace(1.15, 0.95, n_neck + 1), aspect=1.2)
    head = bld.pos("head")
    snout = np.array([0.0, -np.sin(snout_drop), np.cos(snout_drop)])
    bld.part("head", head - 0.2 * head_len * snout, head + head_len * snout, head_r, shape="ellipsoid", aspect=head_aspect)
    if has_jaw:
        jaw = bld.joint("jaw", head + head_len * (0.25 * snout - (0, 0.12, 0)), "head")
        bld.part("jaw", jaw, jaw + 0.7 * head_len * snout - (0, 0.05 * head_len, 0), 0.45 * head_r, 0.25 * head_r, aspect=0.6)
    if has_ears:
        for s, tag in SIDES:
            base = head + 0.15 * head_len * snout + (s * 0.45 * head_r, 0.6 * head_r * head_aspect, 0)
            ear = _line(base, _unit([s * 0.4, 1.0, -0.3]), ear_len, 2)
            bld.chain(["ear_01" + tag, "ear_02" + tag], ear, "head", np.array([0.3, 0.25, 0.1]) * ear_len, aspect=0.35, up=(0, 0, 1), sections=6)

    tail_base = hips - (0, 0.05 * depth, 0.25 * width)
    # A long tail droops less, so that its tip stays above the ground the feet stand on.
    tail_droop = min(tail_droop, np.arcsin(min(1.0, 0.75 * tail_base[1] / tail_len)))
    tail_dir = np.array([0.0, -np.sin(tail_droop), -np.cos(tail_droop)])
    tails = [f"tail_{i + 1:02d}" for i in range(n_tail)]
    bld.chain(tails, _line(tail_base, tail_dir, tail_len, n_tail), "hips", tail_r * np.linspace(1.0, 0.3, n_tail + 1))

    for s, tag in SIDES:
        # Hind leg: thigh forward-down, shin back-down, hind foot (from the hock) down to the toe.
        top = hips + (s * width * 0.38, -0.35 * depth, 0.1 * width)
        h = top[1]
        knee = top + (0, -0.36 * h, 0.12 * h)
        hock = knee + (0, -0.37 * h, -0.16 * h)
        ball = np.array([hock[0], 0.05 * h, hock[2] + 0.03 * h])
        hind = [n + tag for n in ("thigh", "shin", "hind_foot", "hind_toe")]
        bld.chain(hind, [top, knee, hock, ball], "hips", [])
        bld.part(hind[0], top + (0, 0.1 * h, -0.04 * h), knee, leg_r * 1.8, leg_r * 1.1, child=hind[1])
        bld.part(hind[1], knee, hock, leg_r * 1.0, leg_r * 0.75, child=hind[2])
        bld.part(hind[2], hock, ball, leg_r * 0.7, leg_r * 0.65, child=hind[3])
        bld.part(hind[3], ball, ball + (0, -0.02 * h, 0.12 * h), leg_r * 0.75, shape="box", aspect=0.6)

        # Front leg: shoulder blade down the chest side, upper arm, forearm, front foot, toe.
        blade = np.array([s * width * 0.25, spine_y - 0.05 * depth, chest[2] + 0.05 * body_len])
        arm_top = np.array([s * width * 0.42, spine_y - 0.55 * depth, body_len / 2 - 0.05 * body_len])
        h = arm_top[1]
        elbow = arm_top + (0, -0.3 * h, -0.1 * h)
        wrist = np.array([elbow[0], 0.2 * h, elbow[2] + 0.02 * h])
        fball = np.array([wrist[0], 0.05 * h, wrist[2] + 0.04 * h])
        front = [n + tag for n in ("shoulder", "upper_arm", "forearm", "front_foot", "front_toe")]
        bld.chain(front, [blade, arm_top, elbow, wrist, fball], spine[-1], leg_r * np.array([1.3, 1.4, 1.0, 0.7, 0.65]))
        bld.part(front[4], fball, fball + (0, -0.02 * h, 0.12 * h), leg_r * 0.75, shape="box", aspect=0.6)

        if winged:
            root = np.array([s * 0.2 * width, spine_y + 0.05 * depth, chest[2] - 0.1 * body_len])
            _wing(bld, tag, ("wing_root", "upper_wing", "forearm_wing", "hand_wing"), spine[-1], root, root + (s * 0.3 * width, 0.1 * width, 0), half_span, chord, dihedral, leg_r)
            base = head + head_r * np.array([s * 0.5, 0.6, -0.2])
            bld.part("head", base, base + horn * _unit([s * 0.3, 0.6, -1.0]), 0.3 * head_r, 0.03 * head_r, sections=6)
    return bld


def _bird(rng: np.random.Generator) -> _Builder:
    u = rng.uniform
    body = u(0.2, 0.8)  # body length, tail excluded
    leg_h = body * u(0.35, 1.1)  # hip height
    tilt = np.radians(u(5, 35))  # body pitch, front up
    girth = body * u(0.2, 0.3)  # body radius
    n_spine = int(rng.integers(1, 3))
    n_neck = int(rng.integers(2, 5))
    neck_len = body * u(0.15, 0.8)
    neck_r = girth * u(0.3, 0.45)
    head_r = body * u(0.09, 0.14)
    beak = body * u(0.08, 0.4)
    half_span = body * u(0.9, 2.0)
    chord = body * u(0.3, 0.5)
    dihedral = np.radians(u(-10, 25))
    n_tail = int(rng.integers(1, 4))
    tail_len = body * u(0.2, 0.6)
    fan_len = tail_len * u(0.6, 1.0)
    fan_width = body * u(0.12, 0.2)
    leg_r = body * u(0.02, 0.03)

    bld = _Builder()
    fwd = np.array([0.0, np.sin(tilt), np.cos(tilt)])
    hips = bld.joint("hips", (0, leg_h + 0.3 * girth, -0.25 * body * np.cos(tilt)), None)
    spine = [f"spine_{i + 1:02d}" for i in range(n_spine)]
    base = hips + 0.55 * body * fwd + 0.15 * body * fwd + (0, 0.3 * girth, 0)  # neck base, in front of the chest
    spine_pos = _line(hips, fwd, 0.55 * body, n_spine)[1:]
    bld.chain(spine, np.vstack([spine_pos, base]), "hips", np.append(np.full(n_spine, girth), 0.85 * girth), aspect=0.95, cap=0.8)
    bld.part("hips", hips - 0.3 * body * fwd, spine_pos[0], girth * 0.8, girth, aspect=0.95, child=spine[0], cap=0.8)
    necks = [f"neck_{i + 1:02d}" for i in range(n_neck)] + ["head"]
    bld.chain(necks, _line(base, _unit(fwd + (0, 1.2, 0)), neck_len, n_neck), spine[-1], np.linspace(neck_r, 0.92 * neck_r, n_neck + 1))
    head = bld.pos("head")
    look = np.array([0.0, -0.15, 1.0])
    bld.part("head", head - head_r * look, head + 1.2 * head_r * look, head_r, shape="ellipsoid", aspect=1.0)
    tip = head + (1.0 * head_r + beak) * _unit(look - (0, 0.2, 0))
    bld.part("head", head + 0.7 * head_r * look, tip, 0.35 * head_r, 0.05 * head_r, aspect=0.8)

    # The tail points back and down, but never so far down that the fan reaches the ground.
    reach = 0.15 * body + tail_len + fan_len
    tail_pitch = min(tilt + 0.2, np.arcsin(min(1.0, 0.75 * hips[1] / reach)))
    tail_dir = np.array([0.0, -np.sin(tail_pitch), -np.cos(tail_pitch)])
    tails = [f"tail_{i + 1:02d}" for i in range(n_tail)]
    bld.chain(tails, _line(hips + 0.15 * body * tail_dir, tail_dir, tail_len, n_tail), "hips", np.linspace(0.35, 0.25, n_tail + 1) * girth, aspect=0.6)
    fan = bld.pos(tails[-1])
    bld.part(tails[-1], fan, fan + fan_len * tail_dir, fan_width, shape="ellipsoid", aspect=0.12)

    chest = spine_pos[-1]
    for s, tag in SIDES:
        root = chest + (s * 0.45 * girth, 0.5 * girth, -0.05 * body)
        upper = root + (s * 0.35 * girth, 0.1 * girth, 0)
        _wing(bld, tag, ("shoulder", "upper_wing", "forearm_wing", "hand_wing"), spine[-1], root, upper, half_span, chord, dihedral, 0.3 * girth)

        # Legs: thigh hidden in the body, shin down to the ankle, long foot bone, toes forward and back.
        hip = hips + (s * 0.5 * girth, -0.4 * girth, 0.05 * body)
        foot_y = 0.04 * leg_h + 0.01 * body
        knee = hip + (0, -0.3 * (hip[1] - foot_y), 0.15 * girth)
        ankle = np.array([hip[0], foot_y + 0.45 * (knee[1] - foot_y), knee[2] - 0.15 * leg_h])
        ball = np.array([hip[0], foot_y, ankle[2] + 0.1 * leg_h])
        legs = [n + tag for n in ("thigh", "shin", "foot", "toe")]
        bld.chain(legs, [hip, knee, ankle, ball], "hips", [])
        bld.part(legs[0], hip, knee, 0.35 * girth, 0.25 * girth, child=legs[1])
        bld.part(legs[1], knee, ankle, 1.5 * leg_r, leg_r, child=legs[2])
        bld.part(legs[2], ankle, ball, 0.8 * leg_r, child=legs[3])
        bld.part(legs[3], ball, ball + (s * 0.02 * body, -foot_y, 0.18 * body), 1.2 * leg_r, shape="box", aspect=0.4)
        bld.part(legs[3], ball, ball + (0, -foot_y, -0.1 * body), leg_r, shape="box", aspect=0.4)
    return bld


def _fish(rng: np.random.Generator) -> _Builder:
    u = rng.uniform
    length = u(0.2, 1.5)
    height = length * u(0.18, 0.4)
    width = height * u(0.35, 0.6)
    n_tail = int(rng.integers(2, 6))
    has_jaw = rng.random() < 0.5
    fin = u(0.7, 1.3)  # fin size factor
    y = 0.6 * height

    bld = _Builder()
    bld.joint("spine_01", (0, y, 0.08 * length), None)
    head = bld.joint("head", (0, y, 0.22 * length), "spine_01")
    tail_start, tail_end = -0.05 * length, -0.36 * length
    bld.part("spine_01", (0, y, tail_start), head, width / 2, width / 2, aspect=height / width, child="head", cap=0.5)
    bld.part("head", head - (0, 0, 0.07 * length), (0, y + 0.02 * height, 0.5 * length), width / 2, shape="ellipsoid", aspect=0.9 * height / width)
    if has_jaw:
        jaw = bld.joint("jaw", (0, y - 0.18 * height, 0.36 * length), "head")
        bld.part("jaw", jaw, jaw + (0, 0.02 * height, 0.12 * length), 0.3 * width, 0.15 * width, aspect=0.6)
    # The tail narrows towards the caudal fin; fins are thin in x (an "up" of +x makes x the
    # thin direction).
    tails = [f"tail_{i + 1:02d}" for i in range(n_tail)] + ["caudal_fin"]
    points = _line((0, y, tail_start), (0, 0, -1), tail_start - tail_end, n_tail)
    bld.chain(tails, points, "spine_01", 0.5 * width * np.linspace(1.0, 0.25, n_tail + 1), aspect=0.8 * height / width, cap=0.5)
    bld.part("caudal_fin", points[-1], points[-1] - (0, 0, 0.18 * length * fin), 0.35 * height * fin, shape="ellipsoid", aspect=0.1, up=(1, 0, 0))
    dorsal = bld.joint("dorsal_fin", (0, y + 0.42 * height, 0.0), "spine_01")
    bld.part("dorsal_fin", dorsal - (0, 0.15 * height, -0.05 * length), dorsal + (0, 0.25 * height * fin, -0.15 * length), 0.08 * length * fin, shape="ellipsoid", aspect=0.1, up=(1, 0, 0))
    for s, tag in SIDES:
        root = bld.joint("pectoral_fin" + tag, (s * 0.4 * width, y - 0.2 * height, 0.18 * length), "spine_01")
        bld.part("pectoral_fin" + tag, root, root + np.array([s * 0.12, -0.08, -0.16]) * length * fin, 0.05 * length * fin, shape="ellipsoid", aspect=0.15)
    return bld


def _snake(rng: np.random.Generator) -> _Builder:
    u = rng.uniform
    length = u(1.0, 4.0)
    radius = length * u(0.012, 0.025)
    n_body = int(rng.integers(6, 13))
    n_tail = int(rng.integers(2, 5))
    amplitude = length * u(0.0, 0.08)
    waves = u(0.5, 2.0)
    phase = u(0, 2 * np.pi)
    has_jaw = rng.random() < 0.5
    head_len = radius * u(3.0, 4.5)

    # A gentle S-curve on the ground from the neck (z > 0) back to the tail tip, cut into joints
    # evenly spaced along its length.
    t = np.linspace(0, 1, 400)
    curve = np.stack([amplitude * (np.sin(2 * np.pi * waves * t + phase) - np.sin(phase)), np.full_like(t, radius), length / 2 - length * t], 1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    n = n_body + n_tail
    at = np.linspace(0, arc[-1] - head_len, n + 1)
    points = np.stack([np.interp(at, arc, curve[:, k]) for k in range(3)], 1)

    bld = _Builder()
    names = [f"spine_{i + 1:02d}" for i in range(n_body)] + [f"tail_{i + 1:02d}" for i in range(n_tail)]
    bld.chain(names, points, None, np.interp(np.arange(n + 1), [0, 1, n_body, n], [0.75, 1.0, 1.0, 0.12]) * radius)
    head = bld.joint("head", points[0] + (0, 0.3 * radius, 0.4 * head_len), names[0])
    bld.part("head", head - (0, 0, 0.5 * head_len), head + (0, -0.1 * radius, 0.6 * head_len), 1.3 * radius, shape="ellipsoid", aspect=0.6)
    if has_jaw:
        jaw = bld.joint("jaw", head + (0, -0.5 * radius, 0.1 * head_len), "head")
        bld.part("jaw", jaw, jaw + (0, 0, 0.45 * head_len), 0.8 * radius, 0.5 * radius, aspect=0.4)
    return bld


def _leg(bld: _Builder, names: list[str], parent: str, root, out, rise: float, lengths, radius: float) -> None:
    """A four-segment arthropod leg from ``root`` reaching outwards along horizontal ``out`` to the ground.

    lengths: coxa, femur and tibia lengths (the last segment reaches the ground); rise: femur angle
    above the horizontal (radians); names: the four joints from the body outwards.
    """
    root = np.asarray(root, float)
    coxa_end = root + lengths[0] * _unit(out + (0, 0.3, 0))
    knee = coxa_end + lengths[1] * (np.cos(rise) * out + (0, np.sin(rise), 0))
    drop = np.radians(50)
    ankle = knee + lengths[2] * (np.cos(drop) * out - (0, np.sin(drop), 0))
    foot = ankle + 0.35 * ankle[1] * out
    foot[1] = 0.0
    bld.chain(names, [root, coxa_end, knee, ankle, foot], parent, radius * np.linspace(1.0, 0.5, 5), sections=8)


def _spider(rng: np.random.Generator) -> _Builder:
    u = rng.uniform
    body = u(0.05, 0.6)  # cephalothorax + abdomen length
    ceph = body * u(0.35, 0.45)
    abdomen = (body - ceph) * u(0.9, 1.3)
    abdomen_r = 0.38 * abdomen * u(0.8, 1.1)
    leg = body * u(1.0, 2.2)
    height = leg * u(0.2, 0.35)
    leg_r = body * u(0.025, 0.045)
    yaws = np.radians(np.array([55, 20, -15, -50]) + rng.uniform(-8, 8, 4))
    rises = np.radians(rng.uniform(35, 60, 4))
    has_fangs = rng.random() < 0.5

    bld = _Builder()
    centre = bld.joint("cephalothorax", (0, height, 0), None)
    pedicel = bld.joint("abdomen", (0, height + 0.05 * body, -0.5 * ceph), "cephalothorax")
    bld.part("cephalothorax", centre - (0, 0, 0.5 * ceph), centre + (0, 0, 0.55 * ceph), 0.4 * ceph, shape="ellipsoid", aspect=0.6)
    back = _unit([0.0, 0.25, -1.0])
    bld.part("abdomen", pedicel - 0.05 * abdomen * back, pedicel + abdomen * back, abdomen_r, shape="ellipsoid", aspect=0.85)
    for s, tag in SIDES:
        if has_fangs:
            fang = bld.joint("fang" + tag, centre + (s * 0.1 * ceph, 0.0, 0.45 * ceph), "cephalothorax")
            bld.part("fang" + tag, fang, fang + (0, -0.2 * ceph, 0.15 * ceph), 0.08 * ceph, 0.03 * ceph)
        for i in range(4):
            out = np.array([s * np.cos(yaws[i]), 0.0, np.sin(yaws[i])])
            names = [f"leg{i + 1}_{seg}{tag}" for seg in ("coxa", "femur", "tibia", "metatarsus")]
            lengths = leg * (1.1 if i == 0 else 1.0) * np.array([0.1, 0.35, 0.3])
            _leg(bld, names, "cephalothorax", centre + 0.3 * ceph * out, out, rises[i], lengths, leg_r)
    return bld


def _insect(rng: np.random.Generator) -> _Builder:
    u = rng.uniform
    body = u(0.05, 0.5)
    thorax = body * u(0.25, 0.35)
    abdomen = body * u(0.4, 0.55)
    head_r = body * u(0.08, 0.13)
    leg = body * u(0.6, 1.3)
    height = leg * u(0.2, 0.35)
    leg_r = body * u(0.015, 0.03)
    yaws = np.radians(np.array([40, 0, -35]) + rng.uniform(-8, 8, 3))
    rises = np.radians(rng.uniform(30, 55, 3))
    antenna = body * u(0.2, 0.6)
    has_wings = rng.random() < 0.5

    bld = _Builder()
    centre = bld.joint("thorax", (0, height, 0), None)
    head = bld.joint("head", centre + (0, 0.02 * body, 0.55 * thorax), "thorax")
    waist = bld.joint("abdomen", centre + (0, 0.01 * body, -0.5 * thorax), "thorax")
    bld.part("thorax", centre - (0, 0, 0.55 * thorax), head, 0.35 * thorax, shape="ellipsoid", aspect=0.9)
    bld.part("head", head, head + (0, -0.3 * head_r, 2.0 * head_r), head_r, shape="ellipsoid", aspect=0.9)
    bld.part("abdomen", waist, waist + abdomen * _unit([0.0, 0.1, -1.0]), 0.3 * abdomen, shape="ellipsoid", aspect=0.75)
    for s, tag in SIDES:
        base = head + (s * 0.4 * head_r, 0.6 * head_r, 1.2 * head_r)
        bend = base + 0.45 * antenna * _unit([s * 0.4, 0.8, 0.5])
        tip = bend + 0.55 * antenna * _unit([s * 0.4, 0.3, 1.0])
        bld.chain(["antenna_01" + tag, "antenna_02" + tag], [base, bend, tip], "head", np.array([0.012, 0.01, 0.006]) * body)
        if has_wings:
            root = bld.joint("wing" + tag, centre + (s * 0.15 * thorax, 0.3 * thorax, 0), "thorax")
            bld.part("wing" + tag, root, root + abdomen * 1.1 * _unit([s * 0.35, 0.08, -1.0]), 0.22 * abdomen, shape="ellipsoid", aspect=0.06)
        for i in range(3):
            out = np.array([s * np.cos(yaws[i]), 0.0, np.sin(yaws[i])])
            names = [f"leg{i + 1}_{seg}{tag}" for seg in ("coxa", "femur", "tibia", "tarsus")]
            root = centre + (0, -0.15 * thorax, (0.3 - 0.3 * i) * thorax) + 0.25 * thorax * out
            _leg(bld, names, "thorax", root, out, rises[i], leg * np.array([0.08, 0.4, 0.35]), leg_r)
    return bld


_BUILDERS = {
    "humanoid": _humanoid,
    "quadruped": _quadruped,
    "dragon": lambda rng: _quadruped(rng, winged=True),
    "bird": _bird,
    "fish": _fish,
    "snake": _snake,
    "spider": _spider,
    "insect": _insect,
}


def make_creature(kind: str, seed: int) -> Asset:
    """A rigged creature of ``kind`` (one of :data:`CREATURE_KINDS`) with proportions drawn from ``seed``.

    Returns an Asset with mesh (part_ids per primitive), skeleton and top-4 skin, no animations,
    Y-up, facing +Z, lowest point on y = 0, in metres. The same kind and seed give identical arrays.
    """
    if kind not in _BUILDERS:
        raise Mesh3DError(f"unknown creature kind {kind!r}; use one of {', '.join(CREATURE_KINDS)}")
    # Seeding by the kind's name (not its position in the list) keeps creatures stable when kinds are added.
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode())])
    return _BUILDERS[kind](rng).asset(f"{kind}_{seed}")


def random_creature(seed: int) -> Asset:
    """A creature of a kind drawn from ``seed``, with proportions drawn from the same seed."""
    kind = CREATURE_KINDS[int(np.random.default_rng(seed).integers(len(CREATURE_KINDS)))]
    return make_creature(kind, seed)


def pose_animation(skeleton: Skeleton, rotations: dict[str, np.ndarray], name: str = "pose") -> Animation:
    """A one-frame clip turning the named joints from their bind pose; others stay at rest.

    rotations: joint name -> rotation vector (3,) in radians (axis times angle) in the joint's bind
    frame (world axes for the world-aligned frames of creatures made here), so
    ``{"forearm.L": (0, 0, 1.0)}`` turns the left forearm and everything below it about +Z
    around the elbow.
    """
    anim = Animation.rest(skeleton, name=name)
    for joint, rotvec in rotations.items():
        if joint not in skeleton.names:
            raise Mesh3DError(f"cannot pose joint {joint!r}: the skeleton has no joint of that name")
        rotvec = np.asarray(rotvec, float)
        angle = float(np.linalg.norm(rotvec))
        axis = rotvec / angle if angle > 0 else np.zeros(3)
        turn = np.append(np.sin(angle / 2) * axis, np.cos(angle / 2))
        j = skeleton.names.index(joint)
        anim.rotations[0, j] = quat_multiply(anim.rotations[0, j], turn)
    return anim


# ---------------------------------------------------------------------------------------------
# Preview: the creatures drawn by the project's one software renderer (rigging.animate.preview).
# ---------------------------------------------------------------------------------------------


def render(asset: Asset, size: int = 256, azimuth: float = 35.0) -> np.ndarray:
    """(size, size, 3) uint8 view from ``azimuth`` degrees (0 = front), coloured per part."""
    from rigging.animate.preview import render as rasterise

    mesh = asset.mesh
    parts = mesh.part_ids if mesh.part_ids is not None else np.zeros(len(mesh.faces), np.int32)
    palette = np.random.default_rng(0).uniform(0.35, 1.0, (int(parts.max(initial=0)) + 1, 3))
    lo, hi = mesh.bounds
    image, _ = rasterise(mesh.vertices, mesh.faces, palette[parts], azimuth, (lo + hi) / 2, 0.5 * mesh.diagonal, size)
    return image


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an RGB PNG."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def main(argv: Optional[list[str]] = None) -> None:
    """Build every kind for a range of seeds and print sizes and build times per kind; optionally
    write a contact sheet PNG (rows: seeds; columns: kinds, from the front-left above the side)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per kind (default 1)")
    parser.add_argument("--png", type=Path, help="write a contact sheet here")
    args = parser.parse_args(argv)
    stats = {kind: [] for kind in CREATURE_KINDS}  # (vertices, joints, largest side m, ms) per creature
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        tiles = []
        for kind in CREATURE_KINDS:
            start = time.perf_counter()
            asset = make_creature(kind, seed)
            ms = 1000 * (time.perf_counter() - start)
            stats[kind].append((len(asset.mesh.vertices), len(asset.skeleton), np.ptp(asset.mesh.vertices, axis=0).max(), ms))
            if args.png:
                tiles.append(np.concatenate([render(asset), render(asset, azimuth=90.0)], 0))
        if tiles:
            rows.append(np.concatenate(tiles, 1))
    print(f"{'kind':10} {'vertices':>11} {'joints':>7} {'largest side (m)':>17} {'ms mean':>8} {'ms max':>7}")
    for kind, rec in stats.items():
        v, j, size, ms = np.array(rec).T
        print(f"{kind:10} {v.min():5.0f}-{v.max():<5.0f} {j.min():3.0f}-{j.max():<3.0f} {size.min():8.2f}-{size.max():<8.2f} {ms.mean():8.1f} {ms.max():7.1f}")
    if rows:
        write_png(args.png, np.concatenate(rows, 0))
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
