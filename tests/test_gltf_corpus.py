"""Every shared rig and static, read and re-exported (issue: foundation, items 3-5).

Ground truth is ``gltf_reference.posed_reference``, a spec-literal glTF skinning evaluator that
shares none of the loader's conversions.
"""

import json

import numpy as np
import pytest

from data_prep import corpus
from gltf_reference import posed_reference
from mesh3d.io import load

RIGS = [r.file for r in corpus.records("rig")] if corpus.corpus_dir() else []
NAN_WEIGHTS = {"modular_women/Adventurer.glb", "platformer_game_pack/Bee.glb", "platformer_game_pack/Crab.glb", "easy_enemies_pack/Wasp.glb"}


def sample_frames(anim, n=3):
    return np.unique(np.linspace(0, anim.num_frames - 1, n).round().astype(int))


@pytest.mark.parametrize("file", RIGS)
def test_rig_loads_like_the_spec_and_round_trips(file, exported_rigs):
    record, asset, exported = exported_rigs[file]
    sk = asset.skeleton
    assert len(sk) == record.joints
    assert [a.name for a in asset.animations] == list(record.animations)
    assert len(asset.mesh.faces) == record.triangles
    # NaN weights are repaired with a warning, only in the files known to have them.
    assert any("NaN" in w for w in asset.warnings) == (file in NAN_WEIGHTS)
    # Helper joints carry no weight; every other joint does.
    used = np.zeros(len(sk), bool)
    used[asset.skin.indices[asset.skin.weights > 0]] = True
    assert np.array_equal(~used, sk.helper)

    again = load(exported)
    assert again.skeleton.names == sk.names and np.array_equal(again.skeleton.parents, sk.parents)
    assert np.abs(again.skeleton.joints - sk.joints).max() <= 1e-5 * max(1.0, np.abs(sk.joints).max())
    assert np.abs(again.skin.dense(len(sk)) - asset.skin.dense(len(sk))).sum(1).max() <= 1e-4
    assert np.abs(again.mesh.vertices - asset.mesh.vertices).max() <= 1e-5 * asset.mesh.diagonal
    assert len(again.animations) == len(asset.animations)

    valid = np.ones(len(asset.mesh.vertices), bool)
    if file in NAN_WEIGHTS:  # the file gives NaN weights: its own pose of those vertices is undefined
        ref0 = posed_reference(record.path, None, [0.0])[0]
        valid = np.isfinite(ref0).all(1) & (np.abs(ref0).max(1) > 0)
    for i, anim in enumerate(asset.animations):
        frames = sample_frames(anim)
        ref = posed_reference(record.path, i, frames / anim.fps)
        diag = np.linalg.norm(np.ptp(ref[:, valid].reshape(-1, 3), 0))
        ours = asset.posed_vertices(anim, frames)
        err_load = np.linalg.norm(ours - ref, axis=-1)[:, valid].max() / diag
        err_trip = np.linalg.norm(again.posed_vertices(again.animations[i], frames) - ref, axis=-1)[:, valid].max() / diag
        assert err_load <= 1e-4, f"{anim.name}: loaded pose differs by {err_load:.2e} of the diagonal"
        assert err_trip <= 1e-4, f"{anim.name}: re-exported pose differs by {err_trip:.2e} of the diagonal"


def test_every_static_loads_with_manifest_counts(static_records):
    draco = 0
    for r in static_records:
        asset = load(r.path)
        assert len(asset.mesh.faces) == r.triangles, r.file
        assert asset.skeleton is None
        draco += r.draco
    assert draco > 0  # the Draco-compressed files were among them


def test_exports_pass_the_khronos_validator(exported_rigs):
    from conftest import require
    from mesh3d.io.validate import validate_gltf, validator_available

    require(validator_available(), "glTF-Validator not installed (make node_modules/.installed)")
    paths = [p for _, _, p in exported_rigs.values()]
    reports = validate_gltf(paths)
    bad = {str(r["path"]): [m["code"] for m in r["messages"] if m["severity"] == "error"] for r in reports if r["numErrors"]}
    assert not bad, json.dumps(bad, indent=1)[:2000]
    warned = {str(r["path"]): [m["code"] for m in r["messages"] if m["severity"] == "warning"] for r in reports if r["numWarnings"]}
    assert not warned, json.dumps(warned, indent=1)[:2000]
