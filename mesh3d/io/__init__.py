"""Load and save assets: one entry point per direction, dispatching on the file extension.

``load(path) -> Asset`` and ``save(asset, path)``. Inputs are only read, never modified; outputs
are written atomically. Every problem a user can cause is raised as :class:`Mesh3DError` naming the
file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

from mesh3d.asset import Asset
from mesh3d.errors import Mesh3DError
from mesh3d.io.gltf_read import read_gltf
from mesh3d.io.gltf_write import write_glb
from mesh3d.io.meshfiles import MESH_FORMATS, read_mesh_file, write_mesh_file

GLTF_FORMATS = (".glb", ".gltf")
FBX_FORMATS = (".fbx",)
LOAD_FORMATS = GLTF_FORMATS + MESH_FORMATS + FBX_FORMATS
SAVE_FORMATS = (".glb",) + MESH_FORMATS + FBX_FORMATS


def load(path: str | os.PathLike, up_axis: str | None = None) -> Asset:
    """Read a mesh or rigged asset from ``path``.

    up_axis: the file's up axis for formats without a convention (OBJ, PLY, STL, OFF; default
    ``"Y"``). glTF is Y-up by definition; FBX axes are handled by Blender.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in LOAD_FORMATS:
        raise Mesh3DError(f"{path}: unsupported file type {ext or '(none)'}; mesh3d reads {', '.join(LOAD_FORMATS)}")
    if not path.exists():
        raise Mesh3DError(f"{path}: file not found")
    if not path.is_file():
        raise Mesh3DError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise Mesh3DError(f"{path}: file is empty")
    try:
        if ext in GLTF_FORMATS:
            if up_axis not in (None, "Y"):
                raise Mesh3DError(f"{path}: glTF is always Y-up; --up does not apply")
            return read_gltf(path)
        if ext in FBX_FORMATS:
            from mesh3d.io.blender import read_fbx

            return read_fbx(path)
        return read_mesh_file(path, up_axis or "Y")
    except Mesh3DError as e:
        msg = str(e)
        if msg.startswith(f"{path.name}:"):
            msg = f"{path}{msg[len(path.name):]}"
        raise Mesh3DError(msg if str(path) in msg else f"{path}: {msg}") from None
    except MemoryError:
        raise Mesh3DError(f"{path}: not enough memory to load this file") from None


def save(asset: Asset, path: str | os.PathLike) -> list[str]:
    """Write ``asset`` to ``path`` (format from the extension); returns warnings about dropped data."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SAVE_FORMATS:
        raise Mesh3DError(f"{path}: cannot write {ext or '(no extension)'}; mesh3d writes {', '.join(SAVE_FORMATS)}")
    warnings = []
    if ext == ".glb":
        write_glb(asset, path)
    elif ext in FBX_FORMATS:
        from mesh3d.io.blender import write_fbx

        write_fbx(asset, path)
    else:
        if asset.skeleton is not None:
            warnings.append(f"{ext.lstrip('.').upper()} cannot hold a rig: skeleton, skin and animations were not written")
        write_mesh_file(asset, path)
    return warnings
