"""Write an :class:`~mesh3d.asset.Asset` as a binary glTF 2.0 (GLB) file.

Layout of what we write, chosen for validators and viewers:

* One mesh node at the scene root (the glTF spec recommends skinned meshes outside the joint
  hierarchy), one primitive per part, all sharing the same vertex attribute accessors.
* The skeleton under an ``Armature`` node. Joint frames are bone-aligned: each joint's local +Y
  points towards its main child, the roll keeps local +Z towards the character's front (+Z) where
  possible. Blender's importer draws bones along +Y, so the armature looks as an artist would build
  it; leaf joints continue their parent's direction, so no bone collapses to zero length.
* Animations are converted from the world-aligned convention of :mod:`mesh3d.asset` into those bone
  frames; channels that never leave the rest value are omitted.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from mesh3d import __version__
from mesh3d.asset import Asset, Skeleton, forward_kinematics, image_mime_type
from mesh3d.geometry.transforms import matrix_to_trs
from mesh3d.io.atomic import write_bytes_atomic
from mesh3d.io.gltf_read import unit_normals

FLOAT, UINT16, UINT32, UINT8 = 5126, 5123, 5125, 5121
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


class _Builder:
    """Accumulates binary data, buffer views and accessors, 4-byte aligned."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, type_: str, component: int, target=None, minmax: bool = False, normalized=False) -> int:
        dtype = {FLOAT: np.float32, UINT16: np.uint16, UINT32: np.uint32, UINT8: np.uint8}[component]
        arr = np.ascontiguousarray(array, dtype=dtype)
        while len(self.data) % 4:
            self.data.append(0)
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": arr.nbytes}
        if target is not None:
            view["target"] = target
        self.data.extend(arr.tobytes())
        self.views.append(view)
        count = len(arr)
        acc = {"bufferView": len(self.views) - 1, "componentType": component, "count": count, "type": type_}
        if normalized:
            acc["normalized"] = True
        if minmax and count:
            flat = arr.reshape(count, -1)
            acc["min"] = [float(x) if component == FLOAT else int(x) for x in flat.min(0)]
            acc["max"] = [float(x) if component == FLOAT else int(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def bone_frames(skeleton: Skeleton) -> np.ndarray:
    """(J, 3, 3) world rotations of bone-aligned joint frames (columns are the local axes).

    Local +Y points from the joint to its main child (the child with the largest subtree), or
    continues the parent's direction for leaves and for children sitting on the joint. Local +Z is
    the world +Z (front) made orthogonal, or world -Y when the bone points along Z.
    """
    joints, parents = skeleton.joints, skeleton.parents
    j = len(joints)
    size = np.ones(j)
    for c in range(j - 1, 0, -1):
        if parents[c] >= 0:
            size[parents[c]] += size[c]
    scale = max(float(np.ptp(joints, 0).max()), 1e-9)
    direction = np.zeros((j, 3))
    for i in range(j):
        kids = [c for c in np.flatnonzero(parents == i) if np.linalg.norm(joints[c] - joints[i]) > 1e-4 * scale]
        if kids:
            best = max(kids, key=lambda c: (size[c], -c))
            direction[i] = joints[best] - joints[i]
        elif parents[i] >= 0:
            direction[i] = direction[parents[i]]  # parents come first, so this is already set
        else:
            direction[i] = [0.0, 1.0, 0.0]
        if np.linalg.norm(direction[i]) < 1e-12:
            direction[i] = [0.0, 1.0, 0.0]
    frames = np.zeros((j, 3, 3))
    for i in range(j):
        y = direction[i] / np.linalg.norm(direction[i])
        ref = np.array([0.0, 0.0, 1.0]) if abs(y[2]) < 0.95 else np.array([0.0, -np.sign(y[2]), 0.0])
        z = ref - y * np.dot(ref, y)
        z /= np.linalg.norm(z)
        frames[i] = np.stack([np.cross(y, z), y, z], 1)
    return frames


def _constant_at_rest(values: np.ndarray, rest: np.ndarray) -> bool:
    """True when a channel stores nothing beyond its rest value at float32 precision."""
    return bool((values.astype(np.float32) == np.asarray(rest).astype(np.float32)).all())


def write_glb(asset: Asset, path: str | Path) -> None:
    """Write ``asset`` to ``path`` as GLB, atomically."""
    write_bytes_atomic(path, glb_bytes(asset))


def glb_bytes(asset: Asset) -> bytes:
    """The GLB encoding of ``asset``."""
    b = _Builder()
    mesh = asset.mesh
    attributes = {"POSITION": b.add(mesh.vertices, "VEC3", FLOAT, ARRAY_BUFFER, minmax=True)}
    if mesh.normals is not None:
        attributes["NORMAL"] = b.add(unit_normals(mesh.normals, eps=1e-8), "VEC3", FLOAT, ARRAY_BUFFER)
    if mesh.uvs is not None:
        attributes["TEXCOORD_0"] = b.add(mesh.uvs, "VEC2", FLOAT, ARRAY_BUFFER)
    if mesh.colors is not None:
        attributes["COLOR_0"] = b.add(np.clip(mesh.colors, 0, 1), "VEC4", FLOAT, ARRAY_BUFFER)
    rigged = asset.skeleton is not None and asset.skin is not None
    if rigged:
        idx, w = asset.skin.indices, asset.skin.weights
        sets = (idx.shape[1] + 3) // 4
        pad = sets * 4 - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)))
        w = np.pad(w, ((0, 0), (0, pad)))
        w = (w / w.sum(1, keepdims=True)).astype(np.float32)
        idx = np.where(w > 0, idx, 0)  # glTF wants unused influence slots to name joint 0
        for s in range(sets):
            attributes[f"JOINTS_{s}"] = b.add(idx[:, 4 * s : 4 * s + 4], "VEC4", UINT16, ARRAY_BUFFER)
            attributes[f"WEIGHTS_{s}"] = b.add(w[:, 4 * s : 4 * s + 4], "VEC4", FLOAT, ARRAY_BUFFER)

    faces = mesh.faces
    part_ids = mesh.part_ids if mesh.part_ids is not None else np.zeros(len(faces), np.int32)
    index_type = UINT16 if len(mesh.vertices) < 65535 else UINT32
    primitives = []
    for part in np.unique(part_ids) if len(faces) else []:
        sel = faces[part_ids == part].reshape(-1)
        primitives.append(
            {"attributes": attributes, "indices": b.add(sel, "SCALAR", index_type, ELEMENT_ARRAY_BUFFER), "material": 0, "mode": 4}
        )
    if not primitives:  # a point cloud
        primitives.append({"attributes": attributes, "material": 0, "mode": 0})

    pbr = {"metallicFactor": 0.0, "roughnessFactor": 0.8}
    material = {"name": "vertex_color" if mesh.colors is not None else "default", "pbrMetallicRoughness": pbr, "doubleSided": True}
    gltf: dict = {
        "asset": {"version": "2.0", "generator": f"mesh3d {__version__}"},
        "scene": 0,
        "scenes": [{"name": asset.name, "nodes": [0]}],
        "nodes": [{"name": asset.name, "mesh": 0}],
        "meshes": [{"name": asset.name, "primitives": primitives}],
        "materials": [material],
    }
    if mesh.texture is not None:
        b.add(np.frombuffer(mesh.texture, np.uint8), "SCALAR", UINT8)
        b.accessors.pop()  # images reference the buffer view directly, not an accessor
        gltf["images"] = [{"bufferView": len(b.views) - 1, "mimeType": image_mime_type(mesh.texture)}]
        gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 10497, "wrapT": 10497}]
        gltf["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0}
    if rigged:
        _add_rig(asset, b, gltf)
    gltf["buffers"] = [{"byteLength": len(b.data)}]
    gltf["bufferViews"] = b.views
    gltf["accessors"] = b.accessors
    return _pack(gltf, bytes(b.data))


def _add_rig(asset: Asset, b: _Builder, gltf: dict) -> None:
    sk = asset.skeleton
    j = len(sk)
    bind = sk.bind_matrices()
    if sk.frames is None:
        bind[:, :3, :3] = bone_frames(sk)  # bone-aligned frames B'' for viewers
    parents = sk.parents
    rest_local = bind.copy()
    has_p = parents >= 0
    rest_local[has_p] = np.linalg.inv(bind[parents[has_p]]) @ bind[has_p]
    t0, r0, s0 = matrix_to_trs(rest_local)
    first_joint = 2  # node 0 is the mesh, node 1 the armature
    for i in range(j):
        node = {"name": sk.names[i], "translation": t0[i].tolist(), "rotation": r0[i].tolist()}
        kids = [first_joint + c for c in sk.children(i)]
        if kids:
            node["children"] = kids
        gltf["nodes"].append(node)
    roots = [first_joint + i for i in range(j) if parents[i] < 0]
    gltf["nodes"].insert(1, {"name": "Armature", "children": roots})
    gltf["scenes"][0]["nodes"].append(1)
    ibm = np.linalg.inv(bind).transpose(0, 2, 1).reshape(j, 16)  # column-major
    skin = {"name": "Armature", "joints": list(range(first_joint, first_joint + j)), "inverseBindMatrices": b.add(ibm, "MAT4", FLOAT)}
    if len(roots) == 1:
        skin["skeleton"] = roots[0]
    gltf["skins"] = [skin]
    gltf["nodes"][0]["skin"] = 0

    animations = []
    # Our bind frames B' -> written frames B'': G''(t) = G'(t) @ inv(B') @ B'' (identity when kept).
    change = np.linalg.inv(sk.bind_matrices()) @ bind
    for anim in asset.animations:
        world = forward_kinematics(parents, anim.translations, anim.rotations, anim.scales) @ change
        local = world.copy()
        local[:, has_p] = np.linalg.inv(world[:, parents[has_p]]) @ world[:, has_p]
        t, r, s = matrix_to_trs(local)
        r = _continuous(r)
        times = b.add(np.arange(anim.num_frames) / anim.fps, "SCALAR", FLOAT, minmax=True)
        samplers, channels = [], []
        for i in range(j):
            for path, values, rest, kind in (("translation", t[:, i], t0[i], "VEC3"), ("rotation", r[:, i], r0[i], "VEC4"), ("scale", s[:, i], s0[i], "VEC3")):
                if _constant_at_rest(values, rest) or (path == "rotation" and _constant_at_rest(-values, rest)):
                    continue
                samplers.append({"input": times, "output": b.add(values, kind, FLOAT), "interpolation": "LINEAR"})
                channels.append({"sampler": len(samplers) - 1, "target": {"node": first_joint + i, "path": path}})
        if not channels:  # a clip holding the rest pose still needs one channel to exist
            samplers.append({"input": times, "output": b.add(np.repeat(r0[:1], anim.num_frames, 0), "VEC4", FLOAT), "interpolation": "LINEAR"})
            channels.append({"sampler": 0, "target": {"node": first_joint, "path": "rotation"}})
        animations.append({"name": anim.name, "samplers": samplers, "channels": channels})
    if animations:
        gltf["animations"] = animations


def _continuous(q: np.ndarray) -> np.ndarray:
    """Flip quaternion signs along time so linear interpolation takes the short way."""
    q = q.copy()
    for f in range(1, len(q)):
        flip = (q[f] * q[f - 1]).sum(-1) < 0
        q[f, flip] *= -1
    return q


def _pack(gltf: dict, binary: bytes) -> bytes:
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (
        struct.pack("<4sII", b"glTF", 2, total)
        + struct.pack("<I4s", len(js), b"JSON") + js
        + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    )
