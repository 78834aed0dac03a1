"""Learned skin weights: attention between surface points and joints, with a skeleton-graph bias.

Model (`SkinNet`, Puppeteer class, for any number of joints):

* point tokens: surface samples (position and smooth normal in the mesh's normalised frame, bounding
  box centred, longest side 1) with a Fourier positional encoding, through an MLP;
* joint tokens: joint and parent positions (and their Fourier encodings), root/leaf/helper flags;
  no joint index is ever used, so the model is equivariant to the joint order and takes any count;
* a global shape code: a few learned queries cross-attend to the point tokens once;
* each layer: joints self-attend with a topology-aware bias (a learned per-head embedding of the
  hop distance between the two joints on the skeleton tree and whether one is the other's
  ancestor, `hop_buckets`, added to the attention logits), then cross-attend to the points and the
  shape code; then the points cross-attend to the joints and the shape code;
* geometric priors: for every (point, joint) pair a small MLP reads `pair_features` (distance to
  the joint's bones, relative to the nearest bone, position along the bone, facing) and adds a
  per-head bias to the point-joint attention and a term to the output logit, so the network learns
  a correction of distance-based skinning rather than skinning from scratch;
* with `prior` (the shipped model), the geometric weights themselves (rigging.skinning.geometric,
  computed on the input first) are a further pair feature and the output starts from them: their
  log, times a learned gain, is added to the output logit;
* with `gate` (needs `prior`), each point's output is the mixture (1 - a) * prior + a * network,
  with a = sigmoid(a linear gate on the final point token), starting at 12 %: the network decides
  per point how far to move from the geometric weights;
* output: per point, logits over joints (scaled dot product of the final point and joint tokens
  plus the pair term), helper joints masked, softmax.

Inference (`learned_skin`): the joints see `n_points` surface samples; then every vertex of the
mesh is a query that attends to the joints layer by layer (`SkinNet.decode`), so each vertex gets
its own prediction; the weights are smoothed over the mesh, cut to the top 4, small influences
dropped and renormalised. `skin_problems` lists reasons not to trust a result (`mesh3d rig
--skin learned` reports them as warnings).

Training is a `Task` for the shared trainer (`SkinTask`, data from data_prep.skin_data):

    python -m data_prep.skin_data --out runs/skin_data
    mesh3d train skin rigging/weights/skin_train.toml     # = python -m mesh3d.nn.trainer the same file

Dev metrics (GT skeleton given) and speed:

    python -m rigging.eval --split dev --skin both        # geometric, Blender bone heat and learned side by side
    python -m rigging.skinning.learned speed              # a 20k-vertex mesh with 60 joints
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import nn

from mesh3d.asset import Mesh, Skeleton, Skin
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.geometry.sampling import face_normals_areas
from mesh3d.nn.trainer import batch_indices
from mesh3d.nn.weights import load_weights, read_metadata
from rigging.skinning.geometric import _vertex_normals

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "skin.safetensors"
TASK_SPEC = "rigging.skinning.learned:SkinTask"

# Options that fix the architecture (stored in the weights' metadata; everything else is training).
MODEL_DEFAULTS = dict(n_embd=128, n_head=4, n_layer=3, n_latents=16, n_freqs=6, pair_hidden=32, prior=False, gate=False)
MAX_HOPS = 16  # hop distances on the skeleton graph >= this share one bias (and joints of separate trees)
N_PAIR = 6  # geometric features per (point, joint): see pair_features
MAX_QUERIES = 6000  # vertices predicted one by one; larger meshes are interpolated from this many
MASKED = -1e4  # logit of joints that cannot take weight (helpers, padding); finite so 0 * it stays 0
K = 4  # influences kept per point in targets and priors
# Post-processing of the shipped model, chosen by `tune` (its rule once revised after a dev result: see SKIN_MODEL_CARD.md).
SMOOTH, MIN_WEIGHT = 1, 0.15
PRIOR_FLOOR = 1e-3  # the prior's logit is log(w + PRIOR_FLOOR): joints the geometric weights skip start far below, not at -inf
GATE_INIT = -2.0  # the gate's starting logit: the mixture starts at 88 % geometric weights


def top_k(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) int16 indices and float32 weights of the K largest entries of each row of dense (n, J),
    renormalised (rows of zeros stay zero: no target there). Fewer than K joints: padded with weight 0."""
    dense = np.pad(dense, ((0, 0), (0, max(0, K - dense.shape[1]))))
    index = np.argsort(-dense, axis=1, kind="stable")[:, :K]
    weight = np.take_along_axis(dense, index, 1)
    total = weight.sum(1, keepdims=True)
    weight = np.where(total > 1e-8, weight / np.maximum(total, 1e-12), 0.0)
    return np.where(weight > 0, index, 0).astype(np.int16), weight.astype(np.float32)


