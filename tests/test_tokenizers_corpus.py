"""Exact round trip of every tokenizer on every static and rig mesh of the shared corpus."""

import pytest

from mesh3d.tokenizers import TOKENIZERS, get_tokenizer, quantize_mesh
from mesh3d.tokenizers.bench import load_mesh


@pytest.fixture(scope="module")
def corpus(static_records, rig_records):
    """(file, quantised mesh) for every static and rig record."""
    assert static_records and rig_records
    return [(r.file, quantize_mesh(load_mesh(r.path))) for r in static_records + rig_records]


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_corpus_roundtrip(corpus, name):
    t = get_tokenizer(name)
    failures = []
    for file, q in corpus:
        d = t.decode(t.encode(q))
        if d.problems or not d.mesh.same_as(q):
            failures.append(file)
    assert not failures, f"{name}: {len(failures)} meshes do not round-trip, e.g. {failures[:5]}"
