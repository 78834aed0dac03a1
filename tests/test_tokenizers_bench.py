"""The tokenizer benchmark command on a small folder of meshes."""

import json

import trimesh

from mesh3d.tokenizers import TOKENIZERS
from mesh3d.tokenizers.bench import main


def test_bench_json_on_a_folder(tmp_path, capsys):
    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "sphere.obj")  # 320 faces
    (tmp_path / "sub").mkdir()
    trimesh.creation.cylinder(radius=1, height=3, sections=40).export(tmp_path / "sub" / "cyl.ply")
    trimesh.creation.icosphere(subdivisions=4).export(tmp_path / "big.obj")  # 5120 faces: skipped
    assert main(["--data", str(tmp_path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["scheme"] for r in rows] == list(TOKENIZERS)
    for r in rows:
        assert {"scheme", "tokens_per_face", "share_of_9", "roundtrip_failures"} <= set(r)
        assert r["roundtrip_failures"] == 0 and r["meshes"] == 2
        assert abs(r["share_of_9"] - r["tokens_per_face"] / 9) < 1e-9
    share = {r["scheme"]: r["share_of_9"] for r in rows}
    assert share["vst"] < share["bpt"] < share["amt"] < share["naive"]


def test_bench_table_and_errors(tmp_path, capsys):
    trimesh.creation.box().export(tmp_path / "box.obj")
    assert main(["--data", str(tmp_path), "--schemes", "vst", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "| <800 | 1 | vst |" in out and "vst: " in out
    assert main(["--data", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err
