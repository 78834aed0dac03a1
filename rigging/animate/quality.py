"""Motion quality: jitter, foot sliding and bone-length drift, and the table behind the issue's claims.

Run ``python -m rigging.animate.quality`` for the table: our motions on the shared rigs' own
skeletons next to the same rigs' artist clips, and retargeted clips (a quadruped walk onto another
quadruped, a humanoid run onto another humanoid).

Definitions (all from joint world positions of the non-helper joints, by forward kinematics):

* jitter: mean norm of the second difference of joint positions, per second squared, in body
  sizes (``Labels.size``): ``mean |p[t+1] - 2 p[t] + p[t-1]| * fps^2 / size``.
* slide: for each foot (a leg's tip) in contact, i.e. within 5 % of the leg's length of the lowest
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
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mesh3d.asset import Animation, Skeleton
from rigging.animate.chains import Labels, chain_length, label_chains
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
    _, p = world_pose(skeleton, animation)
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
        tip = c.joints[-1]
        length = chain_length(skeleton.joints, c.joints) or labels.size
        h = p[:, tip] @ up
        contact = h - h.min() < CONTACT_HEIGHT * length
        both = contact[1:] & contact[:-1]
        d = np.diff(p[:, tip], axis=0)
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
