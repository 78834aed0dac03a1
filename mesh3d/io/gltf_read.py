"""Read glTF 2.0 (GLB and .gltf) into an :class:`~mesh3d.asset.Asset`.

What the reader does, and why:

* Every size in the file is checked against the bytes really present before anything is allocated,
  so a truncated or hostile file fails with a clear error instead of a huge allocation.
* All mesh primitives of the scene are merged into one :class:`Mesh`; each primitive becomes a part.
  Unskinned meshes are placed by their node's world transform; skinned meshes use their raw
  vertices, which are in bind space (the skinned node's own transform is ignored, as the spec says).
* The bind pose comes from the inverse bind matrices, never from the default node pose (which in
  most artist rigs is some frame of an animation).
* Joints that no vertex depends on are kept and flagged as helpers. NaN or unnormalised weights are
  repaired with a warning.
* Animations are resampled at their own key rate and converted to the world-aligned bind-frame
  convention of :mod:`mesh3d.asset` (so posing with our FK + LBS reproduces the file's deformation).
* Material base colours (times ``COLOR_0``) become vertex colours so the look survives export.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mesh3d.asset import Animation, Asset, Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.transforms import (
    matrix_to_trs,
    quat_normalize,
    quat_slerp,
    trs_to_matrix,
)

COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
TYPE_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
GLB_MAGIC = b"glTF"
DRACO = "KHR_draco_mesh_compression"
MAX_JSON_BYTES = 64 * 1024 * 1024


class GltfError(Mesh3DError):
    pass


@dataclass
class _Doc:
    gltf: dict
    buffers: list[bytes]
    path: Path


# ---------------------------------------------------------------------------------------------
# Container parsing


def _parse_glb(data: bytes, path: Path) -> _Doc:
    if len(data) < 20:
        raise GltfError(f"{path.name}: file is truncated ({len(data)} bytes, a GLB needs at least 20)")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != GLB_MAGIC:
        raise GltfError(f"{path.name}: not a GLB file (bad magic bytes)")
    if version != 2:
        raise GltfError(f"{path.name}: GLB version {version} is not supported (only glTF 2.0)")
    if length > len(data):
        raise GltfError(f"{path.name}: file is truncated (header says {length} bytes, file has {len(data)})")
    offset, chunks = 12, []
    while offset + 8 <= length:
        clen, ctype = struct.unpack_from("<I4s", data, offset)
        if offset + 8 + clen > length:
            raise GltfError(f"{path.name}: file is truncated (a chunk claims {clen} bytes past the end)")
        chunks.append((ctype, data[offset + 8 : offset + 8 + clen]))
        offset += 8 + ((clen + 3) & ~3)
    if not chunks or chunks[0][0] != b"JSON":
        raise GltfError(f"{path.name}: GLB has no JSON chunk")
    gltf = _parse_json(chunks[0][1], path)
    bin_chunk = next((c for t, c in chunks[1:] if t == b"BIN\x00"), None)
    buffers = []
    for i, buf in enumerate(gltf.get("buffers", [])):
        if i == 0 and "uri" not in buf:
            if bin_chunk is None:
                raise GltfError(f"{path.name}: GLB refers to a binary chunk it does not have")
            buffers.append(bin_chunk)
        else:
            buffers.append(_load_uri(buf, path))
    return _Doc(gltf, buffers, path)


def _parse_json(raw: bytes, path: Path) -> dict:
    if len(raw) > MAX_JSON_BYTES:
        raise GltfError(f"{path.name}: glTF JSON is larger than {MAX_JSON_BYTES >> 20} MB")
    try:
        gltf = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GltfError(f"{path.name}: glTF JSON is corrupt ({e})") from None
    if not isinstance(gltf, dict) or not str(gltf.get("asset", {}).get("version", "")).startswith("2"):
        raise GltfError(f"{path.name}: not a glTF 2.0 document")
    return gltf


def _load_uri(buf: dict, path: Path) -> bytes:
    uri = buf.get("uri")
    if uri is None:
        raise GltfError(f"{path.name}: a buffer has no data")
    if uri.startswith("data:"):
        try:
            return base64.b64decode(uri.split(",", 1)[1], validate=False)
        except (IndexError, ValueError):
            raise GltfError(f"{path.name}: a data: URI buffer is corrupt") from None
    from urllib.parse import unquote

    target = (path.parent / unquote(uri)).resolve()
    # External buffers must sit beside the file: a crafted URI must not read arbitrary files.
    if path.parent.resolve() not in target.parents:
        raise GltfError(f"{path.name}: buffer {uri!r} points outside the file's folder")
    if not target.is_file():
        raise GltfError(f"{path.name}: buffer file {uri!r} is missing")
    return target.read_bytes()


def _get(doc: _Doc, key: str, index, what: str) -> dict:
    items = doc.gltf.get(key, [])
    if not isinstance(index, int) or not 0 <= index < len(items):
        raise GltfError(f"{doc.path.name}: {what} refers to missing {key}[{index}]")
    return items[index]


def read_accessor(doc: _Doc, index: int) -> np.ndarray:
    """Accessor ``index`` as an array ``(count, width)`` (float32 for normalised integers).

    Checks that the data it claims lies inside its buffer view and buffer before reading.
    """
    acc = _get(doc, "accessors", index, "an accessor")
    name = f"{doc.path.name}: accessor {index}"
    try:
        dtype = np.dtype(COMPONENT_DTYPES[acc["componentType"]])
        width = TYPE_WIDTH[acc["type"]]
        count = int(acc["count"])
    except (KeyError, TypeError, ValueError):
        raise GltfError(f"{name} has an invalid type or count") from None
    if count < 0:
        raise GltfError(f"{name} has a negative count")
    if "sparse" in acc:
        raise GltfError(f"{name} uses sparse storage, which mesh3d does not read yet")
    if "bufferView" not in acc:
        out = np.zeros((count, width), dtype)
    else:
        view = _get(doc, "bufferViews", acc["bufferView"], f"accessor {index}")
        buf = doc.buffers[_buffer_index(doc, view)]
        v_off, v_len = int(view.get("byteOffset", 0)), int(view.get("byteLength", 0))
        if v_off < 0 or v_len < 0 or v_off + v_len > len(buf):
            raise GltfError(f"{name}: its buffer view claims bytes {v_off}..{v_off + v_len} but the buffer has {len(buf)}")
        elem = dtype.itemsize * width
        stride = int(view.get("byteStride") or elem)
        a_off = int(acc.get("byteOffset", 0))
        need = a_off + (stride * (count - 1) + elem if count else 0)
        if a_off < 0 or stride < elem or need > v_len:
            raise GltfError(f"{name} claims {need} bytes but its buffer view holds {v_len}")
        raw = np.frombuffer(buf, np.uint8, count=need - a_off if count else 0, offset=v_off + a_off)
        if stride == elem:
            out = raw.view(dtype).reshape(count, width).copy()
        else:
            rows = np.lib.stride_tricks.as_strided(raw, shape=(count, elem), strides=(stride, 1))
            out = np.ascontiguousarray(rows).view(dtype).reshape(count, width)
    if acc.get("normalized") and dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = np.maximum(out.astype(np.float32) / info.max, -1.0)
    return out


def _buffer_index(doc: _Doc, view: dict) -> int:
    b = view.get("buffer")
    if not isinstance(b, int) or not 0 <= b < len(doc.buffers):
        raise GltfError(f"{doc.path.name}: a buffer view refers to missing buffer {b}")
    return b


# ---------------------------------------------------------------------------------------------
# Scene graph


def _node_local(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T  # glTF stores column-major
    t = np.asarray(node.get("translation", [0, 0, 0]), np.float64)
    r = np.asarray(node.get("rotation", [0, 0, 0, 1]), np.float64)
    s = np.asarray(node.get("scale", [1, 1, 1]), np.float64)
    return trs_to_matrix(t, quat_normalize(r), s)


def _scene_nodes(doc: _Doc) -> tuple[list[int], dict[int, int]]:
    """Nodes of the default scene in depth-first order, and each node's parent."""
    nodes = doc.gltf.get("nodes", [])
    scenes = doc.gltf.get("scenes", [])
    if scenes:
        roots = _get(doc, "scenes", doc.gltf.get("scene", 0), "the default scene").get("nodes", [])
    else:  # no scene: every node that is nobody's child is a root
        children = {c for n in nodes for c in n.get("children", [])}
        roots = [i for i in range(len(nodes)) if i not in children]
    order, parent, stack = [], {}, [(r, -1) for r in reversed(roots)]
    while stack:
        n, p = stack.pop()
        if not isinstance(n, int) or not 0 <= n < len(nodes):
            raise GltfError(f"{doc.path.name}: the scene refers to missing node {n}")
        if n in parent:
            raise GltfError(f"{doc.path.name}: node {n} appears twice in the scene graph (a cycle or shared child)")
        parent[n] = p
        order.append(n)
        stack.extend((c, n) for c in reversed(nodes[n].get("children", [])))
    return order, parent


