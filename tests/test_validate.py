"""The Khronos glTF-Validator bridge (mesh3d.io.validate) on real corpus files and on files we break."""

import time

import numpy as np
import pytest
import trimesh

from data_prep import corpus
from mesh3d.errors import Mesh3DError
from mesh3d.io.validate import SEVERITIES, format_report, validate_gltf, validator_available

pytestmark = pytest.mark.skipif(
    not validator_available(), reason="glTF-Validator not installed: run `make node_modules/.installed`"
)
needs_corpus = pytest.mark.skipif(corpus.corpus_dir() is None, reason="shared corpus not found (set MESH3D_DATA)")

# Rigs with a known verdict: Bull's skin names a skeleton root that is not a common root (an error in
# all six animals_pack rigs); Clownfish is clean. The corpus README lists these four for NaN weights.
BULL, CLOWNFISH = "animals_pack/Bull.glb", "cute_fish_pack/Clownfish.glb"
NAN_WEIGHTS = (
    "modular_women/Adventurer.glb",
    "platformer_game_pack/Bee.glb",
    "platformer_game_pack/Crab.glb",
    "easy_enemies_pack/Wasp.glb",
)


def box_glb() -> bytes:
    """A small valid GLB written by trimesh: a unit cube, 12 triangles."""
    return trimesh.creation.box().export(file_type="glb")


def check_shape(report: dict) -> None:
    """The report fields every caller relies on, with consistent counts."""
    counts = [report[k] for k in ("numErrors", "numWarnings", "numInfos", "numHints")]
    assert all(isinstance(n, int) and n >= 0 for n in counts)
    for m in report["messages"]:
        assert m["severity"] in SEVERITIES and m["code"] and m["message"]
        assert "pointer" in m or "offset" in m or m["code"] == "VALIDATOR_REJECTED"
    for sev, n in zip(SEVERITIES, counts):
        assert sum(m["severity"] == sev for m in report["messages"]) <= n
    assert report["truncated"] == (len(report["messages"]) < sum(counts))


@pytest.fixture(scope="module")
def corpus_reports():
    """Reports for 3 rigs, 3 statics (one Draco) and the NaN-weight rigs, from one validator call."""
    rigs = {r.file: r for r in corpus.records("rig")}
    statics = corpus.records("static")
    plain = [r for r in statics if not r.draco]
    chosen = [rigs[BULL], rigs[CLOWNFISH], rigs[NAN_WEIGHTS[1]]]
    chosen += [plain[0], next(r for r in plain if r.pack != plain[0].pack)]
    chosen.append(next(r for r in statics if r.draco and r.pack == "ultimate_space_pack"))
    chosen += [rigs[f] for f in NAN_WEIGHTS if rigs[f] not in chosen]
    return {r.file: (r, rep) for r, rep in zip(chosen, validate_gltf([r.path for r in chosen]))}


@needs_corpus
def test_corpus_files_give_parsable_reports(corpus_reports):
    assert len(corpus_reports) == 9
    for file, (record, report) in corpus_reports.items():
        check_shape(report)
        assert report["path"] == str(record.path)
        if record.kind == "static":
            assert report["numErrors"] == 0, format_report(report)
    bull = corpus_reports[BULL][1]
    assert [m["code"] for m in bull["messages"] if m["severity"] == "error"] == ["SKIN_SKELETON_INVALID"]
    assert corpus_reports[CLOWNFISH][1]["numErrors"] == 0


@needs_corpus
def test_draco_is_parsed_but_not_decoded(corpus_reports):
    # The validator knows KHR_draco_mesh_compression only by name: it checks the JSON and says so.
    (record, report), = [v for v in corpus_reports.values() if v[0].draco]
    infos = [m for m in report["messages"] if m["code"] == "UNSUPPORTED_EXTENSION"]
    assert record.pack == "ultimate_space_pack" and "KHR_draco_mesh_compression" in infos[0]["message"]


@needs_corpus
def test_nan_skin_weights_are_errors(corpus_reports):
    for file in NAN_WEIGHTS:
        report = corpus_reports[file][1]
        assert "ACCESSOR_INVALID_FLOAT" in {m["code"] for m in report["messages"]}, format_report(report)


@needs_corpus
def test_message_cap_keeps_full_counts():
    # Bee's validator report lists infos before its errors: the cut list must still show errors.
    path = corpus.corpus_dir() / NAN_WEIGHTS[1]
    (small,), (large,) = validate_gltf(path, max_messages=3), validate_gltf(path, max_messages=100_000)
    assert len(small["messages"]) == 3 and small["truncated"]
    assert all(m["severity"] == "error" for m in small["messages"])
    assert small["numErrors"] == large["numErrors"] == len([m for m in large["messages"] if m["severity"] == "error"])
    assert small["numErrors"] > 3 and not large["truncated"]


