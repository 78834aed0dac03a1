"""Plain mesh formats (OBJ, PLY, STL, OFF) through trimesh.

These formats carry no axis convention, so the caller says which axis is up; the mesh is turned to
our Y-up frame on load and back to the source frame on save.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mesh3d.asset import Asset, Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.io.atomic import write_bytes_atomic

MESH_FORMATS = (".obj", ".ply", ".stl", ".off")

# Rotations taking each source up axis to +Y (right-handed, proper rotations).
_TO_Y_UP = {
    "Y": np.eye(3),
    "Z": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
    "-Z": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
    "-Y": np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]]),
    "X": np.array([[0, 1.0, 0], [-1, 0, 0], [0, 0, 1]]),
    "-X": np.array([[0, -1.0, 0], [1, 0, 0], [0, 0, 1]]),
}


def to_y_up(up_axis: str) -> np.ndarray:
    """(3, 3) rotation from a frame whose up is ``up_axis`` to our Y-up frame."""
    return _TO_Y_UP[up_axis]


def read_mesh_file(path: Path, up_axis: str = "Y") -> Asset:
    """Load an OBJ/PLY/STL/OFF file (all objects merged, each a part) as a Y-up Asset."""
    import trimesh

    try:
        loaded = trimesh.load(path, process=False, maintain_order=True)
    except Exception as e:  # trimesh raises many types for corrupt files; all mean "cannot read"
        raise Mesh3DError(f"{path.name}: cannot read {path.suffix.lstrip('.').upper()} file ({type(e).__name__}: {e})") from None
    geoms = []
    if isinstance(loaded, trimesh.Scene):
        for node in loaded.graph.nodes_geometry:
            transform, gname = loaded.graph[node]
            geoms.append((loaded.geometry[gname], transform))
    else:
        geoms.append((loaded, np.eye(4)))
    verts, faces, parts, colors, normals = [], [], [], [], []
    offset = 0
    any_color = False
    points_only = False
    for part, (g, transform) in enumerate(geoms):
        v = np.asarray(g.vertices, np.float64) @ transform[:3, :3].T + transform[:3, 3]
        f = np.asarray(getattr(g, "faces", np.zeros((0, 3))), np.int64).reshape(-1, 3)
        points_only |= not len(f)
        verts.append(v)
        faces.append(f + offset)
        parts.append(np.full(len(f), part, np.int32))
        c = _vertex_colors(g, len(v))
        any_color |= c is not None
        colors.append(c if c is not None else np.ones((len(v), 4)))
        offset += len(v)
    if not offset:
        raise Mesh3DError(f"{path.name}: the file contains no vertices")
    v = np.concatenate(verts)
    if not np.isfinite(v).all():
        raise Mesh3DError(f"{path.name}: vertex coordinates contain NaN or infinity")
    f = np.concatenate(faces)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise Mesh3DError(f"{path.name}: face indices refer to vertices outside 0..{len(v) - 1}")
    if not len(f):
        raise Mesh3DError(f"{path.name}: the file has vertices but no faces (a point cloud); mesh3d needs a surface")
    rot = to_y_up(up_axis)
    mesh = Mesh(v @ rot.T, f, colors=np.concatenate(colors) if any_color else None, part_ids=np.concatenate(parts))
    return Asset(mesh, up_axis=up_axis, name=path.stem)


def _vertex_colors(g, n: int):
    visual = getattr(g, "visual", None)
    if visual is None:
        return None
    try:
        if visual.kind == "vertex":
            c = np.asarray(visual.vertex_colors, np.float64)[:, :4] / 255.0
        elif visual.kind == "texture" and getattr(visual, "material", None) is not None:
            c = np.asarray(visual.to_color().vertex_colors, np.float64)[:, :4] / 255.0
        else:
            return None
    except Exception:  # a material without colours: no colours, not an error
        return None
    return c if c.shape == (n, 4) else None


def write_mesh_file(asset: Asset, path: Path) -> None:
    """Write the bind-pose mesh to OBJ/PLY/STL/OFF in the source's own up axis, atomically."""
    import trimesh

    m = asset.mesh
    rot = to_y_up(asset.up_axis)
    kwargs = {}
    if m.colors is not None:
        kwargs["vertex_colors"] = (np.clip(m.colors, 0, 1) * 255).round().astype(np.uint8)
    tm = trimesh.Trimesh(m.vertices @ rot, m.faces, process=False, **kwargs)  # rot.T.T: back to source frame
    ext = path.suffix.lower().lstrip(".")
    data = tm.export(file_type=ext)
    write_bytes_atomic(path, data.encode() if isinstance(data, str) else data)