def _world_matrices(order: list[int], parent: dict[int, int], local: np.ndarray) -> np.ndarray:
    """World matrices ``(..., N, 4, 4)`` from local ones (indexed by node id), parents first."""
    world = np.empty_like(local)
    for n in order:
        p = parent[n]
        world[..., n, :, :] = local[..., n, :, :] if p < 0 else world[..., p, :, :] @ local[..., n, :, :]
    return world


# ---------------------------------------------------------------------------------------------
# Meshes


def _primitive_arrays(doc: _Doc, prim: dict, label: str) -> Optional[dict]:
    """Attributes and triangle indices of one primitive, Draco-compressed or not; None to skip."""
    mode = prim.get("mode", 4)
    ext = prim.get("extensions", {}).get(DRACO)
    attrs: dict[str, np.ndarray] = {}
    if ext is not None:
        import DracoPy

        view = _get(doc, "bufferViews", ext.get("bufferView"), "a Draco primitive")
        buf = doc.buffers[_buffer_index(doc, view)]
        off, length = int(view.get("byteOffset", 0)), int(view["byteLength"])
        if off + length > len(buf):
            raise GltfError(f"{label}: Draco data lies outside its buffer")
        try:
            dm = DracoPy.decode(buf[off : off + length])
        except Exception as e:  # DracoPy raises its own types and ValueError on corrupt data
            raise GltfError(f"{label}: Draco data is corrupt ({e})") from None
        for name, uid in ext.get("attributes", {}).items():
            att = dm.get_attribute_by_unique_id(uid)
            if att is None:
                raise GltfError(f"{label}: Draco attribute {name} is missing")
            arr = np.asarray(att["data"])
            acc = doc.gltf["accessors"][prim["attributes"][name]]
            if acc.get("normalized") and arr.dtype.kind in "iu":
                arr = arr.astype(np.float32) / np.iinfo(arr.dtype).max
            attrs[name] = arr.reshape(len(arr), -1)
        faces = np.asarray(dm.faces, np.int64).reshape(-1, 3)
        mode = 4
    else:
        for name, acc in prim.get("attributes", {}).items():
            if name in ("POSITION", "NORMAL", "TEXCOORD_0", "COLOR_0") or name.startswith(("JOINTS_", "WEIGHTS_")):
                attrs[name] = read_accessor(doc, acc)
        faces = None
    if "POSITION" not in attrs:
        raise GltfError(f"{label}: primitive has no POSITION attribute")
    n = len(attrs["POSITION"])
    for name, arr in attrs.items():
        if len(arr) != n:
            raise GltfError(f"{label}: attribute {name} has {len(arr)} entries for {n} vertices")
    if faces is None:
        idx = read_accessor(doc, prim["indices"]).reshape(-1).astype(np.int64) if "indices" in prim else np.arange(n)
        if mode == 4:
            faces = idx[: len(idx) // 3 * 3].reshape(-1, 3)
        elif mode == 5:  # triangle strip: alternate winding
            k = np.arange(max(len(idx) - 2, 0))
            faces = np.stack([idx[k], idx[k + 1 + (k % 2)], idx[k + 2 - (k % 2)]], 1)
        elif mode == 6:  # triangle fan
            k = np.arange(1, max(len(idx) - 1, 1))
            faces = np.stack([np.full(len(k), idx[0]) if len(idx) else k, idx[k], idx[k + 1]], 1) if len(idx) >= 3 else np.zeros((0, 3), np.int64)
        else:
            return None  # points and lines carry no surface
    if len(faces) and (faces.min() < 0 or faces.max() >= n):
        raise GltfError(f"{label}: face indices refer to vertices outside 0..{n - 1}")
    attrs["faces"] = faces
    return attrs


def _base_texture(doc: _Doc, prim: dict) -> Optional[int]:
    """Image index of the primitive's base-colour texture, if any."""
    if "material" not in prim:
        return None
    info = _get(doc, "materials", prim["material"], "a primitive").get("pbrMetallicRoughness", {}).get("baseColorTexture")
    if info is None:
        return None
    return _get(doc, "textures", info.get("index"), "a material").get("source")


def _image_bytes(doc: _Doc, index: int) -> Optional[bytes]:
    image = _get(doc, "images", index, "a texture")
    if "bufferView" in image:
        view = _get(doc, "bufferViews", image["bufferView"], "an image")
        buf = doc.buffers[_buffer_index(doc, view)]
        off, length = int(view.get("byteOffset", 0)), int(view.get("byteLength", 0))
        if off < 0 or off + length > len(buf):
            raise GltfError(f"{doc.path.name}: image {index} lies outside its buffer")
        return bytes(buf[off : off + length])
    return _load_uri(image, doc.path) if "uri" in image else None


def _base_color(doc: _Doc, prim: dict) -> np.ndarray:
    if "material" not in prim:
        return np.ones(4)
    mat = _get(doc, "materials", prim["material"], "a primitive")
    return np.asarray(mat.get("pbrMetallicRoughness", {}).get("baseColorFactor", [1, 1, 1, 1]), np.float64)


# ---------------------------------------------------------------------------------------------
# Animation sampling


def _sample_channel(times: np.ndarray, values: np.ndarray, interp: str, path: str, at: np.ndarray) -> np.ndarray:
    """Values of one channel at times ``at`` (clamped to the key range)."""
    width = values.shape[-1]
    if interp == "CUBICSPLINE":
        values = values.reshape(len(times), 3, width)
        tangents_in, points, tangents_out = values[:, 0], values[:, 1], values[:, 2]
    else:
        points = values
    if len(times) == 1:
        return np.repeat(points[:1], len(at), 0)
    i = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 2)
    dt = times[i + 1] - times[i]
    u = np.clip((at - times[i]) / np.where(dt > 0, dt, 1), 0, 1)
    a, b = points[i], points[i + 1]
    if interp == "STEP":
        out = np.where((u >= 1)[:, None], b, a)
    elif interp == "CUBICSPLINE":
        u2, u3 = u * u, u * u * u
        m0, m1 = tangents_out[i] * dt[:, None], tangents_in[i + 1] * dt[:, None]
        out = (
            (2 * u3 - 3 * u2 + 1)[:, None] * a + (u3 - 2 * u2 + u)[:, None] * m0
            + (-2 * u3 + 3 * u2)[:, None] * b + (u3 - u2)[:, None] * m1
        )
    elif path == "rotation":
        out = quat_slerp(a, b, u)
    else:
        out = a + (b - a) * u[:, None]
    return quat_normalize(out) if path == "rotation" else out


