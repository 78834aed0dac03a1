"""Blender-side half of mesh3d.io.blender: run BY the Blender venv's Python, never imported by mesh3d.

Usage: ``python blender_script.py REQUEST_JSON`` where the request is one of

    {"op": "inspect", "srcs": [PATH, ...], "reply": JSON_PATH}
    {"op": "convert", "src": PATH, "dst": PATH}
    {"op": "bone_heat", "src": GLB_PATH, "reply": JSON_PATH}

``inspect`` imports each file in turn and writes a list of findings as JSON to ``reply`` (Blender
prints its own chatter on stdout, so stdout cannot carry the answer). ``convert`` imports ``src``
and exports ``dst`` (format from the extension). ``bone_heat`` imports a rigged GLB, replaces its
weights by Blender's automatic weights (bone heat) on the same armature and writes them to ``reply``. Each run starts from an empty factory-settings scene, so the user's Blender preferences
and startup file never leak into results. Only the standard library and bpy/mathutils are used here:
the Blender venv has neither torch nor mesh3d.
"""

import json
import math
import sys
import traceback
from pathlib import Path

import bpy

# Bones shorter than this fraction of the armature's extent count as near-zero: Blender cannot
# represent a zero-length bone, so importers stretch them to a tiny stub that breaks bone-axis
# based tools (IK, retargeting) even though it imports. The same fraction flags joints sitting on
# their parent joint (a zero-length segment, which importers hide by borrowing a length).
NEAR_ZERO_BONE = 1e-4


