"""The geometric rigger: skeleton and skin on shared rigs, procedural limbs and degenerate inputs,
the skeleton and skinning metrics, and Blender's bone heat baseline."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import ConvexHull, cKDTree

from mesh3d.asset import Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError
from mesh3d.io.blender import blender_available, bone_heat_with_blender
from rigging.eval import (
    POSE_FRAMES,
    chamfer_b2b,
    chamfer_j2b,
    chamfer_j2j,
    deformation_error,
    library_clips,
    normalised_skeleton,
    skeleton_metrics,
    skin_l1,
    skin_metrics,
    skin_precision_recall,
)
from rigging.skeleton.geometric import geometric_skeleton
from rigging.skeleton.volume import voxelise
from rigging.skinning.geometric import geometric_skin

DEV_SAMPLE = ["modular_men/Beach.glb", "cute_fish_pack/Tetra.glb", "platformer_game_pack/Bouncer.glb"]
COILED = {"platformer_game_pack/Bouncer.glb"}  # a spring under a cap


def check_skeleton(mesh: Mesh, skeleton: Skeleton, max_joints: int = 64, coiled: bool = False) -> None:
    """One tree of at most ``max_joints`` joints, each inside the volume or within two voxels of it
    (tips sit on the surface). A coiled shape (a spring) is rigged along its axis, through the
    empty middle of the coil: its joints need only be inside the convex hull."""
    assert 1 <= len(skeleton) <= max_joints
    assert skeleton.parents[0] == -1 and np.all(skeleton.parents[1:] < np.arange(1, len(skeleton)))
    assert (skeleton.parents == -1).sum() == 1
    if coiled:
        planes = ConvexHull(mesh.vertices).equations  # (P, 4): outward normal, offset
        voxel = np.ptp(mesh.vertices, axis=0).max() / 96
        assert (skeleton.joints @ planes[:, :3].T + planes[:, 3] <= 2 * voxel).all()
        return
    vol = voxelise(mesh.vertices, mesh.faces, 96)  # the skeleton's own resolution
    gap = cKDTree(vol.position(np.argwhere(vol.solid))).query(skeleton.joints)[0]
    assert gap.max() <= 2 * vol.h


def check_skin(mesh: Mesh, skeleton: Skeleton, skin: Skin) -> None:
    """Every vertex has at most 4 non-negative weights summing to 1, none on a helper joint."""
    assert skin.indices.shape[0] == len(mesh.vertices)
    dense = skin.dense(len(skeleton))
    np.testing.assert_allclose(dense.sum(1), 1.0, atol=1e-6)
    assert (dense >= 0).all() and (skin.indices.shape[1] <= 4)
    assert dense[:, skeleton.helper].max(initial=0) == 0  # helpers carry no weight


@pytest.fixture(scope="module")
def dev_assets(rig_records):
    from mesh3d.io import load

    by_file = {r.file: r for r in rig_records}
    return {f: load(by_file[f].path) for f in DEV_SAMPLE}


@pytest.mark.parametrize("file", DEV_SAMPLE)
def test_shared_rigs_get_valid_rigs(file, dev_assets):
    asset = dev_assets[file]
    skeleton = geometric_skeleton(asset.mesh)
    check_skeleton(asset.mesh, skeleton, coiled=file in COILED)
    check_skin(asset.mesh, skeleton, geometric_skin(asset.mesh, skeleton))
    # Our skin on the file's own skeleton, too (helpers such as the Root at the feet get nothing).
    check_skin(asset.mesh, asset.skeleton, geometric_skin(asset.mesh, asset.skeleton))


def test_character_skeleton_is_symmetric_and_close_to_the_artists(dev_assets):
    asset = dev_assets["modular_men/Beach.glb"]
    skeleton = geometric_skeleton(asset.mesh)
    centre = asset.mesh.bounds.mean(0)
    mirrored = skeleton.joints.copy()
    mirrored[:, 0] = 2 * centre[0] - mirrored[:, 0]  # the character faces +Z: X is left-right
    gap = np.linalg.norm(mirrored[:, None] - skeleton.joints[None], axis=2).min(1)
    assert gap.max() < 1e-6 * asset.mesh.diagonal
    assert sum(n.endswith(".L") for n in skeleton.names) == sum(n.endswith(".R") for n in skeleton.names) > 0
    # The root is in the torso: near the centre of the body, not at a hand or a foot.
    lo, hi = asset.mesh.bounds
    assert np.all(np.abs(skeleton.joints[0] - centre) < 0.2 * (hi - lo).max())
    metrics = skeleton_metrics(skeleton, asset.skeleton, asset.mesh, asset.skin)
    assert metrics["cd_j2j"] < 7.0


def capsule(x: float, radius: float = 0.1, length: float = 0.8) -> trimesh.Trimesh:
    """A vertical capsule centred at (x, 0, 0), with edges no longer than 0.05."""
    c = trimesh.creation.capsule(height=length, radius=radius, count=[24, 24])
    c.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))  # z -> y
    c.apply_translation([x, 0, 0])
    return trimesh.Trimesh(*trimesh.remesh.subdivide_to_size(c.vertices, c.faces, max_edge=0.05))


def two_legs(gap: float = 0.0) -> Mesh:
    """Two separate capsules side by side, touching when ``gap`` is 0."""
    parts = [capsule(-0.1 - gap / 2), capsule(0.1 + gap / 2)]
    both = trimesh.util.concatenate(parts)
    return Mesh(both.vertices, both.faces, part_ids=np.repeat([0, 1], [len(p.faces) for p in parts]).astype(np.int32))


def test_touching_legs_do_not_share_weight():
    mesh = two_legs(gap=0.0)
    top, bottom = 0.4, -0.4
    joints = [[0, top + 0.1, 0]]  # hips above both legs
    parents = [-1]
    for side, x in ((1, -0.1), (2, 0.1)):
        for k, y in enumerate(np.linspace(top, bottom, 4)):
            joints.append([x, y, 0])
            parents.append(0 if k == 0 else len(joints) - 2)
    helper = np.zeros(len(joints), bool)
    helper[0] = True
    names = ["Hips"] + [f"{s}{k}" for s in "LR" for k in range(4)]
    skeleton = Skeleton(np.array(joints), np.array(parents), names, helper)
    skin = geometric_skin(mesh, skeleton)
    check_skin(mesh, skeleton, skin)
    dense = skin.dense(len(skeleton))
    left = np.arange(len(mesh.vertices)) < len(capsule(0).vertices)  # the first part
    assert dense[left][:, 5:].max() < 1e-3  # the right leg's joints never move the left leg
    assert dense[~left][:, 1:5].max() < 1e-3
    # Weights change smoothly: the two ends of any edge (at most 0.05 long) differ little (bone
    # heat at Blender's stiffness blends two joints over about one limb radius, here 0.1).
    edges = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).edges_unique
    assert np.abs(dense[edges[:, 0]] - dense[edges[:, 1]]).sum(1).max() < 0.7


def test_touching_legs_get_one_chain_each():
    legs = two_legs(gap=0.0)
    hips = trimesh.creation.box(extents=[0.45, 0.2, 0.25])
    hips.apply_translation([0, 0.55, 0])
    body = trimesh.util.concatenate([trimesh.Trimesh(legs.vertices, legs.faces), hips])
    mesh = Mesh(body.vertices, body.faces)
    skeleton = geometric_skeleton(mesh)
    check_skeleton(mesh, skeleton)
    check_skin(mesh, skeleton, geometric_skin(mesh, skeleton))
    low = skeleton.joints[:, 1] < -0.2  # the lower legs
    assert (skeleton.joints[low, 0] < -0.05).any() and (skeleton.joints[low, 0] > 0.05).any()
    assert any(n.endswith(".L") for n in skeleton.names)


def spring(turns: float, coil_radius: float = 0.3, wire_radius: float = 0.05, height: float = 1.0) -> Mesh:
    """An open tube along a helix about the Y axis (a spring), 8 vertices per ring."""
    t = np.linspace(0, 2 * np.pi * turns, int(40 * turns) + 1)
    centre = np.stack([coil_radius * np.cos(t), height * t / t[-1] - height / 2, coil_radius * np.sin(t)], 1)
    tangent = np.gradient(centre, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    out = np.stack([np.cos(t), np.zeros_like(t), np.sin(t)], 1)  # away from the axis
    side = np.cross(tangent, out)
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    rings = centre[:, None] + wire_radius * (np.cos(a)[None, :, None] * out[:, None] + np.sin(a)[None, :, None] * side[:, None])
    i, k = np.meshgrid(np.arange(len(t) - 1), np.arange(8), indexing="ij")
    v00, v01, v10, v11 = i * 8 + k, i * 8 + (k + 1) % 8, (i + 1) * 8 + k, (i + 1) * 8 + (k + 1) % 8
    faces = np.concatenate([np.stack([v00, v10, v11], -1).reshape(-1, 3), np.stack([v00, v11, v01], -1).reshape(-1, 3)])
    return Mesh(rings.reshape(-1, 3), faces)


def test_a_spring_is_rigged_along_its_axis():
    mesh = spring(turns=4)
    skeleton = geometric_skeleton(mesh)
    check_skeleton(mesh, skeleton, coiled=True)
    # Past the root (on the wire, the point nearest the centre of mass), the joints follow the
    # coil's axis (the Y axis) from end to end, not the wire.
    off_axis = np.linalg.norm(skeleton.joints[1:, [0, 2]], axis=1)
    assert off_axis.max() < 0.05 and len(skeleton) <= 20
    assert np.ptp(skeleton.joints[:, 1]) > 0.7
    # A gently curved tube making less than a turn keeps joints on the wire.
    arc = geometric_skeleton(spring(turns=0.6, height=0.2))
    assert np.linalg.norm(arc.joints[:, [0, 2]], axis=1).min() > 0.2


def test_spring_under_a_flat_cap_gets_one_straight_chain(dev_assets):
    """Bouncer: a spring under a flat disc. The artist's rig is two joints on the spring's axis;
    ours must not follow the wire (a helix) nor spread spurs over the disc's medial sheet."""
    asset = dev_assets["platformer_game_pack/Bouncer.glb"]
    skeleton = geometric_skeleton(asset.mesh)
    axis = asset.skeleton.joints[1] - asset.skeleton.joints[0]  # the artist's bone, along the spring
    axis /= np.linalg.norm(axis)
    rel = skeleton.joints - asset.skeleton.joints[0]
    off_axis = np.linalg.norm(rel - (rel @ axis)[:, None] * axis, axis=1)
    assert off_axis.max() < 0.05 * asset.mesh.diagonal and len(skeleton) <= 16
    assert skeleton_metrics(skeleton, asset.skeleton, asset.mesh, asset.skin)["cd_j2j"] < 12


