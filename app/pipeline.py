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
from rigging.skinning.auto import METHODS as SKIN_METHODS

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
    notes: dict = field(default_factory=dict)

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
    if not motions and not motion_from:
        raise Mesh3DError("nothing to do: give at least one --motion or --motion-from")
    report = Report(str(src), str(dst))
    stages = _Stages(report, progress, ["load", "animate", "export"])
    asset = stages.run("load", load, src)
    report.warnings += asset.warnings
    if asset.skeleton is None or asset.skin is None:
        raise Mesh3DError(f"{src} has no skeleton and skin: rig it first (mesh3d rig)")
    asset = stages.run("animate", add_motions, asset, motions, motion_from, report, mixamo_names)
    report.warnings += stages.run("export", save, asset, dst)
    _count(report, asset)
    return report


def add_motions(asset: Asset, motions, motion_from: str | None = None, report: Optional[Report] = None, mixamo_names: bool = False) -> Asset:
    """The rigged ``asset`` with one clip per motion name (and a retargeted ``FILE:CLIP``) added."""
    from dataclasses import replace

    from rigging.animate.chains import label_chains, rename_mixamo
    from rigging.animate.motions import make_motion
    from rigging.animate.retarget import retarget

    labels = label_chains(asset.skeleton, asset.mesh)
    new = [make_motion(m, asset, labels) for m in motions]
    if motion_from:
        path, sep, clip = str(motion_from).rpartition(":")
        if not sep or not path or not clip:
            raise Mesh3DError(f"--motion-from takes FILE:CLIP, got {motion_from!r}")
        new.append(retarget(load(path), clip, asset, dst_labels=labels))
    names = {a.name for a in new}
    asset = replace(asset, animations=[a for a in asset.animations if a.name not in names] + new)
    if mixamo_names:
        asset = rename_mixamo(asset)
    if report is not None:
        report.motions = [a.name for a in new]
        report.notes["rig_kind"] = labels.kind
    return asset


def rig(
    src: str | Path,
    dst: str | Path,
    skeleton: str = "auto",
    skin: str = "auto",
    motions=(),
    up_axis: str | None = None,
    progress: Optional[Progress] = None,
    max_faces: Optional[int] = None,
) -> Report:
    """Rig ``src`` (any supported mesh) and write ``dst``: skeleton, skin weights, optional motions.

    skeleton: ``auto`` | ``geometric`` | ``learned`` | path to a skeleton JSON file
    (``{"joints": [[x, y, z], ...], "parents": [-1, 0, ...], "names": [...]}`` in the mesh's
    coordinates, used as is). skin: ``auto`` | ``geometric`` | ``learned``. motions: names from
    ``mesh3d motions``. The output keeps the input's coordinates and units. max_faces: refuse
    larger meshes before any analysis (servers set it; the analysis itself decimates big meshes).
    """
    report = Report(str(src), str(dst))
    stages = _Stages(report, progress, ["load", "skeleton", "skin", "animate", "export"])
    asset = stages.run("load", load, src, up_axis=up_axis)
    faces = len(asset.mesh.faces)
    if max_faces is not None and faces > max_faces:
        raise Mesh3DError(f"{src}: {faces:,} faces is over the limit of {max_faces:,}; decimate the mesh first")
    report.warnings += asset.warnings
    asset = rig_asset(asset, skeleton, skin, report, stages)
    if motions:
        asset = stages.run("animate", add_motions, asset, list(motions), None, report)
    report.warnings += stages.run("export", save, asset, dst)
    _count(report, asset)
    return report


