"""Blender integration: real Blender (bpy in .venv-blender) imports the corpus' rigs, and the
GLB <-> FBX conversions keep the armature, the skin weights' groups and every animation."""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from conftest import require
from data_prep.corpus import corpus_dir, records
from mesh3d.asset import Asset, Mesh, Skeleton, Skin, forward_kinematics
from mesh3d.errors import Mesh3DError
from mesh3d.io import blender, load, save
from mesh3d.io.blender import compare_inspections, convert_with_blender, inspect_many_with_blender, inspect_with_blender

RIG = "animals_pack/Bull.glb"  # 42 joints, 12 clips, helper joints (IK poles) without weights


@pytest.fixture(scope="module")
def need_blender():
    if blender.blender_available():
        return
    stamp = blender.REPO_ROOT / ".venv-blender" / ".installed"
    if stamp.exists():  # `make blender` ran, so Blender is supposed to work: a skip would hide a bug
        pytest.fail(f"Blender was set up ({stamp}) but {blender.blender_python()} cannot `import bpy`")
    require(False, f"BLENDER NOT SET UP: {blender.blender_python()} cannot `import bpy`; run `make blender`")


@pytest.fixture(scope="module")
def rig(need_blender):
    require(corpus_dir() is not None, "shared corpus not found (set MESH3D_DATA)")
    (record,) = [r for r in records(kind="rig") if r.file == RIG]
    return record


@pytest.fixture(scope="module")
def rig_info(rig):
    return inspect_with_blender(rig.path)


def glb_json(path: Path) -> dict:
    """The JSON chunk of a GLB file, read without any glTF library."""
    data = path.read_bytes()
    magic, _, _ = struct.unpack_from("<4sII", data, 0)
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert magic == b"glTF" and kind == b"JSON"
    return json.loads(data[20 : 20 + length])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corpus_rig_imports_into_blender_as_in_manifest(rig, rig_info):
    (arm,) = rig_info["armatures"]
    assert arm["bone_count"] == rig.joints == len(set(arm["bone_names"]))
    assert arm["near_zero_bones"] == []
    # The importer's bone display icosphere is filtered out: only the cow itself is left.
    (mesh,) = rig_info["meshes"]
    assert mesh["armature"] == arm["name"] == mesh["parent_armature"]
    assert sorted(mesh["vertex_groups"]) == sorted(arm["bone_names"])
    deforming = set(mesh["weighted_groups"])
    assert 0 < len(deforming) < rig.joints  # the IK pole helpers carry no weight
    assert not any(name.startswith("PoleTarget") for name in deforming)
    assert sorted(a["name"] for a in rig_info["actions"]) == sorted(rig.animations)
    for action in rig_info["actions"]:
        start, end = action["frame_range"]
        assert end > start
        assert action["armature"] == arm["name"]
        assert all(len(heads) == rig.joints for heads in action["poses"].values())


def test_every_rig_mesh3d_exports_imports_into_blender(need_blender, rig_roundtrips):
    """Each corpus rig re-exported by mesh3d (the shared round-trip fixture) opens in real Blender
    with one armature of the same bone count, one vertex group per deforming joint, one action per
    clip moving that armature, and no near-zero bones."""
    rows = list(rig_roundtrips.values())
    infos = inspect_many_with_blender([row["exported"] for _, row in rows])
    for (record, row), info in zip(rows, infos):
        (arm,) = info["armatures"]
        assert arm["bone_count"] == record.joints and arm["near_zero_bones"] == [], record.file
        groups = [g for m in info["meshes"] if m["armature"] == arm["name"] for g in m["vertex_groups"]]
        weighted = {g for m in info["meshes"] if m["armature"] == arm["name"] for g in m["weighted_groups"]}
        assert set(groups) <= set(arm["bone_names"]), record.file
        assert len(weighted) == record.joints - row["helpers"], record.file
        assert sorted(a["name"] for a in info["actions"]) == sorted(record.animations), record.file
        assert all(a["armature"] == arm["name"] for a in info["actions"]), record.file