@pytest.mark.parametrize(
    "name, mesh",
    [
        ("point cloud", Mesh(np.random.default_rng(0).normal(size=(500, 3)) * [1, 0.3, 0.2], np.zeros((0, 3)))),
        ("flat plane", Mesh(trimesh.creation.box(extents=[1, 0, 0.5]).vertices, trimesh.creation.box(extents=[1, 0, 0.5]).faces)),
        ("single triangle", Mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])),
        ("one point", Mesh([[1, 2, 3]] * 4, [[0, 1, 2], [1, 2, 3]])),
        (
            "zero-area parts",
            Mesh(
                np.concatenate([trimesh.creation.box().vertices, [[5, 5, 5], [5, 5, 5], [6, 6, 6]]]),
                np.concatenate([trimesh.creation.box().faces, [[8, 9, 10], [8, 8, 8]]]),
            ),
        ),
    ],
)
def test_degenerate_inputs_get_a_small_valid_rig(name, mesh):
    skeleton = geometric_skeleton(mesh)
    check_skeleton(mesh, skeleton)
    check_skin(mesh, skeleton, geometric_skin(mesh, skeleton))


def test_clear_errors_for_unriggable_input():
    with pytest.raises(Mesh3DError, match="no vertices"):
        geometric_skeleton(Mesh(np.zeros((0, 3)), np.zeros((0, 3))))
    with pytest.raises(Mesh3DError, match="max_joints"):
        geometric_skeleton(two_legs(), max_joints=0)
    only_helpers = Skeleton([[0, 0, 0]], [-1], ["Root"], helper=[True])
    with pytest.raises(Mesh3DError, match="helper"):
        geometric_skin(two_legs(), only_helpers)