def _frame_rate(key_times: list[np.ndarray]) -> float:
    """The clip's key rate: the most common spacing of its keys, as frames per second."""
    diffs = np.concatenate([np.diff(t) for t in key_times if len(t) > 1] or [np.array([1 / 30])])
    diffs = diffs[diffs > 1e-6]
    if not len(diffs):
        return 30.0
    fps = 1.0 / np.median(diffs)
    return float(round(fps)) if abs(fps - round(fps)) < 0.05 * fps else float(fps)


# ---------------------------------------------------------------------------------------------
# The reader


def read_gltf(path: str | Path) -> Asset:
    """Load a ``.glb`` or ``.gltf`` file as an Asset (bind-pose mesh, skeleton, skin, animations)."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix.lower() == ".glb" or data[:4] == GLB_MAGIC:
        doc = _parse_glb(data, path)
    else:
        gltf = _parse_json(data, path)
        doc = _Doc(gltf, [_load_uri(b, path) for b in gltf.get("buffers", [])], path)
    try:
        return _build_asset(doc)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise GltfError(f"{path.name}: malformed glTF ({type(e).__name__}: {e})") from None


def _build_asset(doc: _Doc) -> Asset:
    gltf, name = doc.gltf, doc.path.name
    nodes = gltf.get("nodes", [])
    order, parent = _scene_nodes(doc)
    local = np.stack([_node_local(n) for n in nodes]) if nodes else np.zeros((0, 4, 4))
    world = _world_matrices(order, parent, local)
    warnings: list[str] = []

    # Skeleton: the union of the joints of every skin used in the scene, parents = nearest joint ancestor.
    skins = gltf.get("skins", [])
    used_skins = sorted({nodes[n]["skin"] for n in order if "mesh" in nodes[n] and "skin" in nodes[n]})
    joint_nodes: list[int] = []
    bind: dict[int, np.ndarray] = {}
    skin_bind: dict[int, np.ndarray] = {}
    for s in used_skins:
        skin = _get(doc, "skins", s, "a node")
        jn = skin.get("joints", [])
        ibm = read_accessor(doc, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1) if "inverseBindMatrices" in skin else None
        if ibm is not None and len(ibm) < len(jn):
            raise GltfError(f"{name}: skin {s} has fewer inverse bind matrices than joints")
        for n in jn:
            if n not in parent:
                raise GltfError(f"{name}: skin {s} uses node {n}, which is not in the scene")
        # Inverse bind matrices are relative to the skeleton's parent (the armature node), whose
        # world transform (often an axis change and a x100 scale from FBX) places the bind-pose
        # mesh in the scene. Apply it, so the bind pose sits where viewers show the asset.
        armature = _armature_matrix(jn, parent, world)
        for k, n in enumerate(jn):
            if n not in bind:
                joint_nodes.append(n)
                if ibm is None:
                    bind[n] = world[n]
                else:
                    try:
                        bind[n] = armature @ np.linalg.inv(ibm[k].astype(np.float64))
                    except np.linalg.LinAlgError:
                        raise GltfError(f"{name}: skin {s} has a singular inverse bind matrix") from None
        if ibm is None:
            warnings.append(f"skin {s} has no inverse bind matrices: the default pose was taken as bind pose")
        # What the file's skinning does to this skin's vertices at our bind pose: identical to the
        # armature transform for the first skin, and it re-expresses other skins (whose inverse
        # bind matrices may also contain their mesh object's transform) in the same bind space.
        skin_bind[s] = np.stack([bind[n] @ (ibm[k] if ibm is not None else np.eye(4)) for k, n in enumerate(jn)]) if jn else np.zeros((0, 4, 4))
    position = {n: i for i, n in enumerate(order)}
    joint_nodes.sort(key=position.__getitem__)  # scene order puts parents before children
    joint_index = {n: i for i, n in enumerate(joint_nodes)}

    def joint_ancestor(n: int) -> int:
        p = parent[n]
        while p >= 0 and p not in joint_index:
            p = parent[p]
        return joint_index.get(p, -1)

    # Meshes.
    blocks, faces, parts = [], [], []
    textures: set = set()
    has = {"NORMAL": False, "TEXCOORD_0": False, "COLOR_0": False}
    cache: dict[tuple, tuple[int, int]] = {}  # primitives sharing attribute accessors share vertices
    vertex_count = 0
    part = 0
    for n in order:
        node = nodes[n]
        if "mesh" not in node:
            continue
        mesh = _get(doc, "meshes", node["mesh"], f"node {n}")
        skinned = "skin" in node
        for p_i, prim in enumerate(mesh.get("primitives", [])):
            label = f"{name}: mesh {node['mesh']} primitive {p_i}"
            key = (n, tuple(sorted((k, v) for k, v in prim.get("attributes", {}).items())), json.dumps(prim.get("extensions", {}), sort_keys=True))
            a = _primitive_arrays(doc, prim, label)
            if a is None:
                warnings.append(f"{label}: points/lines primitive skipped")
                continue
            if key in cache and DRACO not in prim.get("extensions", {}):
                start, count = cache[key]
            else:
                start, count = vertex_count, len(a["POSITION"])
                cache[key] = (start, count)
                vertex_count += count
                block = _vertex_block(doc, a, node, n, skin_bind, world, bind, joint_index, joint_ancestor, label, warnings)
                block["color"] = block["color"] * _base_color(doc, prim)
                textures.add(_base_texture(doc, prim))
                block["start"] = start
                for k in has:
                    has[k] |= k in a
                blocks.append(block)
            faces.append(a["faces"] + start)
            parts.append(np.full(len(a["faces"]), part, np.int32))
            part += 1
    if not blocks:
        raise GltfError(f"{name}: the file contains no triangle mesh")
    cat = lambda k: np.concatenate([b[k] for b in blocks])  # noqa: E731
    verts = cat("position")
    mesh = Mesh(
        verts,
        np.concatenate(faces),
        normals=unit_normals(cat("normal")) if has["NORMAL"] else None,
        colors=np.clip(cat("color"), 0, 1) if (has["COLOR_0"] or any((b["color"] != 1).any() for b in blocks)) else None,
        uvs=cat("uv") if has["TEXCOORD_0"] else None,
        part_ids=np.concatenate(parts),
        texture=_shared_texture(doc, textures, has["TEXCOORD_0"], warnings),
    )
    if not len(mesh.faces):
        raise GltfError(f"{name}: the mesh has no faces")
    asset = Asset(mesh, name=doc.path.stem, warnings=warnings)
    if not joint_nodes:
        return asset

    # Skin: dense influences, repaired.
    dense = np.zeros((len(verts), len(joint_nodes)))
    for b in blocks:
        if b["joints"] is not None:
            rows = np.arange(b["start"], b["start"] + len(b["position"]))
            np.add.at(dense, (rows[:, None], b["joints"]), b["weights"])
    bad = ~np.isfinite(dense).all(1)
    if bad.any():
        warnings.append(f"{int(bad.sum())} vertices had NaN or infinite skin weights: repaired")
        dense[~np.isfinite(dense)] = 0
    dense = dense.clip(min=0)
    total = dense.sum(1)
    empty = total <= 1e-8
    if empty.any():
        # Give an unweighted vertex to the joint nearest to it in bind pose.
        pos = np.stack([bind[n][:3, 3] for n in joint_nodes])
        nearest = np.argmin(((verts[empty, None, :] - pos[None]) ** 2).sum(-1), 1)
        dense[np.flatnonzero(empty), nearest] = 1.0
        warnings.append(f"{int(empty.sum())} vertices had no skin weight: bound to the nearest joint")
    elif np.abs(total - 1).max() > 1e-3:
        warnings.append("skin weights did not sum to 1: normalised")
    k = 4 if dense.shape[1] >= 4 else dense.shape[1]
    if (np.count_nonzero(dense > 1e-9, 1) > k).any():
        k = min(8, dense.shape[1])
    skin = Skin.from_dense(dense, k)
    helper = skin.dense(len(joint_nodes)).max(0) <= 0

    joints = np.stack([bind[n][:3, 3] for n in joint_nodes])
    names = _unique_names([nodes[n].get("name") or f"joint_{n}" for n in joint_nodes])
    # Keep the artist's joint orientations (without scale): the file's own local tracks, non-uniform
    # scales included, then stay expressible as translation, rotation and scale.
    u, _, vt = np.linalg.svd(np.stack([bind[n][:3, :3] for n in joint_nodes]))
    frames = u @ vt
    frames[np.linalg.det(frames) < 0] *= -1  # a mirrored bind (negative scale) keeps a proper rotation
    skeleton = Skeleton(joints, [joint_ancestor(n) for n in joint_nodes], names, helper, frames)
    asset.skeleton, asset.skin = skeleton, skin
    asset.animations = _read_animations(doc, order, parent, local, joint_nodes, bind, skeleton, warnings)
    return asset


def _vertex_block(doc, a, node, n, skin_bind, world, bind, joint_index, joint_ancestor, label, warnings) -> dict:
    pos = a["POSITION"][:, :3].astype(np.float64)
    nrm = a["NORMAL"][:, :3].astype(np.float64) if "NORMAL" in a else np.zeros_like(pos)
    joints = weights = None
    if "skin" in node:
        skin = doc.gltf["skins"][node["skin"]]
        jn = skin["joints"]
        sets = sorted(k[len("JOINTS_"):] for k in a if k.startswith("JOINTS_"))
        if not sets:
            raise GltfError(f"{label}: skinned mesh has no JOINTS_0 attribute")
        js, ws = [], []
        for s in sets:
            if f"WEIGHTS_{s}" not in a:
                raise GltfError(f"{label}: JOINTS_{s} without WEIGHTS_{s}")
            j = a[f"JOINTS_{s}"].astype(np.int64)
            if len(j) and (j.min() < 0 or j.max() >= len(jn)):
                raise GltfError(f"{label}: JOINTS_{s} refers to joints outside the skin")
            js.append(np.asarray([joint_index[x] for x in jn])[j])
            ws.append(a[f"WEIGHTS_{s}"].astype(np.float64))
        joints, weights = np.concatenate(js, 1), np.concatenate(ws, 1)
        local = np.concatenate([a[f"JOINTS_{s}"].astype(np.int64) for s in sets], 1)
        w = np.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
        total = w.sum(1, keepdims=True)
        w = np.where(total > 1e-8, w / np.where(total > 1e-8, total, 1), np.eye(1, w.shape[1]))
        mats = np.einsum("vk,vkij->vij", w, skin_bind[node["skin"]][local])  # (V, 4, 4)
        pos = np.einsum("vij,vj->vi", mats[:, :3, :3], pos) + mats[:, :3, 3]
        nrm = np.einsum("vji,vj->vi", np.linalg.inv(mats[:, :3, :3]), nrm)  # inverse transpose
        m = np.eye(4)
    else:
        m = world[n]
        if joint_index:
            # A rigid part rides on its nearest joint ancestor (a prop in a hand), or on the first
            # root joint when it hangs outside the skeleton. It is placed where it sits relative to
            # that joint in the default pose, so the file's default pose is reproduced exactly.
            anc = joint_ancestor(n)
            if anc < 0:
                anc = 0
                warnings.append(f"{label}: unskinned part outside the skeleton now follows root joint 0")
            jnode = next(k for k, v in joint_index.items() if v == anc)
            m = bind[jnode] @ np.linalg.inv(world[jnode]) @ world[n]
            joints, weights = np.full((len(pos), 1), anc), np.ones((len(pos), 1))
    pos = pos @ m[:3, :3].T + m[:3, 3]
    nrm = nrm @ np.linalg.inv(m[:3, :3])  # inverse transpose for normals
    color = np.ones((len(pos), 4))
    if "COLOR_0" in a:
        c = a["COLOR_0"].astype(np.float64)
        color[:, : c.shape[1]] = c[:, :4]
    uv = a["TEXCOORD_0"][:, :2].astype(np.float64) if "TEXCOORD_0" in a else np.zeros((len(pos), 2))
    if not np.isfinite(pos).all():
        raise GltfError(f"{label}: vertex positions contain NaN or infinity")
    return {"position": pos, "normal": nrm, "uv": uv, "color": color, "joints": joints, "weights": weights}


def _shared_texture(doc: _Doc, textures: set, has_uvs: bool, warnings: list[str]) -> Optional[bytes]:
    """The one base-colour image every primitive uses (an atlas), else None with a warning."""
    from mesh3d.asset import image_mime_type

    if textures == {None}:
        return None
    if len(textures) > 1 or not has_uvs:
        warnings.append("base-colour textures differ between parts: textures were dropped, material colours kept")
        return None
    data = _image_bytes(doc, next(iter(textures)))
    if data is None or image_mime_type(data) is None:
        warnings.append("texture image is not embedded PNG or JPEG: it was dropped")
        return None
    return data


def _armature_matrix(joint_nodes: list[int], parent: dict[int, int], world: np.ndarray) -> np.ndarray:
    """World matrix of the nearest non-joint ancestor of a skin's root joints (identity if none)."""
    joints = set(joint_nodes)
    for n in joint_nodes:
        p = parent[n]
        if p not in joints:
            return world[p] if p >= 0 else np.eye(4)
    return np.eye(4)


