"""Bad input: one clear error line naming the file, non-zero exit, no traceback, no partial
output, inputs untouched, and no allocation beyond what the file really holds."""

import hashlib
import json
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mesh3d.asset import Asset, Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.io import load, save
from mesh3d.io.gltf_write import _pack, glb_bytes


def tetra_asset():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return Asset(Mesh(v, f), name="tetra")


def split_glb(data: bytes):
    jlen = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20 : 20 + jlen])
    blen = struct.unpack_from("<I", data, 20 + jlen)[0]
    return gltf, data[28 + jlen : 28 + jlen + blen]


def mutated_glb(tmp_path, name, mutate) -> Path:
    gltf, binary = split_glb(glb_bytes(tetra_asset()))
    binary = mutate(gltf, binary) or binary
    p = tmp_path / name
    p.write_bytes(_pack(gltf, binary))
    return p


def run_cli(*args, subprocess_=False):
    """Run the CLI; in-process by default (fast), or as a real process."""
    if subprocess_:
        return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)], capture_output=True, text=True, timeout=120)
    import contextlib
    import io
    import types

    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_clean_failure(result, fragment):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mesh3d: error:"), result.stderr
    assert fragment in lines[0], lines[0]


def bad_files(tmp_path):
    """(path, expected message fragment) for each kind of bad input."""
    cases = []
    good = tmp_path / "good.glb"
    save(tetra_asset(), good)
    data = good.read_bytes()
    (tmp_path / "truncated.glb").write_bytes(data[: len(data) // 2])
    cases.append((tmp_path / "truncated.glb", "truncated"))
    (tmp_path / "corrupt.glb").write_bytes(b"glTF" + struct.pack("<II", 2, 40) + b"\x10\x00\x00\x00JSON{not json at all}" + b"\0" * 8)
    cases.append((tmp_path / "corrupt.glb", "corrupt"))

    def overclaim(gltf, binary):
        gltf["accessors"][0]["count"] = 2_000_000_000

    cases.append((mutated_glb(tmp_path, "overclaim.glb", overclaim), "claims"))

    def big_view(gltf, binary):
        gltf["bufferViews"][0]["byteLength"] = 10**12

    cases.append((mutated_glb(tmp_path, "bigview.glb", big_view), "buffer"))

    def bad_index(gltf, binary):
        acc = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["indices"]]
        view = gltf["bufferViews"][acc["bufferView"]]
        arr = bytearray(binary)
        struct.pack_into("<H", arr, view["byteOffset"], 999)
        return bytes(arr)

    cases.append((mutated_glb(tmp_path, "badindex.glb", bad_index), "outside"))

    def nan_position(gltf, binary):
        view = gltf["bufferViews"][gltf["accessors"][0]["bufferView"]]
        arr = bytearray(binary)
        struct.pack_into("<f", arr, view["byteOffset"], float("nan"))
        return bytes(arr)

    cases.append((mutated_glb(tmp_path, "nan.glb", nan_position), "NaN"))
    (tmp_path / "nan.obj").write_text("v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n")
    cases.append((tmp_path / "nan.obj", "NaN"))
    (tmp_path / "empty.obj").write_text("# nothing here\n")
    cases.append((tmp_path / "empty.obj", "no vertices"))
    (tmp_path / "zero.ply").write_bytes(b"")
    cases.append((tmp_path / "zero.ply", "empty"))
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    cases.append((tmp_path / "points.obj", "no faces"))
    (tmp_path / "range.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    cases.append((tmp_path / "range.off", "outside"))
    cases.append((tmp_path / "missing.glb", "not found"))
    (tmp_path / "notes.txt").write_text("hello")
    cases.append((tmp_path / "notes.txt", "unsupported file type"))
    return cases


def test_library_raises_one_clear_error_per_bad_file(tmp_path):
    for path, fragment in bad_files(tmp_path):
        with pytest.raises(Mesh3DError) as e:
            load(path)
        assert fragment in str(e.value) and path.name in str(e.value), (path.name, str(e.value))


def test_cli_fails_cleanly_without_partial_output_or_touching_inputs(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    kept = out_dir / "kept.glb"
    kept.write_bytes(b"previous result")
    for path, fragment in bad_files(tmp_path):
        before = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        for args in (["info", path], ["convert", path, out_dir / "new.glb"], ["convert", path, kept]):
            assert_clean_failure(run_cli(*args), fragment)
        after = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        assert before == after
    # The same through a real process, for two kinds of failure.
    for path, fragment in bad_files(tmp_path)[:3:2]:
        assert_clean_failure(run_cli("convert", path, kept, subprocess_=True), fragment)
    assert sorted(p.name for p in out_dir.iterdir()) == ["kept.glb"]  # no partial or temp files
    assert kept.read_bytes() == b"previous result"


def test_overclaiming_accessor_allocates_nothing_big(tmp_path):
    path = mutated_glb(tmp_path, "huge.glb", lambda g, b: g["accessors"][0].update(count=2_000_000_000))
    tracemalloc.start()
    with pytest.raises(Mesh3DError, match="claims"):
        load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak} bytes while rejecting a {path.stat().st_size}-byte file"


def test_unwritable_format_and_bad_options_are_errors(tmp_path):
    save(tetra_asset(), tmp_path / "t.glb")
    assert_clean_failure(run_cli("convert", tmp_path / "t.glb", tmp_path / "t.xyz"), "cannot write")
    assert_clean_failure(run_cli("info", tmp_path / "t.glb", "--up", "Z"), "Y-up")
    assert not (tmp_path / "t.xyz").exists()
