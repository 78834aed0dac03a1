"""Block/offset coordinates: a grid vertex as a few tokens, coarse to fine, sharing coarse parts.

The ``bits`` of each axis are split into levels, finest last, each at most 4 bits per axis, so one
level is one token out of at most 16^3 = 4,096: 7 bits -> levels of 3 + 4 bits (BPT's 8^3 blocks of
16^3 offsets), 8 -> 4 + 4, 9 -> 1 + 4 + 4, 10 -> 2 + 4 + 4. A vertex is written from the first
level at which it differs from a reference vertex known to both sides (the coarser levels are
copied from the reference), down to the finest level. With no reference every level is written.
"""

from __future__ import annotations

from bisect import bisect_right

FINE_BITS = 4


def level_bits(bits: int) -> list[int]:
    """Bits per axis of each level, coarse to fine; they sum to ``bits``."""
    out = []
    while bits > FINE_BITS:
        out.insert(0, FINE_BITS)
        bits -= FINE_BITS
    out.insert(0, bits)
    return out


class BlockCoder:
    """Token layout and arithmetic of block/offset coordinates.

    Level ``l`` tokens occupy ``[starts[l], starts[l] + sizes[l])``; a level token packs the level's
    chunk of (y, z, x) as ``(cy * s + cz) * s + cx`` with ``s = 2**level_bits[l]``.
    """

    def __init__(self, bits: int, first_token: int):
        self.lbits = level_bits(bits)
        self.levels = len(self.lbits)
        self.sizes = [1 << (3 * b) for b in self.lbits]
        self.starts = [first_token + sum(self.sizes[:l]) for l in range(self.levels)]
        self.end = first_token + sum(self.sizes)
        # Shift of each level's chunk within a coordinate.
        self.shifts = [sum(self.lbits[l + 1:]) for l in range(self.levels)]
        self.coarse_mask = ~((1 << self.lbits[-1]) - 1)  # bits above the finest level

    def chunk(self, c: tuple[int, int, int], level: int) -> int:
        """Packed chunk (0 <= value < sizes[level]) of grid vertex ``c`` = (x, y, z) at ``level``."""
        sh, b = self.shifts[level], self.lbits[level]
        m = (1 << b) - 1
        x, y, z = (c[0] >> sh) & m, (c[1] >> sh) & m, (c[2] >> sh) & m
        return (((y << b) | z) << b) | x

    def encode(self, c: tuple[int, int, int], ref) -> list[int]:
        """Tokens of vertex ``c`` given reference vertex ``ref`` (or None)."""
        first = 0
        if ref is not None:
            while first < self.levels - 1 and self.chunk(c, first) == self.chunk(ref, first):
                first += 1
        return [self.starts[l] + self.chunk(c, l) for l in range(first, self.levels)]

    def kind(self, t: int) -> str:
        """``offset`` for finest-level tokens, ``block`` for coarser ones."""
        return "offset" if self.level_of(t) == self.levels - 1 else "block"

    def level_of(self, t: int) -> int:
        """Level of token ``t``, or -1 when ``t`` is not a coordinate token."""
        if not self.starts[0] <= t < self.end:
            return -1
        return bisect_right(self.starts, t) - 1

    def start_partial(self, level: int, ref) -> list[int]:
        """Coordinates (x, y, z) with the levels above ``level`` copied from ``ref`` (zero if None)."""
        if ref is None or level == 0:
            return [0, 0, 0]
        keep = ~((1 << (self.shifts[level - 1])) - 1)  # bits of the levels coarser than ``level``
        return [ref[0] & keep, ref[1] & keep, ref[2] & keep]

    def apply(self, partial: list[int], level: int, t: int) -> None:
        """Write level token ``t`` into ``partial`` (x, y, z) in place."""
        v = t - self.starts[level]
        sh, b = self.shifts[level], self.lbits[level]
        m = (1 << b) - 1
        partial[0] |= (v & m) << sh
        partial[2] |= ((v >> b) & m) << sh
        partial[1] |= ((v >> (2 * b)) & m) << sh

    def finest_token_of(self, c: tuple[int, int, int], partial: list[int]):
        """The finest-level token that completes ``partial`` into ``c``, or None if it cannot."""
        m = self.coarse_mask
        if (c[0] & m) != partial[0] or (c[1] & m) != partial[1] or (c[2] & m) != partial[2]:
            return None
        return self.starts[-1] + self.chunk(c, self.levels - 1)
