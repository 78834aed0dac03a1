"""Distances between point sets (numpy, any unit: the result is in the points' unit)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def mean_nearest(src: np.ndarray, dst: np.ndarray) -> float:
    """Mean distance from each point of ``src`` (N, 3) to its nearest point of ``dst`` (M, 3)."""
    return float(cKDTree(dst).query(src)[0].mean())


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric chamfer distance: the mean of the two one-way mean nearest distances."""
    return (mean_nearest(a, b) + mean_nearest(b, a)) / 2