def surface_points(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n points uniform over the surface area with smooth normals, and where they lie.

    vertices (V, 3), faces (F, 3). Returns points (n, 3), unit normals (n, 3) interpolated from
    the area-weighted vertex normals (the face normal where those cancel), face (n,) indices and
    barycentric coordinates (n, 3), so per-vertex values carry to the points.
    """
    face_normals, areas = face_normals_areas(vertices, faces)
    if not len(faces) or areas.sum() <= 0:
        raise Mesh3DError("cannot sample a surface: the mesh has no face with area; give a triangle mesh")
    face = rng.choice(len(faces), size=n, p=areas / areas.sum())
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1.0
    u[flip], w[flip] = 1.0 - u[flip], 1.0 - w[flip]
    bary = np.stack([1.0 - u - w, u, w], 1)
    points = np.einsum("nc,ncd->nd", bary, vertices[faces[face]])
    normals = np.einsum("nc,ncd->nd", bary, _vertex_normals(vertices, faces)[faces[face]])
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(norm > 1e-6, normals / np.maximum(norm, 1e-12), face_normals[face])
    return points, normals, face, bary


# ----------------------------------------------------------------------------- inputs


def hop_buckets(parents: np.ndarray) -> np.ndarray:
    """(J, J) int64 bucket of every joint pair for the topology-aware attention bias.

    bucket = relation * MAX_HOPS + min(hops, MAX_HOPS - 1), with hops the number of bones between
    the two joints on the skeleton tree and relation 1 when the second joint is an ancestor of the
    first, 2 when it is a descendant, else 0. Joints of separate trees get hops = MAX_HOPS - 1.
    Depends only on the tree, not on the joint order (the parents need not precede their children).
    """
    parents = np.asarray(parents, np.int64)
    j = len(parents)
    ancestor = np.zeros((j, j), bool)  # ancestor[a, b]: b is a or an ancestor of a
    for a in range(j):
        b, steps = a, 0
        while b >= 0 and steps <= j:  # steps: a guard against cycles in user input
            ancestor[a, b] = True
            b, steps = parents[b], steps + 1
    depth = ancestor.sum(1) - 1
    common = ancestor[:, None, :] & ancestor[None, :, :]
    lca_depth = np.where(common, depth[None, None, :], -1).max(2)
    hops = np.where(lca_depth >= 0, depth[:, None] + depth[None, :] - 2 * lca_depth, MAX_HOPS - 1)
    eye = np.eye(j, dtype=bool)
    relation = np.where(ancestor & ~eye, 1, np.where(ancestor.T & ~eye, 2, 0))
    return relation * MAX_HOPS + np.minimum(hops, MAX_HOPS - 1)


def prepare(points: np.ndarray, joints: np.ndarray, parents: np.ndarray, helper: np.ndarray) -> dict:
    """Model inputs of one example (a batch of 1) as tensors.

    points (N, 6): normalised surface samples (xyz, unit normal). joints (J, 3) in the same frame,
    parents (J,) (-1 for roots), helper (J,) bool (no weight for them). The bones of a joint are
    the segments to its children (a point for a leaf), as for the geometric weights.
    """
    joints = np.asarray(joints, np.float32)
    parents = np.asarray(parents, np.int64)
    j = len(joints)
    kids = [[c] for c in range(j)]  # a leaf's bone is a point: its own position
    for c, p in enumerate(parents):
        if p >= 0:
            kids[p] = [c] if kids[p] == [p] else kids[p] + [c]
    width = max(len(k) for k in kids)
    children = np.array([k + [k[0]] * (width - len(k)) for k in kids], np.int64)
    parent_pos = joints[np.where(parents >= 0, parents, np.arange(j))]
    n_children = np.array([0 if k == [i] else len(k) for i, k in enumerate(kids)], np.float32)
    joint_feat = np.concatenate([joints, parent_pos, joints - parent_pos, (parents < 0)[:, None], n_children[:, None] / 4,
                                 np.asarray(helper, np.float32)[:, None]], 1).astype(np.float32)
    t = torch.from_numpy
    return {"points": t(np.asarray(points, np.float32))[None], "joint_feat": t(joint_feat)[None],
            "children": t(children)[None], "buckets": t(hop_buckets(parents))[None],
            "joint_mask": torch.ones(1, j, dtype=torch.bool), "deform": t(~np.asarray(helper, bool))[None]}


def collate(items: list[dict]) -> dict:
    """Batch of `prepare` outputs (plus any per-point tensors of equal sizes): joints padded to the
    largest count (joint_mask False there)."""
    j = max(x["joint_feat"].size(1) for x in items)
    c = max(x["children"].size(2) for x in items)
    out = {}
    for key in items[0]:
        rows = []
        for x in items:
            v = x[key][0]
            if key == "children":  # pad slots repeat the first child; padded joints point at themselves
                v = torch.cat([v, v[:, :1].expand(-1, c - v.size(1))], 1)
                v = torch.cat([v, torch.arange(v.size(0), j)[:, None].expand(-1, c)], 0)
            elif key == "buckets":
                v = F.pad(v, (0, j - v.size(1), 0, j - v.size(0)))
            elif key in ("joint_feat", "joint_mask", "deform"):  # per joint: zeros / False
                v = F.pad(v, (0, 0, 0, j - v.size(0))) if v.dim() == 2 else F.pad(v, (0, j - v.size(0)))
            rows.append(v)
        out[key] = torch.stack(rows)
    return out


def fourier(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """(..., 3) normalised positions -> (..., 6 * n_freqs) sines and cosines at 2^k * pi."""
    f = x[..., None] * (math.pi * 2.0 ** torch.arange(n_freqs, dtype=x.dtype))
    return torch.cat([f.sin(), f.cos()], -1).flatten(-2)


def _to_segments(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distance (B, N, K), position along (0 at a, 1 at b) and facing cosine of points (B, N, 6)
    to segments a -> b (B, K, 3) (a point when a == b)."""
    p, n = points[..., None, :3], points[..., None, 3:]
    a, ab = a[:, None], (b - a)[:, None]
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    offset = a + t[..., None] * ab - p
    dist = offset.norm(dim=-1)
    return dist, t, (offset * n).sum(-1) / dist.clamp_min(1e-6)


def pair_features(points: torch.Tensor, joints: torch.Tensor, children: torch.Tensor, deform: torch.Tensor,
                  prior: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, J, N_PAIR (+1 with a prior)) geometric cues of every (point, joint) pair, the priors of geometric skinning.

    points (B, N, 6), joints (B, J, 3), children (B, J, C) joint indices (the bones of each joint
    end at its children; a leaf's at itself; unused slots repeat the first), deform (B, J) bool.
    Features (normalised units, x4): distance to the joint's nearest bone, that minus the distance
    to the nearest deforming bone, log of their ratio, distance to the joint itself, position along
    the nearest bone (0 at the joint, 1 at the child), and the cosine between the point's normal and
    the way to the bone (negative: the bone is behind the surface, as seen from inside); then, when
    given, the geometric weight of the pair, prior (B, N, J).
    """
    end = lambda c: torch.gather(joints, 1, c[..., None].expand(-1, -1, 3))
    d_bone, t, facing = _to_segments(points, joints, end(children[..., 0]))
    for r in range(1, children.size(2)):  # further bones, only of the joints that have them
        sel = torch.nonzero((children[..., r] != children[..., 0]).any(0))[:, 0]
        if not len(sel):
            continue
        d2, t2, f2 = _to_segments(points, joints[:, sel], end(children[:, sel, r]))
        better = d2 < d_bone[..., sel]
        d_bone[..., sel] = torch.where(better, d2, d_bone[..., sel])
        t[..., sel] = torch.where(better, t2, t[..., sel])
        facing[..., sel] = torch.where(better, f2, facing[..., sel])
    d_min = torch.where(deform[:, None], d_bone, torch.full_like(d_bone, 1e3)).min(-1, keepdim=True).values
    d_joint = (joints[:, None] - points[..., None, :3]).norm(dim=-1)
    ratio = torch.log((d_bone + 0.01) / (d_min + 0.01))
    features = [4 * d_bone, 4 * (d_bone - d_min), ratio, 4 * d_joint, t, facing]
    return torch.stack(features if prior is None else features + [prior], -1)


def sparse_batch(dense: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """`top_k` of dense (n, J) as a batch of one: (1, n, K) long indices and (1, n, K) float32 weights."""
    index, weight = top_k(dense)
    return torch.from_numpy(index).long()[None], torch.from_numpy(weight)[None]


def dense_prior(index: torch.Tensor, weight: torch.Tensor, n_joints: int) -> torch.Tensor:
    """(B, N, n_joints) weights from their sparse (B, N, K) joint indices and weights."""
    return torch.zeros(*index.shape[:2], n_joints, dtype=weight.dtype).scatter_add_(-1, index, weight)


# ----------------------------------------------------------------------------- model


class Attention(nn.Module):
    """Multi-head attention of queries x over keys/values kv with an additive bias (B, H, Lq, Lk)."""

    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q, self.kv, self.out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, lq, d = x.shape
        h = self.n_head
        q = self.q(x).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(kv).view(b, kv.size(1), 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(y.transpose(1, 2).reshape(b, lq, d))


def mlp(d_in: int, d: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.GELU(), nn.Linear(d, d_out))


class Layer(nn.Module):
    """Joints attend to each other (hop bias), to the points and the shape code; then points attend
    to the joints and the shape code (pair bias)."""

    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(7))
        self.joint_self, self.joint_cross, self.point_cross = Attention(d, n_head), Attention(d, n_head), Attention(d, n_head)
        self.joint_mlp, self.point_mlp = mlp(d, 4 * d, d), mlp(d, 4 * d, d)

    def joints(self, j, points, latents, hop_bias, joint_to_point_bias):
        j = j + self.joint_self(self.ln[0](j), self.ln[0](j), hop_bias)
        j = j + self.joint_cross(self.ln[1](j), self.ln[2](torch.cat([points, latents], 1)), joint_to_point_bias)
        return j + self.joint_mlp(self.ln[3](j))

    def points(self, p, j, latents, point_to_joint_bias):
        p = p + self.point_cross(self.ln[4](p), self.ln[5](torch.cat([j, latents], 1)), point_to_joint_bias)
        return p + self.point_mlp(self.ln[6](p))


class SkinNet(nn.Module):
    """Per-point logits over joints. See the module docstring for the architecture."""

    def __init__(self, n_embd=128, n_head=4, n_layer=3, n_latents=16, n_freqs=6, pair_hidden=32, prior=False, gate=False):
        super().__init__()
        d = n_embd
        self.n_head, self.n_freqs = n_head, n_freqs
        self.point_in = mlp(6 + 6 * n_freqs, d, d)
        self.joint_in = mlp(12 + 12 * n_freqs, d, d)
        self.pair = mlp(N_PAIR + bool(prior), pair_hidden, n_head + 1)
        # With a prior, the output starts from the geometric weights (logit log(w)) and learns a correction.
        self.prior_gain = nn.Parameter(torch.ones(())) if prior else None
        self.hop = nn.Embedding(3 * MAX_HOPS, n_head)
        self.latent_queries = nn.Parameter(0.02 * torch.randn(n_latents, d))
        self.latent_attn, self.latent_mlp = Attention(d, n_head), mlp(d, 4 * d, d)
        self.latent_ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.layers = nn.ModuleList(Layer(d, n_head) for _ in range(n_layer))
        self.ln_p, self.ln_j = nn.LayerNorm(d), nn.LayerNorm(d)
        self.head_p, self.head_j = nn.Linear(d, d), nn.Linear(d, d)
        if gate and not prior:
            raise Mesh3DError("the skinning model's gate mixes in the geometric prior: set prior = true as well")
        # With a gate, each point's output is a mixture (1 - a) * prior + a * network in probability
        # space, a = sigmoid(gate(point token)): where the geometric weights are right the network
        # can keep them exactly (their sharpness and smoothness included) instead of re-deriving them
        # through its logits, which a shared gain on log(prior) could not do (it settled at 0.42).
        self.gate = nn.Linear(d, 1) if gate else None
        if gate:
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, GATE_INIT)

    def _point_tokens(self, points):
        return self.point_in(torch.cat([points, fourier(points[..., :3], self.n_freqs)], -1))

    def _pair(self, points, x, prior):
        """Pair bias (B, H, N, J) for point->joint attention, the pair logit (B, N, J) (prior logit
        included) and the dense prior (B, N, J) (None without one). prior: (B, N, K) joint indices
        and weights of the points' geometric weights."""
        joints = x["joint_feat"][..., :3]
        prior = dense_prior(*prior, joints.size(1)) if self.prior_gain is not None else None
        out = self.pair(pair_features(points, joints, x["children"], x["deform"], prior))
        bias = out[..., :-1].permute(0, 3, 1, 2)
        logit = out[..., -1] if prior is None else out[..., -1] + self.prior_gain * torch.log(prior + PRIOR_FLOOR)
        return bias.masked_fill(~x["joint_mask"][:, None, None], MASKED), logit, prior

    def _logits(self, p, j, pair_logit, x, prior):
        """Output logits (B, N, J); with a gate, the log of the mixture with the prior (softmax gives the mixture back)."""
        p = self.ln_p(p)
        logits = torch.einsum("bnd,bjd->bnj", self.head_p(p), self.head_j(self.ln_j(j))) / math.sqrt(p.size(-1))
        logits = (logits + pair_logit).masked_fill(~x["deform"][:, None], MASKED)
        if self.gate is None:
            return logits
        a = torch.sigmoid(self.gate(p))
        mix = (1 - a) * prior + a * logits.softmax(-1)
        return torch.log(mix.clamp_min(1e-12)).masked_fill(~x["deform"][:, None], MASKED)

    def encode(self, x: dict) -> dict:
        """Run the context points (x["points"] (B, N, 6)) and the joints through every layer
        (a model with a prior also reads x["point_prior_index"], x["point_prior_weight"] (B, N, K)).

        Returns the state `decode` needs (joint tokens after each layer, the shape code) and the
        context points' logits (B, N, J).
        """
        points, jf = x["points"], x["joint_feat"]
        b, n = points.shape[:2]
        p = self._point_tokens(points)
        j = self.joint_in(torch.cat([jf, fourier(jf[..., :3], self.n_freqs), fourier(jf[..., 3:6], self.n_freqs)], -1))
        q = self.latent_queries.expand(b, -1, -1)
        latents = q + self.latent_attn(self.latent_ln[0](q), self.latent_ln[1](p))
        latents = latents + self.latent_mlp(self.latent_ln[2](latents))
        n_lat = latents.size(1)
        hop_bias = self.hop(x["buckets"]).permute(0, 3, 1, 2).masked_fill(~x["joint_mask"][:, None, None], MASKED)
        pair_bias, pair_logit, prior = self._pair(points, x, (x.get("point_prior_index"), x.get("point_prior_weight")))
        to_latents = lambda bias: F.pad(bias, (0, n_lat))  # the shape code: no bias
        joint_to_point = to_latents(pair_bias.transpose(2, 3))
        point_to_joint = to_latents(pair_bias)
        states = []
        for layer in self.layers:
            j = layer.joints(j, p, latents, hop_bias, joint_to_point)
            p = layer.points(p, j, latents, point_to_joint)
            states.append(j)
        return {"joints": states, "latents": latents, "logits": self._logits(p, j, pair_logit, x, prior)}

    def decode(self, state: dict, queries: torch.Tensor, x: dict, prior=(None, None)) -> torch.Tensor:
        """(B, M, J) logits of query points (B, M, 6) (e.g. mesh vertices), which attend to the joints
        and shape code of `encode` without changing them: each query is predicted on its own.
        prior: their geometric weights as (B, M, K) joint indices and weights (models with a prior)."""
        pair_bias, pair_logit, prior = self._pair(queries, x, prior)
        bias = F.pad(pair_bias, (0, state["latents"].size(1)))
        p = self._point_tokens(queries)
        for layer, j in zip(self.layers, state["joints"]):
            p = layer.points(p, j, state["latents"], bias)
        return self._logits(p, state["joints"][-1], pair_logit, x, prior)

    def forward(self, x: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(context logits (B, N, J), query logits (B, M, J) of x["queries"])."""
        state = self.encode(x)
        return state["logits"], self.decode(state, x["queries"], x, (x.get("query_prior_index"), x.get("query_prior_weight")))


def build_model(options: dict) -> SkinNet:
    """The network described by model options (MODEL_DEFAULTS keys; others are ignored)."""
    return SkinNet(**(MODEL_DEFAULTS | {k: v for k, v in options.items() if k in MODEL_DEFAULTS}))


def soft_cross_entropy(logits: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over points with a target of -sum_k w_k log softmax(logits)[index_k].

    logits (B, N, J); index, weight (B, N, K) sparse targets (rows of zeros: no target, skipped).
    """
    logp = torch.gather(F.log_softmax(logits, -1), -1, index)
    per_point = -(weight * logp).sum(-1)
    has = weight.sum(-1) > 0
    return (per_point * has).sum() / has.sum().clamp_min(1)


# ----------------------------------------------------------------------------- training


class SkinTask:
    """`mesh3d.nn.trainer.Task` of the skinning model.

    data_dir: shards of data_prep.skin_data. n_points / n_queries: context samples and mesh
    vertices (where the loss is measured, as at inference) drawn per example and step; the
    context samples' own loss counts with weight point_loss. dev_rigs: how many shared dev rigs
    `evaluate` skins (vertex L1, precision, recall with the GT skeleton; 0 = all). Model options:
    MODEL_DEFAULTS.
    """

    def __init__(self, data_dir: str = "runs/skin_data", n_points: int = 1024, n_queries: int = 512, point_loss: float = 0.5,
                 dev_rigs: int = 0, seed: int = 0, **model_options):
        unknown = set(model_options) - set(MODEL_DEFAULTS)
        if unknown:
            raise Mesh3DError(f"unknown skin task options {sorted(unknown)}; known: {sorted(MODEL_DEFAULTS)}")
        from data_prep.skin_data import read_shards

        self.options = MODEL_DEFAULTS | model_options
        self.train_set = read_shards(data_dir)
        self.n_points, self.n_queries, self.point_loss, self.seed = n_points, n_queries, point_loss, seed
        self.dev_rigs = dev_rigs

    def build_model(self) -> SkinNet:
        return build_model(self.options)

    def batch(self, step, rank, world_size, batch_size):
        index = batch_indices(len(self.train_set), batch_size, step, rank, world_size, self.seed)
        items = []
        for i in index.tolist():
            ex = self.train_set[i]
            rng = np.random.default_rng([self.seed, step, i])
            pick = torch.from_numpy(rng.choice(len(ex["points"]), self.n_points, replace=False))
            ask = torch.from_numpy(rng.choice(len(ex["queries"]), self.n_queries, replace=False))
            x = prepare(ex["points"][pick].numpy(), ex["joints"].numpy(), ex["parents"].numpy(), ex["helper"].numpy())
            x.update({f"point_{key}": ex[f"point_{key}"][pick][None] for key in ("index", "weight", "prior_index", "prior_weight")})
            x.update({f"query_{key}": ex[f"query_{key}"][ask][None] for key in ("index", "weight", "prior_index", "prior_weight")})
            x["queries"] = ex["queries"][ask][None]
            items.append(x)
        return collate(items)

    def loss(self, model, batch):
        point_logits, query_logits = model(batch)
        return (soft_cross_entropy(query_logits, batch["query_index"], batch["query_weight"])
                + self.point_loss * soft_cross_entropy(point_logits, batch["point_index"], batch["point_weight"]))

    def evaluate(self, model) -> dict:
        """Vertex L1, precision, recall and mean deformation error (%, rigs with clips) of learned_skin
        on the shared dev rigs (GT skeleton given)."""
        from data_prep.corpus import records
        from mesh3d.io import load
        from rigging.eval import deformation_error, skin_l1, skin_precision_recall

        rigs = records(kind="rig", split="dev")
        rigs = rigs[:self.dev_rigs] if self.dev_rigs else rigs
        scores = []
        for rec in rigs:
            asset = load(rec.path)
            pred = learned_skin(asset.mesh, asset.skeleton, model=model).dense(len(asset.skeleton))
            gt = asset.skin.dense(len(asset.skeleton))
            scores.append((skin_l1(pred, gt), *skin_precision_recall(pred, gt), deformation_error(asset, pred)[0]))
        l1, precision, recall, deform = np.nanmean(np.array(scores, float), 0) if scores else (float("nan"),) * 4
        return {"dev_l1": float(l1), "dev_precision": float(precision), "dev_recall": float(recall), "dev_deform": float(deform)}


# ----------------------------------------------------------------------------- inference


def load_skin_model(weights=DEFAULT_WEIGHTS) -> SkinNet:
    """The network stored in a weights file (its metadata holds the model options), in eval mode."""
    weights = Path(weights)
    if not weights.is_file():
        raise Mesh3DError(f"skinning model weights not found: {weights}")
    model = build_model(read_metadata(weights).get("task_options", {}))
    load_weights(model, weights)
    return model.eval()


def _smooth(weights: np.ndarray, faces: np.ndarray, iterations: int, amount: float = 0.5) -> np.ndarray:
    """Weights (V, J) blended `iterations` times with the mean of their mesh neighbours (by `amount`)."""
    v = len(weights)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adj = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])), shape=(v, v)).tocsr()
    adj.data[:] = 1.0  # an edge shared by two faces counts once
    degree = np.asarray(adj.sum(1)).ravel()
    for _ in range(iterations):
        mean = np.where(degree[:, None] > 0, (adj @ weights) / np.maximum(degree, 1)[:, None], weights)
        weights = (1 - amount) * weights + amount * mean
    return weights


