"""Naive tokenization (MeshGPT/PolyGen): 9 coordinate tokens per face.

Faces in canonical order (see :mod:`mesh3d.tokenizers.base`: vertical axis first, lowest vertex
first in each face), each written as its three vertices, each vertex as its ``y, z, x`` grid
coordinates -- one token per coordinate, ``2**bits`` coordinate tokens. The baseline of the
benchmark's "share of 9".
"""

from __future__ import annotations

import numpy as np

from mesh3d.tokenizers.base import EOS, N_SPECIAL, Decoded, Grammar, MeshTokenizer, QuantizedMesh

# Coordinate axes in writing order: y (up), z, x.
AXES = (1, 2, 0)


class NaiveTokenizer(MeshTokenizer):
    name = "naive"

    def __init__(self, bits: int = 7):
        super().__init__(bits)
        self.vocab_size = N_SPECIAL + (1 << self.bits)

    def _encode(self, q: QuantizedMesh) -> list[int]:
        corners = q.coords[q.faces][:, :, AXES]  # (F, 3 corners, 3 coords)
        return (corners.reshape(-1) + N_SPECIAL).tolist()

    def decode(self, tokens) -> Decoded:
        # Fast path for a well-formed sequence; anything else goes through the grammar.
        try:
            t = np.asarray(tokens)
            ok = t.ndim == 1 and t.dtype.kind in "iu" and len(t) >= 2
        except (ValueError, TypeError):
            ok = False
        if ok:
            body = t[1:-1].astype(np.int64) - N_SPECIAL
            ok = (t[0] == self.BOS and t[-1] == EOS and len(body) % 9 == 0
                  and bool(((body >= 0) & (body < (1 << self.bits))).all()))
        if not ok:
            return super().decode(tokens)
        xyz = body.reshape(-1, 3)[:, [2, 0, 1]]  # y, z, x -> x, y, z
        uniq, inv = np.unique(xyz, axis=0, return_inverse=True)
        faces = inv.reshape(-1, 3)
        n_faces = len(faces)
        # Degenerate and repeated faces are dropped and counted, as in the grammar.
        rot = np.take_along_axis(faces, (faces.argmin(1)[:, None] + np.arange(3)) % 3, 1)
        degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
        _, first = np.unique(rot, axis=0, return_index=True)
        keep = np.zeros(n_faces, bool)
        keep[first] = True
        keep &= ~degenerate
        problems = int(n_faces - keep.sum())
        return Decoded(QuantizedMesh(uniq, faces[keep], self.bits), problems)

    def _kind(self, t: int) -> str:
        return "coord"

    def grammar(self) -> "NaiveGrammar":
        return NaiveGrammar(self)


class NaiveGrammar(Grammar):
    """Position within the face (0..8) decides; the last coordinate of the second and third vertex
    cannot repeat an earlier vertex of the face (degenerate)."""

    def __init__(self, tok: NaiveTokenizer):
        super().__init__(tok)
        self.n = 1 << tok.bits
        self.pos = 0
        self.vals: list[int] = []

    def _forbidden_last(self) -> set[int]:
        """Values of the last coordinate that would repeat an earlier vertex of this face."""
        if self.pos not in (5, 8):
            return set()
        cur = self.vals[self.pos - 2:self.pos]
        return {self.vals[k + 2] for k in range(0, self.pos - 2, 3) if self.vals[k:k + 2] == cur}

    def _valid(self, t: int) -> bool:
        if t == EOS:
            return self.pos == 0
        v = t - N_SPECIAL
        return 0 <= v < self.n and v not in self._forbidden_last()

    def _advance(self, t: int) -> None:
        self.vals.append(t - N_SPECIAL)
        self.pos += 1
        if self.pos == 9:
            b = self.builder
            ids = [b.vertex((self.vals[k + 2], self.vals[k], self.vals[k + 1])) for k in (0, 3, 6)]
            b.add_face(*ids)
            self.pos, self.vals = 0, []

    def _mask(self, m: np.ndarray) -> None:
        if self.pos == 0:
            m[EOS] = True
        m[N_SPECIAL:] = True
        for v in self._forbidden_last():
            m[N_SPECIAL + v] = False

