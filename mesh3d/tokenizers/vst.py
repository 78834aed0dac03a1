"""VST: vertex-sharing traversal -- our compact, exactly invertible scheme.

The mesh is grown face by face across *gates*: open half-edges of the faces written so far, kept
on a stack (depth first, like EdgeBreaker and TreeMeshGPT). For the gate ``a -> b`` on top of the
stack the sequence says what lies across it:

* ``STOP`` -- nothing (a boundary, or the face is reached another way);
* a vertex ``v``, giving the face ``(b, a, v)`` (orientation consistent with the gate's face), or
  ``(a, b, v)`` after a ``FLIP`` token (inconsistently oriented neighbour). The vertex is either
  ``REF_k``: the k-th *candidate* -- already-written vertices around ``a`` and ``b``, the ends of
  the open boundary at the gate first, then most recently used first -- or, for a vertex written
  for the first time, its position: ``DELTA_d``, one token for an offset ``d`` in [-8, 8)^3 from the
  parallelogram prediction ``a + b - o`` (``o`` the third vertex of the gate's face), else its
  block/offset coordinates (:mod:`mesh3d.tokenizers.coords`), the block omitted when equal to that
  of the vertex last written by position.

Both sides know which gates are already closed (the twin half-edge ``b -> a`` exists) and skip them
without a token, so a closed, consistently oriented surface needs no ``STOP`` at all. ``SEED`` +
three vertices written by position (which may name existing vertices) starts a new piece when the
stack is empty, each vertex predicted from the one written by position before it; ``SEED`` and
``EOS`` also discard any gates left, so trailing ``STOP`` runs are never written. A vertex is
written by position once; later uses are one ``REF`` token, except vertices not adjacent to the
gate (junctions between pieces, fronts meeting around a handle), which are written again.

Encoding order: seeds are the first unvisited face in canonical order (bottom up); across a gate
the lowest-index unvisited face is taken, a consistently oriented one before a flipped one.
"""

from __future__ import annotations

from itertools import islice

import numpy as np

from mesh3d.tokenizers.base import EOS, N_SPECIAL, Grammar, MeshTokenizer, QuantizedMesh, edge_faces
from mesh3d.tokenizers.coords import BlockCoder

SEED, STOP, FLIP = N_SPECIAL, N_SPECIAL + 1, N_SPECIAL + 2
REF0 = N_SPECIAL + 3
N_CANDIDATES = 8
SCAN = 32  # neighbours of each gate end considered for candidates, most recent first
DELTA0 = REF0 + N_CANDIDATES
DELTA_HALF = 8  # DELTA tokens cover offsets [-8, 8) per axis: 16^3 tokens
N_DELTA = (2 * DELTA_HALF) ** 3
# DELTA token i -> offset (dx, dy, dz); packed as ((dy + 8) * 16 + dz + 8) * 16 + dx + 8.
_r = np.arange(-DELTA_HALF, DELTA_HALF)
DELTAS = np.stack(np.meshgrid(_r, _r, _r, indexing="ij"), -1).reshape(-1, 3)[:, [2, 0, 1]]
DELTA_LIST = [tuple(d) for d in DELTAS.tolist()]  # for fast scalar lookups


def delta_token(c, pred):
    """DELTA token taking prediction ``pred`` to ``c``, or None when out of the window."""
    dx, dy, dz = c[0] - pred[0], c[1] - pred[1], c[2] - pred[2]
    if -DELTA_HALF <= min(dx, dy, dz) and max(dx, dy, dz) < DELTA_HALF:
        return DELTA0 + (((dy + DELTA_HALF) << 4 | (dz + DELTA_HALF)) << 4 | (dx + DELTA_HALF))
    return None


def predict(coords, gate):
    """Predicted position of the vertex across gate (a, b, o): the parallelogram a + b - o."""
    a, b, o = coords[gate[0]], coords[gate[1]], coords[gate[2]]
    return (a[0] + b[0] - o[0], a[1] + b[1] - o[1], a[2] + b[2] - o[2])


