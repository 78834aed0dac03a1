"""A skeleton from the shape's volume alone: no learning, never fails.

Pipeline, all in the normalised frame (bounding box centred, longest side 1):

1. voxelise the union of all parts into a solid (:mod:`rigging.skeleton.volume`);
2. if the solid is mirror-symmetric about a bounding-box mid-plane, make it exactly symmetric;
3. thin it to a one-voxel curve skeleton (Lee's 3D thinning, scikit-image);
4. turn the skeleton voxels into a graph, join stray pieces, and keep a spanning tree that cuts
   loops at their thinnest point; root it at the skeleton point nearest the centre of mass among
   thick points (the torso);
5. prune spurs (leaf branches that barely stick out of the ball of their junction, or, for a
   branch running inside a flat part such as a disc, out of the part's width around the
   junction) and whiskers (leaf branches at most two voxels thick hanging from a body many times
   thicker: fins, spines, antennae, hair strands), which follow their body in artist rigs;
6. reach into thick parts the medial axis misses (thinning retracts from round ends, so a fish's
   blunt head has no branch) with a straight chain ending in a non-deforming end joint;
7. replace coiled runs (a spring's wire winding about one axis) by a straight run along the axis;
8. keep joints at the root, branch points and tips, at bends (Douglas-Peucker) and along long
   straight runs, and merge joints that nearly coincide;
9. for a symmetric shape build one half and mirror it, so the rig is exactly symmetric.

Degenerate inputs (a point cloud, a flat plane, a single triangle, a zero-size shape) still get a
small valid rig; a mesh without vertices raises :class:`Mesh3DError`.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from mesh3d.asset import Mesh, Skeleton
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.normalize import normalize_unit_cube
from rigging.skeleton.volume import Volume, voxelise

# Tuned on the shared *train* rigs (dev is for reporting); lengths are in the normalised frame.
SYMMETRY_IOU = 0.85  # a solid this close to its mirror image is treated as symmetric
PRUNE_RATIO = 0.8  # a leaf branch must stick out of its junction's ball by this many junction radii
PRUNE_MIN = 0.03  # ... and by at least this much
SHEET_QUANTILE = 0.25  # quantile of the distances to the surface across a flat part (see _sheet_width)
SHEET_RATIO = 2.0  # a junction is in a flat part when the part is this many times wider than thick
SHEET_RUN = 5  # nodes (voxels) of the run before a junction that give its direction
BLUNT_DEPTH = 0.05  # volume this far beyond every node's ball gets a chain of its own
WHISKER_THINNESS = 0.15  # a two-voxel-thin leaf branch this much thinner than its body is pruned
BEND_TOLERANCE = 0.02  # Douglas-Peucker tolerance: a chain deviating more than this gets a joint
MAX_SEGMENT = 0.07  # straight runs longer than this get intermediate joints
MERGE_DISTANCE = 0.025  # joints closer than this to their parent are merged into one
COIL_TURNS = 1.5  # a run winding this many times about one axis is a coil, rigged along its axis
COIL_SPUR = 0.08  # leaf branches shorter than this do not break a coiled run


def geometric_skeleton(mesh: Mesh, max_joints: int = 64, resolution: int = 96, symmetry: bool = True) -> Skeleton:
    """A joint tree from the medial axis of the mesh's volume, in the mesh's own frame.

    mesh: any :class:`Mesh` (several overlapping or open parts, or a point cloud). max_joints: upper
    bound on the joint count (>= 1). resolution: voxels along the longest bounding-box side (the
    finest limb we resolve is about two voxels thick). symmetry: detect a bounding-box mid-plane of
    mirror symmetry and make the rig exactly symmetric about it (names ``.L``/``.R``).
    The root sits in the torso. Every joint deforms except the end of each chain reaching into a
    blunt part (``helper`` True): it only marks where the last bone ends.
    """
    if max_joints < 1:
        raise Mesh3DError(f"max_joints must be at least 1, got {max_joints}")
    if not len(mesh.vertices):
        raise Mesh3DError("the mesh has no vertices: there is nothing to rig")
    points, centre, scale = normalize_unit_cube(mesh.vertices)
    vol = voxelise(points, mesh.faces, resolution)
    axis = _mirror_axis(vol.solid) if symmetry else None
    if axis is not None:
        vol.solid |= np.flip(vol.solid, axis)

    nodes, parent, tip, on_plane = _medial_tree(vol, axis)
    nodes, parent, tip, on_plane = _straighten_coils(nodes, parent, tip, on_plane, vol.h)
    joints, parents, helper, lateral = _fit_joints(nodes, parent, tip, on_plane, axis is not None, max_joints)
    joints, parents, helper, names = _mirror(joints, parents, helper, lateral, axis)
    return Skeleton(joints * scale + centre, parents, names, helper)


def _mirror_axis(solid: np.ndarray) -> int | None:
    """The axis whose mid-plane mirrors the solid best, if its IoU reaches ``SYMMETRY_IOU``. Ties
    go to X, then Z: in glTF's frame a character faces +Z, so X is left-right and Y is up."""
    best, best_iou = None, SYMMETRY_IOU
    total = solid.sum()
    for axis in (0, 2, 1):
        if solid.shape[axis] <= 2 * 3 + 1:
            continue  # flat along this axis: mirroring through its thickness says nothing
        inter = np.logical_and(solid, np.flip(solid, axis)).sum()
        iou = inter / max(1, 2 * total - inter)
        if iou >= best_iou + (0.0 if best is None else 0.01):
            best, best_iou = axis, iou
    return best


