"""The one normalisation of the project: centre the bounding box, divide by its longest side.

Models, metrics and tokenizers all see meshes in this frame, so coordinates lie in [-0.5, 0.5] and
the longest bounding-box side spans exactly 1.
"""

from __future__ import annotations

import numpy as np


def normalize_unit_cube(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Map points into the unit cube centred at the origin.

    vertices: (V, 3) positions in any unit. Returns ``(normalized, center, scale)`` where
    ``normalized = (vertices - center) / scale`` lies in [-0.5, 0.5]^3, ``center`` (3,) is the
    bounding-box centre and ``scale`` the longest bounding-box side (1.0 for empty or single-point
    input, so the mapping is always invertible: ``vertices = normalized * scale + center``).
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if not len(v):
        return v.copy(), np.zeros(3), 1.0
    lo, hi = v.min(0), v.max(0)
    center = (lo + hi) / 2.0
    scale = float((hi - lo).max())
    if scale <= 0.0:
        scale = 1.0
    return (v - center) / scale, center, scale
