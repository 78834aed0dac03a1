"""The asset model: validation, transforms, forward kinematics and skinning."""

import numpy as np
import pytest
import torch

from mesh3d.asset import Animation, Asset, Mesh, Skeleton, Skin, forward_kinematics, linear_blend_skinning
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.transforms import matrix_to_quat, matrix_to_trs, quat_multiply, quat_normalize, quat_slerp, quat_to_matrix, trs_to_matrix

rng = np.random.default_rng(0)


def chain(n=4):
    joints = np.c_[np.zeros(n), np.arange(n, dtype=float), np.zeros(n)]
    return Skeleton(joints, np.arange(n) - 1, [f"j{i}" for i in range(n)])


def test_quaternion_round_trips():
    q = quat_normalize(rng.normal(size=(100, 4)))
    back = matrix_to_quat(quat_to_matrix(q))
    assert np.allclose(np.abs((back * q).sum(-1)), 1, atol=1e-12)
    # product of quaternions is product of matrices
    a, b = quat_normalize(rng.normal(size=(2, 50, 4)))
    assert np.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)
    mid = quat_slerp(a, b, np.full(50, 0.5))
    assert np.allclose(np.linalg.norm(mid, axis=-1), 1)


def test_trs_decomposition_round_trip():
    t, r, s = rng.normal(size=(20, 3)), quat_normalize(rng.normal(size=(20, 4))), rng.uniform(0.2, 3, (20, 3))
    s[::3, 0] *= -1  # mirrored
    m = trs_to_matrix(t, r, s)
    assert np.allclose(trs_to_matrix(*matrix_to_trs(m)), m, atol=1e-10)


def test_mesh_validation_errors():
    with pytest.raises(Mesh3DError, match="NaN"):
        Mesh([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
    with pytest.raises(Mesh3DError, match="face indices"):
        Mesh(np.zeros((3, 3)), [[0, 1, 3]])
    with pytest.raises(Mesh3DError, match="colors"):
        Mesh(np.zeros((3, 3)), [[0, 1, 2]], colors=np.ones((2, 4)))


def test_skeleton_validation_errors():
    with pytest.raises(Mesh3DError, match="topological"):
        Skeleton(np.zeros((2, 3)), [1, -1], ["a", "b"])
    with pytest.raises(Mesh3DError, match="unique"):
        Skeleton(np.zeros((2, 3)), [-1, 0], ["a", "a"])
    with pytest.raises(Mesh3DError, match="rotation"):
        Skeleton(np.zeros((1, 3)), [-1], ["a"], frames=np.full((1, 3, 3), 2.0))


def test_skin_from_dense_normalises_and_keeps_top_k():
    dense = rng.uniform(size=(30, 7))
    skin = Skin.from_dense(dense, k=4)
    assert skin.indices.shape == (30, 4)
    assert np.allclose(skin.weights.sum(1), 1)
    top = np.sort(dense, 1)[:, -4:]
    assert np.allclose(np.sort(np.take_along_axis(dense, skin.indices, 1), 1), top)
    with pytest.raises(Mesh3DError):
        Skin(np.zeros((2, 1), int), np.array([[0.5], [1.0]]))


def test_rest_pose_reproduces_bind_mesh_with_any_frames():
    sk = chain()
    frames = quat_to_matrix(quat_normalize(rng.normal(size=(4, 4))))
    for s in (sk, Skeleton(sk.joints, sk.parents, sk.names, frames=frames)):
        v = rng.normal(size=(50, 3))
        skin = Skin.from_dense(rng.uniform(size=(50, 4)))
        asset = Asset(Mesh(v, np.zeros((0, 3))), s, skin, [Animation.rest(s, frames=3)])
        assert np.allclose(asset.posed_vertices(asset.animations[0]), v[None], atol=1e-10)


def test_fk_rotates_subtree_about_joint():
    sk = chain(3)
    anim = Animation.rest(sk)
    anim.rotations[0, 1] = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]  # 90 degrees about z at joint 1
    world = forward_kinematics(sk.parents, anim.translations, anim.rotations, anim.scales)
    assert np.allclose(world[0, 2, :3, 3], [-1, 1, 0])  # joint 2 swings from (0,2,0) to (-1,1,0)
    v = np.array([[0.0, 2.0, 0.0], [0.0, 0.5, 0.0]])
    skin = Skin(np.array([[2], [0]]), np.ones((2, 1)))
    posed = linear_blend_skinning(v, sk.joints, world, skin.indices, skin.weights)
    assert np.allclose(posed[0], [[-1, 1, 0], [0, 0.5, 0]])


def test_fk_and_lbs_are_differentiable_in_torch():
    sk = chain(3)
    anim = Animation.rest(sk, frames=2)
    rot = torch.tensor(anim.rotations, requires_grad=True)
    world = forward_kinematics(sk.parents, torch.tensor(anim.translations), rot, torch.tensor(anim.scales))
    v = torch.tensor([[0.3, 2.0, 0.1]], dtype=torch.float64)
    posed = linear_blend_skinning(v, torch.tensor(sk.bind_matrices()), world, torch.tensor([[2]]), torch.ones(1, 1, dtype=torch.float64))
    posed.sum().backward()
    assert rot.grad is not None and torch.isfinite(rot.grad).all() and rot.grad.abs().sum() > 0


def test_asset_rejects_mismatched_parts():
    sk = chain(2)
    mesh = Mesh(np.zeros((3, 3)), [[0, 1, 2]])
    with pytest.raises(Mesh3DError, match="vertex count"):
        Asset(mesh, sk, Skin(np.zeros((2, 1), int), np.ones((2, 1))))
    with pytest.raises(Mesh3DError, match="joint count"):
        Asset(mesh, sk, Skin(np.zeros((3, 1), int), np.ones((3, 1))), [Animation.rest(chain(3))])
    with pytest.raises(Mesh3DError, match="up axis"):
        Asset(mesh, up_axis="W")