class Front:
    """Traversal state shared by the encoder and the decoder, in decoded vertex ids (order of first
    appearance), so both compute the same gates and candidates."""

    def __init__(self):
        self.half: set[tuple[int, int]] = set()
        self.stack: list[tuple[int, int, int]] = []  # (a, b, o): half-edge a -> b of face (a, b, o)
        self.nbrs: list[dict[int, int]] = []  # neighbour -> time the edge was last used
        self.time = 0

    def add_face(self, a: int, b: int, c: int) -> None:
        """Register face (a, b, c) and push its edges after the first, (b, c) on top."""
        nbrs = self.nbrs
        top = max(a, b, c)
        if top >= len(nbrs):
            nbrs.extend({} for _ in range(top + 1 - len(nbrs)))
        self.time += 1
        t = self.time
        half = self.half
        half.add((a, b))
        half.add((b, c))
        half.add((c, a))
        # Re-insert so that each neighbour dict stays ordered by recency (oldest first).
        na, nb, nc = nbrs[a], nbrs[b], nbrs[c]
        na.pop(b, None), na.pop(c, None), nb.pop(a, None), nb.pop(c, None), nc.pop(a, None), nc.pop(b, None)
        na[b] = na[c] = nb[a] = nb[c] = nc[a] = nc[b] = t
        self.stack.append((c, a, b))
        self.stack.append((b, c, a))

    def seed(self, a: int, b: int, c: int) -> None:
        """Register a seed face; all three edges become gates, (a, b) first."""
        self.add_face(a, b, c)
        self.stack.append((a, b, c))

    def next_gate(self):
        """Pop gates until an open one (twin half-edge absent): (a, b, o), or None when the stack runs
        out."""
        stack, half = self.stack, self.half
        while stack:
            g = stack.pop()
            if (g[1], g[0]) not in half:
                return g
        return None

    def candidates(self, a: int, b: int) -> list[int]:
        """Written vertices around gate a -> b that REF tokens may name, likeliest first.

        Only the ``SCAN`` most recent neighbours of each end are looked at, which bounds the work
        per token (a decoder fed a huge fan must not slow down quadratically)."""
        half, keyed = self.half, {}
        for end, other, into in ((a, b, True), (b, a, False)):
            d = self.nbrs[end]
            for w in islice(reversed(d), SCAN):
                if w == other:
                    continue
                edge, twin = ((w, end), (end, w)) if into else ((end, w), (w, end))
                k = (0 if edge in half and twin not in half else 1, -d[w], w)
                if w not in keyed or k < keyed[w]:
                    keyed[w] = k
        return [k[2] for k in sorted(keyed.values())[:N_CANDIDATES]]


