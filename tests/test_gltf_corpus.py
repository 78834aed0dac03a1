"""Every shared rig and static, read and re-exported (issue: foundation, items 3-5).

Ground truth is the spec-literal glTF skinning evaluator in mesh3d.io.gltf_reference, which shares
none of the loader's conversions; the figures come from mesh3d.io.roundtrip (`mesh3d bench roundtrip`).
"""

import json

import numpy as np
import pytest

from data_prep import corpus
from mesh3d.io import load

RIGS = [r.file for r in corpus.records("rig")] if corpus.corpus_dir() else []
NAN_WEIGHTS = {"modular_women/Adventurer.glb", "platformer_game_pack/Bee.glb", "platformer_game_pack/Crab.glb", "easy_enemies_pack/Wasp.glb"}


@pytest.mark.parametrize("file", RIGS)
def test_rig_loads_like_the_spec_and_round_trips(file, rig_roundtrips):
    record, row = rig_roundtrips[file]
    asset = load(record.path)
    sk = asset.skeleton
    assert len(sk) == record.joints
    assert [a.name for a in asset.animations] == list(record.animations)
    assert len(asset.mesh.faces) == record.triangles
    # NaN weights are repaired with a warning, only in the files known to have them.
    assert any("NaN" in w for w in asset.warnings) == (file in NAN_WEIGHTS)
    assert (row["repaired_vertices"] > 0) == (file in NAN_WEIGHTS)
    # Helper joints carry no weight; every other joint does.
    used = np.zeros(len(sk), bool)
    used[asset.skin.indices[asset.skin.weights > 0]] = True
    assert np.array_equal(~used, sk.helper)

    assert row["same_names_and_parents"]
    assert row["joint_error"] <= 1e-5 * max(1.0, np.abs(sk.joints).max())
    assert row["weight_error"] <= 1e-4
    assert row["pose_error_load"] <= 1e-4
    assert row["pose_error_roundtrip"] <= 1e-4


def test_every_static_loads_with_manifest_counts(static_records):
    draco = 0
    for r in static_records:
        asset = load(r.path)
        assert len(asset.mesh.faces) == r.triangles, r.file
        assert asset.skeleton is None
        draco += r.draco
    assert draco > 0  # the Draco-compressed files were among them


def test_exports_pass_the_khronos_validator(rig_roundtrips):
    from conftest import require
    from mesh3d.io.validate import validate_gltf, validator_available

    require(validator_available(), "glTF-Validator not installed (make node_modules/.installed)")
    reports = validate_gltf([row["exported"] for _, row in rig_roundtrips.values()])
    bad = {r["path"]: [m["code"] for m in r["messages"] if m["severity"] in ("error", "warning")] for r in reports if r["numErrors"] or r["numWarnings"]}
    assert not bad, json.dumps(bad, indent=1)[:2000]