def _medial_tree(vol: Volume, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pruned medial-axis tree, with chains into blunt ends.

    Returns nodes (N, 3) positions (normalised frame), parent (N,) int (-1 for the root, which is
    not necessarily index 0), tip (N,) bool for the end points of those chains (on the surface), and
    on_plane (N,) bool for nodes on the mirror plane. With a symmetry axis, only the half on the
    positive side (and the plane) is kept.
    """
    skel = skeletonize(vol.solid)
    if not skel.any():  # nothing solid survived (cannot happen for a non-empty grid, but be safe)
        skel[tuple(np.argwhere(vol.solid)[0])] = True
    edt, nearest = ndimage.distance_transform_edt(vol.solid, return_indices=True)
    idx = np.argwhere(skel)
    nodes = vol.position(idx)
    radius = np.maximum(edt[tuple(idx.T)], 0.5) * vol.h
    # Thinning puts the axis of an even-width part half a voxel or so off the mirror plane: a node
    # within 1.5 voxels or half its own radius of the plane is on it.
    def plane(points, radius):
        return np.abs(points[:, axis]) <= np.maximum(1.5 * vol.h, 0.5 * radius)

    on_plane = plane(nodes, radius) if axis is not None else np.zeros(len(nodes), bool)
    edges = _join_pieces(nodes, _voxel_edges(idx, skel.shape))
    root = _root(vol, nodes, radius, on_plane if axis is not None else None)
    parent = _spanning_tree(nodes, edges, radius, root)
    thin_dir = vol.position(nearest[(slice(None), *idx.T)].T) - nodes  # towards the nearest outside voxel
    alive = _prune(nodes, parent, radius, root, vol, thin_dir)
    if axis is not None:
        alive &= _reachable(parent, root, alive & (on_plane | (nodes[:, axis] > 0)))
    nodes, parent, radius = _subtree(alive, nodes, parent, radius)
    # Thin parts (at most two voxels thick) are whiskers the pruning removed on purpose.
    half = edt > 1.5
    if axis is not None:  # cover only the kept half (and the plane)
        coord = vol.origin[axis] + vol.h * np.arange(half.shape[axis])
        shape = [1, 1, 1]
        shape[axis] = -1
        half &= (coord >= -1.5 * vol.h).reshape(shape)
    nodes, parent, tip, radius = _cover_blunt_ends(vol, half, nodes, parent, radius)
    return nodes, parent, tip, plane(nodes, radius) if axis is not None else np.zeros(len(nodes), bool)


def _is_whisker(chain: list[int], nodes: np.ndarray, radius: np.ndarray, body: np.ndarray, h: float) -> bool:
    """A leaf branch at most two voxels thick and much thinner than the body it hangs from.

    body: (N,) the largest radius on each node's path to the root. Only the part of the branch
    beyond its junction's ball counts.
    """
    junction = chain[-1]
    far = [a for a in chain[:-1] if np.linalg.norm(nodes[a] - nodes[junction]) > radius[junction]]
    if not far:
        return False
    thickness = np.median(radius[far])
    return bool(thickness <= 1.01 * h and thickness <= WHISKER_THINNESS * body[junction])


def _cover_blunt_ends(
    vol: Volume, region: np.ndarray, nodes: np.ndarray, parent: np.ndarray, radius: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reach into parts of the volume the skeleton misses: a blunt head or snout has no medial
    branch (thinning retracts from round ends), so a fish would have no joint in its head.

    region: (X, Y, Z) bool voxels to cover. A voxel is covered when it lies within a node's ball
    (radius + 1.5 voxels). Each uncovered piece reaching deeper than ``BLUNT_DEPTH`` gets a
    straight chain from the nearest node that sees its deepest voxel through the solid, ending in
    a tip. Returns nodes, parent, tip (bool, the chain ends) and radius with the chains appended.
    """
    h = vol.h
    idx = np.argwhere(region)
    pts = vol.position(idx)
    tip = np.zeros(len(nodes), bool)
    k = min(16, len(nodes))
    dist, near = cKDTree(nodes).query(pts, k=k)
    dist, near = dist.reshape(len(pts), k), near.reshape(len(pts), k)
    depth = (dist - radius[near] - 1.5 * h).min(1)
    mask = np.zeros(region.shape, bool)
    mask[tuple(idx[depth > 0].T)] = True
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count == 0:
        return nodes, parent, tip, radius
    where = labels[tuple(idx.T)]
    deepest = ndimage.maximum_position(np.where(where > 0, depth, -1.0), where, np.arange(1, count + 1))
    anchors = cKDTree(nodes)
    new_nodes, new_parent, new_tip = [], [], []
    for (i,) in deepest:
        if depth[i] < max(BLUNT_DEPTH, 3 * h):
            continue
        target = pts[i]
        # The nearest node whose straight line to the target stays in the solid.
        for a in np.atleast_1d(anchors.query(target, k=min(8, len(nodes)))[1]):
            length = np.linalg.norm(target - nodes[a])
            steps = max(int(length / h), 1)
            line = nodes[a] + (target - nodes[a]) * (np.arange(1, steps + 1) / steps)[:, None]
            if vol.inside(line).mean() >= 0.9:
                break
        else:
            continue
        # One node per voxel step so the chain is simplified and subdivided like any other.
        first = len(nodes) + len(new_nodes)
        for s_, p in enumerate(line):
            new_nodes.append(p)
            new_parent.append(a if s_ == 0 else first + s_ - 1)
            new_tip.append(s_ == len(line) - 1)
    if not new_nodes:
        return nodes, parent, tip, radius
    return (
        np.concatenate([nodes, np.array(new_nodes)]),
        np.concatenate([parent, np.array(new_parent, np.int64)]),
        np.concatenate([tip, np.array(new_tip, bool)]),
        np.concatenate([radius, np.full(len(new_nodes), h)]),
    )


def _runs(parent: np.ndarray, key: np.ndarray, root: int) -> list[list[int]]:
    """Each run of the tree from a ``key`` node up to (and including) the next key node:
    [start, ..., end]. key: (N,) bool with the root, every leaf and branch point among them."""
    out = []
    for start in np.flatnonzero(key):
        if start == root:
            continue
        chain = [int(start)]
        while not key[parent[chain[-1]]]:
            chain.append(int(parent[chain[-1]]))
        chain.append(int(parent[chain[-1]]))
        out.append(chain)
    return out


def _coil_axis(points: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The axis a polyline winds around, and how many turns it makes about it.

    points: (M, 3) a chain of skeleton nodes one voxel (``h``) apart. The tangents of a helix
    all lie near the plane normal to its axis, so the axis is the direction the smoothed tangents
    vary least along. Returns a point on the axis, the unit axis and the number of turns
    (unwrapped angle about the axis, end to end, / 2 pi). The point on the axis is the centre of
    the circle fitted to the points seen along the axis (least squares, Kasa), not their
    centroid, which a part turn pulls sideways.
    """
    step = max(2, int(round(3 * h / max(np.linalg.norm(points[1] - points[0]), 1e-12))))
    tangents = points[step:] - points[:-step]  # over a few voxels: the voxel staircase averages out
    tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-12)
    axis = np.linalg.eigh(tangents.T @ tangents)[1][:, 0]
    u = np.cross(axis, [1.0, 0, 0] if abs(axis[0]) < 0.9 else [0, 1.0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    mean = points.mean(0)
    x, y = (points - mean) @ u, (points - mean) @ v
    (a, b, _), *_ = np.linalg.lstsq(np.stack([2 * x, 2 * y, np.ones_like(x)], 1), x * x + y * y, rcond=None)
    centre = mean + a * u + b * v
    rel = points - centre
    angle = np.unwrap(np.arctan2(rel @ v, rel @ u))
    return centre, axis, abs(angle[-1] - angle[0]) / (2 * np.pi)


def _straighten_coils(
    nodes: np.ndarray, parent: np.ndarray, tip: np.ndarray, on_plane: np.ndarray, h: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rig coiled runs (springs, coiled tails: at least ``COIL_TURNS`` turns about one axis)
    with a straight run along their axis: a spring bends and stretches along it, and a rig
    along the wire would put dozens of joints on a helix.

    Runs are followed through short side branches (leaf branches shorter than ``COIL_SPUR``:
    thinning leaves stubs where the wire's cross-section changes). The coil and everything
    beyond it inside its cylinder (the tangle where its last turn lies flat) give way to one
    straight run, from the coil's end nearer the root to the far end of the cylinder; branches
    leaving the cylinder hang from the nearest node of that run. Returns nodes, parent, tip and
    on_plane of the new tree.
    """
    root = int(np.flatnonzero(parent < 0)[0])
    parent = parent.copy()
    alive = np.ones(len(nodes), bool)
    main = alive.copy()
    for chain in _leaf_chains(parent, alive, root):
        if _chain_length(nodes, chain) < COIL_SPUR:
            main[chain[:-1]] = False
    kids: list[list[int]] = [[] for _ in range(len(nodes))]
    for a in np.flatnonzero(parent >= 0):
        kids[parent[a]].append(int(a))
    added_nodes, added_parent, added_plane = [], [], []
    key = main & (_children(parent, main) != 1)
    key[root] = True
    for chain in _runs(parent, key, root):
        if len(chain) < 8 or not alive[chain].all():  # short, or inside a coil already replaced
            continue
        centre, axis, turns = _coil_axis(nodes[chain], h)
        if turns < COIL_TURNS:
            continue
        # The coil: the whole subtree below the run's end (its run, its stubs, what lies beyond).
        coil, stack = [], [chain[-2]]
        while stack:
            a = stack.pop()
            coil.append(a)
            stack.extend(kids[a])
        coil = np.array(sorted(coil))
        rel = nodes[coil] - centre
        along = rel @ axis
        off_axis = np.linalg.norm(rel - along[:, None] * axis, axis=1)
        radius = np.median(off_axis[np.isin(coil, chain)])
        inside = off_axis <= 1.5 * radius
        start = float((nodes[chain[-2]] - centre) @ axis)
        ends = along[inside]
        end = ends.min() if abs(ends.min() - start) > abs(ends.max() - start) else ends.max()
        steps = max(1, int(abs(end - start) / h))
        first = len(nodes) + len(added_nodes)
        run = centre + (start + (end - start) * np.arange(steps + 1) / steps)[:, None] * axis
        added_nodes += list(run)
        added_parent += [chain[-1]] + list(range(first, first + steps))
        added_plane += [on_plane[chain[-1]]] * len(run)
        alive[coil[inside]] = False
        # Branches leaving the cylinder hang from the run.
        for a in coil[~inside]:
            if not alive[parent[a]]:
                parent[a] = first + int(np.argmin(np.linalg.norm(run - nodes[a], axis=1)))
    if not added_nodes:
        return nodes, parent, tip, on_plane
    extra = len(added_nodes)
    nodes = np.concatenate([nodes, np.array(added_nodes)])
    parent = np.concatenate([parent, np.array(added_parent, np.int64)])
    alive = np.concatenate([alive, np.ones(extra, bool)])
    tip = np.concatenate([tip, np.zeros(extra, bool)])
    on_plane = np.concatenate([on_plane, np.array(added_plane, bool)])
    return _subtree(alive, nodes, parent, tip, on_plane)


def _subtree(alive: np.ndarray, nodes: np.ndarray, parent: np.ndarray, *per_node: np.ndarray) -> tuple[np.ndarray, ...]:
    """The tree restricted to the ``alive`` (N,) nodes (a node's parent must be alive if it is):
    nodes, parent re-indexed, and each further (N, ...) array filtered alike."""
    keep = np.flatnonzero(alive)
    remap = -np.ones(len(nodes), np.int64)
    remap[keep] = np.arange(len(keep))
    new_parent = np.where(parent[keep] >= 0, remap[np.maximum(parent[keep], 0)], -1)
    return (nodes[keep], new_parent, *(a[keep] for a in per_node))


def _voxel_edges(idx: np.ndarray, shape: tuple) -> np.ndarray:
    """(E, 2) pairs of 26-adjacent skeleton voxels."""
    lookup = -np.ones(shape, np.int64)
    lookup[tuple(idx.T)] = np.arange(len(idx))
    offsets = [o for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]  # half of the 26 neighbours
    out = []
    for o in offsets:
        nb = idx + np.array(o) - 1
        ok = np.all((nb >= 0) & (nb < shape), axis=1)
        j = lookup[tuple(nb[ok].T)]
        i = np.flatnonzero(ok)[j >= 0]
        out.append(np.stack([i, j[j >= 0]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def _join_pieces(nodes: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Add the shortest links that join separate skeleton pieces (separate parts) into one graph."""
    n = len(nodes)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, label = connected_components(graph, directed=False)
    links = []
    joined = label == np.bincount(label).argmax()
    while count > 1 and not joined.all():
        tree = cKDTree(nodes[joined])
        dist, near = tree.query(nodes[~joined])
        k = int(np.argmin(dist))
        outside = np.flatnonzero(~joined)[k]
        links.append((outside, np.flatnonzero(joined)[near[k]]))
        joined |= label == label[outside]
    return np.concatenate([edges, np.array(links, np.int64).reshape(-1, 2)])


def _root(vol: Volume, nodes: np.ndarray, radius: np.ndarray, on_plane: np.ndarray | None) -> int:
    """Skeleton node for the root: nearest the solid's centre of mass among the thick nodes (on
    the mirror plane when there is one)."""
    com = vol.position(np.argwhere(vol.solid).mean(0))
    candidates = radius >= 0.5 * radius.max()
    if on_plane is not None and on_plane.any():
        candidates = candidates & on_plane if (candidates & on_plane).any() else on_plane
    d = np.linalg.norm(nodes - com, axis=1)
    d[~candidates] = np.inf
    return int(np.argmin(d))


def _spanning_tree(nodes: np.ndarray, edges: np.ndarray, radius: np.ndarray, root: int) -> np.ndarray:
    """Parent array of a spanning tree rooted at ``root``.

    Edge cost is length / thickness, so a loop (a hand on a hip, a handle) is cut where it is
    thinnest and straight voxel steps win over diagonal shortcuts.
    """
    n = len(nodes)
    length = np.linalg.norm(nodes[edges[:, 0]] - nodes[edges[:, 1]], axis=1)
    cost = length / np.minimum(radius[edges[:, 0]], radius[edges[:, 1]]) + 1e-9
    mst = minimum_spanning_tree(coo_matrix((cost, (edges[:, 0], edges[:, 1])), shape=(n, n))).tocoo()
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(mst.row.tolist(), mst.col.tolist()):
        adj[a].append(b)
        adj[b].append(a)
    parent = -np.ones(n, np.int64)
    seen = np.zeros(n, bool)
    seen[root] = True
    queue = deque([root])
    while queue:
        a = queue.popleft()
        for b in adj[a]:
            if not seen[b]:
                seen[b] = True
                parent[b] = a
                queue.append(b)
    return parent


def _children(parent: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """(N,) number of living children of each node."""
    live = alive & (parent >= 0)
    return np.bincount(parent[live], minlength=len(parent))


def _leaf_chains(parent: np.ndarray, alive: np.ndarray, root: int) -> list[list[int]]:
    """Each living leaf's chain up to (and including) its junction: [leaf, ..., junction]."""
    nchild = _children(parent, alive)
    chains = []
    for leaf in np.flatnonzero(alive & (nchild == 0)):
        if leaf == root:
            continue
        chain = [int(leaf)]
        while True:
            p = int(parent[chain[-1]])
            chain.append(p)
            if p == root or nchild[p] != 1:
                break
        chains.append(chain)
    return chains


def _chain_length(nodes: np.ndarray, chain: list[int]) -> float:
    return float(np.linalg.norm(np.diff(nodes[chain], axis=0), axis=1).sum())


def _exit_distances(vol: Volume, point: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """(R,) distance from ``point`` along each unit ray (R, 3) to the first voxel outside the solid
    (in half-voxel steps, at most half the shape)."""
    steps = np.arange(1, int(0.5 / (vol.h / 2)) + 1) * (vol.h / 2)
    inside = vol.inside(point + steps[None, :, None] * rays[:, None, :])  # (R, S)
    return steps[np.where(inside.all(1), len(steps) - 1, np.argmin(inside, axis=1))]


def _sheet_width(vol: Volume, point: np.ndarray, thin_dir: np.ndarray) -> float:
    """How far the solid reaches from ``point`` across its thin direction: the ``SHEET_QUANTILE``
    of the distances to the surface along 16 rays perpendicular to ``thin_dir`` (towards the
    nearest surface). In a flat part (a disc, a flat fish's body) the ball of a medial point
    only spans the thickness, while the part extends this far around it."""
    n = np.linalg.norm(thin_dir)
    if n == 0:
        return 0.0
    w = thin_dir / n
    u = np.cross(w, [1.0, 0, 0] if abs(w[0]) < 0.9 else [0, 1.0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    rays = np.cos(a)[:, None] * u + np.sin(a)[:, None] * v
    return float(np.quantile(_exit_distances(vol, point, rays), SHEET_QUANTILE))


def _in_sheet(
    vol: Volume, nodes: np.ndarray, parent: np.ndarray, radius: np.ndarray, thin_dir: np.ndarray, chain: list[int]
) -> bool:
    """A leaf branch runs inside a flat part (a spur of its medial sheet) rather than sticking out
    of it (a thumb from a palm) or carrying on a limb that flattens (flat fingers after a palm):
    a quarter of the way from its tip, the solid reaches ``SHEET_RATIO`` times its radius to both
    sides, across the branch and its thin direction; and when the run before its junction is not
    flat, the branch turns more than 45 degrees away from that run."""
    along = nodes[chain[0]] - nodes[chain[-1]]
    before = chain[-1]
    for _ in range(SHEET_RUN):
        before = parent[before] if parent[before] >= 0 else before
    run = nodes[chain[-1]] - nodes[before]
    from_limb = _sheet_width(vol, nodes[before], thin_dir[before]) < SHEET_RATIO * radius[before]
    if from_limb and run @ along > np.cos(np.pi / 4) * np.linalg.norm(run) * np.linalg.norm(along):
        return False
    m = chain[len(chain) // 4]
    side = np.cross(thin_dir[m], along)
    if np.linalg.norm(side) == 0:
        return False
    side /= np.linalg.norm(side)
    # Radii of a voxel or so are rounding: a finger one voxel thick is not a sheet two voxels wide.
    thickness = max(radius[m], 1.5 * vol.h)
    return bool(_exit_distances(vol, nodes[m], np.stack([side, -side])).min() >= SHEET_RATIO * thickness)


def _prune(
    nodes: np.ndarray, parent: np.ndarray, radius: np.ndarray, root: int, vol: Volume, thin_dir: np.ndarray
) -> np.ndarray:
    """(N,) bool nodes kept after removing spurs, least protruding first, one at a time (removing
    one of two spurs at a limb's end lets the other continue the limb), and whiskers.
    thin_dir: (N, 3) each node's direction towards the nearest surface (for :func:`_sheet_width`)."""
    alive = np.ones(len(nodes), bool)
    width: dict[int, float] = {}  # each junction's _sheet_width
    in_sheet: dict[tuple[int, int], bool] = {}  # (leaf, junction) -> _in_sheet
    body = radius.copy()
    for a in _bfs(parent, alive, root)[1:]:
        body[a] = max(body[a], body[parent[a]])
    while True:
        worst, worst_score = None, 1.0
        for chain in _leaf_chains(parent, alive, root):
            if _is_whisker(chain, nodes, radius, body, vol.h):
                worst, worst_score = chain, -1.0
                break
            junction = chain[-1]
            if junction not in width:
                width[junction] = _sheet_width(vol, nodes[junction], thin_dir[junction])
            extent = radius[junction]
            if width[junction] >= SHEET_RATIO * radius[junction]:
                key = (chain[0], junction)
                if key not in in_sheet:
                    in_sheet[key] = _in_sheet(vol, nodes, parent, radius, thin_dir, chain)
                if in_sheet[key]:
                    extent = width[junction]  # a spur of a medial sheet: judged against the sheet's width
            # How far the branch reaches past the junction's own extent, in junction radii.
            reach = _chain_length(nodes, chain) + radius[chain[0]] - extent
            score = reach / max(PRUNE_RATIO * extent, PRUNE_MIN)
            if score < worst_score:
                worst, worst_score = chain, score
        if worst is None:
            return alive
        alive[worst[:-1]] = False


def _reachable(parent: np.ndarray, root: int, mask: np.ndarray) -> np.ndarray:
    """(N,) bool: the root, and nodes whose whole path to the root lies in ``mask``."""
    out = np.zeros(len(parent), bool)
    for a in _bfs(parent, np.ones(len(parent), bool), root):
        out[a] = a == root or (mask[a] and out[parent[a]])
    return out


def _simplify(points: np.ndarray, tolerance: float) -> list[int]:
    """Douglas-Peucker: indices into ``points`` (M, 3) of the kept polyline vertices, ends included."""
    keep = {0, len(points) - 1}
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        seg = points[b] - points[a]
        rel = points[a + 1 : b] - points[a]
        den = float(seg @ seg)
        t = np.clip(rel @ seg / den, 0, 1) if den > 0 else np.zeros(len(rel))
        dist = np.linalg.norm(rel - t[:, None] * seg, axis=1)
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            m = a + 1 + k
            keep.add(m)
            stack += [(a, m), (m, b)]
    return sorted(keep)


def _subdivide(points: np.ndarray, kept: list[int], max_segment: float) -> list[int]:
    """Add chain vertices so no kept-to-kept stretch is longer than ``max_segment`` in arc length."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    out = [kept[0]]
    for a, b in zip(kept[:-1], kept[1:]):
        pieces = int(np.ceil((arc[b] - arc[a]) / max_segment - 1e-9))
        for s in range(1, pieces):
            target = arc[a] + (arc[b] - arc[a]) * s / pieces
            out.append(int(np.argmin(np.abs(arc[a : b + 1] - target))) + a)
        out.append(b)
    return sorted(set(out))


def _fit_joints(
    nodes: np.ndarray, parent: np.ndarray, tip: np.ndarray, on_plane: np.ndarray, mirrored: bool, max_joints: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Joints on the tree: root, branch points, tips, bends, long runs; coarsened until they fit.

    Returns joints (J, 3), parents (J,) in breadth-first order, helper (J,) bool (the surface
    tips) and lateral (J,) bool: off the mirror plane (mirrored later when ``mirrored``). The
    joint count after mirroring is at most ``max_joints``.
    """
    root = int(np.flatnonzero(parent < 0)[0])
    alive = np.ones(len(nodes), bool)
    for coarse in (1.0, 1.4, 2.0, 3.0, 5.0, 10.0) + (np.inf,) * 8:
        joints, parents, ids = _place_joints(nodes, parent, tip, alive, root, coarse)
        lateral = np.zeros(len(joints), bool)
        if mirrored:
            for j, p in enumerate(parents):  # once a chain leaves the plane, the rest is lateral
                lateral[j] = p >= 0 and (lateral[p] or not on_plane[ids[j]])
        if len(joints) + lateral.sum() <= max_joints:
            return joints, parents, tip[ids], lateral
        if coarse == np.inf:
            # Even bare branch points and tips are too many: drop the shortest leaf branches.
            chains = sorted(_leaf_chains(parent, alive, root), key=lambda c: _chain_length(nodes, c))
            for chain in chains[: max(1, len(chains) // 4)]:
                alive[chain[:-1]] = False
    return nodes[[root]], np.array([-1]), np.array([False]), np.array([False])


def _place_joints(
    nodes: np.ndarray, parent: np.ndarray, tip: np.ndarray, alive: np.ndarray, root: int, coarse: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joints (J, 3), parents (J,) (breadth-first order) and the node each joint stands for (J,)
    on the living tree, at a coarseness factor that multiplies the bend tolerance, the segment
    length and the merge distance. The node a tip hangs from is always a joint: it is the limb's
    last deforming joint."""
    nchild = _children(parent, alive)
    is_key = alive & (nchild != 1)
    is_key[root] = True
    is_key[parent[alive & tip]] = True
    chosen = is_key.copy()
    # Walk each chain from a key node up to the next key node and pick its joints.
    for chain in _runs(parent, is_key, root):
        pts = nodes[chain]
        kept = _simplify(pts, BEND_TOLERANCE * coarse)
        if np.isfinite(coarse):
            kept = _subdivide(pts, kept, MAX_SEGMENT * coarse)
        chosen[np.array(chain)[kept]] = True

    # Joint tree over the chosen nodes: parent = nearest chosen ancestor.
    order = np.array([a for a in _bfs(parent, alive, root) if chosen[a]])
    slot = {a: k for k, a in enumerate(order)}
    parents = np.empty(len(order), np.int64)
    for k, a in enumerate(order):
        p = int(parent[a]) if a != root else -1
        while p >= 0 and not chosen[p]:
            p = int(parent[p])
        parents[k] = slot[p] if p >= 0 else -1
    joints, parents, keep = _merge_close(nodes[order], parents, MERGE_DISTANCE * min(coarse, 3.0))
    return joints, parents, order[keep]


def _bfs(parent: np.ndarray, alive: np.ndarray, root: int) -> list[int]:
    """Living nodes in breadth-first order from the root."""
    kids: list[list[int]] = [[] for _ in range(len(parent))]
    for a in np.flatnonzero(alive & (parent >= 0)):
        kids[parent[a]].append(int(a))
    out, queue = [], deque([root])
    while queue:
        a = queue.popleft()
        out.append(a)
        queue.extend(kids[a])
    return out


def _merge_close(joints: np.ndarray, parents: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge each non-leaf joint closer than ``distance`` to its parent into one joint, placed at
    the one with more children (branch points are better placed than bend points).

    Returns joints, parents and the indices of the input joints kept."""
    joints, parents = joints.copy(), parents.copy()
    alive = np.ones(len(joints), bool)
    changed = True
    while changed:
        changed = False
        nchild = np.bincount(parents[alive & (parents >= 0)], minlength=len(joints))
        for j in range(len(joints)):
            p = parents[j]
            if not alive[j] or p < 0 or nchild[j] == 0:
                continue
            if np.linalg.norm(joints[j] - joints[p]) >= distance:
                continue
            if nchild[j] > nchild[p] - 1:  # j branches more than p does besides j
                joints[p] = joints[j]
            parents[parents == j] = p
            alive[j] = False
            changed = True
            break
    keep = np.flatnonzero(alive)
    remap = -np.ones(len(joints), np.int64)
    remap[keep] = np.arange(len(keep))
    return joints[keep], np.where(parents[keep] >= 0, remap[np.maximum(parents[keep], 0)], -1), keep


def _mirror(
    joints: np.ndarray, parents: np.ndarray, helper: np.ndarray, lateral: np.ndarray, axis: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The full rig from a half: central joints snapped onto the plane, lateral ones mirrored.

    Returns joints (J', 3), parents (J',) with parents before children, helper (J',) and names:
    ``Root``, ``MidNN`` (on the plane), ``LimbNN.L``/``LimbNN.R`` (mirror pairs, ``.L`` on the
    positive side) or ``JointNN`` without symmetry; helper tips end in ``_end``.
    """
    if axis is None:
        names = ["Root"] + [f"Joint{j:02d}" + ("_end" if helper[j] else "") for j in range(1, len(joints))]
        return joints, parents, helper, names
    out_j, out_p, out_h, names = [], [], [], []
    slot = {}  # (half index, side) -> output index; side 0 = as is / central, 1 = mirrored
    for j, p in enumerate(parents):
        pos = joints[j].copy()
        end = "_end" if helper[j] else ""
        if not lateral[j]:
            pos[axis] = 0.0
            slot[j, 0] = slot[j, 1] = len(out_j)
            out_j.append(pos)
            out_p.append(slot[p, 0] if p >= 0 else -1)
            out_h.append(helper[j])
            names.append("Root" if p < 0 else f"Mid{j:02d}{end}")
            continue
        pos[axis] = abs(pos[axis])
        for side, suffix in ((0, "L"), (1, "R")):
            slot[j, side] = len(out_j)
            q = pos.copy()
            if side:
                q[axis] = -q[axis]
            out_j.append(q)
            out_p.append(slot[p, side])
            out_h.append(helper[j])
            names.append(f"Limb{j:02d}{end}.{suffix}")
    return np.array(out_j), np.array(out_p, np.int64), np.array(out_h, bool), names
