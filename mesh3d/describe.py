"""A summary of an asset for people and reports (``mesh3d info``)."""

from __future__ import annotations

import numpy as np

from mesh3d.asset import Asset


def describe(asset: Asset) -> dict:
    """JSON-ready facts about ``asset``: counts, bounds (metres, Y-up), parts, watertightness,
    skeleton and animation summaries."""
    import trimesh

    m = asset.mesh
    merged = trimesh.Trimesh(m.vertices, m.faces, process=True, validate=False) if len(m.faces) else None
    out = {
        "name": asset.name,
        "vertices": int(len(m.vertices)),
        "faces": int(len(m.faces)),
        "bounds": m.bounds.round(6).tolist(),
        "size": (m.bounds[1] - m.bounds[0]).round(6).tolist(),
        "parts": int(len(np.unique(m.part_ids))) if m.part_ids is not None else 1,
        "components": int(len(merged.split(only_watertight=False))) if merged is not None else 0,
        "watertight": bool(merged.is_watertight) if merged is not None else False,
        "has_normals": m.normals is not None,
        "has_colors": m.colors is not None,
        "has_uvs": m.uvs is not None,
        "source_up_axis": asset.up_axis,
        "skeleton": None,
        "animations": [],
        "warnings": list(asset.warnings),
    }
    sk = asset.skeleton
    if sk is not None:
        out["skeleton"] = {
            "joints": len(sk),
            "helper_joints": int(sk.helper.sum()),
            "roots": [sk.names[j] for j in np.flatnonzero(sk.parents < 0)],
            "depth": int(sk.depths().max()) + 1,
            "max_influences": int(asset.skin.indices.shape[1]) if asset.skin is not None else 0,
        }
    for a in asset.animations:
        out["animations"].append({"name": a.name, "frames": a.num_frames, "fps": a.fps, "seconds": round(a.duration, 4)})
    return out


def format_description(info: dict) -> str:
    """Human-readable lines of :func:`describe`'s result."""
    size = " x ".join(f"{s:.4g}" for s in info["size"])
    lines = [
        f"{info['name']}: {info['vertices']} vertices, {info['faces']} faces, {info['parts']} parts, "
        f"{info['components']} components, {'watertight' if info['watertight'] else 'not watertight'}",
        f"  size {size} (Y-up; source up axis {info['source_up_axis']}), bounds {info['bounds']}",
    ]
    sk = info["skeleton"]
    if sk:
        lines.append(
            f"  skeleton: {sk['joints']} joints ({sk['helper_joints']} helpers), depth {sk['depth']}, "
            f"roots {', '.join(sk['roots'])}, up to {sk['max_influences']} influences per vertex"
        )
    else:
        lines.append("  skeleton: none")
    if info["animations"]:
        lines.append(f"  animations ({len(info['animations'])}):")
        lines += [f"    {a['name']}: {a['frames']} frames at {a['fps']:g} fps ({a['seconds']:.2f} s)" for a in info["animations"]]
    else:
        lines.append("  animations: none")
    lines += [f"  warning: {w}" for w in info["warnings"]]
    return "\n".join(lines)
