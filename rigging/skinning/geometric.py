"""Skin weights by heat diffusion from the bones over the surface (Baran & Popovic 2007), made
robust to the meshes users have.

Each deforming joint has one bone segment, as an artist's bone (:func:`_bones`). Each vertex is
attached to its nearest *visible* bone with a stiffness ``HEAT / d^2`` and the attachments
diffuse over the surface: solve ``(L + M H) w_j = M H p_j`` per joint, with ``L`` and ``M`` the
intrinsic-Delaunay Laplacian and mass matrix of robust-laplacian (which copes with non-manifold
edges and degenerate triangles). As in Blender's bone heat, the distance to a bone is stretched
as it leaves the inward normal, a vertex whose nearest bone is hidden is left free for the
diffusion, and weights under a few percent are pruned. Where Blender's bone heat fails ("failed
to find solution for one or more bones") is visibility by ray casting against a messy mesh; ours
needs no ray casting:

* a bone is visible from a vertex when it lies behind the vertex's surface (against its normal)
  and the straight line to it stays inside the shape's voxelised volume
  (:mod:`rigging.skeleton.volume`), so a vertex on the inner thigh never sees the other leg's
  bone, even where the legs touch;
* a part (connected component) in which no vertex sees its nearest bone attaches every vertex
  to its nearest visible bone, or the nearest bone, so no vertex is left unweighted and no part
  of the system is singular;
* diffusion runs on the surface's own connectivity, so weight never jumps across a gap between
  separate parts or touching limbs.

Big meshes are decimated for the analysis and the weights carried back to every original vertex
from the nearest analysis vertices facing the same way.
"""

from __future__ import annotations

import numpy as np
import robust_laplacian
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from mesh3d.asset import Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError
from rigging.skeleton.volume import Volume, voxelise

ANALYSIS_FACES = 20000  # meshes above this are decimated for the analysis
VISIBILITY_RESOLUTION = 64  # voxels along the longest side for the line-of-sight test
CANDIDATES = 6  # nearest bones tried for visibility, per vertex
TIE = 1e-3  # bones within this relative distance of the nearest visible one share the vertex
# Attachment stiffness is HEAT / d^2 against robust-laplacian's weak cotan Laplacian and lumped
# mass: Blender's bone heat scales its Laplacian rows by 1 / (4 x vertex area), i.e. a heat of 4
# in these units. Weaker heat spreads each vertex over more joints (precision drops), stronger
# makes joints hard.
HEAT = 4.0
# Weights below WEIGHT_CUT are dropped and those up to WEIGHT_FULL ramp from 0 (Blender's limit
# too): the heat's long thin tails are what made our weights diffuse.
WEIGHT_CUT, WEIGHT_FULL = 0.025, 0.05


def geometric_skin(mesh: Mesh, skeleton: Skeleton, k: int = 4, analysis_faces: int = ANALYSIS_FACES) -> Skin:
    """Skin weights for ``mesh`` on ``skeleton``: top-``k`` influences per vertex, summing to 1.

    mesh: any :class:`Mesh` (open, multi-part, non-manifold, or a point cloud). skeleton: in the
    mesh's frame; joints with ``helper`` True get no weight. Each deforming joint has one bone
    segment (see :func:`_bones`). analysis_faces: decimate above this.
    Returns a :class:`Skin` with one row per original vertex.
    """
    if not len(mesh.vertices):
        raise Mesh3DError("the mesh has no vertices: there is nothing to skin")
    deforming = np.flatnonzero(~skeleton.helper)
    if not len(deforming):
        raise Mesh3DError("every joint of the skeleton is a helper: no joint can carry skin weight")
    seg_a, seg_b = _bones(skeleton, deforming, max(float(np.linalg.norm(np.ptp(mesh.vertices, axis=0))), 1e-12))

    vertices, faces, inverse = _merge_vertices(mesh.vertices, mesh.faces)
    full_vertices, full_faces = vertices, faces
    if len(faces) > analysis_faces:
        vertices, faces = _decimate(vertices, faces, analysis_faces)
    normals = _vertex_normals(vertices, faces)
    vol = voxelise(vertices, faces, VISIBILITY_RESOLUTION)
    stiffness, target, direct = _attachments(vertices, normals, vol, seg_a, seg_b)
    if len(faces):
        # A vertex whose nearest bone is hidden is left to the diffusion (Blender does the same),
        # unless no vertex of its part sees its nearest bone: then the part keeps every fallback
        # attachment, so it is never singular (where Blender's bone heat fails).
        part = _components(len(vertices), faces)
        seen = np.bincount(part, weights=direct, minlength=part.max() + 1) > 0
        stiffness = np.where(direct | ~seen[part], stiffness, 0.0)
    weights = _diffuse(vertices, faces, stiffness, target)

    if vertices is not full_vertices:
        weights = _transfer(vertices, faces, normals, weights, full_vertices, full_faces)
    weights = _prune(weights)
    dense = np.zeros((len(mesh.vertices), len(skeleton)))
    dense[:, deforming] = weights[inverse]
    return Skin.from_dense(dense, k)


