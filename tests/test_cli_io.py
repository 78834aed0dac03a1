"""`mesh3d info` and `mesh3d convert` between formats, axes, colours and glTF variants."""

import json

import numpy as np
import pytest
import trimesh

from mesh3d.errors import Mesh3DError
from mesh3d.io import load, save
from test_bad_input import run_cli, tetra_asset


def test_info_json_on_a_shared_rig(rig_records, capsys):
    bull = next(r for r in rig_records if r.file == "animals_pack/Bull.glb")
    result = run_cli("info", bull.path, "--json")
    assert result.returncode == 0
    info = json.loads(result.stdout)
    assert info["faces"] == bull.triangles and info["skeleton"]["joints"] == bull.joints
    assert [a["name"] for a in info["animations"]] == list(bull.animations)
    assert info["watertight"] is False and info["parts"] >= 1
    text = run_cli("info", bull.path).stdout
    assert "42 joints" in text and "AnimalArmature|Walk" in text


def test_convert_glb_keeps_rig_and_obj_drops_it_with_a_warning(rig_records, tmp_path):
    src = next(r for r in rig_records if r.file == "fish_pack/Whale.glb").path
    assert run_cli("convert", src, tmp_path / "w.glb").returncode == 0
    again = load(tmp_path / "w.glb")
    assert len(again.skeleton) == 13 and len(again.animations) == 1
    res = run_cli("convert", src, tmp_path / "w.obj")
    assert res.returncode == 0 and "cannot hold a rig" in res.stderr
    assert load(tmp_path / "w.obj").skeleton is None


def test_up_axis_round_trip_through_plain_formats(tmp_path):
    # A Z-up OBJ: tall along z.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 3.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    trimesh.Trimesh(v, f, process=False).export(tmp_path / "z.obj")
    asset = load(tmp_path / "z.obj", up_axis="Z")
    assert np.ptp(asset.mesh.vertices, 0).argmax() == 1  # tall along our Y
    assert run_cli("convert", tmp_path / "z.obj", tmp_path / "z.ply", "--up", "Z").returncode == 0
    back = trimesh.load(tmp_path / "z.ply", process=False)
    assert np.allclose(back.vertices, v)  # written back in the source's own frame
    assert run_cli("convert", tmp_path / "z.obj", tmp_path / "z.glb", "--up", "z").returncode == 0
    assert np.allclose(load(tmp_path / "z.glb").mesh.vertices, asset.mesh.vertices, atol=1e-6)  # glTF is Y-up


def test_vertex_colours_survive_ply_to_glb(tmp_path):
    asset = tetra_asset()
    colors = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1.0]])
    asset.mesh.colors = colors
    save(asset, tmp_path / "c.ply")
    loaded = load(tmp_path / "c.ply")
    assert np.allclose(loaded.mesh.colors, colors, atol=1 / 255)
    save(loaded, tmp_path / "c.glb")
    assert np.allclose(load(tmp_path / "c.glb").mesh.colors, colors, atol=1 / 255)


def test_stl_and_off_load(tmp_path):
    for ext in ("stl", "off"):
        save(tetra_asset(), tmp_path / f"t.{ext}")
        assert len(load(tmp_path / f"t.{ext}").mesh.faces) == 4


def test_gltf_with_external_buffer_and_path_traversal(tmp_path):
    box, ball = trimesh.creation.box(), trimesh.creation.icosphere().apply_translation([3, 0, 0])
    scene = trimesh.Scene([box, ball])
    files = scene.export(file_type="gltf")
    (tmp_path / "model").mkdir()
    for name, data in files.items():
        (tmp_path / "model" / name).write_bytes(data)
    asset = load(tmp_path / "model" / "model.gltf")
    assert len(asset.mesh.faces) == len(box.faces) + len(ball.faces) and len(np.unique(asset.mesh.part_ids)) == 2
    assert asset.mesh.vertices[:, 0].max() > 3.5  # node transform applied
    gltf = json.loads(files["model.gltf"])
    gltf["buffers"][0]["uri"] = "../../../etc/passwd"
    (tmp_path / "model" / "evil.gltf").write_text(json.dumps(gltf))
    with pytest.raises(Mesh3DError, match="outside the file's folder"):
        load(tmp_path / "model" / "evil.gltf")