class VSTTokenizer(MeshTokenizer):
    name = "vst"

    def __init__(self, bits: int = 7):
        super().__init__(bits)
        self.coder = BlockCoder(self.bits, DELTA0 + N_DELTA)
        self.vocab_size = self.coder.end

    def _kind(self, t: int) -> str:
        if t < REF0:
            return ("SEED", "STOP", "FLIP")[t - SEED]
        if t < DELTA0:
            return "REF"
        return "DELTA" if t < DELTA0 + N_DELTA else self.coder.kind(t)

    def grammar(self) -> "VSTGrammar":
        return VSTGrammar(self)

    def _encode(self, q: QuantizedMesh) -> list[int]:
        faces = q.faces.tolist()
        coords = [tuple(c) for c in q.coords.tolist()]
        by_edge = edge_faces(faces)
        visited = [False] * len(faces)
        dec = [-1] * len(coords)  # source vertex -> decoded id
        src: list[int] = []  # decoded id -> source vertex
        front, coder = Front(), self.coder
        out: list[int] = []
        last = None  # the vertex last written by position
        seed_at, stops = 0, 0

        def name(v: int, cands, pred) -> None:
            """Write source vertex v as a REF (if a candidate), a DELTA from ``pred`` or coordinates."""
            nonlocal last
            d = dec[v]
            if d >= 0 and cands is not None:
                try:
                    out.append(REF0 + cands.index(d))
                    return
                except ValueError:
                    pass
            t = delta_token(coords[v], pred) if pred is not None else None
            if t is not None:
                out.append(t)
            else:
                out.extend(coder.encode(coords[v], last))
            last = coords[v]
            if d < 0:
                dec[v] = len(src)
                src.append(v)

        while True:
            gate = front.next_gate()
            if gate is None:
                stops = 0  # SEED / EOS discard the gates left
                while seed_at < len(faces) and visited[seed_at]:
                    seed_at += 1
                if seed_at == len(faces):
                    return out
                visited[seed_at] = True
                out.append(SEED)
                pred = last
                for v in faces[seed_at]:
                    name(v, None, pred)
                    pred = coords[v]
                front.seed(*(dec[v] for v in faces[seed_at]))
                continue
            a, b, o = gate
            sa, sb = src[a], src[b]
            best, flip = -1, False
            for f in by_edge[(min(sa, sb), max(sa, sb))]:
                if visited[f]:
                    continue
                x, y, z = faces[f]
                consistent = (x, y) == (sb, sa) or (y, z) == (sb, sa) or (z, x) == (sb, sa)
                if consistent:
                    best, flip = f, False
                    break
                if best < 0:
                    best, flip = f, True
            if best < 0:
                stops += 1
                continue
            out.extend([STOP] * stops)
            stops = 0
            visited[best] = True
            if flip:
                out.append(FLIP)
            v = sum(faces[best]) - sa - sb
            d = dec[v]
            near = d >= 0 and (d in front.nbrs[a] or d in front.nbrs[b])  # else not a candidate
            name(v, front.candidates(a, b) if near else None, predict(coords, (sa, sb, src[o])))
            front.add_face(*((a, b, dec[v]) if flip else (b, a, dec[v])))