def test_joint_on_its_parent_is_reported(need_blender, tmp_path):
    """A chain whose "Mid2" joint sits on "Mid": Blender gives it a length, inspect still tells."""
    corners = np.array([[x, y] for y in (-0.5, 0.5) for x in (-0.5, 0.5)])
    vertices = np.array([[x, y, z] for z in range(5) for x, y in corners], float)  # a 1x1x4 column
    ring = [0, 1, 3, 2]
    faces = []
    for level in range(4):
        for i in range(4):
            a, b = 4 * level + ring[i], 4 * level + ring[(i + 1) % 4]
            faces += [[a, b, b + 4], [a, b + 4, a + 4]]
    skeleton = Skeleton([[0, 0, 0], [0, 0, 2], [0, 0, 2], [0, 0, 4]], [-1, 0, 1, 2], ["Root", "Mid", "Mid2", "Top"])
    indices = np.stack([np.minimum(vertices[:, 2] // 1.01, 3), np.zeros(len(vertices))], 1).astype(int)
    skin = Skin(indices, np.tile([1.0, 0.0], (len(vertices), 1)))
    save(Asset(Mesh(vertices, np.array(faces)), skeleton, skin), tmp_path / "chain.glb")
    (arm,) = inspect_with_blender(tmp_path / "chain.glb")["armatures"]
    assert arm["on_parent_bones"] == ["Mid2"]
    assert arm["near_zero_bones"] == []  # the importer stretched it


def test_glb_fbx_glb_keeps_armature_weights_and_animations(rig, rig_info, tmp_path):
    before = sha256(rig.path)
    fbx = convert_with_blender(rig.path, tmp_path / "bull.fbx")
    glb = convert_with_blender(fbx, tmp_path / "bull.glb")
    assert sha256(rig.path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bull.fbx", "bull.glb"]  # no temp files left

    fbx_info = inspect_with_blender(fbx)
    (mesh,) = fbx_info["meshes"]
    assert sorted(mesh["weighted_groups"]) == sorted(rig_info["meshes"][0]["weighted_groups"])

    # The GLB Blender wrote, read as plain glTF JSON: one skin with every joint, one clip each.
    gltf = glb_json(glb)
    (skin,) = gltf["skins"]
    assert len(skin["joints"]) == rig.joints
    assert sorted(a["name"] for a in gltf["animations"]) == sorted(rig.animations)

    for info in (fbx_info, inspect_with_blender(glb)):
        diff = compare_inspections(rig_info, info)
        assert diff["bones"] == (rig.joints, rig.joints)
        assert diff["actions_lost"] == diff["actions_gained"] == []
        # Rest and sampled clip poses agree to 0.01 % of the rig's size (Bull measured: 7e-6 rest, 4e-6 pose).
        assert diff["rest_error"] <= 1e-4 * diff["extent"]
        assert diff["pose_error"] <= 1e-4 * diff["extent"]


def test_mesh3d_saves_and_loads_fbx_through_blender(rig, tmp_path):
    """mesh3d.io.save(.fbx) then load(.fbx): same joints, clips and posed shape as the GLB."""
    asset = load(rig.path)
    fbx = tmp_path / "bull.fbx"
    assert save(asset, fbx) == []

    # Real Blender sees one armature with every joint and one take per clip.
    info = inspect_with_blender(fbx)
    assert [a["bone_count"] for a in info["armatures"]] == [rig.joints]
    assert sorted(a["name"] for a in info["actions"]) == sorted(rig.animations)

    back = load(fbx)
    size = np.ptp(asset.mesh.vertices, axis=0).max()
    assert sorted(back.skeleton.names) == sorted(asset.skeleton.names)
    order = [back.skeleton.names.index(n) for n in asset.skeleton.names]
    assert np.abs(back.skeleton.joints[order] - asset.skeleton.joints).max() < 1e-4 * size
    assert [a.name for a in back.animations] == [a.name for a in asset.animations]
    tree = cKDTree(asset.mesh.vertices)
    assert tree.query(back.mesh.vertices)[0].max() < 1e-4 * size
    for clip, clip_back in zip(asset.animations, back.animations):
        assert (clip_back.fps, clip_back.num_frames) == (clip.fps, clip.num_frames)
        world = forward_kinematics(asset.skeleton.parents, clip.translations, clip.rotations, clip.scales)
        world_back = forward_kinematics(back.skeleton.parents, clip_back.translations, clip_back.rotations, clip_back.scales)
        # Measured: 1.6e-5 for a rig 8 units long.
        assert np.abs(np.asarray(world_back)[:, order][..., :3, 3] - np.asarray(world)[..., :3, 3]).max() < 1e-4 * size
        # Skin weights survive: the posed meshes coincide (nearest-vertex distance, the vertex
        # order and count change because Blender splits vertices along UV and normal seams).
        mid = [clip.num_frames // 2]
        posed = cKDTree(np.asarray(asset.posed_vertices(clip, mid))[0])
        assert posed.query(np.asarray(back.posed_vertices(clip_back, mid))[0])[0].max() < 1e-3 * size


def test_blender_failure_is_reported_and_leaves_no_output(need_blender, tmp_path):
    bad = tmp_path / "broken.glb"
    bad.write_bytes(b"glTF this is not a GLB")
    with pytest.raises(Mesh3DError, match="Blender failed: .+"):
        convert_with_blender(bad, tmp_path / "out.fbx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.glb"]


def test_timeout_is_reported(rig, tmp_path):
    with pytest.raises(Mesh3DError, match="did not finish within"):
        convert_with_blender(rig.path, tmp_path / "out.fbx", timeout=0.01)
    assert list(tmp_path.iterdir()) == []


def test_missing_blender_says_how_to_set_it_up(monkeypatch, tmp_path):
    monkeypatch.setenv("MESH3D_BLENDER_PYTHON", str(tmp_path / "no-python"))
    src = tmp_path / "a.fbx"
    src.write_bytes(b"x")
    assert not blender.blender_available()
    with pytest.raises(Mesh3DError, match="make blender"):
        convert_with_blender(src, tmp_path / "a.glb")
    with pytest.raises(Mesh3DError, match="a.fbx: reading FBX: needs Blender.*make blender"):
        load(src)


def test_unsupported_files_are_refused_before_blender_runs(tmp_path):
    obj = tmp_path / "a.obj"
    obj.write_text("v 0 0 0\n")
    with pytest.raises(Mesh3DError, match="reads .glb, .gltf, .fbx"):
        inspect_with_blender(obj)
    with pytest.raises(Mesh3DError, match="no such file"):
        inspect_with_blender(tmp_path / "missing.fbx")
    glb = tmp_path / "a.glb"
    glb.write_bytes(b"x")
    with pytest.raises(Mesh3DError, match="writes .glb, .fbx"):
        convert_with_blender(glb, tmp_path / "a.obj")


@pytest.mark.slow
def test_every_corpus_rig_imports_into_blender_as_in_manifest(need_blender, rig_records):
    for rig, info in zip(rig_records, inspect_many_with_blender([r.path for r in rig_records])):
        assert [a["bone_count"] for a in info["armatures"]] == [rig.joints], rig.file
        assert sorted(a["name"] for a in info["actions"]) == sorted(rig.animations), rig.file
