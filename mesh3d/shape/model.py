"""The shape generator: the shared decoder writes an occupancy octree coarse to fine, given a category.

Model = a learned category prefix (mesh3d.nn.model.CategoryPrefix) + the shared decoder over the
octree tokens of mesh3d.shape.tokenizer, with one addition (`OctreeGPT`): each position's input
embedding also gets an embedding of *where* the next token belongs (its octree level and its
cell's centre, tokenizer.next_nodes). A plain token sequence leaves the model to work out the
node's position by counting set bits of earlier masks, which a small model trained for minutes
cannot do; the tokenizer knows it exactly, so we give it. Generation is next-scale: each level's
masks are sampled given all coarser levels (and the earlier masks of its own level, in Morton order),
and `OctreeGrammar` keeps every sample a complete, consistent octree.

Training is a `Task` for the shared trainer (`ShapeTask`, data from data_prep.shape_data):

    python -m data_prep.shape_data --out runs/shape_data
    mesh3d train shape mesh3d/weights/shape_train.toml

Inference: `load_shape_model()` then `generate_grids(model, ["nature_pack"], seed=0)` or, as a
mesh, `generate_mesh(...)`; `mesh3d generate --category NAME` wraps it (app.pipeline.generate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mesh3d.asset import Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.nn.model import GPT, CategoryPrefix, ConditionedGPT, GPTConfig
from mesh3d.nn.trainer import batch_indices
from mesh3d.nn.weights import load_weights, read_metadata, save_weights
from mesh3d.shape.tokenizer import (BOS, EOS, PAD, VOCAB_SIZE, OctreeGrammar, decode, dihedral, drop_fragments, encode, grid_to_mesh,
                                   next_nodes, pyramid)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "shape.safetensors"
TASK_SPEC = "mesh3d.shape.model:ShapeTask"

# Options that fix the architecture (stored in the weights' metadata; everything else is training).
# depth 4 = a 16³ grid: sequences of at most 1 + 8 + 64 + 512 masks, cheap enough to train on a CPU.
MODEL_DEFAULTS = dict(categories=[], depth=4, max_tokens=600, prefix_len=1, n_layer=4, n_head=4, n_embd=128, dropout=0.0)


class _EmbeddingPlus(nn.Embedding):
    """Token embedding plus an optional per-position tensor `extra` (B, T, n_embd) set by the caller."""

    extra: torch.Tensor | None = None

    def forward(self, idx):
        out = super().forward(idx)
        return out if self.extra is None else out + self.extra


class OctreeGPT(GPT):
    """The shared decoder, whose token embeddings also carry the next token's octree node.

    The node of every position is computed from the tokens so far (tokenizer.next_nodes); with a
    KV cache, the tokens already seen are kept on the cache (attribute `octree_tokens`), so the
    cache holds all per-sequence state. Beam search re-orders caches and is not supported.
    """

    def __init__(self, config: GPTConfig, depth: int):
        super().__init__(config)
        self.depth = depth
        self.wte = _EmbeddingPlus(config.vocab_size, config.n_embd)
        self.lm_head.weight = self.wte.weight  # re-tie to the new table
        self.node_level = nn.Embedding(depth + 1, config.n_embd)
        self.node_xyz = nn.Embedding(3 * 2 ** depth, config.n_embd)  # x, y, z tables side by side
        for table in (self.wte, self.node_level, self.node_xyz):
            nn.init.normal_(table.weight, mean=0.0, std=0.02)

    def node_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, n_embd) embeddings of the next token's node for every position of tokens (B, T)."""
        nodes = np.stack([next_nodes(row, self.depth) for row in tokens.cpu().numpy()])
        nodes = torch.from_numpy(nodes).to(tokens.device)
        xyz = nodes[..., 1:] + torch.arange(3, device=tokens.device) * 2 ** self.depth
        return self.node_level(nodes[..., 0]) + self.node_xyz(xyz).sum(-2)

    def hidden(self, idx, prefix=None, cache=None):
        history = idx
        if cache is not None:
            if cache.length and getattr(cache, "octree_tokens", None) is not None:
                history = torch.cat([cache.octree_tokens, idx], dim=1)
            cache.octree_tokens = history
        self.wte.extra = self.node_embedding(history)[:, -idx.size(1):]
        try:
            return super().hidden(idx, prefix, cache)
        finally:
            self.wte.extra = None

    def beam_search(self, *args, **kwargs):
        raise Mesh3DError("the shape generator samples; beam search is not supported")


