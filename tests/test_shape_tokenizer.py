"""Octree shape tokens: lossless round trip, scale ordering, grammar consistency, node positions."""

import numpy as np
import pytest
from scipy import ndimage

from mesh3d.errors import Mesh3DError
from mesh3d.shape.tokenizer import (BOS, EOS, POPCOUNT, OctreeGrammar, decode, dihedral, drop_fragments, encode, grid_to_mesh,
                                    level_sizes, next_nodes, occupancy, pyramid)


def fixtures():
    """Grids of every kind: random noise, smooth blobs, one voxel, full, a thin sheet."""
    rng = np.random.default_rng(0)
    out = []
    for n in (2, 4, 8, 16):
        out.append(rng.random((n, n, n)) < 0.3)
        out.append(ndimage.gaussian_filter(rng.random((n, n, n)), 1.5) > 0.5)
        one = np.zeros((n, n, n), bool)
        one[tuple(rng.integers(n, size=3))] = True
        out.append(one)
        out.append(np.ones((n, n, n), bool))
        sheet = np.zeros((n, n, n), bool)
        sheet[:, n // 2] = True
        out.append(sheet)
    return [g for g in out if g.any()]


@pytest.mark.parametrize("grid", fixtures(), ids=lambda g: f"{g.shape[0]}^3-{int(g.sum())}")
def test_round_trip_is_exact(grid):
    depth = int(np.log2(grid.shape[0]))
    tokens = encode(grid)
    assert tokens[0] == BOS and tokens[-1] == EOS
    assert np.array_equal(decode(tokens, depth), grid)
    for k in range(8):  # the augmentations are grids too, and 8 distinct maps on an asymmetric grid
        assert np.array_equal(decode(encode(dihedral(grid, k)), depth), dihedral(grid, k))


def test_dihedral_maps_are_distinct_and_keep_up():
    grid = np.zeros((4, 4, 4), bool)
    grid[0, 0:3, 1] = grid[0, 0, 0] = grid[1, 0, 1] = True  # no symmetry
    images = [dihedral(grid, k) for k in range(8)]
    assert len({g.tobytes() for g in images}) == 8
    for g in images:  # heights (Y, axis 1) of solid cells are unchanged
        assert sorted(np.argwhere(g)[:, 1]) == sorted(np.argwhere(grid)[:, 1])


@pytest.mark.parametrize("grid", fixtures(), ids=lambda g: f"{g.shape[0]}^3-{int(g.sum())}")
def test_each_level_has_one_token_per_occupied_cell_of_the_coarser_grid(grid):
    tokens = encode(grid)
    levels = pyramid(grid)
    assert level_sizes(tokens) == [int(lv.sum()) for lv in levels[:-1]]
    masks = tokens[1:-1]
    sizes = level_sizes(tokens)
    starts = np.cumsum([0] + sizes)
    for d in range(len(sizes) - 1):  # a level's masks announce exactly the next level's tokens
        assert POPCOUNT[masks[starts[d]:starts[d + 1]]].sum() == sizes[d + 1]
    assert POPCOUNT[masks[starts[-2]:]].sum() == grid.sum()


def test_decode_rejects_broken_sequences():
    tokens = encode(np.ones((4, 4, 4), bool))
    with pytest.raises(Mesh3DError):
        decode(tokens[:-3], 2)
    with pytest.raises(Mesh3DError):
        decode(np.concatenate([tokens[:-1], [255, EOS]]), 2)
    with pytest.raises(Mesh3DError):
        encode(np.zeros((4, 4, 4), bool))


@pytest.mark.parametrize("depth,max_tokens", [(2, 12), (3, 20), (3, 80), (4, 60), (4, 600)])
def test_grammar_only_yields_complete_octrees_that_fit(depth, max_tokens):
    rng = np.random.default_rng(depth * 1000 + max_tokens)
    for _ in range(30):
        g = OctreeGrammar(depth, max_tokens)
        tokens = []
        while not tokens or tokens[-1] != EOS:
            allowed = np.flatnonzero(g.allowed().numpy())
            assert len(allowed)
            token = int(rng.choice(allowed))
            g.advance(token)
            tokens.append(token)
        assert tokens[0] == BOS and len(tokens) <= max_tokens
        grid = decode(tokens, depth)  # raises on any inconsistency
        assert np.array_equal(encode(grid), tokens)


def test_grammar_refuses_early_eos_and_masks_after_the_end():
    g = OctreeGrammar(2, 20)
    g.advance(BOS)
    assert not g.allowed()[EOS]
    g.advance(0b1)  # root: one child
    g.advance(0b11)  # that child: two leaves -> complete
    allowed = g.allowed()
    assert allowed[EOS] and allowed.sum() == 1


def test_next_nodes_are_causal_and_match_the_decoded_cells():
    grid = ndimage.gaussian_filter(np.random.default_rng(3).random((8, 8, 8)), 1.5) > 0.5
    tokens = encode(grid)
    full = next_nodes(tokens, 3)
    for t in range(1, len(tokens)):
        assert np.array_equal(next_nodes(tokens[:t], 3), full[:t])  # the past alone fixes them
    sizes = level_sizes(tokens)
    assert (full[:, 0] == np.repeat(np.arange(4), sizes + [2])).all()  # level, then "no node" for the EOS and after
    # Last level: the centres of the 2x2x2 cells, in token order, are the coarse grid's occupied cells.
    last = full[sum(sizes[:-1]):sum(sizes)]
    assert np.array_equal(np.sort((last[:, 1:] - 1) // 2, axis=0), np.sort(np.argwhere(pyramid(grid)[2]), axis=0))


def test_grid_to_mesh_is_closed_outward_and_has_the_grid_volume():
    grid = np.zeros((8, 8, 8), bool)
    grid[2:6, 1:7, 3:5] = True
    mesh = grid_to_mesh(grid)
    v = mesh.vertices[mesh.faces]
    volume = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6
    assert volume == pytest.approx(grid.mean(), rel=0.15)  # positive: faces wind outwards (corners are cut)
    assert mesh.vertices.min() >= -0.5 and mesh.vertices.max() <= 0.5


def test_occupancy_of_a_box_fills_its_cells():
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.25, 0.25) for z in (-0.5, 0.5)])
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    grid = occupancy(corners, faces, 8)
    assert grid[:, 2:6, :].all() and not grid[:, :1].any() and not grid[:, 7:].any()


def test_drop_fragments_removes_specks_only():
    grid = np.zeros((16, 16, 16), bool)
    grid[2:10, 2:10, 2:10] = True  # 512 cells
    grid[12:14, 12:14, 12:14] = True  # 8 cells: 1.5 %, a speck
    grid[0, 15, 0] = True
    grid[11, 0:16, 0:3] = True  # 48 cells: 8.4 %, a real part
    clean = drop_fragments(grid)
    assert clean[2:10, 2:10, 2:10].all() and clean[11, :, 0:3].all()
    assert not clean[12:14, 12:14, 12:14].any() and not clean[0, 15, 0]
    speck = np.zeros((4, 4, 4), bool)
    speck[1, 1, 1] = speck[3, 3, 3] = True  # two equal largest parts both stay
    assert np.array_equal(drop_fragments(speck), speck)
