"""The learned skinning model: equivariance in the joints, any joint count, valid weights, training."""

import numpy as np
import pytest
import torch

from data_prep.procedural import make_creature
from mesh3d.asset import Mesh, Skeleton, Skin
from rigging.skinning.learned import (DEFAULT_WEIGHTS, GATE_INIT, build_model, choose_post_processing, collate, dense_prior,
                                      hop_buckets, learned_skin, prepare, skin_problems, soft_cross_entropy)

TINY = dict(n_embd=32, n_head=2, n_layer=2, n_latents=4, n_freqs=3, pair_hidden=8)


def tiny_model(seed=0, prior=False):
    """prior: False, True (geometric prior in the logits) or "gate" (and mixed in by a gate)."""
    torch.manual_seed(seed)
    return build_model(TINY | {"prior": bool(prior), "gate": prior == "gate"}).eval()


def random_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 6) points in the normalised cube with random unit normals."""
    normals = rng.normal(size=(n, 3))
    return np.concatenate([rng.uniform(-0.5, 0.5, (n, 3)), normals / np.linalg.norm(normals, axis=1, keepdims=True)], 1)


def random_tree(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) parents of a random tree in topological order (joint 0 the root)."""
    return np.array([-1] + [int(rng.integers(j)) for j in range(1, n)])


def test_hop_buckets_on_a_small_tree():
    # 0 - 1 - 2, and 0 - 3
    b = hop_buckets(np.array([-1, 0, 1, 0]))
    hops, relation = b % 16, b // 16
    assert hops[2, 3] == 3 and relation[2, 3] == 0  # cousins, through the root
    assert hops[2, 0] == 2 and relation[2, 0] == 1  # 0 is an ancestor of 2
    assert hops[0, 2] == 2 and relation[0, 2] == 2  # 2 is a descendant of 0
    assert (np.diag(b) == 0).all()


@pytest.mark.parametrize("prior", [False, True, "gate"])
def test_permuting_joints_permutes_the_outputs(prior):
    rng = np.random.default_rng(0)
    j, n = 12, 300
    parents = random_tree(j, rng)
    joints = rng.uniform(-0.4, 0.4, (j, 3))
    helper = np.zeros(j, bool)
    helper[5] = True
    points = random_points(n, rng)
    perm = rng.permutation(j)  # any order, parents need not come first
    inverse = np.argsort(perm)
    parents_p = np.where(parents[perm] >= 0, inverse[np.maximum(parents[perm], 0)], -1)
    model = tiny_model(prior=prior)
    x, x_p = prepare(points, joints, parents, helper), prepare(points, joints[perm], parents_p, helper[perm])
    if prior:  # random geometric weights over the deforming joints, renamed with the joints
        index = torch.from_numpy(rng.choice(np.flatnonzero(~helper), (1, n, 4)))
        weight = torch.from_numpy(rng.dirichlet(np.ones(4), (1, n)).astype(np.float32))
        x.update(point_prior_index=index, point_prior_weight=weight)
        x_p.update(point_prior_index=torch.from_numpy(inverse)[index], point_prior_weight=weight)
    with torch.no_grad():
        a = model.encode(x)["logits"][0].softmax(-1).numpy()
        b = model.encode(x_p)["logits"][0].softmax(-1).numpy()
    np.testing.assert_allclose(b, a[:, perm], atol=1e-5)
    assert np.abs(a[:, 5]).max() < 1e-6  # the helper takes nothing


@pytest.mark.parametrize("prior", [False, True, "gate"])
def test_learned_skin_is_independent_of_joint_order(prior):
    creature = make_creature("quadruped", 3)
    sk = creature.skeleton
    # Another topological order: reverse the order of the joints at every depth.
    perm = np.lexsort([-np.arange(len(sk)), sk.depths()])
    inverse = np.argsort(perm)
    permuted = Skeleton(sk.joints[perm], np.where(sk.parents[perm] >= 0, inverse[np.maximum(sk.parents[perm], 0)], -1),
                        [sk.names[i] for i in perm])
    model = tiny_model(1, prior)
    a = learned_skin(creature.mesh, sk, model=model).dense(len(sk))
    b = learned_skin(creature.mesh, permuted, model=model).dense(len(sk))
    np.testing.assert_allclose(b, a[:, perm], atol=1e-4)