@dataclass
class ShapeModel:
    """A shape generator ready to use: the network, its category names and its octree depth."""

    net: ConditionedGPT
    categories: list[str]
    depth: int
    max_tokens: int

    def category_ids(self, names) -> torch.Tensor:
        unknown = [n for n in names if n not in self.categories]
        if unknown:
            raise Mesh3DError(f"unknown category {unknown[0]!r}; known: {', '.join(self.categories)} "
                              "(`mesh3d generate --list-categories`)")
        return torch.tensor([self.categories.index(n) for n in names], dtype=torch.long)


def build_model(options: dict) -> ShapeModel:
    """The network described by model options (MODEL_DEFAULTS keys)."""
    o = MODEL_DEFAULTS | {k: v for k, v in options.items() if k in MODEL_DEFAULTS}
    if not o["categories"]:
        raise Mesh3DError("a shape model needs at least one category")
    decoder = OctreeGPT(GPTConfig(vocab_size=VOCAB_SIZE, block_size=o["prefix_len"] + o["max_tokens"], n_layer=o["n_layer"],
                                  n_head=o["n_head"], n_embd=o["n_embd"], dropout=o["dropout"]), o["depth"])
    net = ConditionedGPT(CategoryPrefix(len(o["categories"]), o["prefix_len"], o["n_embd"]), decoder)
    return ShapeModel(net, list(o["categories"]), o["depth"], o["max_tokens"])


def pad_tokens(sequences: list[np.ndarray]) -> torch.Tensor:
    """(B, T) long: sequences padded with PAD to the longest."""
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = torch.from_numpy(s)
    return out


