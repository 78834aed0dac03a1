"""Shared fixtures: the shared corpus, and one export of every shared rig reused by several tests."""

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
def exported_rigs(rig_records, tmp_path_factory):
    """{file: (record, loaded asset, path of our GLB export)} for every shared rig."""
    from mesh3d.io import load, save

    out = tmp_path_factory.mktemp("rigs")
    result = {}
    for r in rig_records:
        asset = load(r.path)
        path = out / (r.file.replace("/", "__"))
        save(asset, path)
        result[r.file] = (r, asset, path)
    return result