@pytest.mark.parametrize("n_joints,prior", [(2, False), (7, False), (71, False), (200, False), (2, True), (200, True), (2, "gate"), (200, "gate")])
def test_any_joint_count_gives_valid_weights(n_joints, prior):
    creature = make_creature("humanoid", 0)
    rng = np.random.default_rng(n_joints)
    lo, hi = creature.mesh.vertices.min(0), creature.mesh.vertices.max(0)
    helper = np.zeros(n_joints, bool)
    helper[-1] = True
    sk = Skeleton(rng.uniform(lo, hi, (n_joints, 3)), random_tree(n_joints, rng), [f"j{i}" for i in range(n_joints)], helper)
    skin = learned_skin(creature.mesh, sk, model=tiny_model(prior=prior))
    dense = skin.dense(n_joints)
    assert dense.shape == (len(creature.mesh.vertices), n_joints)
    assert skin.indices.shape[1] <= 4
    np.testing.assert_allclose(dense.sum(1), 1.0, atol=1e-6)
    assert (dense >= 0).all() and (dense[:, helper] == 0).all()


def test_gated_model_starts_from_the_prior():
    rng = np.random.default_rng(3)
    j, n = 9, 200
    parents = random_tree(j, rng)
    points = random_points(n, rng)
    x = prepare(points, rng.uniform(-0.4, 0.4, (j, 3)), parents, np.zeros(j, bool))
    index = torch.from_numpy(rng.choice(j, (1, n, 4)))
    weight = torch.from_numpy(rng.dirichlet(np.ones(4), (1, n)).astype(np.float32))
    x.update(point_prior_index=index, point_prior_weight=weight)
    with torch.no_grad():
        out = tiny_model(prior="gate").encode(x)["logits"].softmax(-1)
    prior = dense_prior(index, weight, j)
    share = 1 - torch.sigmoid(torch.tensor(GATE_INIT))  # untrained, the gate is the same everywhere
    assert torch.all(out >= share * prior - 1e-5)
    np.testing.assert_allclose(out.sum(-1).numpy(), 1.0, atol=1e-5)


def test_post_processing_choice_balances_precision_and_recall_with_smoothing():
    row = lambda s, p, r: {"smooth": s, "min_weight": 0.1, "precision": p, "recall": r, "deform_mean": 0.3}
    rows = [row(0, 0.95, 0.95), row(1, 0.99, 0.80), row(1, 0.90, 0.88), row(2, 0.86, 0.90)]
    assert choose_post_processing(rows) == rows[2]  # the unsmoothed row is better but not a candidate


def test_skin_problems_finds_unweighted_chains():
    sk = Skeleton(np.zeros((4, 3)), [-1, 0, 1, 0], ["a", "b", "c", "d"])
    all_on_root = Skin(np.zeros((3, 1), int), np.ones((3, 1)))
    assert any("chain" in p for p in skin_problems(all_on_root, sk))
    spread = Skin(np.array([[0], [2], [3]]), np.ones((3, 1)))  # b carries nothing, but c below it does
    assert skin_problems(spread, sk) == []


