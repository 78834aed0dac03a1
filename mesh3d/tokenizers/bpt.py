"""BPT-style tokenization (Blocked and Patchified Tokenization, Weng et al. 2024).

Patch-centred traversal: take the vertex with the most unvisited faces as a patch centre (among the
vertices of the previous patch when one has any, else over the whole mesh; ties to the lowest
index, so bottom first), and write the unvisited faces around it as fans: the centre, then the ring
vertices ``r1, r2, ...`` giving faces ``(centre, r_k-1, r_k)``. A closed fan ends by repeating
``r1``. A centre whose faces form several fans (boundaries, non-manifold or flipped faces) starts
one patch per fan.

Block/offset coordinates (:mod:`mesh3d.tokenizers.coords`; 8^3 blocks of 16^3 offsets at 7 bits):
a ring vertex omits its block when it is in the block of the vertex written before it. Centres use
a separate vocabulary and always write their block, which marks the start of a patch.
"""

from __future__ import annotations

import heapq

import numpy as np

from mesh3d.tokenizers.base import EOS, N_SPECIAL, Grammar, MeshTokenizer, QuantizedMesh
from mesh3d.tokenizers.coords import BlockCoder


def fans(center: int, faces: list, face_ids: list[int]) -> list[list[int]]:
    """Split the faces around ``center`` into fans; each fan is its ring of vertices.

    faces: all faces (lists of 3 ids). face_ids: unvisited faces containing ``center``, ascending.
    Each face is read as ``(center, u, w)``; a fan chains faces where one's ``w`` is the next's ``u``.
    """
    uw = []
    for f in face_ids:
        a, b, c = faces[f]
        uw.append((b, c) if a == center else (c, a) if b == center else (a, b))
    by_u: dict[int, list[int]] = {}
    ws = set()
    for k, (u, w) in enumerate(uw):
        by_u.setdefault(u, []).append(k)
        ws.add(w)
    used = [False] * len(uw)
    # Open fans first (their first u ends no other face), then whatever is left (closed fans).
    order = [k for k, (u, _) in enumerate(uw) if u not in ws] + list(range(len(uw)))
    rings = []
    for k in order:
        if used[k]:
            continue
        used[k] = True
        ring = [uw[k][0], uw[k][1]]
        while True:
            nxt = next((j for j in by_u.get(ring[-1], ()) if not used[j]), None)
            if nxt is None:
                break
            used[nxt] = True
            ring.append(uw[nxt][1])
        rings.append(ring)
    return rings


class BPTTokenizer(MeshTokenizer):
    name = "bpt"

    def __init__(self, bits: int = 7):
        super().__init__(bits)
        self.ring = BlockCoder(self.bits, N_SPECIAL)
        self.center = BlockCoder(self.bits, self.ring.end)
        self.vocab_size = self.center.end

    def _kind(self, t: int) -> str:
        return "center " + self.center.kind(t) if t >= self.ring.end else self.ring.kind(t)

    def grammar(self) -> "BPTGrammar":
        return BPTGrammar(self)

    def _encode(self, q: QuantizedMesh) -> list[int]:
        faces = q.faces.tolist()
        coords = [tuple(c) for c in q.coords.tolist()]
        vert_faces: list[list[int]] = [[] for _ in coords]
        for i, f in enumerate(faces):
            for v in f:
                vert_faces[v].append(i)
        visited = [False] * len(faces)
        degree = [len(fs) for fs in vert_faces]
        heap = [(-d, v) for v, d in enumerate(degree) if d]
        heapq.heapify(heap)
        out: list[int] = []
        last = []  # ring vertices of the previous centre
        while True:
            cands = [v for v in last if degree[v]]
            if cands:
                center = min(cands, key=lambda v: (-degree[v], v))
            else:
                center = -1
                while heap:
                    d, v = heapq.heappop(heap)
                    if degree[v] and -d == degree[v]:
                        center = v
                        break
                    if degree[v]:
                        heapq.heappush(heap, (-degree[v], v))
                if center < 0:
                    return out
            ids = [f for f in vert_faces[center] if not visited[f]]
            last = []
            for ring in fans(center, faces, ids):
                out.extend(self.center.encode(coords[center], None))
                ref = coords[center]
                for v in ring:
                    out.extend(self.ring.encode(coords[v], ref))
                    ref = coords[v]
                last.extend(ring)
            for f in ids:
                visited[f] = True
                for v in faces[f]:
                    degree[v] -= 1


class BPTGrammar(Grammar):
    """States: ``coder``/``level`` while inside a vertex; between vertices, ``ring`` (vertices of
    the current fan) decides whether a fan may end."""

    def __init__(self, tok: BPTTokenizer):
        super().__init__(tok)
        self.rc, self.cc = tok.ring, tok.center
        self.center = None
        self.ring: list[int] = []
        self.coder = None
        self.level = 0
        self.partial = None
        self.ref = None

    def _forbidden(self) -> list[int]:
        return [self.center] + self.ring[-1:] if self.coder is self.rc else []

    def _final_ok(self, t: int) -> bool:
        coords = self.builder.coords
        return all(self.coder.finest_token_of(coords[f], self.partial) != t for f in self._forbidden())

    def _valid(self, t: int) -> bool:
        if self.coder is not None:
            if self.coder.level_of(t) != self.level:
                return False
            return self.level < self.coder.levels - 1 or self._final_ok(t)
        fan_open = self.center is not None and len(self.ring) < 2
        if t == EOS:
            return not fan_open
        if self.cc.level_of(t) == 0:
            return not fan_open
        lv = self.rc.level_of(t)
        if lv < 0 or self.center is None:
            return False
        if lv == self.rc.levels - 1:
            self.coder, self.partial = self.rc, self.rc.start_partial(lv, self.ref)
            ok = self._final_ok(t)
            self.coder = None
            return ok
        return True

    def _advance(self, t: int) -> None:
        if self.coder is None:
            if self.cc.level_of(t) == 0:
                self.coder, self.level = self.cc, 0
                self.partial = [0, 0, 0]
            else:
                self.coder, self.level = self.rc, self.rc.level_of(t)
                self.partial = self.rc.start_partial(self.level, self.ref)
        self.coder.apply(self.partial, self.level, t)
        self.level += 1
        if self.level < self.coder.levels:
            return
        c = tuple(self.partial)
        v = self.builder.vertex(c)
        self.ref = c
        if self.coder is self.cc:
            self.center, self.ring = v, []
        else:
            self.ring.append(v)
            if len(self.ring) >= 2:
                self.builder.add_face(self.center, self.ring[-2], v)
        self.coder = None

    def _mask(self, m: np.ndarray) -> None:
        if self.coder is not None:
            lo = self.coder.starts[self.level]
            m[lo:lo + self.coder.sizes[self.level]] = True
            if self.level == self.coder.levels - 1:
                self._mask_forbidden(m)
            return
        fan_open = self.center is not None and len(self.ring) < 2
        if not fan_open:
            m[EOS] = True
            m[self.cc.starts[0]:self.cc.starts[0] + self.cc.sizes[0]] = True
        if self.center is not None:
            m[self.rc.starts[0]:self.rc.end] = True
            self.coder, self.partial = self.rc, self.rc.start_partial(self.rc.levels - 1, self.ref)
            self._mask_forbidden(m)
            self.coder = None

    def _mask_forbidden(self, m: np.ndarray) -> None:
        coords = self.builder.coords
        for f in self._forbidden():
            t = self.coder.finest_token_of(coords[f], self.partial)
            if t is not None:
                m[t] = False
