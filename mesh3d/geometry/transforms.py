"""Rigid and affine transform helpers: quaternions, TRS matrices, decomposition.

Written once in torch so that the same code serves numpy callers (loaders, exporters) and
differentiable callers (retargeting). Functions accept numpy arrays or tensors and return the same
kind they were given. Quaternions are ``(x, y, z, w)`` as in glTF; matrices are ``(..., 4, 4)``
column-vector convention (``p' = M @ p``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch


def numpy_compatible(fn):
    """Let a torch function take and return numpy arrays (float64 kept as float64).

    Outputs are numpy when no argument is a tensor; any tensor argument keeps the call in torch
    (and differentiable), with numpy arguments turned into tensors.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        targs = [torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args]
        out = fn(*targs, **kwargs)
        if any(isinstance(a, torch.Tensor) for a in args):
            return out
        if isinstance(out, tuple):
            return tuple(o.detach().numpy() if isinstance(o, torch.Tensor) else o for o in out)
        return out.detach().numpy() if isinstance(out, torch.Tensor) else out

    return wrapper


@numpy_compatible
def quat_normalize(q):
    """Unit quaternions ``(..., 4)``; a zero quaternion becomes the identity."""
    n = torch.linalg.norm(q, dim=-1, keepdim=True)
    ident = torch.zeros_like(q)
    ident[..., 3] = 1.0
    return torch.where(n > 1e-12, q / n.clamp_min(1e-12), ident)


@numpy_compatible
def quat_to_matrix(q):
    """Rotation matrices ``(..., 3, 3)`` from quaternions ``(..., 4)`` (x, y, z, w)."""
    q = quat_normalize(q)
    x, y, z, w = q.unbind(-1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


@numpy_compatible
def matrix_to_quat(m):
    """Quaternions ``(..., 4)`` (x, y, z, w, with w >= 0) from rotation matrices ``(..., 3, 3)``."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Pick the numerically safest of the four classic formulas per matrix.
    cands = torch.stack(
        [
            torch.stack([1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
            torch.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22, m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + m00 + m11 + m22], -1),
        ],
        dim=-2,
    )
    diag = torch.stack([m00 - m11 - m22, m11 - m00 - m22, m22 - m00 - m11, m00 + m11 + m22], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., 3:4] < 0, -q, q)


@numpy_compatible
def quat_multiply(a, b):
    """Hamilton product ``a * b`` of quaternions ``(..., 4)`` (x, y, z, w)."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        -1,
    )


@numpy_compatible
def quat_slerp(a, b, t):
    """Spherical interpolation between quaternions ``a`` and ``b`` ``(..., 4)`` at ``t`` ``(...)``."""
    dot = (a * b).sum(-1, keepdim=True)
    b = torch.where(dot < 0, -b, b)
    dot = dot.abs().clamp(max=1.0)
    t = t[..., None]
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    small = sin < 1e-6
    wa = torch.where(small, 1 - t, torch.sin((1 - t) * theta) / sin.clamp_min(1e-12))
    wb = torch.where(small, t, torch.sin(t * theta) / sin.clamp_min(1e-12))
    return quat_normalize(wa * a + wb * b)


@numpy_compatible
def trs_to_matrix(translation, rotation, scale):
    """``(..., 4, 4)`` matrices ``T @ R @ S`` from translation ``(..., 3)``, quaternion ``(..., 4)``,
    scale ``(..., 3)`` (the glTF node convention)."""
    r = quat_to_matrix(rotation) * scale[..., None, :]
    top = torch.cat([r, translation[..., :, None]], -1)
    bottom = torch.zeros(top.shape[:-2] + (1, 4), dtype=top.dtype)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


@numpy_compatible
def matrix_to_trs(m):
    """Split affine matrices ``(..., 4, 4)`` into translation, quaternion and scale.

    Exact for matrices without shear; a negative determinant is carried by a negative x scale.
    """
    t = m[..., :3, 3]
    a = m[..., :3, :3]
    s = torch.linalg.norm(a, dim=-2)
    # Triple product rather than linalg.det: much faster on many small matrices.
    flip = (a[..., :, 0] * torch.linalg.cross(a[..., :, 1], a[..., :, 2])).sum(-1) < 0
    s = torch.where(flip[..., None] & (torch.arange(3) == 0), -s, s)
    r = a / torch.where(s.abs() > 1e-12, s, torch.ones_like(s))[..., None, :]
    return t, matrix_to_quat(r), s