@pytest.mark.parametrize("prior", [False, True, "gate"])
def test_tiny_model_overfits_one_creature(prior):
    from data_prep.skin_data import DataConfig, posed_examples

    creature = make_creature("snake", 0)
    cfg = DataConfig(n_points=128, n_queries=64)
    examples = posed_examples(creature, 2, cfg, np.random.default_rng(0))
    items = []
    for ex in examples:
        x = prepare(ex["points"], ex["joints"], creature.skeleton.parents, creature.skeleton.helper)
        x.update({key: torch.from_numpy(ex[key].astype(np.int64) if "index" in key else ex[key])[None]
                  for key in ("queries", "query_index", "query_weight", "point_prior_index", "point_prior_weight",
                              "query_prior_index", "query_prior_weight")})
        items.append(x)
    batch = collate(items)
    model = tiny_model(prior=prior).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = soft_cross_entropy(model(batch)[1], batch["query_index"], batch["query_weight"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Entropy of the targets bounds the loss from below; the model must get most of the way there.
    w = batch["query_weight"]
    entropy = -(w * torch.log(w.clamp_min(1e-12))).sum(-1).mean().item()
    assert losses[-1] - entropy < 0.3 * (losses[0] - entropy)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped skin weights (rigging/weights/skin.safetensors)")
def test_shipped_model_on_an_unseen_creature():
    from rigging.eval import skin_l1, skin_precision_recall

    creature = make_creature("humanoid", 1000)  # seeds >= 12 were never trained on
    skin = learned_skin(creature.mesh, creature.skeleton)
    assert skin_problems(skin, creature.skeleton) == []
    pred, gt = skin.dense(len(creature.skeleton)), creature.skin.dense(len(creature.skeleton))
    precision, recall = skin_precision_recall(pred, gt)
    assert skin_l1(pred, gt) < 0.5 and precision > 0.7 and recall > 0.7


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped skin weights (rigging/weights/skin.safetensors)")
def test_rig_asset_with_learned_skin():
    from app.pipeline import Report, rig_asset

    creature = make_creature("bird", 1000)
    report = Report("", "")
    rigged = rig_asset(creature, skeleton="geometric", skin="learned", report=report)
    assert report.skin_method == "learned" and not report.warnings
    assert rigged.skin.dense(len(rigged.skeleton)).sum(1) == pytest.approx(1.0)


def test_data_command_reads_switches_as_switches(tmp_path, capsys):
    from data_prep.shards import build_command
    from data_prep.skin_data import DataConfig

    seen = []

    def build(out, cfg):
        seen.append(cfg)
        return {"shards": []}

    build_command(["--out", str(tmp_path), "--poses-per-rig", "3"], "", "x", DataConfig, build)
    build_command(["--out", str(tmp_path), "--posed-prior"], "", "x", DataConfig, build)
    assert seen[0].posed_prior is False and seen[0].poses_per_rig == 3
    assert seen[1].posed_prior is True


def test_reduced_skeleton_moves_weight_to_kept_ancestors():
    from data_prep.skin_data import random_keep, reduce_skeleton

    creature = make_creature("quadruped", 2)
    sk, dense = creature.skeleton, creature.skin.dense(len(creature.skeleton))
    rng = np.random.default_rng(0)
    for _ in range(10):
        keep = random_keep(sk, rng)
        small, weights, kept = reduce_skeleton(sk, dense, keep)
        assert len(small) == len(kept) >= 2 and (small.parents < np.arange(len(small))).all()
        np.testing.assert_allclose(weights.sum(1), dense.sum(1))  # no weight lost
        np.testing.assert_allclose(small.joints, sk.joints[kept])
        # every removed joint's weight sits on its nearest kept ancestor
        for j in np.flatnonzero(~np.isin(np.arange(len(sk)), kept)):
            a = sk.parents[j]
            while a not in kept:
                a = sk.parents[a]
            assert (weights[dense[:, j] > 0.99, np.searchsorted(kept, a)] > 0.99).all()
    # Down to the root and one child: a two-joint rig, like a prop on a spring.
    only = np.zeros(len(sk), bool)
    only[np.flatnonzero(sk.parents == 0)[0]] = True
    small, weights, _ = reduce_skeleton(sk, dense, only)
    assert len(small) == 2 and small.parents.tolist() == [-1, 0]


def test_skin_data_with_reduced_skeletons():
    from data_prep.skin_data import DataConfig, posed_examples

    creature = make_creature("humanoid", 1)
    examples = posed_examples(creature, 4, DataConfig(n_points=64, n_queries=32, reduced=0.7), np.random.default_rng(0))
    counts = [len(e["parents"]) for e in examples]
    assert counts[:2] == [len(creature.skeleton)] * 2 and all(c < len(creature.skeleton) for c in counts[2:])
    for e in examples:
        assert len(e["joints"]) == len(e["parents"]) == len(e["helper"])
        assert e["query_index"].max() < len(e["parents"]) and e["query_prior_index"].max() < len(e["parents"])
        np.testing.assert_allclose(e["query_weight"].sum(1), 1.0, atol=1e-5)