def _bones(skeleton: Skeleton, deforming: np.ndarray, diag: float) -> tuple[np.ndarray, np.ndarray]:
    """One segment per deforming joint: start (J', 3), end (J', 3), as an artist's bone.

    A joint with one child points at it. A branching joint (a chest, a hand) points along its
    bind frame's +Y axis (glTF's and Blender's bone axis) or, if the skeleton carries no bind
    orientation, towards the mean of its children, and is as long as its nearest child is far:
    segments to every child would own the start of each limb (the shoulders, the fingers' roots).
    A leaf (a head, a foot) continues along its +Y axis (or its parent's direction) for its
    parent bone's length, so it owns the part beyond its joint. A zero-length bone (two joints
    on one spot) takes the skeleton's mean bone length along its axis, or stays a point.
    diag: the mesh's bbox diagonal, the length of last resort.
    """
    joints, parents = skeleton.joints, skeleton.parents
    frames = skeleton.frames
    oriented = frames is not None and bool((np.abs(frames - np.eye(3)).max((1, 2)) > 1e-3).any())
    lengths = np.linalg.norm(joints[1:] - joints[parents[1:]], axis=1) if len(joints) > 1 else np.zeros(0)
    tiny = 1e-6 * diag
    typical = float(lengths[lengths > tiny].mean()) if (lengths > tiny).any() else 0.1 * diag
    seg_a, seg_b = [], []
    for j in deforming:
        kids = skeleton.children(int(j))
        offsets = joints[kids] - joints[j]
        if len(kids) == 1:
            direction, length = offsets[0], float(np.linalg.norm(offsets[0]))
        elif len(kids) > 1:
            length = float(np.linalg.norm(offsets, axis=1).min())
            direction = frames[j][:, 1] if oriented else offsets.mean(0)
        elif parents[j] >= 0:
            direction = joints[j] - joints[parents[j]]
            length = float(np.linalg.norm(direction))
            direction = frames[j][:, 1] if oriented else direction
        else:
            direction, length = np.zeros(3), 0.0
        if length <= tiny and oriented:
            direction, length = frames[j][:, 1], typical
        norm = float(np.linalg.norm(direction))
        seg_a.append(joints[j])
        seg_b.append(joints[j] + (direction / norm * length if norm > tiny and length > tiny else 0.0))
    return np.array(seg_a), np.array(seg_b)


