"""Shared preprocessing and the common interface of the mesh tokenizers.

Preprocessing (:func:`quantize_mesh`), identical for every scheme:

1. normalise to the unit cube (:func:`mesh3d.geometry.normalize.normalize_unit_cube`);
2. quantise each coordinate to ``bits`` bits: ``q = floor((v + 0.5) * 2**bits)`` clipped to
   ``[0, 2**bits - 1]``; decoding returns cell centres ``(q + 0.5) / 2**bits - 0.5``;
3. merge vertices with equal quantised coordinates, drop unreferenced vertices;
4. drop degenerate faces (two corners on one quantised vertex) and duplicate faces (the same three
   vertices in the same cyclic order; a face and its reverse are different faces and both kept);
5. canonical order (:func:`canonicalize`): vertices sorted up-axis first -- by ``y`` (up), then ``z``
   (front), then ``x`` -- so every sequence is written bottom to top; each face rotated so its
   lowest vertex comes first (orientation kept); faces sorted by their three vertex indices.

Ordering is up-axis aware: the internal frame is Y-up, so sorting by ``y`` first is the
"vertical axis first" order of MeshGPT (which sorts ``z-y-x`` in a Z-up frame). Sorting by ``z``
first in a Y-up frame would write the front of every model last, the failure MeshAnything users
report (holes at the front when generation stops early).

Round trip contract: for every tokenizer ``t``,
``canonicalize(t.decode(t.encode(m)).mesh) == quantize_mesh(m, t.bits)`` -- the same vertices and
oriented faces; only the order in which they are written may differ.

Common interface (:class:`MeshTokenizer`): ``encode(mesh) -> tokens`` (int64 array starting with BOS
and ending with EOS), ``decode(tokens) -> Decoded(mesh, problems)``, ``vocab_size``, the special
tokens ``PAD, BOS, EOS`` (ids 0, 1, 2 in every scheme), and ``grammar()``: a state machine that,
fed tokens one at a time with ``step``, gives the boolean ``mask()`` of valid next tokens for
constrained decoding (it also implements the ``allowed/advance/clone`` protocol of
``mesh3d.nn.model.GPT.generate``). ``decode`` runs the same state machine, so a sequence sampled under the mask
always decodes; an invalid token is skipped and counted as a problem, and decoding never raises.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Iterable, Union

import numpy as np

from mesh3d.asset import Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.normalize import normalize_unit_cube

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3
SUPPORTED_BITS = (7, 8, 9, 10)


@dataclass
class QuantizedMesh:
    """A mesh on the integer grid of the tokenizers.

    coords: (V, 3) int64 grid coordinates in ``[0, 2**bits)``, axes x, y, z (Y up).
    faces: (F, 3) int64 vertex indices.
    """

    coords: np.ndarray
    faces: np.ndarray
    bits: int

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.int64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)

    def to_mesh(self) -> Mesh:
        """The mesh with vertices at cell centres, in the unit cube [-0.5, 0.5]^3."""
        return Mesh(vertices=(self.coords + 0.5) / (1 << self.bits) - 0.5, faces=self.faces.copy())

    def same_as(self, other: "QuantizedMesh") -> bool:
        """True when both hold the same vertices and oriented faces (order ignored)."""
        a, b = canonicalize(self), canonicalize(other)
        return a.bits == b.bits and np.array_equal(a.coords, b.coords) and np.array_equal(a.faces, b.faces)


@dataclass
class Decoded:
    """Result of decoding: the faces that could be read, and the count of problems met."""

    mesh: QuantizedMesh
    problems: int


def check_bits(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise Mesh3DError(f"quantisation must use one of {SUPPORTED_BITS} bits, got {bits}")
    return int(bits)


def canonicalize(qmesh: QuantizedMesh) -> QuantizedMesh:
    """Clean and canonically order a quantised mesh (steps 3-5 of the module docstring)."""
    coords, faces = qmesh.coords, qmesh.faces
    if not len(faces):
        return QuantizedMesh(np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64), qmesh.bits)
    # Merge equal coordinates and keep only vertices used by a face. Coordinates are packed into
    # one integer key ordered y, z, x, so sorting keys is the canonical vertex order.
    n = 1 << qmesh.bits
    if len(coords) and (coords.min() < 0 or coords.max() >= n):
        raise Mesh3DError(f"quantised coordinates must lie in [0, {n - 1}] for {qmesh.bits} bits")
    keys = (coords[:, 1] * n + coords[:, 2]) * n + coords[:, 0]
    uniq_keys, inverse = np.unique(keys, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    used, faces = np.unique(faces, return_inverse=True)  # renumber in key order, dropping unused
    faces = faces.reshape(-1, 3)
    k = uniq_keys[used]
    coords = np.stack([k % n, k // (n * n), (k // n) % n], 1)
    # Rotate each face so its lowest vertex leads, keeping the cyclic order (orientation).
    shift = faces.argmin(1)
    idx = (shift[:, None] + np.arange(3)[None, :]) % 3
    faces = np.take_along_axis(faces, idx, 1)
    # Sort faces lexicographically and drop duplicates, through one integer key per face.
    m = len(coords)
    fkeys = np.unique((faces[:, 0] * m + faces[:, 1]) * m + faces[:, 2])
    faces = np.stack([fkeys // (m * m), (fkeys // m) % m, fkeys % m], 1)
    return QuantizedMesh(coords, faces, qmesh.bits)


def quantize_mesh(mesh: Union[Mesh, QuantizedMesh], bits: int = 7) -> QuantizedMesh:
    """Normalise, quantise, clean and canonically order a mesh (see the module docstring).

    A :class:`QuantizedMesh` with the same ``bits`` is only cleaned and reordered (not rescaled),
    so ``quantize_mesh`` is idempotent.
    """
    bits = check_bits(bits)
    if isinstance(mesh, QuantizedMesh):
        if mesh.bits != bits:
            raise Mesh3DError(f"mesh is quantised to {mesh.bits} bits, tokenizer expects {bits}")
        return canonicalize(mesh)
    v, _, _ = normalize_unit_cube(mesh.vertices)
    n = 1 << bits
    q = np.clip(np.floor((v + 0.5) * n), 0, n - 1).astype(np.int64)
    return canonicalize(QuantizedMesh(q, mesh.faces, bits))


def edge_faces(faces: list) -> dict[tuple[int, int], list[int]]:
    """Undirected edge ``(min, max)`` -> indices of the faces using it, ascending."""
    out: dict[tuple[int, int], list[int]] = {}
    for i, (x, y, z) in enumerate(faces):
        for e in ((x, y), (y, z), (z, x)):
            out.setdefault((min(e), max(e)), []).append(i)
    return out


class MeshBuilder:
    """Collects vertices (by grid coordinates) and faces while decoding, counting bad faces."""

    def __init__(self, bits: int):
        self.bits = bits
        self.coords: list[tuple[int, int, int]] = []
        self.index: dict[tuple[int, int, int], int] = {}
        self.faces: list[tuple[int, int, int]] = []
        self.face_keys: set[tuple[int, int, int]] = set()
        self.problems = 0

    def vertex(self, c: tuple[int, int, int]) -> int:
        """Index of the vertex at grid coordinates ``c``, created on first use."""
        i = self.index.get(c)
        if i is None:
            i = self.index[c] = len(self.coords)
            self.coords.append(c)
        return i

    def add_face(self, a: int, b: int, c: int) -> bool:
        """Add face (a, b, c); a degenerate or repeated face is dropped and counted as a problem."""
        if a == b or b == c or a == c:
            self.problems += 1
            return False
        m = min(a, b, c)
        key = (a, b, c) if m == a else (b, c, a) if m == b else (c, a, b)
        if key in self.face_keys:
            self.problems += 1
            return False
        self.face_keys.add(key)
        self.faces.append((a, b, c))
        return True

    def mesh(self) -> QuantizedMesh:
        return QuantizedMesh(np.array(self.coords, np.int64).reshape(-1, 3), np.array(self.faces, np.int64).reshape(-1, 3), self.bits)


class Grammar:
    """Token-by-token state machine of one scheme: valid-next-token masks and decoding.

    Subclasses implement ``_valid(t)`` (is token ``t`` allowed now), ``_advance(t)`` (consume a valid
    token, building faces in ``self.builder``) and ``mask()``. Start state expects BOS; after EOS
    only PAD is accepted.
    """

    def __init__(self, tokenizer: "MeshTokenizer"):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.builder = MeshBuilder(tokenizer.bits)
        self.started = False
        self.done = False
        self.rejected = 0

    @property
    def problems(self) -> int:
        """Rejected tokens plus faces dropped as degenerate or repeated."""
        return self.rejected + self.builder.problems

    def step(self, token) -> bool:
        """Feed one token. Returns False (and counts a problem) when it is not valid here."""
        try:
            t = operator.index(token)
        except TypeError:
            self.rejected += 1
            return False
        if t == PAD and (self.done or not self.started):
            return True
        if not self.started:
            ok = t == BOS
            self.started = ok
        elif self.done or not (0 <= t < self.vocab_size):
            ok = False
        elif t == EOS:
            ok = self._valid(t)
            self.done = ok
        else:
            ok = self._valid(t)
            if ok:
                self._advance(t)
        if not ok:
            self.rejected += 1
        return ok

    # The decoder's grammar protocol (mesh3d.nn.model.Grammar): allowed / advance / clone.

    def allowed(self):
        """``mask()`` as a torch bool tensor (vocab_size,)."""
        import torch

        return torch.from_numpy(self.mask())

    def advance(self, token: int) -> None:
        """``step(token)``, for decoders that feed only allowed tokens."""
        self.step(token)

    def clone(self) -> "Grammar":
        """An independent copy in the same state (sharing the immutable tokenizer)."""
        return copy.deepcopy(self, {id(self.tokenizer): self.tokenizer})

    def decoded(self) -> Decoded:
        """The faces read so far; an unfinished sequence (no EOS yet) counts one more problem."""
        return Decoded(self.builder.mesh(), self.problems + (0 if self.done else 1))

    def mask(self) -> np.ndarray:
        """(vocab_size,) bool: tokens that may come next."""
        m = np.zeros(self.vocab_size, bool)
        if not self.started:
            m[BOS] = m[PAD] = True  # left padding is accepted
        elif self.done:
            m[PAD] = True
        else:
            self._mask(m)
        return m

    def _valid(self, t: int) -> bool:
        raise NotImplementedError

    def _advance(self, t: int) -> None:
        raise NotImplementedError

    def _mask(self, m: np.ndarray) -> None:
        raise NotImplementedError


class MeshTokenizer:
    """Common interface; see the module docstring. Subclasses set ``name`` and ``vocab_size`` and
    implement ``_encode(qmesh) -> list[int]`` (without BOS/EOS) and ``grammar()``."""

    name = ""
    PAD, BOS, EOS = PAD, BOS, EOS

    def __init__(self, bits: int = 7):
        self.bits = check_bits(bits)
        self.vocab_size = N_SPECIAL

    @property
    def special_tokens(self) -> dict[str, int]:
        return {"PAD": PAD, "BOS": BOS, "EOS": EOS}

    def encode(self, mesh: Union[Mesh, QuantizedMesh]) -> np.ndarray:
        """(T,) int64 tokens ``[BOS, ..., EOS]`` for the cleaned, quantised mesh."""
        q = quantize_mesh(mesh, self.bits)
        return np.array([BOS, *self._encode(q), EOS], np.int64)

    def decode(self, tokens: Iterable) -> Decoded:
        """Read faces from any token list; never raises. Problems count rejected tokens, dropped
        faces and a missing EOS (truncation)."""
        g = self.grammar()
        for t in tokens:
            g.step(t)
        return g.decoded()

    def token_kind(self, t: int) -> str:
        """Name of the kind of token ``t`` (for breakdowns of where the tokens go)."""
        return ("PAD", "BOS", "EOS")[t] if 0 <= t < N_SPECIAL else self._kind(t)

    def grammar(self) -> Grammar:
        raise NotImplementedError

    def _kind(self, t: int) -> str:
        raise NotImplementedError

    def _encode(self, q: QuantizedMesh) -> list[int]:
        raise NotImplementedError