class VSTGrammar(Grammar):
    """Decoding state: the current gate (or a seed face being read), a pending FLIP, and the block
    levels read so far of a vertex written with coordinates."""

    def __init__(self, tok: VSTTokenizer):
        super().__init__(tok)
        self.coder = tok.coder
        self.hi = (1 << tok.bits) - 1
        self.front = Front()
        self.gate = None
        self.flip = False
        self.seed_ids = None  # list of seed vertices read so far while reading a seed face
        self.level = None  # next coordinate level expected inside a vertex
        self.partial = None
        self.last = None  # the vertex last read by position: block reference
        self._cands = None

    def cands(self) -> list[int]:
        if self._cands is None:
            self._cands = self.front.candidates(self.gate[0], self.gate[1]) if self.gate else []
        return self._cands

    def _pred(self):
        """Prediction for the vertex being read: across a gate the parallelogram, in a seed the
        vertex before (None at the very start)."""
        coords = self.builder.coords
        if self.seed_ids is not None:
            return coords[self.seed_ids[-1]] if self.seed_ids else self.last
        return predict(coords, self.gate)

    def _forbidden(self) -> list[tuple[int, int, int]]:
        """Positions the vertex being read may not take (they would make a degenerate face)."""
        coords = self.builder.coords
        return [coords[f] for f in (self.seed_ids if self.seed_ids is not None else self.gate[:2])]

    def _final_ok(self, t: int) -> bool:
        return all(self.coder.finest_token_of(f, self.partial) != t for f in self._forbidden())

    def _vertex_start_ok(self, t: int) -> bool:
        pred = self._pred()
        if DELTA0 <= t < DELTA0 + N_DELTA:
            if pred is None:
                return False
            dx, dy, dz = DELTA_LIST[t - DELTA0]
            c = (pred[0] + dx, pred[1] + dy, pred[2] + dz)
            return min(c) >= 0 and max(c) <= self.hi and c not in self._forbidden()
        lv = self.coder.level_of(t)
        if lv < 0 or (self.last is None and lv != 0):
            return False
        if lv == self.coder.levels - 1:
            self.partial = self.coder.start_partial(lv, self.last)
            return self._final_ok(t)
        return True

    def _valid(self, t: int) -> bool:
        if self.level is not None:
            if self.coder.level_of(t) != self.level:
                return False
            return self.level < self.coder.levels - 1 or self._final_ok(t)
        if self.seed_ids is not None:
            return self._vertex_start_ok(t)
        if self.gate is None:
            return t in (SEED, EOS)
        if REF0 <= t < REF0 + N_CANDIDATES:
            return t - REF0 < len(self.cands())
        if t in (STOP, SEED, EOS, FLIP):
            return not self.flip
        return self._vertex_start_ok(t)

    def _advance(self, t: int) -> None:
        coder = self.coder
        if t == SEED:
            self.front.stack.clear()
            self.gate, self.seed_ids = None, []
        elif t == STOP:
            self._next_gate()
        elif t == FLIP:
            self.flip = True
        elif REF0 <= t < REF0 + N_CANDIDATES:
            self._vertex_read(self.cands()[t - REF0])
        elif DELTA0 <= t < DELTA0 + N_DELTA:
            pred = self._pred()
            dx, dy, dz = DELTA_LIST[t - DELTA0]
            self.last = (pred[0] + dx, pred[1] + dy, pred[2] + dz)
            self._vertex_read(self.builder.vertex(self.last))
        else:
            if self.level is None:  # start of a vertex written with block levels
                self.level = coder.level_of(t)
                self.partial = coder.start_partial(self.level, self.last)
            coder.apply(self.partial, self.level, t)
            self.level += 1
            if self.level == coder.levels:
                self.level, self.last = None, tuple(self.partial)
                self._vertex_read(self.builder.vertex(self.last))

    def _vertex_read(self, v: int) -> None:
        if self.seed_ids is not None:
            self.seed_ids.append(v)
            if len(self.seed_ids) == 3:
                if self.builder.add_face(*self.seed_ids):
                    self.front.seed(*self.seed_ids)
                self.seed_ids = None
                self._next_gate()
            return
        a, b = self.gate[:2]
        face = (a, b, v) if self.flip else (b, a, v)
        if self.builder.add_face(*face):
            self.front.add_face(*face)
        self._next_gate()

    def _next_gate(self) -> None:
        self.gate = self.front.next_gate()
        self.flip = False
        self._cands = None

    def _mask(self, m: np.ndarray) -> None:
        coder = self.coder
        if self.level is not None:
            lo, hi = coder.starts[self.level], coder.starts[self.level] + coder.sizes[self.level]
            m[lo:hi] = True
            if self.level == coder.levels - 1:
                self._mask_forbidden(m)
            return
        if self.seed_ids is None and self.gate is None:
            m[SEED] = m[EOS] = True
            return
        if self.seed_ids is None:
            m[REF0:REF0 + len(self.cands())] = True
            if not self.flip:
                m[[STOP, SEED, EOS, FLIP]] = True
        pred = self._pred()
        if pred is not None:
            c = np.asarray(pred) + DELTAS
            ok = ((c >= 0) & (c <= self.hi)).all(1)
            for f in self._forbidden():
                ok &= ~(c == f).all(1)
            m[DELTA0:DELTA0 + N_DELTA] = ok
        if self.last is None:
            m[coder.starts[0]:coder.starts[0] + coder.sizes[0]] = True
            return
        m[coder.starts[0]:coder.end] = True
        self.partial = coder.start_partial(coder.levels - 1, self.last)
        self._mask_forbidden(m)

    def _mask_forbidden(self, m: np.ndarray) -> None:
        for f in self._forbidden():
            t = self.coder.finest_token_of(f, self.partial)
            if t is not None:
                m[t] = False
