"""Skeleton understanding: label a rig's chains from geometry and topology alone (names are never read).

Steps, on the body tree of :func:`rigging.animate.kinematics.body_parents`:

1. Axes. Up is +Y (the asset convention), unless the bind pose lies on its side (an upright body
   axis whose limbs all point one horizontal way): then up is the opposite of that way. The
   lateral axis is the horizontal axis the joints are most mirror-symmetric across; forward is
   the other one, signed +Z (or +X) as in glTF, where assets face +Z. Left is ``up x forward``
   (+X for an asset facing +Z).
2. Centre line. Joints without a mirror twin across the symmetry plane form the trunk (so a
   coiled snake is all trunk); its longest path (by bone length) is the body axis, ordered
   tail/bottom -> head/top: upright when it rises more than it runs.
3. Limbs. Every piece of the tree hanging off the centre line is a limb candidate; its chain is the
   longest path from where it hangs to a leaf. A limb whose lowest point (the mesh around it when
   a mesh is given, else its joints) is near the ground is a leg, when legs stand on both sides
   and hold the body between them clear of the ground (a fish's low fins do not). The rest are
   arms (upright bodies and short forelimbs), wings (long, and spanning sideways on legless
   bodies) or fins (legless bodies); limbs hanging from the head or tail (ears, antennae) join
   those.
4. Body axis sections: the part behind the rear-most limb is the tail, between the limbs the spine,
   in front of the front-most limb the neck and head (bottom -> top for upright bodies).
5. Kind: humanoid (upright, 2 legs, 2 arms), biped, bird, quadruped, hexapod, octopod, multiped,
   flyer, fish or snake. Humanoids also get Mixamo names (:func:`mixamo_names`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from mesh3d.asset import Asset, Mesh, Skeleton
from rigging.animate.kinematics import body_parents

CENTRE_TOLERANCE = 0.02  # of the body size: how far from the symmetry plane a trunk joint may be
TWIN_TOLERANCE = 0.03  # of the body size: how far a limb joint's mirror image may be from its twin
GROUND_TOLERANCE = 0.08  # of the body height: how close to the ground a leg's lowest point is
CLEARANCE = 0.1  # of the body height: how far above the ground legs hold the body between them


@dataclass
class Chain:
    """A labelled chain: ``joints`` run from where it hangs on the body out to its tip.

    kind: spine, neck, head, tail, leg, arm, wing or fin. side: +1 left, -1 right, 0 centre.
    extra: further joints of the same limb off the chain (fingers, ears), same label.
    """

    kind: str
    joints: list[int]
    side: int = 0
    extra: list[int] = field(default_factory=list)


@dataclass
class Labels:
    """What a skeleton is: its kind, chains, axes and ground.

    parents: (J,) body-tree parents (-2 for helpers). root: the joint the legs hang from (the hips),
    or the body root. up, forward, left: (3,) unit vectors. ground: height of the ground along ``up``.
    size: longest side of the body's bounding box. joint_labels: a label per joint ("helper",
    "other" for joints nothing claimed).
    """

    kind: str
    chains: list[Chain]
    parents: np.ndarray
    root: int
    up: np.ndarray
    forward: np.ndarray
    left: np.ndarray
    ground: float
    size: float
    joint_labels: list[str]

    def get(self, kind: str) -> list[Chain]:
        """Chains of one kind; limbs ordered left before right, then front to back."""
        return [c for c in self.chains if c.kind == kind]

    def first(self, kind: str) -> Optional[Chain]:
        chains = self.get(kind)
        return chains[0] if chains else None


def leg_length(skeleton: Skeleton, labels: Labels, chain: Chain) -> float:
    """A leg's length: its chain's length, or the height of its hip above the ground when larger
    (rigs whose last leg joint is the knee and whose shin hangs from it)."""
    return max(chain_length(skeleton.joints, chain.joints), float(skeleton.joints[chain.joints[0]] @ labels.up - labels.ground))


def foot_point(skeleton: Skeleton, labels: Labels, chain: Chain) -> tuple[int, np.ndarray]:
    """Where a leg touches the ground: its tip joint and the sole's offset from it (3,) in world
    axes at rest. Zero when the tip is at the ground; straight down to the ground when the tip is
    the knee and the shin hangs from it (the offset turns with that joint)."""
    tip = chain.joints[-1]
    h = float(skeleton.joints[tip] @ labels.up - labels.ground)
    if h > 0.1 * leg_length(skeleton, labels, chain):
        return tip, -h * labels.up
    return tip, np.zeros(3)


def chain_length(points: np.ndarray, chain: list[int]) -> float:
    """Summed bone length along ``chain`` (indices into ``points`` (J, 3))."""
    return float(np.linalg.norm(np.diff(points[chain], axis=0), axis=1).sum()) if len(chain) > 1 else 0.0


def _neighbours(parents: np.ndarray, nodes: set[int]) -> dict[int, list[int]]:
    nb = {i: [] for i in nodes}
    for i in nodes:
        p = int(parents[i])
        if p in nodes:
            nb[i].append(p)
            nb[p].append(i)
    return nb


def _farthest(nb: dict[int, list[int]], points: np.ndarray, start: int) -> tuple[int, dict[int, int]]:
    """Farthest node from ``start`` along the tree (by bone length) and the predecessor map."""
    dist, prev, todo = {start: 0.0}, {start: -1}, [start]
    while todo:
        i = todo.pop()
        for k in nb[i]:
            if k not in dist:
                dist[k] = dist[i] + float(np.linalg.norm(points[k] - points[i]))
                prev[k] = i
                todo.append(k)
    end = max(dist, key=lambda k: (dist[k], -k))
    return end, prev


def _longest_path(nb: dict[int, list[int]], points: np.ndarray, start: int) -> list[int]:
    """The longest path of the tree component holding ``start`` (two farthest-point sweeps)."""
    a, _ = _farthest(nb, points, start)
    b, prev = _farthest(nb, points, a)
    path = [b]
    while prev[path[-1]] != -1:
        path.append(prev[path[-1]])
    return path


def _subtree(children: dict[int, list[int]], start: int) -> list[int]:
    out, todo = [], [start]
    while todo:
        i = todo.pop()
        out.append(i)
        todo.extend(children[i])
    return out


def _limb_chain(children: dict[int, list[int]], points: np.ndarray, start: int) -> list[int]:
    """Path from ``start`` down to the leaf farthest from it along the tree."""
    best: dict[int, tuple[float, list[int]]] = {}
    for i in reversed(_subtree(children, start)):  # children before parents
        tails = [(best[c][0] + float(np.linalg.norm(points[c] - points[i])), best[c][1]) for c in children[i]]
        length, path = max(tails, key=lambda t: t[0]) if tails else (0.0, [])
        best[i] = (length, [i] + path)
    return best[start][1]


def _lateral_axis(points: np.ndarray) -> int:
    """0 (X) or 2 (Z): the horizontal axis the points are mirror-symmetric across. X (glTF assets face
    +Z) unless X is clearly asymmetric and Z clearly better (an asset facing +X). Scores are median
    mirror distances, so a prop in one hand does not break a symmetric body."""
    scores = []
    size = float(np.ptp(points, axis=0).max()) or 1.0
    for a in (0, 2):
        centre = float(np.median(points[:, a]))
        mirrored = points.copy()
        mirrored[:, a] = 2 * centre - mirrored[:, a]
        d = np.linalg.norm(mirrored[:, None] - points[None], axis=-1).min(1)
        scores.append(float(np.median(d)) / size)
    ext = np.ptp(points, axis=0)
    # A body flat along Z (a T-posed figure) is trivially Z-symmetric: that says nothing.
    flat = ext[2] < 0.3 * ext[0]
    return 2 if scores[0] > 0.02 and scores[1] < 0.5 * scores[0] and scores[1] < 0.05 and not flat else 0


def label_chains(skeleton: Skeleton, mesh: Optional[Mesh] = None) -> Labels:
    """Label the chains of ``skeleton`` (see the module docstring); ``mesh`` refines ground contact.

    Up is the file's +Y unless the body lies on its side in the bind pose (:func:`_lying_down`):
    then the skeleton and mesh are turned so that the limbs hang down, labelled, and the labels'
    axes turned back (``ground`` is a height along ``up``).
    """
    labels = _label(skeleton, mesh)
    down = _lying_down(skeleton.joints, labels)
    if down is None:
        return labels
    from rigging.animate.kinematics import rotation_between

    turn = rotation_between(down, np.array([0.0, -1.0, 0.0]))
    turned = _label(replace(skeleton, joints=skeleton.joints @ turn.T, frames=None),
                    replace(mesh, vertices=mesh.vertices @ turn.T, normals=None) if mesh is not None else None)
    return replace(turned, up=turn.T @ turned.up, forward=turn.T @ turned.forward, left=turn.T @ turned.left)


def _lying_down(pts: np.ndarray, labels: Labels) -> Optional[np.ndarray]:
    """The down direction (a world axis, (3,)) of a body bound lying on its side; None when +Y is up.

    The evidence: the body axis runs vertically, as an upright figure's would, yet its limbs (two
    pairs or more, none of them on the ground) do not hang down: their root-to-tip directions,
    with the sideways part removed (so left and right arms held out cancel), point mostly one
    horizontal way. (A tall fish, its axis from dorsal to ventral fin, has one pair of fins.) An upright figure's legs point down;
    a level body (a fish, a quadruped) and one standing on legs are never turned.
    """
    axis = [j for c in labels.get("tail") for j in c.joints][::-1] + [j for k in ("spine", "neck", "head") for c in labels.get(k) for j in c.joints]
    limbs = [c for c in labels.chains if c.side != 0 and len(c.joints) > 1]
    if labels.get("leg") or len(axis) < 2 or len(limbs) < 4:
        return None
    d = pts[axis[-1]] - pts[axis[0]]
    if abs(d[1]) <= np.linalg.norm([d[0], d[2]]):
        return None
    dirs = []
    for c in limbs:
        v = pts[c.joints[-1]] - pts[c.joints[0]]
        v = v - np.dot(v, labels.left) * labels.left
        dirs.append(v / (np.linalg.norm(v) or 1.0))
    mean = np.mean(dirs, axis=0)
    flat = mean.copy()
    flat[1] = 0.0
    if np.linalg.norm(flat) < 0.5 or np.linalg.norm(flat) < abs(mean[1]):
        return None
    k = int(np.argmax(np.abs(flat)))
    down = np.zeros(3)
    down[k] = np.sign(flat[k])
    return down


def _label(skeleton: Skeleton, mesh: Optional[Mesh]) -> Labels:
    """:func:`label_chains` with +Y up."""
    parents = body_parents(skeleton)
    body = np.flatnonzero(parents >= -1)
    pts = skeleton.joints
    children = {i: [] for i in range(len(skeleton))}
    for i in body:
        if parents[i] >= 0:
            children[int(parents[i])].append(int(i))

    lat = _lateral_axis(pts[body])
    up = np.array([0.0, 1.0, 0.0])
    forward = np.zeros(3)
    forward[2 if lat == 0 else 0] = 1.0
    left = np.cross(up, forward)
    lo, hi = pts[body].min(0), pts[body].max(0)
    if mesh is not None and len(mesh.vertices):
        lo, hi = np.minimum(lo, mesh.bounds[0]), np.maximum(hi, mesh.bounds[1])
    size = float((hi - lo).max()) or 1.0
    ground, height = float(lo[1]), float(hi[1] - lo[1]) or size
    # The symmetry plane passes through the branching joints (pelvis, chest, and pairs of hands):
    # their median, not the box centre, which a prop in one hand would shift.
    forks = [i for i in body if len(children[i]) >= 2] or list(body)
    mid = float(np.median(pts[forks, lat]))

    # 2. the centre line and its longest path
    paired = _paired(skeleton, body, lat, mid, size)
    centre = {int(i) for i, twin in zip(body, paired) if not twin}
    if not centre:  # an asymmetric rig: the joint nearest the plane carries the trunk alone
        centre = {int(body[np.argmin(np.abs(pts[body, lat] - mid))])}
    nb = _neighbours(parents, centre)
    comps, seen = [], set()
    for i in sorted(centre):
        if i not in seen:
            comp = _longest_path(nb, pts, i)
            reach = _subtree_nodes(nb, i)
            seen |= reach
            comps.append((chain_length(pts, comp), len(reach), comp, reach))
    _, _, axis, trunk = max(comps, key=lambda c: (c[0], c[1]))
    rise = abs(pts[axis[-1], 1] - pts[axis[0], 1])
    run = abs(np.dot(pts[axis[-1]] - pts[axis[0]], forward))
    upright = rise > run
    key = (lambda i: pts[i, 1]) if upright else (lambda i: float(np.dot(pts[i], forward)))
    if key(axis[0]) > key(axis[-1]):
        axis = axis[::-1]  # tail/bottom first, head/top last
    pos_on_axis = {j: k for k, j in enumerate(axis)}

    # 3. limbs hanging off the trunk
    limbs = []
    near = _vertex_owner(mesh, pts, body) if mesh is not None and len(mesh.vertices) else None
    for t in sorted(trunk):
        for c in children[t]:
            if c in trunk:
                continue
            chain = _limb_chain(children, pts, c)
            chain = [t] + chain if t not in pos_on_axis else chain
            anchor = t
            while anchor not in pos_on_axis and parents[anchor] >= 0:
                anchor = int(parents[anchor])
            members = _subtree(children, c)
            low = pts[members, 1].min()
            if near is not None:
                mine = np.isin(near[0], members)
                if mine.any():
                    low = min(low, float(near[1][mine].min()))
            side_val = float(np.dot(pts[members].mean(0) - pts[t], left))
            lateral = abs(side_val) > CENTRE_TOLERANCE * size or any(j not in centre for j in members)
            limbs.append(
                dict(chain=chain, members=members, anchor=pos_on_axis.get(anchor, 0), low=low,
                     side=int(np.sign(side_val) or 1) if lateral else 0, lateral=lateral,
                     length=chain_length(pts, [t] + chain if chain[0] != t else chain))
            )
    axis_length = chain_length(pts, axis)
    for m in limbs:
        if m["lateral"] and m["low"] - ground < GROUND_TOLERANCE * height:
            m["kind"] = "leg"
        elif not m["lateral"]:
            m["kind"] = None  # a centre piece off the trunk (a jaw, a crest): part of its section
        elif m["length"] > 0.35 * axis_length:
            m["kind"] = "long"
        else:
            m["kind"] = "small"
    legs = [m for m in limbs if m["kind"] == "leg"]
    if legs and ({m["side"] for m in legs} != {1, -1} or not _carried(pts, axis, [m["anchor"] for m in legs], near, ground, height)):
        # Low fins of a body lying on the ground (a fish's belly), or limbs on one side only.
        for m in legs:
            m["kind"] = "long" if m["length"] > 0.35 * axis_length else "small"
        legs = []
    if len(legs) == 2 and not upright and np.mean([m["anchor"] for m in legs]) > 0.5 * (len(axis) - 1):
        # A pair of "legs" on the front half of a level body is a pair of low fins (a whale's
        # flippers): two-legged level bodies (birds, raptors) stand on hips behind their middle.
        for m in legs:
            m["kind"] = "small"
        legs = []
    for m in limbs:
        if not upright and m["kind"] in ("small", "long") and m["anchor"] >= len(axis) - 2 and len(axis) >= 5:
            m["kind"] = None  # hanging from the head: ears, horns, antennae
        if m["kind"] == "small":
            # Legless bodies: fins. Otherwise arms, unless too short to be one (ears, antennae).
            m["kind"] = "fin" if not legs else "arm" if m["length"] > 0.1 * axis_length else None
        if m["kind"] == "long":
            # Without legs, a long limb reaching back or down is a fin; a wing spans sideways.
            m["kind"] = "arm" if upright and legs else "wing" if legs or _spread_out(pts, m["chain"], left) else "fin"
    hips = min((m["anchor"] for m in legs), default=0)
    anchors = [m["anchor"] for m in limbs if m["kind"]]
    if anchors:
        rear, front = min(anchors), max(anchors)
    else:  # fish and snakes: the front half is body, the back half tail
        rear, front = len(axis) // 2, len(axis) - 2
    if upright:
        rear = hips
        if not any(m["kind"] in ("arm", "wing", "fin") for m in limbs):
            front = hips + (len(axis) - 1 - hips) * 2 // 3

    # 4. sections of the body axis
    front = min(max(front, rear), len(axis) - 1)
    chains: list[Chain] = []
    tail = axis[:rear][::-1]
    spine = axis[rear: front + 1]
    neck = axis[front + 1: -1]
    head = [axis[-1]] if front + 1 < len(axis) else []
    root = axis[hips] if legs else axis[rear] if spine else axis[0]
    for kind, js in (("spine", spine), ("neck", neck), ("head", head), ("tail", tail)):
        if js:
            chains.append(Chain(kind, list(map(int, js))))
    section = {}
    for c in chains:
        for j in c.joints:
            section[j] = c.kind
    order = lambda m: (-m["side"], -float(np.dot(pts[m["chain"][0]], forward)))  # noqa: E731
    for m in sorted([m for m in limbs if m["kind"]], key=order):
        extra = [j for j in m["members"] if j not in m["chain"]]
        chains.append(Chain(m["kind"], list(map(int, m["chain"])), m["side"], list(map(int, extra))))

    labels = ["other"] * len(skeleton)
    for i in np.flatnonzero(parents == -2):
        labels[i] = "helper"
    for i in trunk:
        labels[i] = section.get(i, "spine")
    for m in limbs:  # unclaimed limbs take the section they hang from
        for j in m["members"]:
            labels[j] = m["kind"] or section.get(axis[m["anchor"]], "other")
    for c in chains:
        for j in c.joints + c.extra:
            if labels[j] != "helper":
                labels[j] = c.kind

    n_legs, n_wings, n_arms = len(legs), sum(c.kind == "wing" for c in chains), sum(c.kind == "arm" for c in chains)
    if n_legs == 2:
        kind = "humanoid" if upright and n_arms == 2 and head else "bird" if n_wings else "biped"
    elif n_legs:
        kind = {4: "quadruped", 6: "hexapod", 8: "octopod"}.get(n_legs, "multiped")
    elif n_wings:
        kind = "flyer"
    elif _slender(mesh, pts, axis, len(axis)) and not any(c.kind == "fin" for c in chains):
        kind = "snake"
    else:
        kind = "fish"
    return Labels(kind, chains, parents, int(root), up, forward, left, ground, size, labels)


def _carried(pts: np.ndarray, axis: list[int], anchors: list[int], near, ground: float, height: float) -> bool:
    """Whether limbs touching the ground hang from a body they hold up: the body axis between the
    front-most and rear-most of their ``anchors`` (positions on ``axis``), with the mesh around it
    when ``near`` (vertex owners, heights) is given, stays above the ground by CLEARANCE of the
    body's height. A fish's belly lies as low as its lowest fins."""
    section = axis[min(anchors): max(anchors) + 1]
    low = float(pts[section, 1].min())
    if near is not None:
        mine = np.isin(near[0], section)
        if mine.any():
            low = min(low, float(near[1][mine].min()))
    return low - ground > CLEARANCE * height


def _spread_out(pts: np.ndarray, chain: list[int], left: np.ndarray) -> bool:
    """Whether a limb reaches out sideways (a wing's span) more than back or down (a long fin):
    its tip's sideways offset from its root is at least half the root-to-tip distance."""
    d = pts[chain[-1]] - pts[chain[0]]
    return abs(float(np.dot(d, left))) >= 0.5 * float(np.linalg.norm(d))


def _paired(skeleton: Skeleton, joints: np.ndarray, lat: int, mid: float, size: float) -> np.ndarray:
    """For ``joints``: True when off the symmetry plane with a mirror twin on the other side that is
    neither its ancestor nor its descendant (left and right limbs). The rest (the trunk, and every
    joint of a curled snake, a single chain) are centre. Helpers count as twins (a weightless
    left clavicle still pairs the right one)."""
    pts = skeleton.joints
    offset = pts[:, lat] - mid
    mirrored = pts[joints].copy()
    mirrored[:, lat] = 2 * mid - mirrored[:, lat]
    d = np.linalg.norm(mirrored[:, None] - pts[None], axis=-1)
    out = np.zeros(len(joints), bool)
    for n, j in enumerate(joints):
        if abs(offset[j]) <= 0.002 * size:
            continue
        for k in np.flatnonzero((d[n] < TWIN_TOLERANCE * size) & (np.sign(offset) == -np.sign(offset[j]))):
            if not _related(skeleton.parents, int(j), int(k)):
                out[n] = True
                break
    return out


def _related(parents: np.ndarray, a: int, b: int) -> bool:
    """Whether one joint is an ancestor of the other."""
    for x, y in ((a, b), (b, a)):
        while x >= 0:
            if x == y:
                return True
            x = int(parents[x])
    return False


def _subtree_nodes(nb: dict[int, list[int]], start: int) -> set[int]:
    seen, todo = {start}, [start]
    while todo:
        for k in nb[todo.pop()]:
            if k not in seen:
                seen.add(k)
                todo.append(k)
    return seen


def _vertex_owner(mesh: Mesh, pts: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each mesh vertex, the nearest body joint and the vertex height: which limb owns the sole."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(pts[body]).query(mesh.vertices)
    return body[idx], mesh.vertices[:, 1]


def _slender(mesh: Optional[Mesh], pts: np.ndarray, axis: list[int], n: int) -> bool:
    """A snake: the body lies low, much longer than thick (mesh height < 1/5 of the body axis);
    without a mesh, a long chain of joints (10 or more)."""
    length = chain_length(pts, axis)
    if mesh is not None and len(mesh.vertices):
        return float(np.ptp(mesh.vertices[:, 1])) < 0.2 * length
    return n >= 10


# Mixamo bone names, ordered from the body out.
MIXAMO_SPINE = ("Hips", "Spine", "Spine1", "Spine2")
MIXAMO_ARM = ("Shoulder", "Arm", "ForeArm", "Hand")
MIXAMO_LEG = ("UpLeg", "Leg", "Foot", "ToeBase")


def mixamo_names(skeleton: Skeleton, labels: Optional[Labels] = None) -> dict[int, str]:
    """Mixamo-compatible names for a humanoid's joints (joint index -> name); {} for other kinds.

    Hips is the joint the legs hang from, Spine..Spine2 the next trunk joints up to the chest,
    then Neck and Head. Arms: a short first bone (< 0.65 of the next) is the Shoulder (clavicle);
    the hand is where the fingers branch. Legs: UpLeg, Leg, Foot, ToeBase from the hip down.
    """
    labels = labels or label_chains(skeleton)
    if labels.kind != "humanoid":
        return {}
    pts = skeleton.joints
    out: dict[int, str] = {}
    spine = labels.first("spine").joints
    out[spine[0]] = "Hips"
    rest = spine[1:]
    if len(rest) > 3:  # keep the lowest, the chest and the one between
        rest = [rest[0], rest[len(rest) // 2], rest[-1]]
    for name, j in zip(MIXAMO_SPINE[1:], rest):
        out[j] = name
    neck, head = labels.first("neck"), labels.first("head")
    if neck:
        out[neck.joints[0]] = "Neck"
    if head:
        out[head.joints[0]] = "Head"
    children = {i: [] for i in range(len(skeleton))}
    for i, p in enumerate(labels.parents):
        if p >= 0:
            children[int(p)].append(i)
    for c in labels.get("arm") + labels.get("leg"):
        side = "Left" if c.side > 0 else "Right"
        chain = c.joints[1:] if c.joints[0] in spine else list(c.joints)
        if c.kind == "arm":
            cut = next((k for k, j in enumerate(chain) if len(children[j]) > 1), len(chain) - 1)
            chain = chain[: cut + 1]
            bones = np.linalg.norm(np.diff(pts[chain], axis=0), axis=1)
            names = MIXAMO_ARM if len(bones) > 1 and bones[0] < 0.65 * bones[1] else MIXAMO_ARM[1:]  # a clavicle is short
        else:
            names = MIXAMO_LEG
        for name, j in zip(names, chain):
            out[j] = side + name
    return out


def rename_mixamo(asset: Asset) -> Asset:
    """The asset with its humanoid joints renamed to Mixamo names (others keep theirs, made unique)."""
    if asset.skeleton is None:
        return asset
    mapping = mixamo_names(asset.skeleton, label_chains(asset.skeleton, asset.mesh))
    taken = set(mapping.values())
    names = []
    for i, n in enumerate(asset.skeleton.names):
        new = mapping.get(i, n)
        if i not in mapping and new in taken:  # an unrelated joint already called e.g. "Hips"
            new = f"{n}_orig"
        names.append(new)
    return replace(asset, skeleton=replace(asset.skeleton, names=names))
