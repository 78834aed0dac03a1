"""Shape metrics (chamfer, F-score, COV/MMD/1-NNA) and the tokenizer on real corpus shapes."""

import numpy as np
import pytest

from data_prep.corpus import corpus_dir, records
from mesh3d.shape.evaluate import chamfer, f_score, set_metrics
from mesh3d.shape.tokenizer import decode, encode, level_sizes, pyramid


def clouds(n, offset, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(256, 3)) * 0.1 + offset + 0.01 * i for i in range(n)]


def test_point_metrics():
    a = np.random.default_rng(0).random((500, 3))
    assert chamfer(a, a) == 0 and f_score(a, a, 0.01) == 1
    assert chamfer(np.zeros((1, 3)), np.array([[0.1, 0, 0], [0.3, 0, 0]])) == pytest.approx(100 * (0.1 + 0.2) / 2)  # x100
    assert f_score(a, a + 1.0, 0.05) == 0


def test_set_metrics_bounds():
    refs = clouds(5, 0.0, 1)
    same = set_metrics(refs, refs)  # perfect copies: every sample's nearest is its twin
    assert same["cov"] == 1 and same["mmd"] == 0 and same["1nna"] == 0
    far = set_metrics(clouds(5, 5.0, 2), refs)  # told apart every time, one ref covered
    assert far["1nna"] == 1 and far["cov"] == pytest.approx(0.2)


@pytest.mark.skipif(corpus_dir() is None, reason="shared corpus not found (set MESH3D_DATA)")
def test_real_statics_round_trip_at_16():
    from data_prep.shape_data import shape_grid
    from mesh3d.io import load

    for rec in records(kind="static", split="dev")[::35]:
        mesh = load(rec.path).mesh
        grid = shape_grid(mesh.vertices, mesh.faces, 16)
        tokens = encode(grid)
        assert np.array_equal(decode(tokens, 4), grid)
        assert level_sizes(tokens) == [int(g.sum()) for g in pyramid(grid)[:-1]]
        # Normalisation: the longest side spans the grid.
        spans = [np.ptp(np.argwhere(grid)[:, a]) + 1 for a in range(3)]
        assert max(spans) == 16, rec.file
