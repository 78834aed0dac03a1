"""Motion quality: jitter, foot sliding and bone-length drift, and the table behind the issue's claims.

Run ``python -m rigging.animate.quality`` for the table: our motions on the shared rigs' own
skeletons next to the same rigs' artist clips, retargeted clips (a quadruped walk onto another
quadruped, a humanoid run onto another humanoid), and, when those modules are present, our motions
on geometric skeletons of the same meshes (rigging.skeleton.geometric) and on procedural creatures
(data_prep.procedural).

Definitions (all from joint world positions of the non-helper joints, by forward kinematics):

* jitter: mean norm of the second difference of joint positions, per second squared, in body
  sizes (``Labels.size``): ``mean |p[t+1] - 2 p[t] + p[t-1]| * fps^2 / size``.
* slide: for each foot (:func:`rigging.animate.chains.foot_point`) in contact, i.e. within 5 % of the leg's length
  (:func:`rigging.animate.chains.leg_length`) of the lowest
  height it reaches in the clip at both ends of a frame step, its horizontal displacement over the
  step minus the clip's ground motion, in leg lengths per frame (at 30 fps). The ground motion
  is the median step of all contact feet: zero when the creature moves over still ground, the
  treadmill speed for in-place loops (what game clips are), so a planted foot scores 0 either way.
* drift: the largest relative change of any bone's length over the clip (0 for rigid motion).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mesh3d.asset import Animation, Skeleton
from rigging.animate.chains import Labels, foot_point, label_chains, leg_length
from rigging.animate.kinematics import world_pose

CONTACT_HEIGHT = 0.05  # of leg length above the foot's lowest point
SLIDE_LIMIT = 0.02  # leg lengths per frame


@dataclass
class Metrics:
    jitter: float
    slide: Optional[float]  # None without legs or contacts
    drift: float


def clip_metrics(skeleton: Skeleton, animation: Animation, labels: Labels) -> Metrics:
    """Jitter, slide and drift of one clip (see the module docstring)."""
    rot, p = world_pose(skeleton, animation)
    body = np.flatnonzero(labels.parents >= -1)
    fps = animation.fps
    if len(p) >= 3:
        acc = p[2:, body] - 2 * p[1:-1, body] + p[:-2, body]
        jitter = float(np.linalg.norm(acc, axis=-1).mean()) * fps**2 / labels.size
    else:
        jitter = 0.0
    steps, legs = [], []
    up = labels.up
    for c in labels.get("leg"):
        tip, offset = foot_point(skeleton, labels, c)
        foot = p[:, tip] + rot[:, tip] @ offset
        length = leg_length(skeleton, labels, c) or labels.size
        h = foot @ up
        contact = h - h.min() < CONTACT_HEIGHT * length
        both = contact[1:] & contact[:-1]
        d = np.diff(foot, axis=0)
        d = d - (d @ up)[:, None] * up
        steps.append(d[both] / length)
        legs.append(length)
    slide = None
    all_steps = np.concatenate(steps) if steps else np.zeros((0, 3))
    if len(all_steps):
        ground = np.median(all_steps, axis=0)
        slide = float(np.linalg.norm(all_steps - ground, axis=1).mean()) * fps / 30.0
    parents = skeleton.parents
    bones = [j for j in body if parents[j] >= 0 and labels.parents[parents[j]] >= -1]
    drift = 0.0
    if bones:
        rest = np.linalg.norm(skeleton.joints[bones] - skeleton.joints[parents[bones]], axis=1)
        now = np.linalg.norm(p[:, bones] - p[:, parents[bones]], axis=-1)
        ok = rest > 1e-6 * labels.size
        drift = float((np.abs(now[:, ok] - rest[ok]) / rest[ok]).max()) if ok.any() else 0.0
    return Metrics(jitter, slide, drift)


# The artist clip each motion is compared with (suffix after "Armature|", lower case), best first.
REFERENCE = {
    "walk": ("walk",), "run": ("run", "gallop"), "idle": ("idle",), "jump": ("jump", "jump_toidle"),
    "attack": ("attack", "punch", "attack_headbutt"), "wave": ("wave", "hello"), "swim": ("swimming_normal", "swim"),
    "look_around": ("idle_2", "idle"), "fly": ("flying",),
}
OWN_RIGS = (
    "animals_pack/Wolf.glb",
    "animals_pack/Deer.glb",
    "ultimate_space_pack/Astronaut_RaeTheRedPanda-transformed.glb",
    "mech_pack/Stan.glb",
    "modular_men/Casual.glb",
    "cute_fish_pack/Koi.glb",
    "fish_pack/Whale.glb",
)
RETARGETS = (
    ("animals_pack/Bull.glb", "Walk", "animals_pack/Wolf.glb"),
    ("animals_pack/Husky.glb", "Walk", "animals_pack/Deer.glb"),
    ("ultimate_space_pack/Astronaut_BarbaraTheBee-transformed.glb", "Run", "mech_pack/Mike.glb"),
    ("mech_pack/Stan.glb", "Run", "ultimate_space_pack/Astronaut_RaeTheRedPanda-transformed.glb"),
)
DRIFT_LIMIT = 1e-6


def motions_for(labels: Labels) -> list[str]:
    """The library motions that suit a rig's kind (legged bodies walk, legless ones swim...)."""
    from rigging.animate.motions import MOTIONS

    legged = bool(labels.get("leg"))
    skip = {"swim", "slither"} if legged else {"walk", "run"}
    if labels.kind != "snake":
        skip.add("slither")
    return [m for m in MOTIONS if m not in skip and MOTIONS[m].needs(labels) is None]


