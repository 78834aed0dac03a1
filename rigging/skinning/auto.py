"""Which skin weights a mesh gets: the methods users pick from, and the rule of ``auto``.

``auto`` is the geometric weights (rigging/skinning/geometric.py): on the dev rigs they are closer
to the artists' than the learned model's (rigging/weights/SKIN_MODEL_CARD.md).
"""

from __future__ import annotations

from mesh3d.asset import Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError

METHODS = ("auto", "geometric", "learned")


def make_skin(mesh: Mesh, skeleton: Skeleton, method: str = "auto") -> tuple[Skin, str, str]:
    """Skin weights for ``mesh`` on ``skeleton`` by ``method``: auto | geometric | learned.

    Returns (skin, the method that made it: geometric | learned, a note for the user: the problems
    `rigging.skinning.learned.skin_problems` found in learned weights, else "").
    """
    if method in ("auto", "geometric"):
        from rigging.skinning.geometric import geometric_skin

        return geometric_skin(mesh, skeleton), "geometric", ""
    if method == "learned":
        from rigging.skinning.learned import learned_skin, skin_problems

        weights = learned_skin(mesh, skeleton)
        problems = skin_problems(weights, skeleton)
        return weights, "learned", ("learned skin: " + "; ".join(problems)) if problems else ""
    raise Mesh3DError(f"unknown skin method {method!r}; use one of {', '.join(METHODS)}")
