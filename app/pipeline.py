"""The chain of steps behind every front end (CLI, batch, web app).

Each function takes paths and options, runs load -> (steps) -> save, and returns what a report
needs. Front ends add no logic of their own.
"""

from __future__ import annotations

from pathlib import Path

from mesh3d.io import load, save


def convert(src: str | Path, dst: str | Path, up_axis: str | None = None) -> list[str]:
    """Convert ``src`` to ``dst`` (formats from the extensions); returns warnings."""
    asset = load(src, up_axis=up_axis)
    return asset.warnings + save(asset, dst)


def demo(out: str | Path = "out/demo.glb", seed: int = 0) -> Path:
    """The built-in example: a procedurally generated creature with its skeleton and skin."""
    from data_prep.procedural import make_creature

    asset = make_creature("quadruped", seed)
    save(asset, out)
    return Path(out)
