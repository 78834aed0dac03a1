"""An independent, spec-literal glTF skinning evaluator used as ground truth by
the tests and by `mesh3d bench roundtrip`.

It poses the file exactly as the glTF 2.0 spec says (joint matrix = world(joint) @ IBM, the skinned
node's own transform ignored, unskinned meshes placed by their node) without any of the loader's
conversions, so agreement with ``Asset.posed_vertices`` checks the loader's bind pose, weights and
animation conversion at once.
"""

from __future__ import annotations

import numpy as np

from mesh3d.geometry.transforms import quat_slerp, trs_to_matrix
from mesh3d.io.gltf_read import _node_local, _parse_glb, _primitive_arrays, _scene_nodes, read_accessor


def _interp(times, values, interp, path, t):
    if interp == "CUBICSPLINE":
        values = values.reshape(len(times), 3, -1)[:, 1]
    if t <= times[0]:
        return values[0]
    if t >= times[-1]:
        return values[-1]
    i = int(np.searchsorted(times, t, side="right") - 1)
    u = (t - times[i]) / (times[i + 1] - times[i])
    if interp == "STEP":
        return values[i]
    if path == "rotation":
        return quat_slerp(values[i][None], values[i + 1][None], np.array([u]))[0]
    return values[i] * (1 - u) + values[i + 1] * u


def posed_reference(path, animation_index: int | None, times) -> np.ndarray:
    """(T, V, 3) world positions of all mesh vertices at ``times`` (seconds); None = default pose."""
    doc = _parse_glb(open(path, "rb").read(), path)
    g = doc.gltf
    nodes = g["nodes"]
    order, parent = _scene_nodes(doc)
    channels = []
    if animation_index is not None:
        anim = g["animations"][animation_index]
        for ch in anim["channels"]:
            s = anim["samplers"][ch["sampler"]]
            channels.append((ch["target"]["node"], ch["target"]["path"], read_accessor(doc, s["input"]).ravel(),
                             read_accessor(doc, s["output"]).astype(np.float64), s.get("interpolation", "LINEAR")))
    out = []
    for t in times:
        trs = {}
        for i, n in enumerate(nodes):
            trs[i] = [np.array(n.get("translation", [0, 0, 0]), float), np.array(n.get("rotation", [0, 0, 0, 1]), float),
                      np.array(n.get("scale", [1, 1, 1]), float)]
        for node, p, times_, values, interp in channels:
            k = {"translation": 0, "rotation": 1, "scale": 2}[p]
            trs[node][k] = _interp(times_, values, interp, p, t)
        local = {i: (_node_local(nodes[i]) if "matrix" in nodes[i] else trs_to_matrix(*trs[i])) for i in range(len(nodes))}
        world = {}
        for n in order:
            world[n] = local[n] if parent[n] < 0 else world[parent[n]] @ local[n]
        verts = []
        seen = set()
        for n in order:
            node = nodes[n]
            if "mesh" not in node:
                continue
            for prim in g["meshes"][node["mesh"]]["primitives"]:
                key = (n, tuple(sorted(prim["attributes"].items())), str(prim.get("extensions")))
                if key in seen and "extensions" not in prim:
                    continue
                seen.add(key)
                a = _primitive_arrays(doc, prim, "ref")
                v = np.c_[a["POSITION"].astype(np.float64), np.ones(len(a["POSITION"]))]
                if "skin" in node:
                    skin = g["skins"][node["skin"]]
                    ibm = read_accessor(doc, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
                    mats = np.stack([world[j] @ ibm[k] for k, j in enumerate(skin["joints"])])
                    acc = np.zeros((len(v), 4))
                    s = 0
                    while f"JOINTS_{s}" in a:
                        w = np.nan_to_num(a[f"WEIGHTS_{s}"].astype(np.float64))
                        for c in range(4):
                            acc += w[:, c:c + 1] * np.einsum("vij,vj->vi", mats[a[f"JOINTS_{s}"][:, c].astype(int)], v)
                        s += 1
                    total = acc[:, 3:4]
                    verts.append(acc[:, :3] / np.where(np.abs(total) > 1e-9, total, 1))
                else:
                    verts.append((v @ world[n].T)[:, :3])
        out.append(np.concatenate(verts))
    return np.stack(out)
