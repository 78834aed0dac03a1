"""`mesh3d eval rig`: the skeleton method is chosen by --skeleton and reaches the report."""

import json

import numpy as np
import pytest

from mesh3d.io import load
from rigging.eval import skeleton_metrics
from rigging.skeleton.auto import make_skeleton
from rigging.skeleton.geometric import geometric_skeleton
from rigging.skeleton.learned import learned_skeleton
from test_bad_input import run_cli

FILE = "cute_fish_pack/Tetra.glb"  # a small dev rig on which the learned skeleton passes its checks


@pytest.fixture(scope="module")
def one_rig_dir(rig_records, tmp_path_factory):
    """A folder holding one shared rig (a link, the data is not copied)."""
    folder = tmp_path_factory.mktemp("rigs")
    (folder / "Tetra.glb").symlink_to(next(r for r in rig_records if r.file == FILE).path)
    return folder


@pytest.mark.parametrize("method, make", [("geometric", geometric_skeleton), ("learned", learned_skeleton)])
def test_eval_rig_uses_the_requested_skeleton(method, make, one_rig_dir, tmp_path):
    out = tmp_path / "report.json"
    res = run_cli("eval", "rig", "--data", one_rig_dir, "--skeleton", method, "--skin", "geometric", "--out", out)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())["geometric"]
    assert report["skeleton"] == method and report["summary"]["failures"] == 0
    (row,) = report["rows"]
    asset = load(one_rig_dir / "Tetra.glb")
    expected = make(asset.mesh)
    assert row["joints"] == len(expected)
    figures = skeleton_metrics(expected, asset.skeleton, asset.mesh, asset.skin)
    assert np.isclose(row["cd_j2j"], figures["cd_j2j"]) and np.isclose(row["cd_b2b"], figures["cd_b2b"])
    assert row["skeleton_method"] == method


def test_eval_rig_records_what_auto_picked(one_rig_dir, tmp_path):
    out = tmp_path / "report.json"
    res = run_cli("eval", "rig", "--data", one_rig_dir, "--skeleton", "auto", "--skin", "geometric", "--out", out)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(out.read_text())["geometric"]["rows"]
    skeleton, used, _ = make_skeleton(load(one_rig_dir / "Tetra.glb").mesh, "auto")
    assert row["skeleton_method"] == used in ("geometric", "learned") and row["joints"] == len(skeleton)


def test_eval_rig_rejects_an_unknown_skeleton_method(one_rig_dir):
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error
        run_cli("eval", "rig", "--data", one_rig_dir, "--skeleton", "magic")
    assert exit_.value.code == 2
