"""Exact round trip of every tokenizer on every static and rig mesh of the shared corpus."""

import pytest

from data_prep.corpus import corpus_dir, records
from mesh3d.tokenizers import TOKENIZERS, get_tokenizer, quantize_mesh
from mesh3d.tokenizers.bench import load_mesh

pytestmark = pytest.mark.skipif(corpus_dir() is None, reason="shared corpus not found (set MESH3D_DATA)")


@pytest.fixture(scope="module")
def corpus():
    """(file, quantised mesh) for all records, statics and rigs."""
    return [(r.file, quantize_mesh(load_mesh(r.path))) for r in records()]


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_corpus_roundtrip(corpus, name):
    t = get_tokenizer(name)
    assert {r.kind for r in records()} == {"static", "rig"}
    failures = []
    for file, q in corpus:
        d = t.decode(t.encode(q))
        if d.problems or not d.mesh.same_as(q):
            failures.append(file)
    assert not failures, f"{name}: {len(failures)} meshes do not round-trip, e.g. {failures[:5]}"
