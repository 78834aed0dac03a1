"""AMT-style tokenization (Adjacent Mesh Tokenization, MeshAnything V2).

Faces are written as strips. A strip starts with a full face (three vertices) and continues while
some unvisited face shares the edge formed by the last two vertices written: only that face's third
vertex is written. When no face continues the strip, ``SEP`` (MeshAnything's ``&``) starts a new
strip at the first unvisited face in canonical order. Vertices are three coordinate tokens
(``y, z, x``) as in the naive scheme.

Orientation is kept exactly: a continuation face is assumed to run the shared edge opposite to the
previous face (a consistently oriented surface); a ``FLIP`` token before the vertex says it runs
the same way.
"""

from __future__ import annotations

import numpy as np

from mesh3d.tokenizers.base import EOS, N_SPECIAL, Grammar, MeshTokenizer, QuantizedMesh, edge_faces

SEP, FLIP = N_SPECIAL, N_SPECIAL + 1
COORD0 = N_SPECIAL + 2


def continuation(prev: tuple[int, int, int], p: int, q: int, v: int, flip: bool) -> tuple[int, int, int]:
    """Face made by vertex ``v`` across edge {p, q} of the previous face ``prev``."""
    a, b, c = prev
    forward = (a, b) == (p, q) or (b, c) == (p, q) or (c, a) == (p, q)  # prev runs p -> q
    return (p, q, v) if forward == flip else (q, p, v)


class AMTTokenizer(MeshTokenizer):
    name = "amt"

    def __init__(self, bits: int = 7):
        super().__init__(bits)
        self.vocab_size = COORD0 + (1 << self.bits)

    def _kind(self, t: int) -> str:
        return "SEP" if t == SEP else "FLIP" if t == FLIP else "coord"

    def grammar(self) -> "AMTGrammar":
        return AMTGrammar(self)

    def _encode(self, q: QuantizedMesh) -> list[int]:
        faces = q.faces.tolist()
        yzx = (q.coords[:, [1, 2, 0]] + COORD0).tolist()
        by_edge = edge_faces(faces)
        visited = [False] * len(faces)
        out: list[int] = []
        for start in range(len(faces)):
            if visited[start]:
                continue
            if out:
                out.append(SEP)
            visited[start] = True
            prev = tuple(faces[start])
            for v in prev:
                out.extend(yzx[v])
            p, r = prev[1], prev[2]
            while True:
                best = None
                for f in by_edge[(min(p, r), max(p, r))]:
                    if visited[f]:
                        continue
                    v = sum(faces[f]) - p - r
                    face = continuation(prev, p, r, v, False)
                    if _same_cycle(face, faces[f]):
                        best = (f, v, False, face)
                        break
                    if best is None:
                        best = (f, v, True, continuation(prev, p, r, v, True))
                if best is None:
                    break
                f, v, flip, prev = best
                visited[f] = True
                if flip:
                    out.append(FLIP)
                out.extend(yzx[v])
                p, r = r, v
        return out


def _same_cycle(a, b) -> bool:
    """True when triangles a and b list the same vertices in the same cyclic order."""
    b = list(b)
    return tuple(a) in ((b[0], b[1], b[2]), (b[1], b[2], b[0]), (b[2], b[0], b[1]))


class AMTGrammar(Grammar):
    """States: reading the first face of a strip (``first`` holds its vertices so far) or a
    continuation; ``vals`` holds the coordinates of the vertex being read."""

    def __init__(self, tok: AMTTokenizer):
        super().__init__(tok)
        self.n = 1 << tok.bits
        self.first: list[int] | None = []
        self.prev = None
        self.pq = None
        self.flip = False
        self.vals: list[int] = []

    def _forbidden(self) -> list[int]:
        return list(self.first) if self.first is not None else list(self.pq)

    def _forbidden_last(self) -> set[int]:
        """Last-coordinate values that would repeat a vertex of the face being read."""
        if len(self.vals) != 2:
            return set()
        coords = self.builder.coords
        out = set()
        for f in self._forbidden():
            x, y, z = coords[f]
            if [y, z] == self.vals:
                out.add(x)
        return out

    def _between(self) -> bool:
        """True between faces: a face is complete and no vertex or FLIP is pending."""
        return self.first is None and not self.vals and not self.flip

    def _valid(self, t: int) -> bool:
        if t == EOS:
            return self._between() or (self.first == [] and self.prev is None and not self.vals)
        if t in (SEP, FLIP):
            return self._between()
        v = t - COORD0
        return 0 <= v < self.n and v not in self._forbidden_last()

    def _advance(self, t: int) -> None:
        if t == SEP:
            self.first = []
            return
        if t == FLIP:
            self.flip = True
            return
        self.vals.append(t - COORD0)
        if len(self.vals) < 3:
            return
        y, z, x = self.vals
        self.vals = []
        v = self.builder.vertex((x, y, z))
        if self.first is not None:
            self.first.append(v)
            if len(self.first) == 3:
                self.prev = tuple(self.first)
                self.pq = (self.first[1], self.first[2])
                self.builder.add_face(*self.prev)
                self.first = None
            return
        p, q = self.pq
        self.prev = continuation(self.prev, p, q, v, self.flip)
        self.builder.add_face(*self.prev)
        self.pq, self.flip = (q, v), False

    def _mask(self, m: np.ndarray) -> None:
        if self._valid(EOS):
            m[EOS] = True
        if self._between():
            m[SEP] = m[FLIP] = True
        m[COORD0:] = True
        for v in self._forbidden_last():
            m[COORD0 + v] = False
