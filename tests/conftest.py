"""Shared fixtures: the shared corpus, and one round trip of every shared rig reused by several tests."""

from __future__ import annotations

import os

import pytest

from data_prep import corpus


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing on a developer's machine; fail in CI, where the Makefile
    installs everything and a skip would hide a broken set-up."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rig_records():
    require(corpus.corpus_dir() is not None, "shared corpus not found (set MESH3D_DATA)")
    return corpus.records("rig")


@pytest.fixture(scope="session")
def static_records():
    require(corpus.corpus_dir() is not None, "shared corpus not found (set MESH3D_DATA)")
    return corpus.records("static")


@pytest.fixture(scope="session")
def rig_roundtrips(rig_records, tmp_path_factory):
    """{file: (record, figures of mesh3d.io.roundtrip.measure_rig)} for every shared rig; the
    exports stay in a session folder for the validator and Blender tests."""
    from mesh3d.io.roundtrip import measure_rig

    out = tmp_path_factory.mktemp("rigs")
    result = {}
    for r in rig_records:
        folder = out / r.pack  # file stems repeat across packs
        folder.mkdir(exist_ok=True)
        result[r.file] = (r, measure_rig(r.path, folder))
    return result
