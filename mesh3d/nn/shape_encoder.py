"""Shape encoder: surface points with normals -> a fixed set of latent tokens (the decoder's prefix).

As in 3DShape2VecSet / Michelangelo: every point is embedded from its position (raw and Fourier
features) and normal; M query tokens gather the shape by cross-attention over all N points, then a
few self-attention layers mix the queries. Queries are either learned vectors ("learned") or the
embeddings of M points picked by farthest point sampling ("fps", 3DShape2VecSet's point queries,
which tie each latent to a region of the surface). Trained jointly with the decoder, from scratch.

Input points must be normalised like everything else in mesh3d (Y up, bounding box centred and
divided by its longest side, so coordinates lie in [-0.5, 0.5]); the Fourier frequencies assume it.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mesh3d.errors import Mesh3DError
from mesh3d.nn.model import GPT, MLP, ConditionedGPT, GPTConfig


@dataclass
class ShapeEncoderConfig:
    n_latents: int = 64  # M, number of output tokens
    n_embd: int = 128
    n_head: int = 4
    n_layer: int = 2  # self-attention blocks over the latents after the cross-attention
    n_freqs: int = 8  # Fourier frequencies 2^0 .. 2^(n_freqs-1) times pi per axis
    queries: str = "learned"  # "learned" or "fps"
    out_dim: int | None = None  # width of the output tokens (the decoder's n_embd); None: n_embd
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self):
        if self.queries not in ("learned", "fps"):
            raise Mesh3DError(f"queries must be 'learned' or 'fps', not {self.queries!r}")
        if self.n_embd % self.n_head != 0:
            raise Mesh3DError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")


def fourier_features(xyz: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """sin and cos of xyz (..., 3) at frequencies 2^k * pi, k < n_freqs: (..., 6 * n_freqs)."""
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, dtype=xyz.dtype, device=xyz.device)
    angles = (xyz[..., None] * freqs).flatten(-2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def farthest_point_sample(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """Indices (B, m) of m points of xyz (B, N, 3) spread over the cloud, greedily from point 0.

    Deterministic: callers shuffle or resample the points for variety.
    """
    B, N, _ = xyz.shape
    index = torch.zeros(B, m, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), device=xyz.device)
    last = torch.zeros(B, dtype=torch.long, device=xyz.device)
    rows = torch.arange(B, device=xyz.device)
    for i in range(m):
        index[:, i] = last
        d = ((xyz - xyz[rows, last][:, None]) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        last = dist.argmax(dim=-1)
    return index


class Attention(nn.Module):
    """Multi-head attention of x (B, M, d) over context (B, N, d), no mask."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.q = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x, context):
        B, M, C = x.shape
        q = self.q(x).view(B, M, self.n_head, C // self.n_head).transpose(1, 2)
        k, v = (t.view(B, -1, self.n_head, C // self.n_head).transpose(1, 2) for t in self.kv(context).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, M, C))


class AttentionBlock(nn.Module):
    """Pre-norm block: x += attn(ln(x), ln(context)); x += mlp(ln(x)). context=None: self-attention."""

    def __init__(self, config: ShapeEncoderConfig, cross: bool):
        super().__init__()
        d = config.n_embd
        self.ln_x = nn.LayerNorm(d, bias=config.bias)
        self.ln_context = nn.LayerNorm(d, bias=config.bias) if cross else None
        self.attn = Attention(d, config.n_head, config.bias, config.dropout)
        self.ln_mlp = nn.LayerNorm(d, bias=config.bias)
        self.mlp = MLP(d, config.bias, config.dropout)

    def forward(self, x, context=None):
        h = self.ln_x(x)
        x = x + self.attn(h, h if context is None else self.ln_context(context))
        return x + self.mlp(self.ln_mlp(x))


class ShapeEncoder(nn.Module):
    """points (B, N, 6) = xyz and unit normals -> latent tokens (B, n_latents, out_dim)."""

    def __init__(self, config: ShapeEncoderConfig):
        super().__init__()
        self.config = config
        d = config.n_embd
        self.point_embed = nn.Linear(6 + 6 * config.n_freqs, d, bias=config.bias)
        self.latents = nn.Parameter(0.02 * torch.randn(config.n_latents, d)) if config.queries == "learned" else None
        self.cross = AttentionBlock(config, cross=True)
        self.blocks = nn.ModuleList([AttentionBlock(config, cross=False) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(d, bias=config.bias)
        out_dim = config.out_dim or d
        self.out = nn.Linear(d, out_dim, bias=config.bias) if out_dim != d else nn.Identity()

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.dim() != 3 or points.size(-1) != 6:
            raise Mesh3DError(f"shape encoder expects points with normals (B, N, 6), got {tuple(points.shape)}")
        if points[..., :3].abs().amax() > 1.0:  # 0.5 after normalisation; rotations and jitter stay well below 1
            raise Mesh3DError("surface points must be normalised (bounding box centred, longest side 1) before encoding")
        M = self.config.n_latents
        if self.config.queries == "fps" and points.size(1) < M:
            raise Mesh3DError(f"need at least {M} surface points for {M} point queries, got {points.size(1)}")
        xyz = points[..., :3]
        x = self.point_embed(torch.cat([points, fourier_features(xyz, self.config.n_freqs)], dim=-1))
        if self.latents is not None:
            queries = self.latents.expand(points.size(0), -1, -1)
        else:
            index = farthest_point_sample(xyz.detach(), M)
            queries = torch.gather(x, 1, index[..., None].expand(-1, -1, x.size(-1)))
        z = self.cross(queries, x)
        for block in self.blocks:
            z = block(z)
        return self.out(self.ln_f(z))


def shape_conditioned_gpt(vocab_size: int, max_tokens: int, o: dict) -> ConditionedGPT:
    """The shared recipe of shape-conditioned generators: a ShapeEncoder whose latents prefix a GPT.

    o: model options n_latents, enc_embd, enc_layers, queries (the encoder; it shares n_head and
    projects to the decoder's width) and n_layer, n_head, n_embd, dropout (the decoder, whose block
    holds the n_latents prefix and max_tokens tokens).
    """
    encoder = ShapeEncoder(ShapeEncoderConfig(n_latents=o["n_latents"], n_embd=o["enc_embd"], n_head=o["n_head"],
                                              n_layer=o["enc_layers"], queries=o["queries"], out_dim=o["n_embd"]))
    decoder = GPT(GPTConfig(vocab_size=vocab_size, block_size=o["n_latents"] + max_tokens, n_layer=o["n_layer"],
                            n_head=o["n_head"], n_embd=o["n_embd"], dropout=o["dropout"]))
    return ConditionedGPT(encoder, decoder)
