"""Points on a mesh surface: area-weighted sampling of triangles, with the faces' normals.

Learned models read a shape as a cloud of surface points with normals (see
mesh3d.nn.shape_encoder). Sampling is uniform over the surface area, so the cloud does not depend
on how finely a region happens to be triangulated.
"""

from __future__ import annotations

import numpy as np

from mesh3d.errors import Mesh3DError


def face_normals_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (F, 3) and areas (F,) of triangles; degenerate faces get a zero normal."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(faces, dtype=np.int64)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.where(norm[:, None] > 0, cross / np.where(norm > 0, norm, 1.0)[:, None], 0.0)
    return normals, norm / 2.0


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points drawn uniformly over the surface area, and the unit normal of the face each lies on.

    vertices: (V, 3) float. faces: (F, 3) int. rng: the only source of randomness (reproducible).
    Returns points (n, 3) float64 and normals (n, 3) float64. Zero-area faces are never picked.
    """
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if not len(faces):
        raise Mesh3DError("cannot sample a surface from a mesh without faces (a point cloud); give a triangle mesh")
    normals, areas = face_normals_areas(vertices, faces)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise Mesh3DError("cannot sample a surface: every face of the mesh has zero area")
    face = rng.choice(len(faces), size=n, p=areas / total)
    # Uniform barycentric coordinates: fold the unit square's upper triangle onto the lower one.
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1.0
    u[flip], w[flip] = 1.0 - u[flip], 1.0 - w[flip]
    tri = np.asarray(vertices, dtype=np.float64)[faces[face]]
    points = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + w[:, None] * (tri[:, 2] - tri[:, 0])
    return points, normals[face]


def winding_number(queries: np.ndarray, points: np.ndarray, normals: np.ndarray, area: float) -> np.ndarray:
    """Generalised winding number (Q,) of query points (Q, 3) w.r.t. a surface given by samples.

    points, normals (N, 3): uniform area samples of the surface (`sample_surface`); area: the
    surface's total area, so each sample stands for area / N. About 1 inside a closed surface, 0
    outside, and it stays meaningful for the overlapping, open parts of real meshes (values add
    where parts overlap), which is why it is used rather than ray parity. Cost O(Q N).
    """
    d = np.asarray(points, dtype=np.float64)[None] - np.asarray(queries, dtype=np.float64)[:, None]
    r = np.maximum(np.linalg.norm(d, axis=-1), 1e-9)
    return (area / len(points)) * ((normals[None] * d).sum(-1) / (4 * np.pi * r ** 3)).sum(1)


def subsample(points, n: int, rng: np.random.Generator | None):
    """n rows of a stored cloud (N, C) (numpy or torch): a random subset without replacement
    (training: a different view of the same surface each time), or the first n when rng is None
    (evaluation: always the same)."""
    if rng is None:
        return points[:n]
    return points[rng.choice(len(points), n, replace=False)]