def test_own_glb_valid_and_truncated_glb_invalid(tmp_path):
    data = box_glb()
    good, cut = tmp_path / "box.glb", tmp_path / "cut.glb"
    good.write_bytes(data)
    cut.write_bytes(data[: len(data) // 2])
    ok, bad = validate_gltf([good, cut])
    check_shape(ok)
    check_shape(bad)
    assert ok["numErrors"] == 0, format_report(ok)
    assert bad["numErrors"] > 0
    assert any(m["code"].startswith("GLB_") for m in bad["messages"])


def test_gltf_with_external_buffers(tmp_path):
    files = trimesh.creation.box().export(file_type="gltf")  # model.gltf + gltf_buffer_*.bin
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    gltf = tmp_path / "model.gltf"
    (ok,) = validate_gltf([gltf])
    assert ok["numErrors"] == 0, format_report(ok)
    # A buffer whose bytes are missing must be an error: the .bin files are really read.
    (tmp_path / "gltf_buffer_0.bin").unlink()
    (bad,) = validate_gltf([gltf])
    check_shape(bad)
    assert bad["numErrors"] > 0 and any("/buffers/0" in m.get("pointer", "") for m in bad["messages"])


def test_not_gltf_and_missing_file(tmp_path):
    junk = tmp_path / "junk.glb"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes())
    (report,) = validate_gltf(junk)
    check_shape(report)
    assert report["numErrors"] == 1 and report["messages"][0]["code"] == "VALIDATOR_REJECTED"
    with pytest.raises(Mesh3DError, match="no such file"):
        validate_gltf([tmp_path / "absent.glb"])


def test_missing_node_or_validator(tmp_path, monkeypatch):
    (tmp_path / "box.glb").write_bytes(box_glb())
    monkeypatch.setenv("MESH3D_NODE_MODULES", str(tmp_path))
    assert not validator_available()
    with pytest.raises(Mesh3DError, match="make node_modules/.installed"):
        validate_gltf([tmp_path / "box.glb"])
    monkeypatch.delenv("MESH3D_NODE_MODULES")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Mesh3DError, match="node not found"):
        validate_gltf([tmp_path / "box.glb"])


def test_format_report(tmp_path):
    data = box_glb()
    (tmp_path / "cut.glb").write_bytes(data[:100])
    (tmp_path / "box.glb").write_bytes(data)
    bad, ok = validate_gltf([tmp_path / "cut.glb", tmp_path / "box.glb"], max_messages=0)
    text = format_report(bad)
    assert text.startswith(f"{tmp_path / 'cut.glb'}: INVALID (") and "more not shown" in text
    assert format_report(ok).startswith(f"{tmp_path / 'box.glb'}: valid (0 errors")
    full = validate_gltf([tmp_path / "cut.glb"])[0]
    lines = format_report(full).splitlines()
    assert len(lines) == 1 + full["numErrors"] + full["numWarnings"]
    assert all(line.startswith("  error ") for line in lines[1 : 1 + full["numErrors"]])


@pytest.mark.slow
@needs_corpus
def test_timing_single_vs_batch():
    """Validator time per file alone and in a batch of 20; run with -s to see the figures."""
    paths = [r.path for r in corpus.records()[:20]]
    t0 = time.perf_counter()
    for p in paths:
        validate_gltf([p])
    single = (time.perf_counter() - t0) / len(paths)
    t0 = time.perf_counter()
    reports = validate_gltf(paths)
    batch = time.perf_counter() - t0
    print(f"\nglTF-Validator: {single * 1e3:.0f} ms/file one per call; 20 files in one call {batch * 1e3:.0f} ms "
          f"({batch / len(paths) * 1e3:.0f} ms/file)")
    assert len(reports) == 20
    # One node start-up per call dominates small files: batching must be clearly cheaper per file.
    assert batch / len(paths) < single / 2


@pytest.mark.slow
@needs_corpus
def test_whole_corpus():
    """Every corpus file in one call (~7 s for 1,281 files); run with -s to see the time and verdicts."""
    records = corpus.records()
    t0 = time.perf_counter()
    reports = validate_gltf([r.path for r in records], max_messages=0)
    seconds = time.perf_counter() - t0
    invalid = sorted(r.file for r, rep in zip(records, reports) if rep["numErrors"])
    print(f"\nglTF-Validator: {len(records)} corpus files in {seconds:.1f} s; {len(invalid)} with errors: {invalid}")
    assert all(rep["numErrors"] == 0 for r, rep in zip(records, reports) if r.kind == "static")
    assert set(NAN_WEIGHTS) <= set(invalid)