def vertex_probabilities(mesh: Mesh, skeleton: Skeleton, model: SkinNet, n_points: int = 2048, seed: int = 0,
                         max_queries: int = MAX_QUERIES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's softmax over joints at every vertex, before any post-processing.

    Coincident vertices are welded first (rigging.skinning.geometric._merge_vertices) and predicted
    once. Meshes with more than `max_queries` welded vertices get predictions at that many random
    vertices, carried to the others from their nearest predicted vertices facing the same way
    (`_interpolate`). Returns probabilities (V', J) float64 of the welded vertices, their faces
    (F', 3) and inverse (V,) from the original vertices into the welded ones.
    """
    if not len(mesh.faces):
        raise Mesh3DError("the learned skinning model needs a triangle mesh (this one has no faces); use --skin geometric")
    if skeleton.helper.all():
        raise Mesh3DError("every joint of the skeleton is a helper: no joint can carry skin weight")
    from rigging.skinning.geometric import _merge_vertices

    vertices, faces, inverse = _merge_vertices(mesh.vertices, mesh.faces)
    normalised, center, scale = normalize_unit_cube(vertices)
    points, normals, face, bary = surface_points(normalised, faces, n_points, np.random.default_rng(seed))
    x = prepare(np.concatenate([points, normals], 1), (skeleton.joints - center) / scale, skeleton.parents, skeleton.helper)
    vertex_normals = _vertex_normals(normalised, faces)
    asked = np.arange(len(normalised))
    if len(asked) > max_queries:
        asked = np.sort(np.random.default_rng(seed).choice(len(asked), max_queries, replace=False))
    queries = torch.from_numpy(np.concatenate([normalised[asked], vertex_normals[asked]], 1).astype(np.float32))[None]
    query_prior = (None, None)
    if model.prior_gain is not None:
        from rigging.skinning.geometric import geometric_skin

        prior = geometric_skin(Mesh(vertices, faces), skeleton).dense(len(skeleton))  # welded vertices, as training saw them
        x["point_prior_index"], x["point_prior_weight"] = sparse_batch(np.einsum("nc,ncj->nj", bary, prior[faces[face]]))
        query_prior = sparse_batch(prior[asked])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        state = model.encode(x)
        chunk = lambda t, i: None if t is None else t[:, i:i + 4096]
        probs = torch.cat([model.decode(state, queries[:, i:i + 4096], x, tuple(chunk(t, i) for t in query_prior)).softmax(-1)[0]
                           for i in range(0, queries.size(1), 4096)])
    model.train(was_training)
    probs = probs.double().numpy()
    if len(asked) < len(normalised):
        probs = _interpolate(normalised[asked], vertex_normals[asked], probs, normalised, vertex_normals)
    return probs, faces, inverse


def _interpolate(src: np.ndarray, src_normals: np.ndarray, values: np.ndarray, dst: np.ndarray, dst_normals: np.ndarray, k: int = 6) -> np.ndarray:
    """values (S, J) at points src (S, 3) carried to dst (D, 3): inverse-distance blend of the k
    nearest sources whose normals agree (cosine > 0.3), or the nearest source when none does."""
    dist, near = cKDTree(src).query(dst, k=min(k, len(src)))
    dist, near = dist.reshape(len(dst), -1), near.reshape(len(dst), -1)
    agree = (src_normals[near] * dst_normals[:, None]).sum(2) > 0.3
    agree[~agree.any(1), 0] = True
    blend = np.where(agree, 1.0 / np.maximum(dist, 1e-9), 0.0)
    blend /= blend.sum(1, keepdims=True)
    return np.einsum("dk,dkj->dj", blend, values[near])


def finish_weights(probs: np.ndarray, faces: np.ndarray, inverse: np.ndarray, smooth: int = SMOOTH, min_weight: float = MIN_WEIGHT,
                   k: int = 4) -> Skin:
    """Skin of the original vertices from `vertex_probabilities`: smoothed `smooth` times over the
    mesh, cut to the top `k`, influences below `min_weight` times the vertex's largest dropped, renormalised."""
    dense = _smooth(probs, faces, smooth)[inverse]
    if dense.shape[1] > k:
        rest = np.argpartition(-dense, k - 1, axis=1)[:, k:]
        dense[np.arange(len(dense))[:, None], rest] = 0.0
    dense[dense < min_weight * dense.max(1, keepdims=True)] = 0.0
    return Skin.from_dense(dense, k)


def learned_skin(mesh: Mesh, skeleton: Skeleton, weights=DEFAULT_WEIGHTS, model: SkinNet | None = None, n_points: int = 2048,
                 seed: int = 0, smooth: int = SMOOTH, min_weight: float = MIN_WEIGHT, k: int = 4) -> Skin:
    """Skin weights for `mesh` on `skeleton` (in the mesh's frame) predicted by the learned model.

    weights: a file saved by training (ignored when `model`, a loaded SkinNet, is given).
    n_points: surface samples the joints see (seed: their sampling). Every vertex is then predicted
    on its own (coincident vertices once; above MAX_QUERIES vertices, that many and the others
    interpolated: `vertex_probabilities`), the weights are smoothed `smooth` times over the mesh,
    cut to the top `k`, influences below `min_weight` (relative to the vertex's largest) dropped
    and the rest renormalised. Joints with `skeleton.helper` get no weight. Any number of joints;
    the result does not depend on their order.
    """
    model = model if model is not None else load_skin_model(weights)
    return finish_weights(*vertex_probabilities(mesh, skeleton, model, n_points, seed), smooth, min_weight, k)


def skin_problems(skin: Skin, skeleton: Skeleton) -> list[str]:
    """Why predicted weights should not be used (empty when they look sane): NaN weights, vertices
    without weight, weight on helper joints, or a chain of deforming joints (a joint and its
    deforming descendants, at least two) that carries no weight at all."""
    problems = []
    dense = np.asarray(skin.dense(len(skeleton)))
    if not np.isfinite(dense).all():
        problems.append("NaN or infinite weights")
    unweighted = int((np.nan_to_num(dense).sum(1) <= 1e-6).sum())
    if unweighted:
        problems.append(f"{unweighted} vertices without weight")
    if (dense[:, skeleton.helper] > 0).any():
        problems.append("weight on helper joints")
    carries = np.nan_to_num(dense).max(0) > 0
    subtree = carries.copy()  # subtree[j]: some joint in j's subtree carries weight
    has_child = np.zeros(len(skeleton), bool)
    for j in range(len(skeleton) - 1, -1, -1):
        p = skeleton.parents[j]
        if p >= 0:
            subtree[p] |= subtree[j]
            has_child[p] |= not skeleton.helper[j]
    dead = np.flatnonzero(~subtree & has_child & ~skeleton.helper)
    if len(dead):
        problems.append(f"{len(dead)} joint chain(s) without weight (from {', '.join(skeleton.names[j] for j in dead[:3])})")
    return problems


# ----------------------------------------------------------------------------- speed benchmark


def benchmark_case(n_vertices: int = 20000, n_joints: int = 60) -> tuple[Mesh, Skeleton]:
    """A procedural humanoid (seed 0) subdivided to at least `n_vertices` vertices, its skeleton
    grown to at least `n_joints` joints by extra leaf joints halfway along its longest bones."""
    import trimesh

    from data_prep.procedural import make_creature

    creature = make_creature("humanoid", 0)
    v, f = creature.mesh.vertices, creature.mesh.faces
    while len(v) < n_vertices:
        # Each split face adds about 1.5 vertices (shared edge midpoints): split just enough faces.
        count = min(len(f), max(1, int((n_vertices - len(v)) / 1.4)))
        v, f = trimesh.remesh.subdivide(v, f, face_index=np.arange(count))
    sk = creature.skeleton
    joints, parents, names = list(sk.joints), list(sk.parents), list(sk.names)
    has_parent = np.flatnonzero(sk.parents >= 0)
    longest = has_parent[np.argsort(-np.linalg.norm(sk.joints[has_parent] - sk.joints[sk.parents[has_parent]], axis=1))]
    for i, c in enumerate(longest[:max(0, n_joints - len(sk))]):
        joints.append((sk.joints[c] + sk.joints[sk.parents[c]]) / 2)
        parents.append(int(sk.parents[c]))
        names.append(f"extra_{i}")
    return Mesh(np.asarray(v), np.asarray(f)), Skeleton(np.array(joints), np.array(parents), names)


def tune(weights=DEFAULT_WEIGHTS, smooths=(0, 1, 2), min_weights=(0.02, 0.05, 0.1, 0.15, 0.2), log=print) -> list[dict]:
    """Post-processing grid (smooth x min_weight) on data the choice may use: every 5th TRAIN rig of
    the corpus (bind pose) and one procedural creature of each kind made with seed 100 (never
    trained on). Returns rows of mean L1, precision, recall and deformation error (rigs with clips),
    and logs the row `choose_post_processing` picks (the shipped SMOOTH and MIN_WEIGHT)."""
    from data_prep.corpus import records
    from data_prep.procedural import CREATURE_KINDS, make_creature
    from mesh3d.io import load
    from rigging.eval import deformation_error, skin_l1, skin_precision_recall

    model = load_skin_model(weights)
    assets = [load(r.path) for r in records(kind="rig", split="train")[::5]] + [make_creature(k, 100) for k in CREATURE_KINDS]
    predictions = [vertex_probabilities(a.mesh, a.skeleton, model) for a in assets]
    rows = []
    for smooth in smooths:
        for min_weight in min_weights:
            scores = []
            for asset, pred in zip(assets, predictions):
                dense, gt = finish_weights(*pred, smooth, min_weight).dense(len(asset.skeleton)), asset.skin.dense(len(asset.skeleton))
                scores.append((skin_l1(dense, gt), *skin_precision_recall(dense, gt), deformation_error(asset, dense)[0]))
            l1, precision, recall, deform = np.nanmean(np.array(scores, float), 0)
            rows.append({"smooth": smooth, "min_weight": min_weight, "l1": l1, "precision": precision, "recall": recall, "deform_mean": deform})
            log(f"smooth {smooth}  min_weight {min_weight:.2f}  L1 {l1:.3f}  P {precision:.3f}  R {recall:.3f}  deform {deform:.3f} %")
    best = choose_post_processing(rows)
    log(f"chosen: smooth {best['smooth']}  min_weight {best['min_weight']:.2f}")
    return rows


def choose_post_processing(rows: list[dict]) -> dict:
    """The `tune` row to ship: among rows with smoothing (smooth >= 1), the one whose lower of
    precision and recall is highest. (Taking the least deformation among rows with both >= 0.85
    instead picked smooth 1, min_weight 0.20 for this model, whose dev recall was then 0.827:
    the tune set's recall runs higher than dev's, so the balanced rule stays.)"""
    smoothed = [r for r in rows if r["smooth"] >= 1] or rows
    return max(smoothed, key=lambda r: min(r["precision"], r["recall"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Learned skin weights: speed benchmark and post-processing choice.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tune", help="L1/precision/recall/deformation of post-processing settings on train rigs and unseen procedural creatures")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p = sub.add_parser("speed", help="time learned_skin (model load excluded) on a subdivided procedural humanoid")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--vertices", type=int, default=20000)
    p.add_argument("--joints", type=int, default=60)
    p.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "tune":
        tune(args.weights)
        return
    mesh, skeleton = benchmark_case(args.vertices, args.joints)
    model = load_skin_model(args.weights)
    seconds, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        learned_skin(mesh, skeleton, model=model)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    # CPU time beside wall time: on a shared machine the wall time also counts other jobs' turns.
    print(f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces, {len(skeleton)} joints: median {np.median(seconds):.2f} s wall "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}), median {np.median(cpu):.2f} s CPU over {args.repeat} runs, "
          f"{torch.get_num_threads()} torch threads")


if __name__ == "__main__":
    main()