@torch.no_grad()
def generate_grids(model: ShapeModel, categories: list[str], seed: int = 0, temperature: float = 1.0,
                   top_k: int | None = None, clean: bool = True) -> list[np.ndarray]:
    """One sampled occupancy grid ((2**depth)³ bool) per category name, all in one batch.

    clean: drop specks (tokenizer.drop_fragments). The same model, names, seed and options give
    the same grids (one torch.Generator seeded with `seed`).
    """
    cond = model.category_ids(categories)
    prompt = torch.full((len(categories), 1), BOS, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    seq = model.net.generate(cond, prompt, model.max_tokens - 1, temperature=temperature, top_k=top_k,
                             grammar=OctreeGrammar(model.depth, model.max_tokens), eos_id=EOS, generator=generator)
    grids = [decode(row, model.depth) for row in seq.tolist()]
    return [drop_fragments(g) for g in grids] if clean else grids


def generate_mesh(model: ShapeModel, category: str, seed: int = 0, temperature: float = 1.0, smooth: float = 0.6) -> Mesh:
    """A sampled shape of `category` as a marching-cubes mesh in the normalised cube (Y up)."""
    return grid_to_mesh(generate_grids(model, [category], seed, temperature)[0], smooth)


def _weights_options(weights) -> dict:
    weights = Path(weights)
    if not weights.is_file():
        raise Mesh3DError(f"shape model weights not found: {weights}")
    return read_metadata(weights).get("task_options", {})


def model_categories(weights=DEFAULT_WEIGHTS) -> list[str]:
    """The category names of a weights file (read from its metadata, without loading the network)."""
    return list(_weights_options(weights).get("categories", []))


def load_shape_model(weights=DEFAULT_WEIGHTS) -> ShapeModel:
    """The model stored in a weights file (its metadata holds the model options)."""
    model = build_model(_weights_options(weights))
    load_weights(model.net, weights)
    model.net.eval()
    return model


# ----------------------------------------------------------------------------- training


def category_grids(data_dir, split: str, categories: list[str], depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Grids ((2**depth)³ bool, S of them) of the shapes of these categories (packs) and their category ids (S,)."""
    from data_prep.shape_data import read_split

    grids, rows = read_split(data_dir, split)
    keep = [i for i, r in enumerate(rows) if r["pack"] in categories]
    if not keep:
        raise Mesh3DError(f"{data_dir}: no {split} shapes in categories {categories}")
    levels = [pyramid(grids[i]) for i in keep]
    if len(levels[0]) <= depth:
        raise Mesh3DError(f"{data_dir} holds {grids.shape[1]}³ grids, too coarse for depth {depth}")
    return np.stack([lv[depth] for lv in levels]), np.array([categories.index(rows[i]["pack"]) for i in keep])


class ShapeTask:
    """`mesh3d.nn.trainer.Task` of the shape generator.

    data_dir: a folder of data_prep.shape_data. categories: the packs to learn (their names become
    the category names). augment: each example is one of the 8 quarter-turn/mirror maps of its
    grid (tokenizer.dihedral), drawn per step. best_path: where evaluate saves the weights with the
    lowest dev loss so far ("" to skip). Model options: MODEL_DEFAULTS.
    """

    def __init__(self, data_dir: str = "runs/shape_data", augment: bool = True, best_path: str = "", seed: int = 0, **model_options):
        unknown = set(model_options) - set(MODEL_DEFAULTS)
        if unknown:
            raise Mesh3DError(f"unknown shape task options {sorted(unknown)}; known: {sorted(MODEL_DEFAULTS)}")
        self.options = MODEL_DEFAULTS | model_options
        cats, depth = list(self.options["categories"]), self.options["depth"]
        self.train_grids, self.train_cats = category_grids(data_dir, "train", cats, depth)
        self.dev_grids, self.dev_cats = category_grids(data_dir, "dev", cats, depth)
        self.augment, self.seed, self.best_path = augment, seed, best_path
        self.best = read_metadata(best_path).get("dev_loss", float("inf")) if best_path and Path(best_path).is_file() else float("inf")

    def build_model(self) -> ConditionedGPT:
        return build_model(self.options).net

    def batch(self, step, rank, world_size, batch_size):
        index = batch_indices(len(self.train_grids), batch_size, step, rank, world_size, self.seed)
        tokens = []
        for i in index.tolist():
            k = int(np.random.default_rng([self.seed, step, i]).integers(8)) if self.augment else 0
            tokens.append(encode(dihedral(self.train_grids[i], k)))
        return {"category": torch.from_numpy(self.train_cats[index.numpy()]), "tokens": pad_tokens(tokens)}

    def loss(self, model, batch):
        return model(batch["category"], batch["tokens"], pad_id=PAD)

    def evaluate(self, model) -> dict:
        """Dev loss (nats per token, canonical orientation) and bits per dev shape under the model."""
        tokens = pad_tokens([encode(g) for g in self.dev_grids])
        cond = torch.from_numpy(self.dev_cats)
        prefix = model.encoder(cond)
        logits, _ = model.decoder(tokens[:, :-1], prefix)
        targets = tokens[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(targets == PAD, -1), ignore_index=-1, reduction="none")
        n = (targets != PAD).sum()
        dev_loss = (nll.sum() / n).item()
        metrics = {"dev_loss": dev_loss, "dev_bits_per_shape": (nll.sum() / len(tokens) / np.log(2)).item()}
        if self.best_path and dev_loss < self.best:
            self.best = dev_loss
            save_weights(model, self.best_path, {"task": TASK_SPEC, "task_options": self.options, "dev_loss": dev_loss})
        return metrics
