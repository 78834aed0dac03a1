"""Skeleton files given by users: ``{"joints": [[x, y, z], ...], "parents": [-1, 0, ...], "names": [...]}``.

Coordinates are in the mesh's own frame and units. Joints may come in any order as long as the
parents form one tree or a forest; they are reordered so parents come first, names kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mesh3d.asset import Skeleton
from mesh3d.errors import Mesh3DError


def read_skeleton_json(path: str | Path) -> Skeleton:
    """Read and check a skeleton file; raises Mesh3DError naming the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Mesh3DError(f"{path}: skeleton file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Mesh3DError(f"{path}: cannot read skeleton JSON ({e})") from None
    if not isinstance(data, dict) or "joints" not in data or "parents" not in data:
        raise Mesh3DError(f'{path}: a skeleton file needs "joints" and "parents" (and optionally "names")')
    try:
        joints = np.asarray(data["joints"], dtype=np.float64)
        parents = np.asarray(data["parents"], dtype=np.int64)
    except (TypeError, ValueError):
        raise Mesh3DError(f'{path}: "joints" must be [[x, y, z], ...] and "parents" a list of integers') from None
    n = len(joints)
    if joints.ndim != 2 or joints.shape[1] != 3 or n == 0:
        raise Mesh3DError(f'{path}: "joints" must be a non-empty list of [x, y, z]')
    if parents.shape != (n,):
        raise Mesh3DError(f'{path}: "parents" has {parents.size} entries for {n} joints')
    names = [str(x) for x in data.get("names", [f"joint_{i}" for i in range(n)])]
    if len(names) != n:
        raise Mesh3DError(f'{path}: "names" has {len(names)} entries for {n} joints')
    if ((parents < -1) | (parents >= n)).any():
        raise Mesh3DError(f"{path}: parents must be -1 or the index of another joint")
    order = _parents_first(parents)
    if order is None:
        raise Mesh3DError(f"{path}: the parents do not form a tree (a joint is its own ancestor)")
    new_index = np.empty(n, np.int64)
    new_index[order] = np.arange(n)
    new_parents = np.where(parents[order] < 0, -1, new_index[np.maximum(parents[order], 0)])
    return Skeleton(joints[order], new_parents, [names[i] for i in order])


def _parents_first(parents: np.ndarray):
    """A joint order with every parent before its children, or None when there is a cycle."""
    children: dict[int, list[int]] = {}
    for j, p in enumerate(parents):
        children.setdefault(int(p), []).append(j)
    order, stack = [], list(reversed(children.get(-1, [])))
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children.get(j, [])))
    return order if len(order) == len(parents) else None
