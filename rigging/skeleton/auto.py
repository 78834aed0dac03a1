"""Which skeleton a mesh gets: the methods users pick from, and the rule of ``auto``.

``auto`` takes the learned skeleton (closer to where artists put joints: rigging/weights/
SKELETON_MODEL_CARD.md) when it passes its checks (`rigging.skeleton.learned.skeleton_problems`:
joint count, joints inside or near the surface, bones reaching every part that the geometric
skeleton reaches), else the geometric one, and says why.
"""

from __future__ import annotations

from mesh3d.asset import Mesh, Skeleton
from mesh3d.errors import Mesh3DError

METHODS = ("auto", "geometric", "learned")  # or a skeleton JSON file


def make_skeleton(mesh: Mesh, method: str = "auto") -> tuple[Skeleton, str, str]:
    """A skeleton for ``mesh`` (in its frame) by ``method``: auto | geometric | learned | PATH.json.

    Returns (skeleton, the method that made it: geometric | learned | file, a note for the user:
    why auto fell back to geometric, else "").
    """
    from rigging.skeleton.geometric import geometric_skeleton

    if method == "geometric":
        return geometric_skeleton(mesh), "geometric", ""
    if method == "learned":
        from rigging.skeleton.learned import learned_skeleton

        return learned_skeleton(mesh), "learned", ""
    if method == "auto":
        from rigging.skeleton.learned import learned_skeleton

        geometric = geometric_skeleton(mesh)
        if not len(mesh.faces):
            return geometric, "geometric", "auto skeleton: used the geometric skeleton because the learned model needs a surface (the input has no faces)"
        try:
            return learned_skeleton(mesh, reference=geometric), "learned", ""
        except Mesh3DError as e:
            return geometric, "geometric", f"auto skeleton: used the geometric skeleton because {e}"
    if method.lower().endswith(".json"):
        from rigging.skeleton.file import read_skeleton_json

        return read_skeleton_json(method), "file", ""
    raise Mesh3DError(f"unknown skeleton method {method!r}; use auto, geometric, learned or a .json skeleton file")