def import_file(path: Path) -> None:
    """Import a GLB/glTF/FBX with Blender's own importer into a fresh empty scene."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ext = path.suffix.lower()
    if ext in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif ext == ".fbx":
        # automatic_bone_orientation aims bones at their children (as Blender users expect) instead
        # of along the parent axis; anim_offset=0 keeps the file's frame numbers (default shifts 1).
        bpy.ops.import_scene.fbx(filepath=str(path), automatic_bone_orientation=True, anim_offset=0.0)
        # The importer names actions "<object>|<take>"; keep the take name, so a clip keeps the
        # name it has in the file (for our own FBX files: the original clip name).
        # In two steps: a take "A" arrives as "Armature|A", which is the target name of the take
        # "Armature|A", and a clash would make Blender append ".001".
        targets = {action: action.name.split("|", 1)[-1] for action in bpy.data.actions}
        for i, action in enumerate(targets):
            action.name = f"mesh3d-rename-{i}"
        for action, name in targets.items():
            action.name = name
    else:
        raise ValueError(f"cannot import {ext} files (expected .glb, .gltf or .fbx)")


def export_file(path: Path) -> None:
    """Export the whole scene (meshes, armatures, skin weights, every action) to GLB or FBX."""
    # The glTF importer's bone display icospheres would otherwise become stray FBX meshes.
    for obj in bone_shape_objects():
        bpy.data.objects.remove(obj)
    ext = path.suffix.lower()
    if ext == ".glb":
        bpy.ops.export_scene.gltf(
            filepath=str(path),
            export_format="GLB",
            export_yup=True,
            export_skins=True,
            export_animations=True,
            # One glTF animation per Blender action, named after it: the FBX takes become clips.
            export_animation_mode="ACTIONS",
            export_apply=False,  # applying modifiers would bake away the armature deform
            # The size optimisation drops keys it deems redundant and bent a Donkey clip by 1e-3 of
            # the rig's size; files are about twice as large without it, but exact.
            export_optimize_animation_size=False,
        )
    elif ext == ".fbx":
        name_takes_after_actions()
        # Takes are baked at whole frames only, so a clip ending at frame 13.6 would lose its last
        # 0.6 frame, including its final pose: widen such clips to whole frames (holding the ends).
        for action in bpy.data.actions:
            start, end = action.frame_range
            if start != math.floor(start) or end != math.ceil(end):
                action.use_frame_range = True
                action.frame_start, action.frame_end = math.floor(start), math.ceil(end)
        # Settings that import cleanly in Unity and back into Blender: Y-up/-Z-forward, unit scale
        # written into the file (objects come in at scale 1), no extra leaf bones, and every action
        # baked as its own take so clip names survive.
        bpy.ops.export_scene.fbx(
            filepath=str(path),
            object_types={"ARMATURE", "MESH", "EMPTY"},
            axis_forward="-Z",
            axis_up="Y",
            apply_scale_options="FBX_SCALE_ALL",
            use_mesh_modifiers=False,
            mesh_smooth_type="FACE",  # without smoothing data Unity warns and recomputes normals
            add_leaf_bones=False,
            primary_bone_axis="Y",
            secondary_bone_axis="X",
            bake_anim=True,
            bake_anim_use_all_actions=True,
            bake_anim_use_nla_strips=False,
            bake_anim_force_startend_keying=True,
            bake_anim_simplify_factor=0.0,  # the default drops keys and bends the motion
            path_mode="COPY",
            embed_textures=True,
        )
    else:
        raise ValueError(f"cannot export {ext} files (expected .glb or .fbx)")


def name_takes_after_actions() -> None:
    """Make the FBX exporter name each take exactly like its action.

    It names takes "<object>|<action>", so a clip "Walk" would come back as "Armature|Walk" and the
    corpus' files holding both "Bounce" and "Armature|Bounce" would get two takes of one name. The
    exporter asks ``get_blenderID_name`` for take names only (bpy 5.0.1, export_fbx_bin.py), so
    that one name is swapped for a version answering (object, action) pairs with the action name.
    """
    import io_scene_fbx.export_fbx_bin as fbx_export

    blender_name = fbx_export.get_blenderID_name

    def take_name(bid):
        if isinstance(bid, tuple) and len(bid) == 2 and isinstance(bid[1], bpy.types.Action):
            return bid[1].name
        return blender_name(bid)

    fbx_export.get_blenderID_name = take_name


def bone_shape_objects() -> set:
    """Objects used only as custom bone display shapes (the glTF importer's icospheres)."""
    shapes = set()
    for obj in bpy.data.objects:
        if obj.type == "ARMATURE" and obj.pose is not None:
            shapes.update(pb.custom_shape for pb in obj.pose.bones if pb.custom_shape is not None)
    return shapes


def describe_armature(obj) -> dict:
    """Bone names, world-space heads/tails (scene units), near-zero bones and joints on their parent."""
    mw = obj.matrix_world
    bones = list(obj.data.bones)
    heads = [list(mw @ b.head_local) for b in bones]
    tails = [list(mw @ b.tail_local) for b in bones]
    lengths = [(mw @ b.tail_local - mw @ b.head_local).length for b in bones]
    points = heads + tails
    extent = max((max(p[i] for p in points) - min(p[i] for p in points) for i in range(3)), default=0.0)
    tiny = NEAR_ZERO_BONE * max(extent, 1e-9)
    return {
        "name": obj.name,
        "bone_count": len(bones),
        "bone_names": [b.name for b in bones],
        "parents": [b.parent.name if b.parent else None for b in bones],
        "deform": [bool(b.use_deform) for b in bones],
        "heads": heads,
        "tails": tails,
        "lengths": lengths,
        "near_zero_bones": [b.name for b, n in zip(bones, lengths) if n <= tiny],
        "on_parent_bones": [
            b.name for b in bones if b.parent and (mw @ b.head_local - mw @ b.parent.head_local).length <= tiny
        ],
    }


def describe_mesh(obj) -> dict:
    """Vertex count, vertex groups (all, and those carrying weight) and the deforming armature."""
    mesh = obj.data
    weighted = set()
    for v in mesh.vertices:
        for g in v.groups:
            if g.weight > 0.0:
                weighted.add(g.group)
    armature = next((m.object.name for m in obj.modifiers if m.type == "ARMATURE" and m.object), None)
    parent = obj.parent
    return {
        "name": obj.name,
        "vertex_count": len(mesh.vertices),
        "triangle_count": sum(len(p.vertices) - 2 for p in mesh.polygons),
        "vertex_groups": [g.name for g in obj.vertex_groups],
        "weighted_groups": [g.name for g in obj.vertex_groups if g.index in weighted],
        "armature": armature,
        "parent": parent.name if parent else None,
        "parent_armature": parent.name if parent is not None and parent.type == "ARMATURE" else None,
    }


def describe_action(action, armatures: list) -> dict:
    """Frame range, and world-space bone heads at a few frames on the armature the action drives.

    The poses let a round trip be checked for motion, not only for clip counts. They are taken at
    whole frames start + 0, 1, 2, 4, 8, ... (up to the end), so two versions of a clip whose ranges
    differ by a fraction of a frame still share most sample frames. ``poses`` maps the frame (a
    string, JSON keys are) to the heads in the armature's bone order; None when no bones move.
    """
    start, end = (float(f) for f in action.frame_range)
    out = {"name": action.name, "frame_range": [start, end], "armature": None, "poses": None}
    first = math.floor(start)
    frames = [first] + [first + 2**k for k in range(32) if first + 2**k <= end]
    for obj in armatures:
        for slot in action.slots:
            bones = {fc.data_path.split('"')[1] for fc in _fcurves(action, slot) if fc.data_path.startswith("pose.bones[")}
            if bones and bones <= set(obj.pose.bones.keys()):
                poses = {str(f): heads for f, heads in zip(frames, posed_heads(obj, action, slot, frames))}
                out.update(armature=obj.name, poses=poses)
                return out
    return out


def posed_heads(obj, action, slot, frames: list) -> list:
    """World-space bone heads of armature ``obj`` playing ``action`` at each frame; state is restored."""
    anim = obj.animation_data or obj.animation_data_create()
    saved_action, saved_slot = anim.action, anim.action_slot
    saved_basis = [pb.matrix_basis.copy() for pb in obj.pose.bones]
    anim.action = action
    anim.action_slot = slot
    out = []
    for frame in frames:
        bpy.context.scene.frame_set(frame)
        mw = obj.matrix_world
        out.append([list(mw @ obj.pose.bones[b.name].head) for b in obj.data.bones])
    anim.action = saved_action
    if saved_action is not None:
        anim.action_slot = saved_slot
    # Bones an action does not key keep the pose they had, which would leak into the next action.
    for pb, basis in zip(obj.pose.bones, saved_basis):
        pb.matrix_basis = basis
    return out


def _fcurves(action, slot) -> list:
    """F-curves of one slot of a layered (Blender 4.4+) action."""
    return [
        fc
        for layer in action.layers
        for strip in layer.strips
        for bag in strip.channelbags
        if bag.slot == slot
        for fc in bag.fcurves
    ]


def bone_heat_weights() -> dict:
    """Blender's automatic weights (Ctrl+P > With Automatic Weights) for the imported meshes.

    Every mesh loses its vertex groups and armature binding first, so only bone heat speaks, and
    is merged by distance (1e-4 of its size) as a Blender user prepares a mesh for bone heat: the
    seams glTF splits vertices at cut the surface into islands, and bone heat then fails outright.
    Returns ``{"meshes": [{"name", "positions" (V, 3) world space, Blender's Z-up frame,
    "groups": [[bone name, ...], ...] and "weights": [[w, ...], ...] per vertex}]}``; a vertex
    Blender could not weight ("failed to find solution for one or more bones") has empty lists.
    """
    shapes = bone_shape_objects()
    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    if len(armatures) != 1:
        raise ValueError(f"bone heat needs exactly one armature, the file has {len(armatures)}")
    armature = armatures[0]
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH" and o not in shapes]
    out = []
    for obj in meshes:
        obj.vertex_groups.clear()
        for mod in [m for m in obj.modifiers if m.type == "ARMATURE"]:
            obj.modifiers.remove(mod)
        # Unparent but keep the world transform, so positions below stay in world space.
        world = obj.matrix_world.copy()
        obj.parent = None
        obj.matrix_world = world
        bpy.ops.object.select_all(action="DESELECT")
        obj.select_set(True)
        bpy.context.view_layer.objects.active = obj
        bpy.ops.object.mode_set(mode="EDIT")
        bpy.ops.mesh.select_all(action="SELECT")
        bpy.ops.mesh.remove_doubles(threshold=1e-4 * max(obj.dimensions))
        bpy.ops.object.mode_set(mode="OBJECT")
        bpy.ops.object.select_all(action="DESELECT")
        obj.select_set(True)
        armature.select_set(True)
        bpy.context.view_layer.objects.active = armature
        bpy.ops.object.parent_set(type="ARMATURE_AUTO")
        names = [g.name for g in obj.vertex_groups]
        mw = obj.matrix_world
        out.append({
            "name": obj.name,
            "positions": [list(mw @ v.co) for v in obj.data.vertices],
            "groups": [[names[g.group] for g in v.groups if g.weight > 0.0] for v in obj.data.vertices],
            "weights": [[g.weight for g in v.groups if g.weight > 0.0] for v in obj.data.vertices],
        })
    return {"meshes": out}


def inspect_scene() -> dict:
    """What a Blender user would see after importing: armatures, meshes and actions."""
    scene = bpy.context.scene
    shapes = bone_shape_objects()
    objects = [o for o in scene.objects if o not in shapes]
    fps = scene.render.fps / scene.render.fps_base
    return {
        "blender_version": bpy.app.version_string,
        "fps": fps,
        "armatures": [describe_armature(o) for o in objects if o.type == "ARMATURE"],
        "meshes": [describe_mesh(o) for o in objects if o.type == "MESH"],
        "actions": [describe_action(a, [o for o in objects if o.type == "ARMATURE"]) for a in bpy.data.actions],
    }


def main() -> None:
    request = json.loads(sys.argv[1])
    if request["op"] == "inspect":
        found = []
        for src in request["srcs"]:
            try:
                import_file(Path(src))
                found.append(inspect_scene())
            except Exception as exc:  # name the file: a batch holds many
                raise RuntimeError(f"{Path(src).name}: {one_line(exc)}") from exc
        Path(request["reply"]).write_text(json.dumps(found))
    elif request["op"] == "bone_heat":
        import_file(Path(request["src"]))
        Path(request["reply"]).write_text(json.dumps(bone_heat_weights()))
    elif request["op"] == "convert":
        import_file(Path(request["src"]))
        export_file(Path(request["dst"]))
    else:
        raise ValueError(f"unknown op {request['op']!r}")


def one_line(exc: Exception) -> str:
    """The telling line of an error: bpy wraps operator failures in a traceback and a Location line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith((" ", "Location:"))]
    return lines[-1] if lines else type(exc).__name__


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:
        # The caller reports the last stderr line to the user: make it the cause, after the traceback.
        traceback.print_exc()
        print(one_line(exc), file=sys.stderr)
        sys.exit(1)
