"""Procedural creatures: validity, determinism, anatomy, symmetry, skinning and posing."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from data_prep.procedural import CREATURE_KINDS, make_creature, pose_animation, random_creature, render, write_png
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.transforms import quat_to_matrix
from mesh3d.io import load, save

SEEDS = (0, 1, 2, 3)
BILATERAL = ("humanoid", "quadruped", "dragon", "bird", "fish", "spider", "insect")

# Joints an artist would put in each kind (a subset of what is built).
EXPECTED_JOINTS = {
    "humanoid": ["hips", "spine_01", "spine_02", "neck", "head", "shoulder.L", "upper_arm.L", "forearm.L", "hand.L", "thigh.L", "shin.L", "foot.L", "toe.L"],
    "quadruped": ["hips", "spine_01", "neck_01", "head", "tail_01", "tail_02", "shoulder.L", "upper_arm.L", "forearm.L", "front_foot.L", "thigh.L", "shin.L", "hind_foot.L", "hind_toe.R"],
    "dragon": ["hips", "spine_01", "head", "tail_05", "thigh.L", "upper_arm.R", "wing_root.L", "upper_wing.L", "forearm_wing.R", "hand_wing.L"],
    "bird": ["hips", "spine_01", "neck_01", "neck_02", "head", "tail_01", "shoulder.L", "upper_wing.L", "forearm_wing.L", "hand_wing.R", "thigh.L", "shin.L", "foot.L", "toe.L"],
    "fish": ["spine_01", "head", "tail_01", "tail_02", "caudal_fin", "dorsal_fin", "pectoral_fin.L", "pectoral_fin.R"],
    "snake": ["spine_01", "head", "spine_06", "tail_01", "tail_02"],
    "spider": ["cephalothorax", "abdomen"] + [f"leg{i}_{seg}.{s}" for i in range(1, 5) for seg in ("coxa", "femur", "tibia", "metatarsus") for s in "LR"],
    "insect": ["thorax", "head", "abdomen", "antenna_01.L", "antenna_02.R"] + [f"leg{i}_{seg}.{s}" for i in range(1, 4) for seg in ("coxa", "femur", "tibia", "tarsus") for s in "LR"],
}

# (min, max) of the largest bounding-box side, in metres.
SIZE_RANGE = {
    "humanoid": (1.4, 2.2),
    "quadruped": (0.6, 6.0),
    "dragon": (1.0, 8.0),
    "bird": (0.3, 3.6),
    "fish": (0.2, 1.8),
    "snake": (1.0, 4.2),
    "spider": (0.08, 2.0),
    "insect": (0.05, 1.0),
}

# The joint whose subtree the posing test bends, per kind.
BEND = {
    "humanoid": "forearm.L",
    "quadruped": "shin.R",
    "dragon": "forearm_wing.R",
    "bird": "forearm_wing.L",
    "fish": "tail_02",
    "snake": "spine_04",
    "spider": "leg2_femur.L",
    "insect": "leg3_tibia.R",
}


def subtree(parents: np.ndarray, root: int) -> np.ndarray:
    """(J,) bool mask of ``root`` and its descendants (parents[j] < j)."""
    mask = np.zeros(len(parents), bool)
    mask[root] = True
    for j in range(root + 1, len(parents)):
        mask[j] = parents[j] >= 0 and mask[parents[j]]
    return mask


LEGGED = ("humanoid", "quadruped", "dragon", "bird", "spider", "insect")


def check_valid(kind, asset):
    mesh, skel, skin = asset.mesh, asset.skeleton, asset.skin
    assert not asset.animations
    assert 200 < len(mesh.vertices) <= 4000, "low-poly: a few thousand vertices at most"
    assert mesh.part_ids is not None and mesh.part_ids.max() >= 5
    assert abs(mesh.vertices[:, 1].min()) < 1e-12, "stands on y = 0"
    assert skin.indices.shape == (len(mesh.vertices), 4)
    # Skeleton: one root first, topological parents, every joint deforms something.
    assert skel.parents[0] == -1 and (skel.parents[1:] >= 0).all()
    assert (skel.parents < np.arange(len(skel))).all()
    assert not skel.helper.any()
    dense = skin.dense(len(skel))
    assert (dense.sum(0) > 0).all(), "every joint carries some weight"
    assert np.allclose(dense.sum(1), 1.0) and (dense.max(1) > 0.25).all(), "every vertex is weighted"
    assert set(EXPECTED_JOINTS[kind]) <= set(skel.names)
    lo, hi = SIZE_RANGE[kind]
    assert lo <= np.ptp(mesh.vertices, axis=0).max() <= hi


def check_joints_inside(asset):
    # Every primitive is convex, so a joint is inside a part when it is behind all its face planes.
    v, f, parts = asset.mesh.vertices, asset.mesh.faces, asset.mesh.part_ids
    joints = asset.skeleton.joints
    outside = np.full(len(joints), np.inf)
    for p in np.unique(parts):
        tri = v[f[parts == p]]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        keep = np.linalg.norm(n, axis=1) > 1e-15
        n = n[keep] / np.linalg.norm(n[keep], axis=1, keepdims=True)
        plane = ((joints[:, None] - tri[keep, 0][None]) * n[None]).sum(-1).max(1)
        outside = np.minimum(outside, plane)
    ok = outside <= 1e-9 * asset.mesh.diagonal
    assert ok.all(), [n for n, good in zip(asset.skeleton.names, ok) if not good]


def check_feet_on_ground(asset):
    names = asset.skeleton.names
    feet = [j for j, n in enumerate(names) if n.split(".")[0].endswith(("toe", "metatarsus", "tarsus"))]
    assert len(feet) in (2, 4, 6, 8)
    owner = asset.skin.indices[:, 0]  # the largest influence
    height = np.ptp(asset.mesh.vertices[:, 1])
    for j in feet:
        assert asset.mesh.vertices[owner == j, 1].min() < 0.02 * height, f"{names[j]} does not reach the ground"


def check_symmetry(asset):
    names, joints = asset.skeleton.names, asset.skeleton.joints
    mirror = np.array([-1.0, 1.0, 1.0])
    tol = 1e-9 * asset.mesh.diagonal
    lefts = [n for n in names if n.endswith(".L")]
    assert lefts and len(lefts) == sum(n.endswith(".R") for n in names)
    for n in lefts:
        left, right = names.index(n), names.index(n[:-2] + ".R")
        assert joints[left][0] > 0, f"{n} is not on the +X (left) side"
        assert np.abs(joints[left] * mirror - joints[right]).max() < tol
        assert names[asset.skeleton.parents[left]].replace(".L", ".R") == names[asset.skeleton.parents[right]]
    centre = [i for i, n in enumerate(names) if not n.endswith((".L", ".R"))]
    assert np.abs(joints[centre, 0]).max() < tol
    gap, _ = cKDTree(asset.mesh.vertices).query(asset.mesh.vertices * mirror)
    assert gap.max() < 1e-6 * asset.mesh.diagonal


@pytest.mark.parametrize("kind", CREATURE_KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_builds_valid_rigged_low_poly_asset(kind, seed):
    check_valid(kind, make_creature(kind, seed))


@pytest.mark.parametrize("kind", CREATURE_KINDS)
def test_every_part_is_a_closed_outward_facing_shell(kind):
    mesh = make_creature(kind, 6).mesh
    for p in np.unique(mesh.part_ids):
        faces = mesh.faces[mesh.part_ids == p]
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        _, uses = np.unique(edges, axis=0, return_counts=True)
        assert (uses == 2).all(), f"part {p} is not closed"
        tri = mesh.vertices[faces]
        volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
        assert volume > 0, f"part {p} faces inwards"


@pytest.mark.parametrize("kind", CREATURE_KINDS)
@pytest.mark.parametrize("seed", (0, 5))
def test_joints_lie_inside_the_mesh(kind, seed):
    check_joints_inside(make_creature(kind, seed))


@pytest.mark.parametrize("kind", LEGGED)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_foot_stands_on_the_ground(kind, seed):
    check_feet_on_ground(make_creature(kind, seed))


@pytest.mark.parametrize("kind", BILATERAL)
@pytest.mark.parametrize("seed", (0, 4))
def test_bilateral_symmetry(kind, seed):
    check_symmetry(make_creature(kind, seed))


@pytest.mark.slow
@pytest.mark.parametrize("kind", CREATURE_KINDS)
def test_many_seeds_pass_every_check(kind):
    for seed in range(100):
        asset = make_creature(kind, seed)
        check_valid(kind, asset)
        check_joints_inside(asset)
        if kind in LEGGED:
            check_feet_on_ground(asset)
        if kind in BILATERAL:
            check_symmetry(asset)


@pytest.mark.parametrize("kind", CREATURE_KINDS)
def test_same_seed_gives_identical_arrays(kind):
    a, b, c = make_creature(kind, 11), make_creature(kind, 11), make_creature(kind, 12)
    for x, y in (
        (a.mesh.vertices, b.mesh.vertices),
        (a.mesh.faces, b.mesh.faces),
        (a.mesh.part_ids, b.mesh.part_ids),
        (a.skeleton.joints, b.skeleton.joints),
        (a.skeleton.parents, b.skeleton.parents),
        (a.skin.indices, b.skin.indices),
        (a.skin.weights, b.skin.weights),
    ):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert a.skeleton.names == b.skeleton.names
    assert a.mesh.vertices.shape != c.mesh.vertices.shape or not np.array_equal(a.mesh.vertices, c.mesh.vertices)


@pytest.mark.parametrize("kind", CREATURE_KINDS)
def test_glb_round_trip_keeps_the_rig(kind, tmp_path):
    asset = make_creature(kind, 1)
    save(asset, tmp_path / "creature.glb")
    back = load(tmp_path / "creature.glb")
    assert back.skeleton.names == asset.skeleton.names, "depth-first joint order survives glTF"
    assert np.array_equal(back.skeleton.parents, asset.skeleton.parents)
    assert np.abs(back.skeleton.joints - asset.skeleton.joints).max() < 1e-6
    assert np.abs(back.mesh.vertices - asset.mesh.vertices).max() < 1e-6
    n = len(asset.skeleton)
    assert np.abs(back.skin.dense(n) - asset.skin.dense(n)).max() < 1e-6


def test_random_creature_covers_kinds_and_is_deterministic():
    kinds = {random_creature(seed).name.split("_")[0] for seed in range(40)}
    assert kinds == set(CREATURE_KINDS)
    assert random_creature(5).mesh.vertices.tobytes() == random_creature(5).mesh.vertices.tobytes()


def test_unknown_kind_is_a_user_error():
    with pytest.raises(Mesh3DError, match="unknown creature kind 'unicorn'"):
        make_creature("unicorn", 0)


@pytest.mark.parametrize("kind", CREATURE_KINDS)
def test_faces_plus_z_and_head_above_ground(kind):
    asset = make_creature(kind, 3)
    names, joints = asset.skeleton.names, asset.skeleton.joints
    front = joints[names.index("head")] if "head" in names else joints[names.index("cephalothorax")]
    back = [joints[i] for i, n in enumerate(names) if n.startswith(("tail", "abdomen", "caudal"))]
    assert all(front[2] > b[2] for b in back)
    assert front[1] > 0


def test_humanoid_anatomy():
    for seed in SEEDS:
        asset = make_creature("humanoid", seed)
        names, j = asset.skeleton.names, asset.skeleton.joints
        y = {n: j[names.index(n)][1] for n in names}
        assert 1.45 <= np.ptp(asset.mesh.vertices[:, 1]) <= 1.95, "an adult is about 1.5-1.9 m tall"
        assert y["head"] > y["neck"] > y["spine_02"] > y["spine_01"] > y["hips"] > y["shin.L"] > y["foot.L"] > y["toe.L"] >= 0
        assert y["upper_arm.L"] >= y["forearm.L"] >= y["hand.L"]
        assert 0.4 < y["hips"] / np.ptp(asset.mesh.vertices[:, 1]) < 0.6
        z = {n: j[names.index(n)][2] for n in names}
        assert z["toe.L"] > z["foot.L"] and z["toe.R"] > z["foot.R"], "feet point forward (+Z)"


def test_humanoid_hands_vary_from_mittens_to_five_fingers():
    fingers = set()
    for seed in range(8):
        names = make_creature("humanoid", seed).skeleton.names
        chains = [n for n in ("thumb", "index", "middle", "ring", "pinky") if f"{n}_01.L" in names]
        assert all(f"{c}_03.R" in names for c in chains)
        fingers.add(len(chains))
    assert fingers == {0, 4, 5}


def test_blends_smoothly_across_a_joint():
    asset = make_creature("humanoid", 0)
    names = asset.skeleton.names
    knee = names.index("shin.L")
    dense = asset.skin.dense(len(names))
    shared = (dense[:, knee] > 0.2) & (dense[:, names.index("thigh.L")] > 0.2)
    assert shared.sum() >= 10, "vertices around the knee follow both thigh and shin"
    dist = np.linalg.norm(asset.mesh.vertices[shared] - asset.skeleton.joints[knee], axis=1)
    assert dist.max() < 0.15, "blending stays near the knee"


@pytest.mark.parametrize("kind", CREATURE_KINDS)
def test_bending_one_joint_moves_only_its_subtree(kind):
    asset = make_creature(kind, 2)
    skel = asset.skeleton
    joint = skel.names.index(BEND[kind])
    rotvec = np.array([0.3, 0.9, -0.5])
    posed = asset.posed_vertices(pose_animation(skel, {BEND[kind]: rotvec}))[0]
    # With one joint turned, every skinning transform of its subtree is the same rotation R about
    # the joint, so LBS moves each vertex by exactly w_subtree * (R - I) (v - joint).
    q = np.append(np.sin(0.5 * np.linalg.norm(rotvec)) * rotvec / np.linalg.norm(rotvec), np.cos(0.5 * np.linalg.norm(rotvec)))
    rot = quat_to_matrix(q)
    w = asset.skin.dense(len(skel))[:, subtree(skel.parents, joint)].sum(1)
    offset = asset.mesh.vertices - skel.joints[joint]
    expected = asset.mesh.vertices + w[:, None] * (offset @ (rot - np.eye(3)).T)
    assert np.abs(posed - expected).max() < 1e-9
    moved = np.linalg.norm(posed - asset.mesh.vertices, axis=1) > 1e-12
    assert not moved[w == 0].any(), "vertices outside the subtree stay put"
    assert moved[w > 0.5].all() and (w > 0.5).sum() > 20


def test_bent_elbow_moves_hand_rigidly_and_keeps_the_rest():
    asset = make_creature("humanoid", 1)
    skel = asset.skeleton
    names = skel.names
    posed = asset.posed_vertices(pose_animation(skel, {"forearm.L": (0.0, np.pi / 2, 0.0)}))[0]
    dense = asset.skin.dense(len(skel))
    arm = dense[:, subtree(skel.parents, names.index("forearm.L"))].sum(1)
    elbow = skel.joints[names.index("forearm.L")]
    still = arm == 0
    assert np.abs(posed[still] - asset.mesh.vertices[still]).max() < 1e-12
    rigid = arm > 1 - 1e-12
    before = np.linalg.norm(asset.mesh.vertices[rigid] - elbow, axis=1)
    after = np.linalg.norm(posed[rigid] - elbow, axis=1)
    assert np.allclose(before, after), "a fully weighted hand keeps its distance to the elbow"
    # +90 degrees about +Y turns the left forearm (pointing +X) towards -Z.
    wrist = skel.joints[names.index("hand.L")] - elbow
    hand = posed[asset.skin.dense(len(skel))[:, names.index("hand.L")] > 0.99]
    assert hand[:, 2].max() < elbow[2] - 0.5 * np.hypot(wrist[0], wrist[2])


def test_pose_rejects_unknown_joint():
    skel = make_creature("snake", 0).skeleton
    with pytest.raises(Mesh3DError, match="no joint"):
        pose_animation(skel, {"wing.L": (0, 0, 1)})


def test_preview_render_draws_the_creature(tmp_path):
    image = render(make_creature("quadruped", 0), size=64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    covered = (image < 250).any(-1).mean()
    assert 0.05 < covered < 0.9, "the creature fills part of the frame"
    write_png(tmp_path / "q.png", image)
    data = (tmp_path / "q.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[16:24] == (64).to_bytes(4, "big") * 2


# Procedural humanoid joint -> the artist's joint in the corpus's modular characters.
ARTIST_HUMANOID = {
    "hips": "Hips",
    "neck": "Neck",
    "head": "Head",
    "shoulder.L": "Shoulder.L",
    "upper_arm.L": "UpperArm.L",
    "thigh.L": "UpperLeg.L",
    "shin.L": "LowerLeg.L",
}


def _placement(asset, names):
    """(len(names), 2) height above the feet and distance from the midline, over the mesh height."""
    v = asset.mesh.vertices
    height = np.ptp(v[:, 1])
    joints = asset.skeleton.joints[[asset.skeleton.names.index(n) for n in names]]
    return np.stack([(joints[:, 1] - v[:, 1].min()) / height, np.abs(joints[:, 0]) / height], 1)


def test_humanoid_joints_sit_where_artists_put_them(rig_records):
    """Median joint placement of procedural humanoids matches the artist-rigged corpus characters
    within 5% of the body height."""
    people = [r for r in rig_records if r.pack in ("modular_men", "modular_women")][::3]
    assert len(people) >= 4
    artist = np.median([_placement(load(r.path), ARTIST_HUMANOID.values()) for r in people], 0)
    ours = np.median([_placement(make_creature("humanoid", seed), ARTIST_HUMANOID.keys()) for seed in range(20)], 0)
    gap = np.abs(ours - artist)
    assert gap.max() < 0.05, {n: np.round(g, 3).tolist() for n, g in zip(ARTIST_HUMANOID, gap)}