def _reference(asset, labels: Labels, motion: str) -> tuple[Optional[Metrics], str]:
    """Metrics and name of the rig's artist clip of the same motion; (None, "-") when it has none
    (comparing, say, a whale's attack with its only clip, a slow swim, would mean nothing)."""
    clips = {a.name.split("|")[-1].lower(): a for a in asset.animations}
    for key in REFERENCE.get(motion, ()):
        if key in clips:
            return clip_metrics(asset.skeleton, clips[key], labels), clips[key].name.split("|")[-1]
    return None, "-"


def _row(rig: str, kind: str, motion: str, m: Metrics, ref: Optional[Metrics], ref_name: str) -> dict:
    ok = (ref is None or m.jitter <= ref.jitter) and (m.slide is None or m.slide <= SLIDE_LIMIT) and m.drift <= DRIFT_LIMIT
    return dict(rig=rig, kind=kind, motion=motion, m=m, ref=ref, ref_name=ref_name, ok=ok)


def quality_table(own: tuple[str, ...] = OWN_RIGS, retargets=RETARGETS, procedural: bool = True) -> list[dict]:
    """Rows of the quality table (see :func:`main`)."""
    from data_prep.corpus import corpus_dir
    from mesh3d.io import load
    from rigging.animate.motions import make_motion
    from rigging.animate.retarget import find_clip, retarget

    root = corpus_dir()
    if root is None:
        raise SystemExit("shared corpus not found: set MESH3D_DATA to the folder holding manifest.json")
    rows, cache = [], {}

    def get(file):
        if file not in cache:
            asset = load(root / file)
            cache[file] = (asset, label_chains(asset.skeleton, asset.mesh))
        return cache[file]

    for file in own:
        asset, labels = get(file)
        for motion in motions_for(labels):
            ref, ref_name = _reference(asset, labels, motion)
            m = clip_metrics(asset.skeleton, make_motion(motion, asset, labels), labels)
            rows.append(_row(Path(file).stem, labels.kind, motion, m, ref, ref_name))
    for src, clip, dst in retargets:
        s_asset, s_labels = get(src)
        t_asset, t_labels = get(dst)
        source = find_clip(s_asset, clip)
        # Jitter to keep: the source clip's, or the target rig's own clip of that motion when its
        # proportions make it livelier (jitter is in body sizes: long limbs swing faster). Slide
        # is judged against the absolute SLIDE_LIMIT, whatever the source's feet do.
        ref, ref_name = clip_metrics(s_asset.skeleton, source, s_labels), "source clip"
        own_ref, own_name = _reference(t_asset, t_labels, clip.lower())
        if own_ref is not None and own_ref.jitter > ref.jitter:
            ref, ref_name = Metrics(own_ref.jitter, ref.slide, ref.drift), f"target's {own_name}"
        anim = retarget(s_asset, source, t_asset, src_labels=s_labels, dst_labels=t_labels)
        m = clip_metrics(t_asset.skeleton, anim, t_labels)
        rows.append(_row(Path(dst).stem, t_labels.kind, f"{clip} from {Path(src).stem}", m, ref, ref_name))
    if procedural:
        rows += _geometric_rows(get, own) + _procedural_rows()
    return rows