def unit_normals(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(N, 3) unit vectors; those shorter than ``eps`` (no direction) become +Y, as glTF needs units."""
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(n > eps, v / np.where(n > eps, n, 1), [0.0, 1.0, 0.0])


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}.{seen[n]:03d}"
        seen.setdefault(n, 0)
        out.append(n)
    return out


def _read_animations(doc, order, parent, local, joint_nodes, bind, skeleton, warnings) -> list[Animation]:
    """Resample every clip and convert it to world-aligned bind frames.

    For joint node n with file-space posed world matrix G_n(t) and bind matrix B_n, skinning applies
    G_n(t) @ inv(B_n). Our world matrix is G'_n(t) = G_n(t) @ inv(B_n) @ B'_n, with B'_n the
    skeleton's bind matrix (B_n without its scale), which applies the same deformation.
    """
    nodes = doc.gltf.get("nodes", [])
    anims = []
    if not nodes:
        return anims
    t_rest, r_rest, s_rest = matrix_to_trs(local)
    correction = np.linalg.inv(np.stack([bind[n] for n in joint_nodes])) @ skeleton.bind_matrices()
    par = skeleton.parents
    for a_i, anim in enumerate(doc.gltf.get("animations", [])):
        label = f"{doc.path.name}: animation {a_i}"
        channels = []
        for ch in anim.get("channels", []):
            target = ch.get("target", {})
            node, path = target.get("node"), target.get("path")
            if node is None or node not in parent:
                continue
            if path == "weights":
                warnings.append(f"{label}: morph target weights are not supported and were dropped")
                continue
            if path not in ("translation", "rotation", "scale"):
                continue
            sampler = anim["samplers"][ch["sampler"]]
            times = read_accessor(doc, sampler["input"]).reshape(-1).astype(np.float64)
            values = read_accessor(doc, sampler["output"]).astype(np.float64)
            interp = sampler.get("interpolation", "LINEAR")
            per_key = 3 if interp == "CUBICSPLINE" else 1
            if len(times) == 0 or len(values) != len(times) * per_key:
                raise GltfError(f"{label}: a sampler has {len(values)} values for {len(times)} key times")
            if not (np.isfinite(times).all() and np.isfinite(values).all()):
                raise GltfError(f"{label}: NaN or infinity in animation data")
            channels.append((node, path, times, values, interp))
        if not channels:
            continue
        fps = _frame_rate([c[2] for c in channels])
        start = min(c[2][0] for c in channels)
        end = max(c[2][-1] for c in channels)
        n_frames = int(round((end - start) * fps)) + 1
        if n_frames > 100_000:
            raise GltfError(f"{label}: clip is implausibly long ({n_frames} frames)")
        at = start + np.arange(n_frames) / fps
        tr = np.repeat(t_rest[None], n_frames, 0)
        ro = np.repeat(r_rest[None], n_frames, 0)
        sc = np.repeat(s_rest[None], n_frames, 0)
        for node, path, times, values, interp in channels:
            target = {"translation": tr, "rotation": ro, "scale": sc}[path]
            target[:, node] = _sample_channel(times, values, interp, path, at)[:, : target.shape[-1]]
        world = _world_matrices(order, parent, trs_to_matrix(tr, ro, sc))
        g = world[:, joint_nodes] @ correction  # (F, J, 4, 4)
        loc = g.copy()
        has_p = par >= 0
        loc[:, has_p] = np.linalg.inv(g[:, par[has_p]]) @ g[:, has_p]
        t, r, s = matrix_to_trs(loc)
        anims.append(Animation(anim.get("name") or f"clip_{a_i}", fps, t, r, s))
    return anims
