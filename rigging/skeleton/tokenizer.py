"""Skeleton tokenizer: a joint tree <-> a token sequence for the shared decoder (mesh3d.nn.model).

A skeleton is written joint by joint in breadth-first order from its root, siblings ordered
spatially (by quantised y, then z, then x: bottom to top, back to front, left to right; training
may shuffle siblings instead, as augmentation). Each joint is its quantised position in the
normalised frame (mesh3d.geometry.normalize: bounding box centred, longest side 1) and, for every
joint but the root, a pointer to its parent's place in the sequence:

    BOS  x0 y0 z0  x1 y1 z1 p1  x2 y2 z2 p2  ...  EOS

Vocabulary (bits=7: 128 bins per axis): BOS, EOS, PAD, then x bins, y bins, z bins, then parent
pointers 0 .. max_joints-1. Separate ranges per axis let the model tell the coordinates apart by
the token alone. In breadth-first order parents never decrease along the sequence, so the grammar
allows parent p_j only in [p_(j-1), j-1]: every sequence it accepts is a tree in that order.

Which joints are the target: only joints that carry skin weight (see `target_skeleton`). Helpers
(IK targets, poles, a bare root at the feet) carry no weight, vary between artists for the same
shape, and are dropped by the evaluation (rigging.eval) too; a helper's children hang from its
nearest weighted ancestor.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from mesh3d.asset import Skeleton, Skin
from mesh3d.errors import Mesh3DError

BOS, EOS, PAD = 0, 1, 2


class SkeletonTokenizer:
    """Quantise, order and (de)tokenize joint trees. bits: per-axis resolution (7: 128 bins)."""

    def __init__(self, bits: int = 7, max_joints: int = 64):
        if not 4 <= bits <= 10:
            raise Mesh3DError(f"bits must be between 4 and 10, not {bits}")
        if max_joints < 2:
            raise Mesh3DError(f"max_joints must be at least 2, not {max_joints}")
        self.bits, self.bins, self.max_joints = bits, 2 ** bits, max_joints
        self.coord_start = 3  # x bins, then y bins, then z bins
        self.parent_start = 3 + 3 * self.bins
        self.vocab_size = self.parent_start + max_joints
        self.max_tokens = 4 * max_joints + 1  # BOS, root xyz, 4 per other joint, EOS

    # ------------------------------------------------------------------------- quantisation

    def quantize(self, joints: np.ndarray) -> np.ndarray:
        """Bin indices (J, 3) int of normalised joints (J, 3) in [-0.5, 0.5] (outside is clamped)."""
        q = np.floor((np.asarray(joints, dtype=np.float64) + 0.5) * self.bins)
        return np.clip(q, 0, self.bins - 1).astype(np.int64)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Bin centres (J, 3) float64 in the normalised frame."""
        return (np.asarray(q, dtype=np.float64) + 0.5) / self.bins - 0.5

    # ------------------------------------------------------------------------- order

    def order(self, q: np.ndarray, parents: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Breadth-first order (J,) of joint indices from the root.

        q: (J, 3) quantised joints; parents: (J,) with exactly one root (-1). Siblings go by
        (y, z, x) of their bins, ties by index; with `rng`, siblings are shuffled instead.
        """
        parents = np.asarray(parents, dtype=np.int64)
        roots = np.flatnonzero(parents < 0)
        if len(roots) != 1:
            raise Mesh3DError(f"a skeleton to tokenize needs exactly one root joint, got {len(roots)} (see target_joints)")
        if len(parents) > self.max_joints:
            raise Mesh3DError(f"skeleton has {len(parents)} joints; this tokenizer holds at most {self.max_joints}")
        children = [[] for _ in parents]
        for j, p in enumerate(parents):
            if p >= 0:
                children[p].append(j)
        out, queue = [], deque([int(roots[0])])
        while queue:
            j = queue.popleft()
            out.append(j)
            kids = children[j]
            if rng is not None:
                kids = [kids[i] for i in rng.permutation(len(kids))]
            else:
                kids = sorted(kids, key=lambda c: (q[c, 1], q[c, 2], q[c, 0], c))
            queue.extend(kids)
        if len(out) != len(parents):
            raise Mesh3DError("skeleton parents contain a cycle or point outside the skeleton")
        return np.array(out, dtype=np.int64)

    # ------------------------------------------------------------------------- tokens

    def encode(self, joints: np.ndarray, parents: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Tokens (T,) int64 of a normalised joint tree: joints (J, 3) in [-0.5, 0.5], parents (J,).

        rng: shuffle siblings (augmentation); None gives the canonical spatial order.
        """
        q = self.quantize(joints)
        order = self.order(q, parents, rng)
        place = np.empty(len(order), dtype=np.int64)
        place[order] = np.arange(len(order))
        tokens = [BOS]
        for i, j in enumerate(order):
            tokens += [self.coord_start + q[j, 0], self.coord_start + self.bins + q[j, 1], self.coord_start + 2 * self.bins + q[j, 2]]
            if i > 0:
                tokens.append(self.parent_start + place[parents[j]])
        tokens.append(EOS)
        return np.array(tokens, dtype=np.int64)

    def decode(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Normalised joints (J, 3) (bin centres) and parents (J,) in sequence order.

        tokens: BOS ... EOS, optionally followed by EOS or PAD padding. Raises Mesh3DError naming the
        first token that breaks the grammar (so the sequence is not a tree in breadth-first order).
        """
        tokens = [int(t) for t in tokens]
        grammar = self.grammar()
        for i, t in enumerate(tokens):
            if grammar.ended:
                if t not in (EOS, PAD):
                    raise Mesh3DError(f"skeleton tokens continue after the end token (position {i})")
                continue
            if not (0 <= t < self.vocab_size) or not bool(grammar.allowed()[t]):
                raise Mesh3DError(f"skeleton tokens do not form a tree: token {t} at position {i} is not allowed, "
                                  f"expected {grammar.expected()}")
            grammar.advance(t)
        if not grammar.ended:
            raise Mesh3DError(f"skeleton tokens end without the end token after {grammar.n_joints} joint(s) "
                              f"(expected {grammar.expected()})")
        return self.dequantize(np.array(grammar.coords, dtype=np.int64).reshape(-1, 3)), np.array(grammar.parents, dtype=np.int64)

    def grammar(self) -> "SkeletonGrammar":
        return SkeletonGrammar(self)


class SkeletonGrammar:
    """The `mesh3d.nn.model.Grammar` of skeleton sequences, tracking the tree decoded so far.

    Rules: BOS first; then per joint x, y, z bins and (all but the root) a parent pointer p with
    p_(j-1) <= p < j (breadth-first order); EOS only where a joint could start, after >= 2 joints;
    at most max_joints joints. After EOS only EOS (padding) is allowed.
    """

    def __init__(self, tokenizer: SkeletonTokenizer):
        self.tok = tokenizer
        self.started = self.ended = False
        self.slot = 0  # 0, 1, 2: next is x, y, z; 3: next is the parent pointer
        self.coords: list[int] = []  # bins, 3 per joint
        self.parents: list[int] = []
        self.last_parent = 0

    @property
    def n_joints(self) -> int:
        """Joints whose position is complete."""
        return len(self.coords) // 3

    def _range(self) -> tuple[int, int] | None:
        """Token range [lo, hi) allowed next, EOS aside; None before BOS or after EOS."""
        tok = self.tok
        if not self.started or self.ended:
            return None
        if self.slot < 3:
            if self.slot == 0 and self.n_joints >= tok.max_joints:
                return (0, 0)
            lo = tok.coord_start + self.slot * tok.bins
            return (lo, lo + tok.bins)
        j = self.n_joints - 1  # the joint waiting for its parent
        return (tok.parent_start + self.last_parent, tok.parent_start + j)

    def allowed(self) -> torch.Tensor:
        mask = torch.zeros(self.tok.vocab_size, dtype=torch.bool)
        if not self.started:
            mask[BOS] = True
        elif self.ended:
            mask[EOS] = True
        else:
            lo, hi = self._range()
            mask[lo:hi] = True
            if self.slot == 0 and self.n_joints >= 2:
                mask[EOS] = True
        return mask

    def expected(self) -> str:
        """What may come next, in words (for error messages)."""
        if not self.started:
            return "the begin token"
        if self.ended:
            return "nothing (the sequence has ended)"
        if self.slot < 3:
            what = f"a {'xyz'[self.slot]} bin of joint {self.n_joints}"
            return what + (" or the end token" if self.slot == 0 and self.n_joints >= 2 else "")
        j = self.n_joints - 1
        return f"the parent of joint {j}, between {self.last_parent} and {j - 1}"

    def advance(self, token: int) -> None:
        token = int(token)
        tok = self.tok
        if not self.started:
            self.started = token == BOS
            return
        if self.ended:
            return
        if token == EOS:
            self.ended = True
            return
        if self.slot < 3:
            self.coords.append(token - tok.coord_start - self.slot * tok.bins)
            if self.slot == 2 and self.n_joints == 1:  # the root has no parent pointer
                self.parents.append(-1)
                self.slot = 0
            else:
                self.slot += 1
        else:
            self.last_parent = token - tok.parent_start
            self.parents.append(self.last_parent)
            self.slot = 0

    def clone(self) -> "SkeletonGrammar":
        g = SkeletonGrammar(self.tok)
        g.started, g.ended, g.slot, g.last_parent = self.started, self.ended, self.slot, self.last_parent
        g.coords, g.parents = list(self.coords), list(self.parents)
        return g


def target_joints(skeleton: Skeleton, skin: Skin | None) -> tuple[np.ndarray, np.ndarray]:
    """The tree a skeleton model learns: indices (J',) of the weighted joints and their parents (J',).

    Keeps joints that carry skin weight on some vertex (all non-helper joints without a skin); a
    dropped joint's children hang from its nearest kept ancestor (as rigging.eval does). If that
    leaves several roots, the root of the largest subtree stays the root and the others become its
    children, so the result is one tree. `parents` index into the kept joints: positions are
    `skeleton.joints[kept]` (or posed ones, for augmentation). A reattached root may precede its
    new parent, so parents[j] < j need not hold; the breadth-first encoding restores an order.
    """
    n = len(skeleton)
    keep = skin.dense(n).max(0) > 1e-6 if skin is not None else ~skeleton.helper
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise Mesh3DError("the skeleton has no joint carrying skin weight")
    slot = -np.ones(n, dtype=np.int64)
    slot[kept] = np.arange(len(kept))
    parents = []
    for j in kept:
        p = skeleton.parents[j]
        while p >= 0 and not keep[p]:
            p = skeleton.parents[p]
        parents.append(slot[p] if p >= 0 else -1)
    parents = np.array(parents, dtype=np.int64)
    roots = np.flatnonzero(parents < 0)
    if len(roots) > 1:
        size = np.ones(len(parents), dtype=np.int64)
        for j in range(len(parents) - 1, -1, -1):  # kept in source order, so children come after parents
            if parents[j] >= 0:
                size[parents[j]] += size[j]
        main = roots[np.argmax(size[roots])]
        parents[roots[roots != main]] = main
    return kept, parents