def rig_asset(asset: Asset, skeleton: str = "auto", skin: str = "auto", report: Optional[Report] = None, stages: Optional["_Stages"] = None) -> Asset:
    """``asset`` with a new skeleton and skin weights (any rig it had is replaced, clips dropped)."""
    from dataclasses import replace

    from rigging.skeleton.auto import make_skeleton
    from rigging.skinning.auto import make_skin

    report = report if report is not None else Report("", "")
    run = stages.run if stages else (lambda _name, fn, *a, **k: fn(*a, **k))
    if skin not in SKIN_METHODS:
        raise Mesh3DError(f"unknown skin method {skin!r}; use one of {', '.join(SKIN_METHODS)}")
    sk, report.skeleton_method, note = run("skeleton", make_skeleton, asset.mesh, skeleton)
    if note:
        report.warnings.append(note)
    weights, report.skin_method, note = run("skin", make_skin, asset.mesh, sk, skin)
    if note:
        report.warnings.append(note)
    return replace(asset, skeleton=sk, skin=weights, animations=[])


def _count(report: Report, asset: Asset) -> None:
    report.vertices, report.faces = len(asset.mesh.vertices), len(asset.mesh.faces)
    report.joints = len(asset.skeleton) if asset.skeleton is not None else 0


def demo(out: str | Path = "out/demo.glb", seed: int = 0, progress: Optional[Progress] = None) -> Report:
    """The built-in example: a procedural creature's bare mesh, rigged and animated (walk, idle)."""
    from dataclasses import replace

    from data_prep.procedural import make_creature

    report = Report("procedural quadruped", str(out))
    stages = _Stages(report, progress, ["load", "skeleton", "skin", "animate", "export"])
    creature = stages.run("load", make_creature, "quadruped", seed)
    asset = replace(creature, skeleton=None, skin=None, animations=[])
    asset = rig_asset(asset, "auto", "auto", report, stages)
    asset = stages.run("animate", add_motions, asset, ["walk", "idle"], None, report)
    report.warnings += stages.run("export", save, asset, out)
    _count(report, asset)
    return report


def generate_shape(
    dst: str | Path,
    category: str,
    seed: int = 0,
    rig: bool = False,
    remesh: bool = False,
    motions=(),
    temperature: float = 1.0,
    remesh_faces: int = 500,
    weights: str | Path | None = None,
    progress: Optional[Progress] = None,
) -> Report:
    """Sample a new shape of ``category`` (``mesh3d generate --list-categories``) and write ``dst``.

    The mesh lies in the normalised cube (longest side 1, centred, Y up). The same category, seed
    and weights give the same shape. rig: add a skeleton and skin (``rig_asset``, auto methods)
    and the named ``motions``. remesh: turn it into a compact mesh of at most ``remesh_faces``
    faces first (``mesh3d remesh --method auto``; the report notes which method it used).
    """
    from mesh3d.shape.model import DEFAULT_WEIGHTS, generate_mesh, load_shape_model

    if motions and not rig:
        raise Mesh3DError("motions need a rig: add --rig")
    report = Report(f"generate {category} seed {seed}", str(dst))
    stages = _Stages(report, progress, ["load", "generate", "remesh", "skeleton", "skin", "animate", "export"])
    model = stages.run("load", load_shape_model, weights or DEFAULT_WEIGHTS)
    mesh = stages.run("generate", generate_mesh, model, category, seed, temperature)
    if remesh:
        from mesh3d.remesh import remesh as remesh_mesh

        mesh, remeshed = stages.run("remesh", remesh_mesh, mesh, remesh_faces, "auto", seed=seed)
        report.notes["remesh"] = f"{remeshed.method}: {remeshed.reason}"
        report.warnings += remeshed.warnings
    asset = Asset(mesh, name=f"{category}_{seed}")
    if rig:
        asset = rig_asset(asset, "auto", "auto", report, stages)
        if motions:
            asset = stages.run("animate", add_motions, asset, list(motions), None, report)
    report.warnings += stages.run("export", save, asset, dst)
    _count(report, asset)
    return report


def shape_categories(weights: str | Path | None = None) -> list[str]:
    """The category names the shape generator knows (from its weights' metadata)."""
    from mesh3d.shape.model import DEFAULT_WEIGHTS, model_categories

    return model_categories(weights or DEFAULT_WEIGHTS)
