"""Multi-scale shape tokens: the occupancy octree of a shape, one byte per occupied node, coarse to fine.

A shape is its solid occupancy on an N³ grid (N = 2**depth) over the normalised cube [-0.5, 0.5]³
(mesh3d.geometry.normalize; the union of all parts, rigging.skeleton.volume.voxelise, so open,
overlapping, multi-part meshes work). The grid is the leaf level of an octree:

    level 0: the root cube (1 node)             emits 1 token  -> occupancy at 2³
    level 1: the occupied cells of the 2³ grid  emit 1 token each -> occupancy at 4³
    ...
    level depth-1: occupied cells at (N/2)³     emit 1 token each -> occupancy at N³

Each token is the node's 8-bit child mask (bit k = child (x, y, z) with k = 4x + 2y + z), so the
tokens of level d+1 are exactly as many as the set bits of level d's tokens: each scale is a
function of the coarser ones, which is what next-scale generation needs (G3PT's coarse-to-fine
order, here with lossless discrete scales). Levels are written breadth first; inside a level the
nodes follow their parents' order and then their child index, i.e. Morton (Z-) order.

Sequence: BOS, level 0, level 1, ..., level depth-1, EOS. Token ids 1..255 are masks (0 never
occurs: an occupied node has at least one occupied child), then BOS, EOS, PAD.

`OctreeGrammar` (mesh3d.nn.model.Grammar) makes the shared decoder write only valid octrees:
every level has exactly as many tokens as the previous level's occupied children, EOS comes
after the last level and nowhere else, and masks that could not fit in `max_tokens` are refused.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import marching_cubes

from mesh3d.asset import Mesh
from mesh3d.errors import Mesh3DError

BOS, EOS, PAD = 256, 257, 258
VOCAB_SIZE = 259
POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)
# CHILD_OFFSETS[k] = (x, y, z) offset of child k inside its parent: k = 4x + 2y + z.
CHILD_OFFSETS = np.array([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], dtype=np.int64)


def pyramid(grid: np.ndarray) -> list[np.ndarray]:
    """Occupancy at every resolution: [1³, 2³, 4³, ..., N³]; a coarse cell is occupied when any of its children is.

    grid: (N, N, N) bool with N a power of two.
    """
    grid = np.asarray(grid, dtype=bool)
    n = grid.shape[0]
    if grid.ndim != 3 or grid.shape != (n, n, n) or n < 2 or n & (n - 1):
        raise Mesh3DError(f"occupancy grid must be (N, N, N) with N a power of two >= 2, got {grid.shape}")
    levels = [grid]
    while levels[0].shape[0] > 1:
        g = levels[0]
        m = g.shape[0] // 2
        levels.insert(0, g.reshape(m, 2, m, 2, m, 2).any(axis=(1, 3, 5)))
    return levels


def encode(grid: np.ndarray) -> np.ndarray:
    """Octree tokens (T,) int64 of an occupancy grid (N, N, N) bool: BOS, masks level by level, EOS.

    An empty grid cannot be encoded (there is no shape).
    """
    levels = pyramid(grid)
    if not levels[0][0, 0, 0]:
        raise Mesh3DError("cannot tokenize an empty occupancy grid (no solid voxel)")
    tokens = [BOS]
    nodes = np.zeros((1, 3), dtype=np.int64)  # occupied nodes of the current level, in sequence order
    for fine in levels[1:]:
        children = (2 * nodes[:, None, :] + CHILD_OFFSETS[None]).reshape(-1, 3)  # (8 n, 3) in order
        occupied = fine[tuple(children.T)].reshape(-1, 8)
        tokens.extend((occupied * (1 << np.arange(8))).sum(1).tolist())
        nodes = children[occupied.reshape(-1)]
    tokens.append(EOS)
    return np.asarray(tokens, dtype=np.int64)


def decode(tokens, depth: int) -> np.ndarray:
    """The occupancy grid (2**depth,)³ bool of a token sequence from `encode` (BOS/EOS/PAD ignored).

    Raises Mesh3DError when the masks do not form a complete octree of this depth.
    """
    masks = [int(t) for t in tokens if int(t) < 256]
    if not masks:
        raise Mesh3DError("no octree tokens to decode")
    n = 2 ** depth
    nodes = np.zeros((1, 3), dtype=np.int64)
    pos = 0
    for _ in range(depth):
        level = masks[pos:pos + len(nodes)]
        if len(level) < len(nodes) or min(level) < 1:
            raise Mesh3DError(f"incomplete octree: a level needs {len(nodes)} non-zero masks, got {len(level)}")
        pos += len(nodes)
        bits = (np.asarray(level)[:, None] >> np.arange(8)) & 1  # (n, 8) child occupancy
        children = (2 * nodes[:, None, :] + CHILD_OFFSETS[None]).reshape(-1, 3)
        nodes = children[bits.reshape(-1).astype(bool)]
    if pos != len(masks):
        raise Mesh3DError(f"{len(masks) - pos} tokens left after a complete octree of depth {depth}")
    grid = np.zeros((n, n, n), dtype=bool)
    grid[tuple(nodes.T)] = True
    return grid


def level_sizes(tokens) -> list[int]:
    """Tokens per level of an encoded sequence: [1, popcount(level 0), ...] (BOS/EOS/PAD ignored)."""
    masks = [int(t) for t in tokens if int(t) < 256]
    sizes, pos, n = [], 0, 1
    while pos < len(masks):
        sizes.append(n)
        n = int(POPCOUNT[masks[pos:pos + n]].sum())
        pos += sizes[-1]
    return sizes


class OctreeGrammar:
    """`mesh3d.nn.model.Grammar` of octree sequences of a given depth, at most `max_tokens` long (BOS and EOS included).

    State: the level being written, how many of its tokens are still due, and how many children
    its tokens so far have announced (the next level's length). A mask is allowed only if the
    shortest complete sequence through it (every later node with a single child) still fits.
    """

    def __init__(self, depth: int, max_tokens: int):
        if max_tokens < depth + 2:
            raise Mesh3DError(f"max_tokens {max_tokens} cannot hold an octree of depth {depth}")
        self.depth, self.max_tokens = depth, max_tokens
        self.length = 0  # tokens consumed (BOS included)
        self.level = -1  # -1: before BOS; depth: all levels written (EOS due)
        self.due = 0  # tokens still due at this level
        self.announced = 0  # children announced so far at this level = next level's length
        self.done = False

    def clone(self) -> "OctreeGrammar":
        g = OctreeGrammar.__new__(OctreeGrammar)
        g.__dict__.update(self.__dict__)
        return g

    def allowed(self) -> torch.Tensor:
        mask = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        if self.done:
            mask[EOS] = True  # finished rows are padded with EOS by generate
        elif self.level == -1:
            mask[BOS] = True
        elif self.level == self.depth:
            mask[EOS] = True
        else:
            # Shortest completion after a mask with c children: the rest of this level (one token
            # each, each with >= 1 child), then every later level at least as long as the next one.
            later_levels = self.depth - 1 - self.level
            next_len = self.announced + POPCOUNT[1:] + (self.due - 1)
            shortest = self.length + self.due + later_levels * next_len + 1
            fits = torch.from_numpy(shortest <= self.max_tokens)
            mask[1:256] = fits
            if not fits.any():
                raise Mesh3DError("octree grammar: no mask fits max_tokens (a grammar bug)")
        return mask

    def advance(self, token: int) -> None:
        token = int(token)
        self.length += 1
        if self.done:
            return
        if self.level == -1:
            if token != BOS:
                raise Mesh3DError(f"octree sequence must start with BOS, got {token}")
            self.level, self.due, self.announced = 0, 1, 0
            return
        if token == EOS:
            if self.level != self.depth:
                raise Mesh3DError("EOS before the octree is complete")
            self.done = True
            return
        if not 1 <= token <= 255 or self.level >= self.depth:
            raise Mesh3DError(f"token {token} not allowed at level {self.level}")
        self.due -= 1
        self.announced += int(POPCOUNT[token])
        if self.due == 0:
            self.level += 1
            self.due, self.announced = self.announced, 0


# ----------------------------------------------------------------------------- shapes <-> grids


def cell_centres(n: int) -> np.ndarray:
    """(n, n, n, 3) centres of the cells of an n³ grid over the normalised cube [-0.5, 0.5]³."""
    c = (np.arange(n) + 0.5) / n - 0.5
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)


def occupancy(vertices: np.ndarray, faces: np.ndarray, resolution: int, supersample: int = 2) -> np.ndarray:
    """Solid occupancy (resolution³ bool) of a normalised mesh (vertices in [-0.5, 0.5]³).

    The union of all parts is voxelised by rigging.skeleton.volume.voxelise at supersample x the
    grid's resolution; a grid cell is occupied when any of its supersample³ sub-cell centres is
    solid, so thin parts (blades, leaves, sheets) survive at coarse resolutions.
    """
    from rigging.skeleton.volume import voxelise

    fine = resolution * supersample
    volume = voxelise(vertices, faces, fine)
    inside = volume.inside(cell_centres(fine).reshape(-1, 3)).reshape(fine, fine, fine)
    s = supersample
    return inside.reshape(resolution, s, resolution, s, resolution, s).any(axis=(1, 3, 5))


def grid_to_mesh(grid: np.ndarray, smooth: float = 0.0) -> Mesh:
    """Marching-cubes surface (normalised coordinates) of an occupancy grid (N, N, N) bool.

    smooth: std (cells) of a Gaussian blur before meshing: 0 keeps the blocky cell boundaries,
    ~0.6 rounds them off. The iso-level 0.5 puts the surface on the occupied cells' faces.
    """
    from scipy.ndimage import gaussian_filter

    grid = np.asarray(grid, dtype=bool)
    if not grid.any():
        raise Mesh3DError("cannot mesh an empty occupancy grid")
    n = grid.shape[0]
    field = np.pad(grid.astype(np.float32), 1)  # empty border so every surface closes
    if smooth > 0:
        field = gaussian_filter(field, smooth)
    vertices, faces, _, _ = marching_cubes(field, level=0.5)
    # Padded index i is cell i - 1, whose centre is (i - 1 + 0.5) / n - 0.5. marching_cubes winds
    # triangles clockwise seen from outside for a field that is high inside: flip to glTF's CCW.
    vertices = (vertices - 0.5) / n - 0.5
    return Mesh(vertices.astype(np.float64), faces[:, ::-1].astype(np.int64))


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Grid turned by k % 4 quarter turns about the up axis (Y, axis 1), then mirrored in X if k >= 4.

    These 8 maps keep the normalised cube and the up direction, so they are exact augmentations.
    """
    g = np.rot90(grid, k % 4, axes=(2, 0))  # (z, x) plane: a turn about Y
    return np.ascontiguousarray(g[::-1] if k >= 4 else g)


def next_nodes(tokens, depth: int) -> np.ndarray:
    """Where each position's next token belongs: (T, 4) int64 rows (level, x, y, z) for a sequence (T,).

    Row p describes the node whose mask is token p + 1 (position 0 is BOS, whose next token is the
    root's mask): its level and its centre on the finest (2**depth)³ grid. The node is known from
    tokens 0..p alone (its parent's level is complete before its own level starts), so a decoder
    may see it at position p without seeing the future. Positions whose next token is not a mask
    (EOS due, padding, a broken prefix) get level = depth and centre (0, 0, 0).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    out = np.zeros((len(tokens), 4), dtype=np.int64)
    out[:, 0] = depth
    masks = tokens[1:]
    stop = np.flatnonzero((masks < 1) | (masks > 255))
    masks = masks[: stop[0]] if len(stop) else masks
    nodes, pos, rows = np.zeros((1, 3), dtype=np.int64), 0, []
    for level in range(depth):
        scale = 2 ** (depth - level)
        rows.append(np.column_stack([np.full(len(nodes), level), nodes * scale + scale // 2]))
        level_masks = masks[pos:pos + len(nodes)]
        if len(level_masks) < len(nodes):
            break  # this level is still being written: later nodes are not known yet
        pos += len(nodes)
        bits = (level_masks[:, None] >> np.arange(8)) & 1
        nodes = (2 * nodes[:, None, :] + CHILD_OFFSETS[None]).reshape(-1, 3)[bits.reshape(-1).astype(bool)]
    known = np.concatenate(rows)[: len(tokens)]
    out[: len(known)] = known
    return out


def drop_fragments(grid: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """The grid without connected parts (26-neighbour) smaller than min_fraction of its solid cells.

    The largest part is always kept. At 16³, 93 % of the corpus's training statics are a single
    part and 96 % have no part this small, so such specks in a sample are the model's noise.
    """
    from scipy import ndimage

    labels, n = ndimage.label(grid, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return grid.copy()
    sizes = np.bincount(labels.ravel())[1:]
    keep = (sizes >= min_fraction * sizes.sum()) | (sizes == sizes.max())
    return keep[labels - 1] & (labels > 0)
