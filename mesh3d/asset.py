"""The asset model: Mesh, Skeleton, Skin, Animation, Asset, with forward kinematics and skinning.

Conventions (see DESIGN.md):

* Internal frame is Y-up, right-handed, in the source's units times ``Asset.unit_scale`` = metres.
* A :class:`Skeleton` is a forest of joints given by bind-pose positions; joint ``j``'s parent has a
  smaller index (``parents[j] < j``, roots are ``-1``).
* Each joint has a bind frame: its position plus an orientation ``Skeleton.frames[j]`` (a world
  rotation). Loaded artist rigs keep the artist's orientations; new skeletons (predicted, geometric)
  leave ``frames`` as None, meaning world-aligned (identity) frames, and exporters then choose
  bone-aligned ones for viewers. Animation tracks are local transforms of a joint's frame relative
  to its parent's frame, exactly as glTF nodes; :meth:`Skeleton.rest_pose` gives the bind pose.
* Quaternions are ``(x, y, z, w)``.

Forward kinematics and linear blend skinning are written once in torch (differentiable, batched over
frames) and accept numpy arrays too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from mesh3d.errors import Mesh3DError
from mesh3d.geometry.transforms import matrix_to_trs, numpy_compatible, trs_to_matrix

UP_AXES = ("Y", "Z", "-Y", "-Z", "X", "-X")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise Mesh3DError(message)


@dataclass
class Mesh:
    """A triangle mesh.

    vertices: (V, 3) float64 positions. faces: (F, 3) int64 vertex indices (F may be 0 for a point
    cloud). normals: optional (V, 3) unit vertex normals. colors: optional (V, 4) RGBA in [0, 1].
    uvs: optional (V, 2) texture coordinates. part_ids: optional (F,) int32 index of the source part
    (primitive or object) each face came from. texture: optional base-colour image (PNG or JPEG
    bytes) looked up with ``uvs`` and multiplied by ``colors``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: Optional[np.ndarray] = None
    colors: Optional[np.ndarray] = None
    uvs: Optional[np.ndarray] = None
    part_ids: Optional[np.ndarray] = None
    texture: Optional[bytes] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        n = len(self.vertices)
        _check(bool(np.isfinite(self.vertices).all()), "mesh has NaN or infinite vertex coordinates")
        if len(self.faces):
            _check(
                int(self.faces.min()) >= 0 and int(self.faces.max()) < n,
                f"mesh has face indices outside 0..{n - 1}",
            )
        for name, width in (("normals", 3), ("colors", 4), ("uvs", 2)):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr, dtype=np.float64)
                _check(arr.shape == (n, width), f"mesh {name} have shape {arr.shape}, expected ({n}, {width})")
                setattr(self, name, arr)
        if self.part_ids is not None:
            self.part_ids = np.asarray(self.part_ids, dtype=np.int32)
            _check(self.part_ids.shape == (len(self.faces),), "mesh part_ids must have one entry per face")
        if self.texture is not None:
            _check(self.uvs is not None, "a textured mesh needs uvs")
            _check(image_mime_type(self.texture) is not None, "mesh texture must be PNG or JPEG bytes")

    @property
    def bounds(self) -> np.ndarray:
        """(2, 3) min and max corner; zeros for an empty mesh."""
        if not len(self.vertices):
            return np.zeros((2, 3))
        return np.stack([self.vertices.min(0), self.vertices.max(0)])

    @property
    def diagonal(self) -> float:
        """Length of the bounding-box diagonal."""
        b = self.bounds
        return float(np.linalg.norm(b[1] - b[0]))