@pytest.mark.parametrize("max_joints", [1, 3, 8])
def test_joint_budget_is_respected(max_joints, dev_assets):
    mesh = dev_assets["modular_men/Beach.glb"].mesh
    skeleton = geometric_skeleton(mesh, max_joints=max_joints)
    check_skeleton(mesh, skeleton, max_joints)


def test_decimated_analysis_weights_every_original_vertex():
    mesh = two_legs(gap=0.0)
    v, f = trimesh.remesh.subdivide(mesh.vertices, mesh.faces)
    fine = Mesh(v, f)
    joints = [[0, 0.5, 0], [-0.1, 0.3, 0], [-0.1, -0.3, 0], [0.1, 0.3, 0], [0.1, -0.3, 0]]
    skeleton = Skeleton(joints, [-1, 0, 1, 0, 3], ["hips", "a", "b", "c", "d"], helper=[True] + [False] * 4)
    skin = geometric_skin(fine, skeleton, analysis_faces=len(f) // 8)
    check_skin(fine, skeleton, skin)
    dense = skin.dense(5)
    x = fine.vertices[:, 0]
    assert dense[x < -1e-6][:, 3:].max() < 0.05 and dense[x > 1e-6][:, 1:3].max() < 0.05


def test_chamfer_metrics_on_known_skeletons():
    mesh = Mesh([[0, 0, 0], [1, 1, 1]], np.zeros((0, 3)))  # bounding box = unit cube
    chain = Skeleton([[0, 0, 0], [0, 0.5, 0], [0, 1, 0]], [-1, 0, 1], ["a", "b", "c"])
    moved = Skeleton(chain.joints + [0.1, 0, 0], chain.parents, chain.names)
    ja, ba = normalised_skeleton(chain, mesh)
    jb, bb = normalised_skeleton(moved, mesh)
    assert chamfer_j2j(ja, ja) == 0
    assert chamfer_j2j(ja, jb) == pytest.approx(10.0)
    assert chamfer_j2b(ja, ba, jb, bb) == pytest.approx(10.0)
    assert chamfer_b2b(ja, ba, jb, bb) == pytest.approx(10.0)
    # A joint 0.001 from another is merged; an unweighted ground-truth joint is dropped.
    doubled = Skeleton([[0, 0, 0], [0, 0.001, 0], [0, 1, 0]], [-1, 0, 1], ["a", "b", "c"])
    assert len(normalised_skeleton(doubled, mesh)[0]) == 2
    joints, bones = normalised_skeleton(chain, mesh, keep=np.array([True, False, True]))
    assert len(joints) == 2 and bones.tolist() == [[0, 1]]


def test_skin_metrics_on_a_hand_made_case():
    gt = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    pred = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 0.0, 0.0]])  # last vertex unweighted
    assert skin_l1(pred, gt) == pytest.approx((0 + 0.5 + 1) / 3)
    precision, recall = skin_precision_recall(pred, gt)
    assert precision == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert recall == pytest.approx((1 + 1 + 0) / 3)


