"""Locate the shared Quaternius corpus and read its manifest.

The corpus is never copied into the project. It is found through the ``MESH3D_DATA`` environment
variable (a folder holding ``manifest.json``), else at ``../shared/data/quaternius`` beside the
repository root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mesh3d.errors import Mesh3DError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Record:
    """One manifest entry. ``path`` is absolute; the other fields are as in the manifest."""

    path: Path
    file: str
    kind: str  # "rig" or "static"
    split: str  # "train" or "dev"
    pack: str
    triangles: int
    joints: int
    animations: tuple[str, ...]
    draco: bool


def corpus_dir() -> Optional[Path]:
    """The corpus folder, or None when it cannot be found."""
    env = os.environ.get("MESH3D_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "quaternius")
    for c in candidates:
        if (c / "manifest.json").is_file():
            return c
    return None


def records(kind: Optional[str] = None, split: Optional[str] = None) -> list[Record]:
    """Manifest records, optionally filtered by kind (``rig``/``static``) and split (``train``/``dev``)."""
    root = corpus_dir()
    if root is None:
        raise Mesh3DError("shared corpus not found: set MESH3D_DATA to the folder holding manifest.json")
    out = []
    for r in json.loads((root / "manifest.json").read_text()):
        if (kind and r["kind"] != kind) or (split and r["split"] != split):
            continue
        out.append(
            Record(
                path=root / r["file"],
                file=r["file"],
                kind=r["kind"],
                split=r["split"],
                pack=r["pack"],
                triangles=int(r["triangles"]),
                joints=int(r.get("joints", 0)),
                animations=tuple(r.get("animations", ())),
                draco=bool(r.get("draco", False)),
            )
        )
    return out
