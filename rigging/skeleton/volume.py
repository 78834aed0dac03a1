"""The solid volume of a shape on a voxel grid, robust to open, overlapping and multi-part meshes.

Artist meshes are rarely one closed shell: they are several overlapping parts, with holes, single
sheets and non-manifold edges, so a parity inside test is meaningless. We treat the union of all
parts as the volume: mark every voxel the surface passes through, seal small holes, fill what the
outside cannot reach, and also fill voxels walled in along at least 5 of the 6 axis directions
(this survives holes bigger than the closing can seal: a hole only opens the lines that pass
through it). Thin sheets stay as one-voxel-thick solids, so fins and capes still have a volume.

The grid is centred on the shape's bounding box, so flipping the array along an axis mirrors the
shape about the box's mid-plane: that is how the skeleton tests and enforces symmetry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

# Points-per-voxel-edge when sampling triangles: spacing h/2 leaves no gaps between marked voxels.
_SAMPLES_PER_VOXEL = 2.0
_PAD = 3  # empty voxels around the shape, so closing and flood fill see the outside


@dataclass
class Volume:
    """A boolean voxel grid. solid: (X, Y, Z) bool. origin: (3,) world position of voxel (0, 0, 0)'s
    centre. h: voxel edge length (world units)."""

    solid: np.ndarray
    origin: np.ndarray
    h: float

    def index(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) int voxel indices of world points (may fall outside the grid)."""
        return np.round((np.asarray(points) - self.origin) / self.h).astype(np.int64)

    def position(self, index: np.ndarray) -> np.ndarray:
        """(N, 3) world positions of voxel centres."""
        return self.origin + np.asarray(index, dtype=np.float64) * self.h

    def inside(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: the points fall in a solid voxel (False outside the grid)."""
        idx = self.index(points)
        ok = np.all((idx >= 0) & (idx < self.solid.shape), axis=-1)
        out = np.zeros(idx.shape[:-1], bool)
        out[ok] = self.solid[tuple(idx[ok].T)]
        return out


def surface_samples(vertices: np.ndarray, faces: np.ndarray, spacing: float) -> np.ndarray:
    """Points on every triangle no farther than ``spacing`` apart, vertices included.

    vertices: (V, 3). faces: (F, 3). Each triangle is covered by a barycentric lattice whose step
    is at most ``spacing`` along its longest edge. Returns (N, 3).
    """
    out = [vertices]
    if len(faces):
        tri = vertices[faces]
        longest = np.linalg.norm(tri - tri[:, [1, 2, 0]], axis=2).max(1)
        steps = np.ceil(longest / spacing).astype(np.int64)
        # Very long triangles would need a huge lattice; the grid caps it (spacing ~ h / 2).
        for k in np.unique(steps[steps > 1]):
            sel = tri[steps == k]
            i, j = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
            keep = (i + j <= k) & ~(((i == 0) | (i == k)) & ((j == 0) | (j == k)))  # corners exist
            a, b = i[keep] / k, j[keep] / k
            bary = np.stack([1 - a - b, a, b], 1)  # (L, 3)
            # Chunk so a mesh of big triangles never builds one enormous array.
            chunk = max(1, 2_000_000 // len(bary))
            for s in range(0, len(sel), chunk):
                out.append(np.einsum("lk,tkd->tld", bary, sel[s : s + chunk]).reshape(-1, 3))
    return np.concatenate(out)


def _walled_in(surface: np.ndarray, min_walls: int = 5) -> np.ndarray:
    """Voxels that have surface on both sides along axes, in at least ``min_walls`` of 6 directions."""
    count = np.zeros(surface.shape, np.int8)
    for axis in range(3):
        before = np.logical_or.accumulate(surface, axis=axis)
        after = np.flip(np.logical_or.accumulate(np.flip(surface, axis), axis=axis), axis)
        count += before.astype(np.int8) + after.astype(np.int8)
    return count >= min_walls


def voxelise(vertices: np.ndarray, faces: np.ndarray, resolution: int = 96) -> Volume:
    """The solid volume of a mesh (or point cloud when ``faces`` is empty).

    vertices: (V, 3) float, V >= 1. faces: (F, 3) int (F may be 0). resolution: voxels along the
    longest bounding-box side. Point clouds get coarser voxels (about two point spacings) so their
    samples join into a surface before filling. Returns a :class:`Volume` centred on the bounding box.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    lo, hi = vertices.min(0), vertices.max(0)
    extent = hi - lo
    h = max(float(extent.max()), 1e-12) / resolution
    if not len(faces) and len(vertices) > 3:
        sample = vertices[:: max(1, len(vertices) // 20000)]
        spacing = float(np.median(cKDTree(sample).query(sample, k=2)[0][:, 1]))
        spacing *= np.sqrt(len(sample) / len(vertices))  # subsampling spreads points out
        h = max(h, 2.0 * spacing)
    dims = np.ceil(extent / h).astype(np.int64) + 1 + 2 * _PAD
    origin = (lo + hi) / 2 - (dims - 1) / 2 * h
    points = surface_samples(vertices, faces, h / _SAMPLES_PER_VOXEL)
    idx = np.clip(np.round((points - origin) / h).astype(np.int64), 0, dims - 1)
    surface = np.zeros(dims, bool)
    surface[tuple(idx.T)] = True

    # Thicken the surface by a voxel to seal small holes, take what the outside cannot reach, and
    # give back the inner half of the thickening. The outer half is not kept: it would glue parts
    # that merely touch (two legs) into one block.
    sealed = ndimage.binary_dilation(surface, iterations=1)
    cavity = ndimage.binary_fill_holes(sealed) & ~sealed
    solid = surface | cavity | (ndimage.binary_dilation(cavity, iterations=1) & sealed) | _walled_in(surface)
    return Volume(solid, origin, h)