def test_deformation_error_is_zero_for_the_true_weights_only(dev_assets):
    asset = dev_assets["cute_fish_pack/Tetra.glb"]
    gt = asset.skin.dense(len(asset.skeleton))
    assert deformation_error(asset, gt) == pytest.approx((0.0, 0.0), abs=1e-6)
    one_joint = np.zeros_like(gt)
    one_joint[:, 0] = 1  # everything on the root: the tail no longer bends
    mean, worst = deformation_error(asset, one_joint)
    assert 0 < mean <= worst
    # An unweighted vertex stays at rest, as in Blender, instead of collapsing to the origin.
    moved = max(
        np.linalg.norm(asset.posed_vertices(a, np.unique(np.linspace(0, len(a.translations) - 1, POSE_FRAMES).round().astype(int))) - asset.mesh.vertices, axis=-1).max()
        for a in asset.animations
    )
    diagonal = np.linalg.norm(np.ptp(asset.mesh.vertices, axis=0))
    assert deformation_error(asset, np.zeros_like(gt))[1] == pytest.approx(100 * moved / diagonal)


def test_library_clips_pose_a_rig_that_came_without_clips(dev_assets):
    asset = dev_assets["modular_men/Beach.glb"]
    assert not asset.animations
    clips = library_clips(asset)
    assert {"walk", "wave"} <= {c.name for c in clips} and "fly" not in {c.name for c in clips}  # no wings
    gt = asset.skin.dense(len(asset.skeleton))
    assert np.isnan(skin_metrics(asset, gt)["deform_mean"]) and "deform_library" not in skin_metrics(asset, gt)
    assert skin_metrics(asset, gt, clips)["deform_library"] == pytest.approx(0.0, abs=1e-6)
    one_joint = np.zeros_like(gt)
    one_joint[:, 0] = 1  # everything on the root: the walk no longer moves the legs
    assert skin_metrics(asset, one_joint, clips)["deform_library"] > 1.0


@pytest.mark.skipif(not blender_available(), reason="Blender venv not set up (`make blender`)")
def test_blender_bone_heat_maps_back_to_our_vertices(dev_assets):
    # This fish was weighted with Blender's bone heat by its author: a wrong vertex mapping (the
    # glTF import splits and we merge vertices) would show as a large difference.
    asset = dev_assets["cute_fish_pack/Tetra.glb"]
    weights = bone_heat_with_blender(asset.mesh, asset.skeleton, asset.skin)
    assert weights.shape == (len(asset.mesh.vertices), len(asset.skeleton))
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)  # bone heat succeeded everywhere
    assert skin_l1(weights, asset.skin.dense(len(asset.skeleton))) < 0.02