def _geometric_rows(get, files) -> list[dict]:
    """Our motions on geometric skeletons of the shared rigs' meshes (rigging.skeleton.geometric,
    when that module exists), judged against the same assets' artist clips."""
    import importlib.util

    if importlib.util.find_spec("rigging.skeleton") is None or importlib.util.find_spec("rigging.skeleton.geometric") is None:
        return []
    from rigging.animate.motions import make_motion
    from rigging.skeleton.geometric import geometric_skeleton

    rows = []
    for file in files:
        asset, artist_labels = get(file)
        skeleton = geometric_skeleton(asset.mesh)
        labels = label_chains(skeleton, asset.mesh)
        for motion in motions_for(labels):
            ref, ref_name = _reference(asset, artist_labels, motion)
            m = clip_metrics(skeleton, make_motion(motion, skeleton, labels), labels)
            rows.append(_row(f"geometric {Path(file).stem}", labels.kind, motion, m, ref, ref_name))
    return rows


def _procedural_rows() -> list[dict]:
    """Our motions on the procedural creatures (data_prep.procedural), when that module exists."""
    import importlib.util

    if importlib.util.find_spec("data_prep.procedural") is None:
        return []
    from data_prep.procedural import CREATURE_KINDS, make_creature
    from rigging.animate.motions import make_motion

    rows = []
    for kind in CREATURE_KINDS:
        asset = make_creature(kind, 0)
        labels = label_chains(asset.skeleton, asset.mesh)
        for motion in motions_for(labels):
            m = clip_metrics(asset.skeleton, make_motion(motion, asset, labels), labels)
            rows.append(_row(f"procedural {kind}", labels.kind, motion, m, None, "-"))
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'rig':36s} {'kind':9s} {'motion':28s} {'jitter':>7s} {'ref':>7s} {'(ref clip)':16s} "
            f"{'slide%':>6s} {'ref':>6s} {'drift':>8s}  ok")
    lines = [head, "-" * len(head)]
    num = lambda x, w, f: f"{x:{w}{f}}" if x is not None else f"{'-':>{w}s}"  # noqa: E731
    for r in rows:
        m, ref = r["m"], r["ref"]
        lines.append(
            f"{r['rig'][:36]:36s} {r['kind']:9s} {r['motion'][:28]:28s} {m.jitter:7.3f} {num(ref and ref.jitter, 7, '.3f')} "
            f"{r['ref_name'][:16]:16s} {num(m.slide and 100 * m.slide, 6, '.2f')} {num(ref and ref.slide and 100 * ref.slide, 6, '.2f')} "
            f"{m.drift:8.1e}  {'yes' if r['ok'] else 'NO'}"
        )
    n_ok = sum(r["ok"] for r in rows)
    lines.append(
        f"{n_ok}/{len(rows)} rows pass: jitter <= the ref clip's (the rig's artist clip of that motion; when retargeting the "
        f"source clip or the target's own, the larger), slide <= {100 * SLIDE_LIMIT:.0f}% of leg length per frame (retargets "
        f"too, whatever the source's), drift <= {DRIFT_LIMIT:g}. ref slide: the ref clip's, for comparison."
    )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigging.animate.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-procedural", action="store_true", help="skip geometric rigs and procedural creatures")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    rows = quality_table(procedural=not args.no_procedural)
    print(format_table(rows))
    print(f"({time.perf_counter() - t:.0f} s)")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
