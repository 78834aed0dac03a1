"""`mesh3d rig` and `mesh3d demo`: the pipeline chained end to end."""

import json

import numpy as np
import pytest

from conftest import require
from mesh3d.io import load
from test_bad_input import assert_clean_failure, run_cli


def validator_ok(path):
    from mesh3d.io.validate import validate_gltf, validator_available

    require(validator_available(), "glTF-Validator not installed")
    report = validate_gltf([path])[0]
    assert report["numErrors"] == 0, report["messages"][:5]


def test_rig_a_shared_mesh_with_motion_and_report(rig_records, tmp_path):
    src = next(r for r in rig_records if r.file == "animals_pack/Wolf.glb").path
    out, rep = tmp_path / "wolf.glb", tmp_path / "wolf.json"
    res = run_cli("rig", src, "-o", out, "--motion", "walk", "--report", rep)
    assert res.returncode == 0, res.stderr
    report = json.loads(rep.read_text())
    fell_back = any(w.startswith("auto skeleton:") for w in report["warnings"])
    assert report["skeleton_method"] == ("geometric" if fell_back else "learned") and report["skin_method"] == "geometric"
    assert set(report["timings"]) == {"load", "skeleton", "skin", "animate", "export"}
    assert report["motions"] == ["walk"] and 2 <= report["joints"] <= 64
    asset = load(out)
    original = load(src)
    assert np.allclose(asset.mesh.vertices, original.mesh.vertices, atol=1e-5)  # the input's own frame
    assert len(asset.skeleton) == report["joints"] and [a.name for a in asset.animations] == ["walk"]
    validator_ok(out)


def test_rig_with_a_user_skeleton_file(tmp_path):
    from data_prep.procedural import make_creature
    from mesh3d.io import save

    creature = make_creature("humanoid", 3)
    save(creature, tmp_path / "h.obj")
    sk = creature.skeleton
    order = np.arange(len(sk))[::-1]  # children first: the reader must reorder
    inverse = np.argsort(order)
    parents = [int(inverse[sk.parents[i]]) if sk.parents[i] >= 0 else -1 for i in order]
    (tmp_path / "sk.json").write_text(json.dumps({"joints": sk.joints[order].tolist(), "parents": parents, "names": [sk.names[i] for i in order]}))
    res = run_cli("rig", tmp_path / "h.obj", "-o", tmp_path / "h.glb", "--skeleton", tmp_path / "sk.json")
    assert res.returncode == 0, res.stderr
    rigged = load(tmp_path / "h.glb")
    assert sorted(rigged.skeleton.names) == sorted(sk.names)
    by_name = dict(zip(rigged.skeleton.names, rigged.skeleton.joints))
    assert max(np.abs(by_name[n] - p).max() for n, p in zip(sk.names, sk.joints)) < 1e-5


def test_rig_errors_are_clear(tmp_path):
    from data_prep.procedural import make_creature
    from mesh3d.io import save

    save(make_creature("fish", 0), tmp_path / "f.glb")
    (tmp_path / "cycle.json").write_text(json.dumps({"joints": [[0, 0, 0], [0, 1, 0]], "parents": [1, 0]}))
    assert_clean_failure(run_cli("rig", tmp_path / "f.glb", "-o", tmp_path / "o.glb", "--skeleton", tmp_path / "cycle.json"), "tree")
    assert_clean_failure(run_cli("rig", tmp_path / "f.glb", "-o", tmp_path / "o.glb", "--format", "fbx"), "--format")
    assert_clean_failure(run_cli("rig", tmp_path / "f.glb", "-o", tmp_path / "o.glb", "--motion", "moonwalk"), "moonwalk")
    assert not (tmp_path / "o.glb").exists()


def test_demo_rigs_and_animates_the_builtin_creature(tmp_path):
    res = run_cli("demo", "-o", tmp_path / "demo.glb")
    assert res.returncode == 0, res.stderr
    asset = load(tmp_path / "demo.glb")
    assert asset.skeleton is not None and {"walk", "idle"} <= {a.name for a in asset.animations}
    validator_ok(tmp_path / "demo.glb")


def test_generated_rig_imports_into_blender_with_bones_along_the_limbs(tmp_path):
    from mesh3d.io.blender import blender_available, inspect_with_blender

    require(blender_available(), "Blender not set up (make blender)")
    assert run_cli("demo", "-o", tmp_path / "demo.glb").returncode == 0
    asset = load(tmp_path / "demo.glb")
    info = inspect_with_blender(tmp_path / "demo.glb")
    (arm,) = info["armatures"]
    assert arm["bone_count"] == len(asset.skeleton) and not arm["near_zero_bones"]
    assert sorted(a["name"] for a in info["actions"]) == sorted(a.name for a in asset.animations)
    heads, tails, parents = np.array(arm["heads"]), np.array(arm["tails"]), arm["parents"]
    names = arm["bone_names"]
    for i, name in enumerate(names):
        kids = [j for j, p in enumerate(parents) if p == name]
        if len(kids) == 1 and np.linalg.norm(heads[kids[0]] - heads[i]) > 1e-6:
            to_child, bone = heads[kids[0]] - heads[i], tails[i] - heads[i]
            assert to_child @ bone / np.linalg.norm(to_child) / np.linalg.norm(bone) > 0.999, name


def test_rig_with_the_learned_skeleton(rig_records, tmp_path):
    src = next(r for r in rig_records if r.file == "modular_men/Casual.glb" or r.split == "dev").path
    res = run_cli("rig", src, "-o", tmp_path / "l.glb", "--skeleton", "learned", "--report", tmp_path / "l.json")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "l.json").read_text())
    assert report["skeleton_method"] == "learned" and 2 <= report["joints"] <= 64
    validator_ok(tmp_path / "l.glb")
