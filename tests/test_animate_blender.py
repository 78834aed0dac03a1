"""Animated exports open in real Blender (bpy in .venv-blender) with one action per motion, named
after it, whose f-curves move the rig's bones."""

from __future__ import annotations

import numpy as np

from conftest import require
from data_prep.corpus import corpus_dir
from mesh3d.io import blender
from test_bad_input import run_cli

RIG = "modular_men/Casual.glb"  # a humanoid rig without clips of its own


def test_cli_animate_actions_play_in_blender(rig_records, tmp_path):
    require(corpus_dir() is not None, "shared corpus not found (set MESH3D_DATA)")
    require(blender.blender_available(), f"BLENDER NOT SET UP: {blender.blender_python()} cannot `import bpy`; run `make blender`")
    (record,) = [r for r in rig_records if r.file == RIG]
    out = tmp_path / "casual.glb"
    res = run_cli("animate", record.path, "-o", out, "--motion", "walk", "--motion", "idle")
    assert res.returncode == 0, res.stderr
    info = blender.inspect_with_blender(out)
    (arm,) = info["armatures"]
    assert sorted(a["name"] for a in info["actions"]) == ["idle", "walk"]
    for action in info["actions"]:
        # The action animates this armature's bones (poses is None without bone f-curves) and the
        # bones really move over the clip.
        assert action["armature"] == arm["name"], action["name"]
        assert action["poses"] is not None, action["name"]
        heads = np.array([action["poses"][f] for f in sorted(action["poses"], key=float)])  # (frames, bones, 3)
        assert len(heads) >= 3, action["name"]
        moved = np.linalg.norm(heads - heads[0], axis=-1).max()
        extent = np.ptp(np.array(arm["heads"]), axis=0).max()
        assert moved > 0.01 * extent, action["name"]