def image_mime_type(data: bytes) -> Optional[str]:
    """``image/png`` or ``image/jpeg`` from the file signature, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    return None


@dataclass
class Skeleton:
    """A forest of joints in bind pose.

    joints: (J, 3) bind-pose positions, in the mesh's frame. parents: (J,) int, ``-1`` for roots,
    otherwise a smaller index. names: J unique strings. helper: (J,) bool, True for joints that
    carry no skin weight anywhere (IK targets, poles, a bare root): kept, but not deforming.
    frames: optional (J, 3, 3) rotation of each joint's bind frame in the world (columns are the
    local axes); None means world-aligned frames.
    """

    joints: np.ndarray
    parents: np.ndarray
    names: list[str]
    helper: Optional[np.ndarray] = None
    frames: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.joints = np.asarray(self.joints, dtype=np.float64).reshape(-1, 3)
        self.parents = np.asarray(self.parents, dtype=np.int64).reshape(-1)
        self.names = [str(n) for n in self.names]
        j = len(self.joints)
        _check(j > 0, "skeleton has no joints")
        _check(len(self.parents) == j and len(self.names) == j, "skeleton joints, parents and names differ in length")
        _check(bool(np.isfinite(self.joints).all()), "skeleton has NaN or infinite joint positions")
        _check(
            bool(np.all((self.parents == -1) | ((self.parents >= 0) & (self.parents < np.arange(j))))),
            "skeleton parents must be -1 or an earlier joint (a tree in topological order)",
        )
        _check(len(set(self.names)) == j, "skeleton joint names are not unique")
        self.helper = np.zeros(j, bool) if self.helper is None else np.asarray(self.helper, bool).reshape(j)
        if self.frames is not None:
            self.frames = np.asarray(self.frames, dtype=np.float64).reshape(j, 3, 3)
            ortho = np.abs(self.frames @ np.swapaxes(self.frames, 1, 2) - np.eye(3)).max()
            _check(bool(ortho < 1e-4) and bool((np.linalg.det(self.frames) > 0).all()), "skeleton frames must be rotation matrices")

    def __len__(self) -> int:
        return len(self.joints)

    def depths(self) -> np.ndarray:
        """(J,) number of bones between each joint and its root (0 for roots)."""
        depth = np.zeros(len(self), int)
        for j, p in enumerate(self.parents):  # parents precede children
            depth[j] = 0 if p < 0 else depth[p] + 1
        return depth

    def children(self, j: int) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.parents == j)]

    def bind_matrices(self) -> np.ndarray:
        """(J, 4, 4) world matrices of the joints' bind frames."""
        m = np.tile(np.eye(4), (len(self), 1, 1))
        m[:, :3, 3] = self.joints
        if self.frames is not None:
            m[:, :3, :3] = self.frames
        return m

    def rest_pose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local bind-pose translations (J, 3), rotations (J, 4) and scales (J, 3)."""
        bind = self.bind_matrices()
        local = bind.copy()
        has_parent = self.parents >= 0
        local[has_parent] = np.linalg.inv(bind[self.parents[has_parent]]) @ bind[has_parent]
        return matrix_to_trs(local)


@dataclass
class Skin:
    """Per-vertex joint influences.

    indices: (V, K) int joint indices. weights: (V, K) float, non-negative, each row summing to 1
    (unused slots have weight 0).
    """

    indices: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        _check(self.indices.ndim == 2 and self.indices.shape == self.weights.shape, "skin indices and weights differ in shape")
        _check(bool(np.isfinite(self.weights).all()), "skin weights contain NaN or infinity")
        _check(bool((self.weights >= 0).all()), "skin weights must be non-negative")
        _check(bool(np.allclose(self.weights.sum(1), 1.0, atol=1e-4)), "skin weights must sum to 1 per vertex")

    @classmethod
    def from_dense(cls, dense: np.ndarray, k: int = 4) -> "Skin":
        """Top-``k`` influences of a dense (V, J) weight matrix, renormalised."""
        dense = np.nan_to_num(np.asarray(dense, dtype=np.float64)).clip(min=0)
        k = min(k, dense.shape[1])
        idx = np.argsort(-dense, axis=1, kind="stable")[:, :k]
        w = np.take_along_axis(dense, idx, 1)
        total = w.sum(1, keepdims=True)
        w = np.where(total > 0, w / np.where(total > 0, total, 1), np.eye(1, k).repeat(len(w), 0))
        return cls(idx, w)

    def dense(self, num_joints: int) -> np.ndarray:
        """(V, J) weight matrix."""
        out = np.zeros((len(self.indices), num_joints))
        np.add.at(out, (np.arange(len(self.indices))[:, None], self.indices), self.weights)
        return out


@dataclass
class Animation:
    """A clip sampled at a fixed rate.

    translations: (F, J, 3), rotations: (F, J, 4) quaternions (x, y, z, w), scales: (F, J, 3):
    local transforms relative to the parent joint, in the world-aligned bind-frame convention of
    this module. Frame ``f`` is at time ``f / fps`` seconds.
    """

    name: str
    fps: float
    translations: np.ndarray
    rotations: np.ndarray
    scales: np.ndarray

    def __post_init__(self) -> None:
        self.translations = np.asarray(self.translations, dtype=np.float64)
        self.rotations = np.asarray(self.rotations, dtype=np.float64)
        self.scales = np.asarray(self.scales, dtype=np.float64)
        f, j = self.translations.shape[:2]
        _check(f > 0, f"animation {self.name!r} has no frames")
        _check(
            self.translations.shape == (f, j, 3) and self.rotations.shape == (f, j, 4) and self.scales.shape == (f, j, 3),
            f"animation {self.name!r} tracks have inconsistent shapes",
        )
        _check(self.fps > 0, f"animation {self.name!r} needs a positive fps")
        _check(
            all(np.isfinite(a).all() for a in (self.translations, self.rotations, self.scales)),
            f"animation {self.name!r} contains NaN or infinite values",
        )

    @property
    def num_frames(self) -> int:
        return len(self.translations)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    @classmethod
    def rest(cls, skeleton: Skeleton, name: str = "rest", frames: int = 1, fps: float = 30.0) -> "Animation":
        """A clip holding the bind pose."""
        t, r, s = skeleton.rest_pose()
        tile = lambda a: np.repeat(a[None], frames, 0)  # noqa: E731
        return cls(name, fps, tile(t), tile(r), tile(s))


@dataclass
class Asset:
    """A mesh with an optional rig and animations, plus where it came from.

    up_axis: the source file's up axis (the mesh here is always Y-up); savers of formats without
    an axis convention write back in this frame. unit_scale: metres per source unit.
    warnings: problems the loader repaired, for reports.
    """

    mesh: Mesh
    skeleton: Optional[Skeleton] = None
    skin: Optional[Skin] = None
    animations: list[Animation] = field(default_factory=list)
    up_axis: str = "Y"
    unit_scale: float = 1.0
    name: str = "asset"
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.up_axis in UP_AXES, f"unknown up axis {self.up_axis!r}; use one of {', '.join(UP_AXES)}")
        if self.skin is not None:
            _check(self.skeleton is not None, "a skin needs a skeleton")
            _check(len(self.skin.indices) == len(self.mesh.vertices), "skin has a different vertex count than the mesh")
            _check(int(self.skin.indices.max(initial=0)) < len(self.skeleton), "skin refers to joints the skeleton lacks")
        for anim in self.animations:
            _check(self.skeleton is not None, "animations need a skeleton")
            _check(anim.translations.shape[1] == len(self.skeleton), f"animation {anim.name!r} does not match the skeleton's joint count")

    def posed_vertices(self, animation: Animation, frames=None) -> np.ndarray:
        """(F, V, 3) mesh vertices posed by ``animation`` at ``frames`` (all frames by default)."""
        _check(self.skeleton is not None and self.skin is not None, "posing needs a skeleton and a skin")
        sel = slice(None) if frames is None else np.asarray(frames)
        world = forward_kinematics(
            self.skeleton.parents,
            animation.translations[sel],
            animation.rotations[sel],
            animation.scales[sel],
        )
        return linear_blend_skinning(self.mesh.vertices, self.skeleton.bind_matrices(), world, self.skin.indices, self.skin.weights)


@numpy_compatible
def forward_kinematics(parents, translations, rotations, scales):
    """World matrices ``(..., J, 4, 4)`` of joints from local tracks.

    parents: (J,) with ``parents[j] < j``. translations (..., J, 3), rotations (..., J, 4) (x, y, z,
    w), scales (..., J, 3): local transforms relative to the parent. Differentiable in torch.
    """
    local = trs_to_matrix(translations, rotations, scales)
    parents = [int(p) for p in parents]
    world: list[torch.Tensor] = []
    for j, p in enumerate(parents):
        world.append(local[..., j, :, :] if p < 0 else world[p] @ local[..., j, :, :])
    return torch.stack(world, -3)


@numpy_compatible
def linear_blend_skinning(vertices, bind, world, indices, weights):
    """Posed vertices ``(..., V, 3)`` by linear blend skinning.

    vertices: (V, 3) bind-pose mesh. bind: (J, 4, 4) bind matrices (:meth:`Skeleton.bind_matrices`),
    or (J, 3) joint positions for world-aligned frames. world: (..., J, 4, 4) posed joint matrices
    from :func:`forward_kinematics`. indices, weights: (V, K).
    """
    if bind.shape[-1] == 3:
        skinning = world.clone()
        # world @ translate(-p): only the translation column changes.
        skinning[..., :3, 3] = world[..., :3, 3] - (world[..., :3, :3] @ bind[..., None])[..., 0]
    else:
        skinning = world @ torch.linalg.inv(bind.to(world.dtype))
    blended = (skinning[..., indices, :3, :] * weights[..., None, None].to(world.dtype)).sum(-3)  # (..., V, 3, 4)
    v = vertices.to(world.dtype)
    return (blended[..., :3] @ v[..., None])[..., 0] + blended[..., 3]