def _merge_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weld coincident vertices (UV seams and hard edges split them, and diffusion must cross
    them) and drop faces that collapse. Coincident vertices whose surfaces face opposite ways are
    two parts touching (a leg against a leg) and stay apart. Returns vertices (V', 3), faces
    (F', 3) and inverse (V,) into V'."""
    scale = max(float(np.ptp(vertices, axis=0).max()), 1e-12)
    key = np.round((vertices - vertices.min(0)) / scale * 1e6).astype(np.int64)
    _, first, group = np.unique(key, axis=0, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    normals = _vertex_normals(vertices, faces)
    opposite = (normals * normals[first[group]]).sum(1) < -0.5
    _, first, inverse = np.unique(np.stack([group, opposite], 1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    merged = vertices[first]
    faces = inverse[faces]
    good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return merged, faces[good], inverse


def _decimate(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about ``target`` faces, dropping vertices no face uses."""
    import fast_simplification

    v, f = fast_simplification.simplify(vertices, faces.astype(np.int32), target_count=target)
    used = np.unique(f)
    remap = np.zeros(len(v), np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted vertex normals; zero where they cancel (two-sided sheets) or no face."""
    normals = np.zeros_like(vertices)
    if len(faces):
        tri = vertices[faces]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        for c in range(3):
            np.add.at(normals, faces[:, c], fn)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(norm > 1e-12, normals / np.maximum(norm, 1e-300), 0.0)


def _closest_on_segments(points: np.ndarray, seg_a: np.ndarray, seg_b: np.ndarray) -> np.ndarray:
    """(N, S, 3) closest point of every segment (S, 3) to every point (N, 3)."""
    ab = seg_b - seg_a
    den = (ab * ab).sum(1)
    t = np.einsum("nsd,sd->ns", points[:, None] - seg_a[None], ab) / np.maximum(den, 1e-300)
    return seg_a[None] + np.clip(t, 0, 1)[..., None] * ab[None]


def _attachments(
    vertices: np.ndarray, normals: np.ndarray, vol: Volume, seg_a: np.ndarray, seg_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heat stiffness H (V,), target p (V, J) and direct (V,) bool, for bones j = segment j.

    A bone's distance from a vertex grows as it leaves the inward normal (as in Blender's bone
    heat, ``d / ((cos + 1.001) / 2)``: doubled at 90 degrees), so a vertex on the chin prefers the
    head under it to the neck beside it. Visible: the bone's closest point is behind the surface
    (within ~80 degrees of the inward normal, or any direction where the normal is undefined)
    and the line to it stays inside the volume. Each vertex is attached to the nearest visible
    bone (bones within ``TIE`` share it), or the nearest bone if none is visible; ``direct``
    says the nearest bone itself is visible.
    """
    n, s = len(vertices), len(seg_a)
    stiffness = np.zeros(n)
    target = np.zeros((n, s))
    direct = np.zeros(n, bool)
    diag = max(float(np.linalg.norm(np.ptp(vertices, axis=0))), 1e-12)
    chunk = max(1, 200_000 // max(s, 1))
    line_t = np.linspace(0.2, 1.0, 8)
    for start in range(0, n, chunk):
        v = vertices[start : start + chunk]
        nrm = normals[start : start + chunk]
        offset = _closest_on_segments(v, seg_a, seg_b) - v[:, None]  # (c, S, 3)
        length = np.linalg.norm(offset, axis=2)
        cos = -(offset * nrm[:, None]).sum(2) / np.maximum(length, 1e-12)  # 0 where no normal
        dist = length / (0.5 * (cos + 1.001))
        order = np.argsort(dist, axis=1)[:, : min(CANDIDATES, s)]
        rows = np.arange(len(v))[:, None]
        cand_off = offset[rows, order]  # (c, C, 3)
        cand_d = dist[rows, order]
        facing = cos[rows, order] >= -0.17  # behind the surface
        line = v[:, None, None] + line_t[None, None, :, None] * cand_off[:, :, None]  # (c, C, 8, 3)
        visible = facing & vol.inside(line).all(2)
        tie = cand_d <= cand_d[:, :1] * (1 + TIE) + 1e-9 * diag
        direct[start : start + chunk] = (visible & tie).any(1)
        visible[~visible.any(1), 0] = True  # nobody visible: the nearest bone
        d_vis = np.where(visible, cand_d, np.inf)
        best = d_vis.min(1, keepdims=True)
        share = visible & (d_vis <= best * (1 + TIE) + 1e-9 * diag)
        p = np.zeros((len(v), s))
        np.add.at(p, (np.broadcast_to(rows, order.shape)[share], order[share]), 1.0)
        target[start : start + chunk] = p / p.sum(1, keepdims=True)
        # The mass matrix carries the area, so M H is scale-free; a vertex on a bone gets a large
        # finite value.
        stiffness[start : start + chunk] = HEAT / np.maximum(best[:, 0], 1e-4 * diag) ** 2
    return stiffness, target, direct


def _diffuse(vertices: np.ndarray, faces: np.ndarray, stiffness: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(V, J) weights solving (L + M H) w = M H p, clipped to [0, 1] and renormalised; rows the
    solve leaves empty fall back to the target."""
    if len(faces):
        lap, mass = robust_laplacian.mesh_laplacian(np.ascontiguousarray(vertices), np.ascontiguousarray(faces))
    elif len(vertices) > 30:
        lap, mass = robust_laplacian.point_cloud_laplacian(np.ascontiguousarray(vertices))
    else:  # a handful of loose points: nothing to diffuse over
        return target
    mh = sp.diags(mass.diagonal() * stiffness)
    # Vertices in no face have zero mass: pin them to their target instead.
    free = mass.diagonal() <= 0
    system = (lap + mh + sp.diags(free.astype(np.float64))).tocsc()
    rhs = mh @ target + free[:, None] * target
    weights = splu(system).solve(np.asarray(rhs))
    weights = np.nan_to_num(weights).clip(0, 1)
    total = weights.sum(1, keepdims=True)
    return np.where(total > 1e-8, weights / np.maximum(total, 1e-300), target)


def _prune(weights: np.ndarray) -> np.ndarray:
    """(V, J) weights without the heat's thin tails: below ``WEIGHT_CUT`` dropped, up to
    ``WEIGHT_FULL`` ramped from 0, rows renormalised. A row left empty keeps its largest weight."""
    ramp = (weights - WEIGHT_CUT) / (WEIGHT_FULL - WEIGHT_CUT) * WEIGHT_FULL
    kept = np.where(weights < WEIGHT_CUT, 0.0, np.where(weights < WEIGHT_FULL, ramp, weights))
    empty = np.flatnonzero(kept.sum(1) <= 0)
    kept[empty, weights[empty].argmax(1)] = 1.0
    return kept / kept.sum(1, keepdims=True)


def _components(num_vertices: int, faces: np.ndarray) -> np.ndarray:
    """(V,) connected-component label of each vertex (a vertex in no face is its own piece)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices, num_vertices))
    return connected_components(graph, directed=False)[1]


def _transfer(
    src: np.ndarray, src_faces: np.ndarray, src_normals: np.ndarray, weights: np.ndarray, dst: np.ndarray, dst_faces: np.ndarray
) -> np.ndarray:
    """Weights on the ``dst`` (original) vertices from the decimated ``src`` mesh.

    Each vertex blends (inverse distance) the nearest source vertices of its own part that face
    the same way and do not lie in front of its surface, so weight never crosses to a separate
    part or to a limb touching it. Decimation keeps parts apart, so a source part descends from
    the destination part its vertices lie on.
    """
    dst_normals = _vertex_normals(dst, dst_faces)
    dst_part = _components(len(dst), dst_faces)
    src_part = _components(len(src), src_faces)
    # Source part -> destination part: the part most of its vertices lie on.
    on = dst_part[cKDTree(dst).query(src)[1]]
    m = int(on.max()) + 1
    pair, count = np.unique(src_part.astype(np.int64) * m + on, return_counts=True)
    part, parent = np.divmod(pair, m)
    order = np.lexsort([count, part])  # by part, then count: each part's last entry wins
    last = np.r_[part[order][1:] != part[order][:-1], True]
    parent_part = np.zeros(src_part.max() + 1, np.int64)
    parent_part[part[order][last]] = parent[order][last]
    src_owner = parent_part[src_part]

    k = min(16, len(src))
    dist, near = cKDTree(src).query(dst, k=k)
    dist, near = dist.reshape(len(dst), k), near.reshape(len(dst), k)
    same_part = src_owner[near] == dst_part[:, None]
    agree = (src_normals[near] * dst_normals[:, None]).sum(2)
    ahead = ((src[near] - dst[:, None]) * dst_normals[:, None]).sum(2)
    ok = same_part & (agree > 0.3) & (ahead <= 0.5 * dist)
    blend = np.where(ok, 1.0 / np.maximum(dist, 1e-12), 0.0)
    out = np.zeros((len(dst), weights.shape[1]))
    for i in range(k):  # one neighbour rank at a time keeps memory at (V, J)
        out += blend[:, i, None] * weights[near[:, i]]
    total = blend.sum(1)
    # Vertices without such a neighbour among the nearest: the nearest vertex of their own part,
    # or, if decimation removed the part (a speck), the nearest vertex at all.
    lost = np.flatnonzero(total == 0)
    for part in np.unique(dst_part[lost]):
        these = lost[dst_part[lost] == part]
        mine = np.flatnonzero(src_owner == part)
        pool = mine if len(mine) else np.arange(len(src))
        out[these] = weights[pool[cKDTree(src[pool]).query(dst[these])[1]]]
        total[these] = 1.0
    return out / total[:, None]
