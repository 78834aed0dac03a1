"""The chain of steps behind every front end (CLI, batch, web app).

Each function takes paths and options, runs load -> (steps) -> save, reports progress through one
callback ``progress(stage, fraction)`` and returns a :class:`Report`. Front ends add no logic of
their own: the CLI, ``app.batch`` and ``app.web`` all call these functions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from mesh3d.asset import Asset
from mesh3d.errors import Mesh3DError
from mesh3d.io import load, save

Progress = Callable[[str, float], None]


@dataclass
class Report:
    """What happened, for people and JSON reports: timings per stage (seconds), counts, methods."""

    input: str
    output: str
    timings: dict[str, float] = field(default_factory=dict)
    joints: int = 0
    vertices: int = 0
    faces: int = 0
    skeleton_method: str = ""
    skin_method: str = ""
    motions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Stages:
    """Times named stages and forwards them to the progress callback."""

    def __init__(self, report: Report, progress: Optional[Progress], names: list[str]) -> None:
        self.report, self.progress, self.names = report, progress, names

    def run(self, name: str, fn, *args, **kwargs):
        if self.progress:
            self.progress(name, self.names.index(name) / len(self.names))
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.report.timings[name] = round(time.perf_counter() - t, 4)
        if self.progress and name == self.names[-1]:
            self.progress("done", 1.0)
        return out


def convert(src: str | Path, dst: str | Path, up_axis: str | None = None, progress: Optional[Progress] = None) -> Report:
    """Convert ``src`` to ``dst`` (formats from the extensions), keeping what the target can hold."""
    report = Report(str(src), str(dst))
    stages = _Stages(report, progress, ["load", "export"])
    asset = stages.run("load", load, src, up_axis=up_axis)
    report.warnings += asset.warnings
    report.warnings += stages.run("export", save, asset, dst)
    _count(report, asset)
    return report


def animate(
    src: str | Path,
    dst: str | Path,
    motions: list[str],
    motion_from: str | None = None,
    progress: Optional[Progress] = None,
    mixamo_names: bool = False,
) -> Report:
    """Add named animations to the rigged asset ``src`` and write ``dst``.

    motions: names from :func:`rigging.animate.motions.list_motions`, one clip each. motion_from:
    ``FILE:CLIP``, a clip of another rigged file retargeted onto this rig. A clip replaces an
    existing one of the same name. mixamo_names: rename a humanoid's joints to Mixamo names.
    """
    from dataclasses import replace

    from rigging.animate.chains import label_chains, rename_mixamo
    from rigging.animate.motions import make_motion
    from rigging.animate.retarget import retarget

    if not motions and not motion_from:
        raise Mesh3DError("nothing to do: give at least one --motion or --motion-from")
    report = Report(str(src), str(dst))
    stages = _Stages(report, progress, ["load", "label", "motions", "retarget", "export"])
    asset = stages.run("load", load, src)
    report.warnings += asset.warnings
    if asset.skeleton is None or asset.skin is None:
        raise Mesh3DError(f"{src} has no skeleton and skin: rig it first (mesh3d rig)")
    labels = stages.run("label", label_chains, asset.skeleton, asset.mesh)
    report.skeleton_method = f"labelled as {labels.kind}"
    new = stages.run("motions", lambda: [make_motion(m, asset, labels) for m in motions])
    if motion_from:
        path, sep, clip = str(motion_from).rpartition(":")
        if not sep or not path or not clip:
            raise Mesh3DError(f"--motion-from takes FILE:CLIP, got {motion_from!r}")
        source = load(path)
        new.append(stages.run("retarget", retarget, source, clip, asset, dst_labels=labels))
    names = {a.name for a in new}
    asset = replace(asset, animations=[a for a in asset.animations if a.name not in names] + new)
    if mixamo_names:
        asset = rename_mixamo(asset)
    report.warnings += stages.run("export", save, asset, dst)
    report.motions = [a.name for a in new]
    _count(report, asset)
    return report


def _count(report: Report, asset: Asset) -> None:
    report.vertices, report.faces = len(asset.mesh.vertices), len(asset.mesh.faces)
    report.joints = len(asset.skeleton) if asset.skeleton is not None else 0


def demo(out: str | Path = "out/demo.glb", seed: int = 0) -> Path:
    """The built-in example: a procedurally generated creature with its skeleton and skin."""
    from data_prep.procedural import make_creature

    asset = make_creature("quadruped", seed)
    save(asset, out)
    return Path(out)
