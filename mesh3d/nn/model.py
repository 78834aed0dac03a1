"""The one decoder of mesh3d: a decoder-only transformer in the style of nanoGPT's model.py.

Every learned generator (skeletons, artist meshes, shapes) is this model plus a tokenizer and a
condition. The condition enters as a *prefix*: a sequence of float embeddings (B, P, n_embd) placed
before the token embeddings, e.g. the latent tokens of `shape_encoder.ShapeEncoder` or a category
embedding. The model is task-agnostic: it knows token ids, never what they mean.

Layout of one sequence of length P + T:

    position:  0 .. P-1           P .. P+T-1
    input:     prefix embeddings  token embeddings (idx[:, 0] .. idx[:, T-1])
    output:    (unused)           logits predicting idx[:, 1] .. idx[:, T] (the next token)

Generation (greedy, top-k/top-p sampling, beam search) supports a KV cache and constrained decoding
through a `Grammar` object per sequence (see the protocol below), which tokenizers implement.
"""

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from mesh3d.errors import Mesh3DError
from mesh3d.nn.threads import one_thread


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 1024  # longest prefix + tokens the model accepts
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm; False is a little better and faster
    positions: str = "rope"  # "rope" (rotary, relative) or "learned" (absolute table)
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.n_embd % self.n_head != 0 or (self.n_embd // self.n_head) % 2 != 0:
            raise Mesh3DError(f"n_embd={self.n_embd} must be a multiple of 2 * n_head={2 * self.n_head}")
        if self.positions not in ("rope", "learned"):
            raise Mesh3DError(f"positions must be 'rope' or 'learned', not {self.positions!r}")


# ----------------------------------------------------------------------------- grammar protocol


class Grammar(Protocol):
    """Per-sequence constraint on the next token, implemented by tokenizers.

    A fresh grammar describes a whole sequence from its first token; `generate` and `beam_search`
    advance it through the prompt tokens first, then after every generated token. Beam search
    clones it when a hypothesis branches.
    """

    def allowed(self) -> torch.Tensor:
        """Bool tensor (vocab_size,): True for tokens that may come next."""
        ...

    def advance(self, token: int) -> None:
        """Consume one token (it was allowed)."""
        ...

    def clone(self) -> "Grammar":
        """An independent copy in the same state."""
        ...


class FnGrammar:
    """A `Grammar` from a function of the tokens so far: `mask_fn(tokens: list[int]) -> bool (V,)`.

    Convenient for simple stateless rules; tokenizers with real state implement `Grammar` directly.
    """

    def __init__(self, mask_fn, tokens=None):
        self.mask_fn = mask_fn
        self.tokens = list(tokens or [])

    def allowed(self) -> torch.Tensor:
        return torch.as_tensor(self.mask_fn(self.tokens), dtype=torch.bool)

    def advance(self, token: int) -> None:
        self.tokens.append(int(token))

    def clone(self) -> "FnGrammar":
        return FnGrammar(self.mask_fn, self.tokens)


def _start_grammars(grammar, prompt: torch.Tensor) -> list | None:
    """One grammar per row of `prompt` (B, T0), advanced through the prompt tokens."""
    if grammar is None:
        return None
    rows = [g.clone() for g in grammar] if isinstance(grammar, (list, tuple)) else [grammar.clone() for _ in prompt]
    if len(rows) != prompt.size(0):
        raise Mesh3DError(f"got {len(rows)} grammars for a batch of {prompt.size(0)} sequences")
    for g, row in zip(rows, prompt.tolist()):
        for token in row:
            g.advance(token)
    return rows


def _grammar_mask(grammars: list, active: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Bool (B, V) of allowed next tokens; rows that are not `active` (finished) allow everything."""
    mask = torch.ones(len(grammars), vocab_size, dtype=torch.bool)
    for b, g in enumerate(grammars):
        if active[b]:
            mask[b] = g.allowed()
            if not mask[b].any():
                raise Mesh3DError("the grammar allows no next token (a tokenizer grammar bug: it must allow at least end-of-sequence)")
    return mask


# ----------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of every past position for every layer, so a new token costs one position.

    Buffers are allocated once for `max_len` positions: (n_layer, B, n_head, max_len, head_dim).
    `length` counts positions already stored (prefix included).
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, H, T, hd) of new positions; return keys and values of all positions so far."""
        end = self.length + k.size(2)
        if end > self.k.size(3):
            raise Mesh3DError(f"KV cache holds {self.k.size(3)} positions, asked for {end}")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows `index` (B',) of the batch, in that order (beam search re-ranks hypotheses)."""
        self.k = self.k[:, index]
        self.v = self.v[:, index]


# ----------------------------------------------------------------------------- layers


def rope_tables(head_dim: int, max_len: int, base: float):
    """cos, sin (max_len, head_dim / 2) of the rotary angles position * base^(-2i / head_dim)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[i], x[i + hd/2]) of x (B, H, T, hd) by the angles of its positions (T, hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope=None, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.update(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        if start == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif T == 1:  # one new position sees every cached one: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # a chunk after cached positions: new position i sees keys 0 .. start + i
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config.n_embd, config.bias, config.dropout)

    def forward(self, x, rope=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), rope, cache, layer)
        return x + self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------- the model


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.positions == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in GPT-2
        if config.positions == "rope":
            cos, sin = rope_tables(config.n_embd // config.n_head, config.block_size, config.rope_base)
            # Not persistent: recomputed from the config, so never part of the saved weights.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # Scaled init of the residual projections (GPT-2): keeps the residual stream's variance flat.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx: torch.Tensor, prefix: torch.Tensor | None = None, cache: KVCache | None = None):
        """Final hidden states (B, P + T, n_embd) of `prefix` (B, P, n_embd) followed by tokens `idx` (B, T).

        With a cache, the new positions continue after the `cache.length` stored ones (give the
        prefix only with the first call) and are appended to the cache.
        """
        start = cache.length if cache is not None else 0
        x = self.wte(idx)
        if prefix is not None:
            if prefix.dim() != 3 or prefix.size(0) != idx.size(0) or prefix.size(2) != self.config.n_embd:
                raise Mesh3DError(f"prefix must be (B={idx.size(0)}, P, {self.config.n_embd}), got {tuple(prefix.shape)}")
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        end = start + x.size(1)
        if end > self.config.block_size:
            raise Mesh3DError(f"sequence of {end} positions exceeds the model's block_size {self.config.block_size}")
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, end, device=x.device))
        else:
            rope = (self.rope_cos[start:end], self.rope_sin[start:end])
        x = self.drop(x)
        for layer, block in enumerate(self.h):
            x = block(x, rope, cache, layer)
        if cache is not None:
            cache.length = end
        return self.ln_f(x)

    def forward(self, idx, prefix=None, targets=None, cache=None):
        """Logits (B, T, V) at the token positions (each predicts the next token) and the loss.

        targets (B, T): the next token at each position, -1 where no loss is wanted (padding).
        """
        P = 0 if prefix is None else prefix.size(1)
        h = self.hidden(idx, prefix, cache)[:, P:]
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ------------------------------------------------------------------------- generation

    def _next_logits(self, seq, new, prefix, cache):
        """Logits (B, V) of the token after `seq`; with a cache only the `new` tokens are computed."""
        if cache is None:
            h = self.hidden(seq, prefix)
        else:
            h = self.hidden(new, prefix if cache.length == 0 else None, cache)
        return self.lm_head(h[:, -1]).float()

    def _new_cache(self, batch_size, prompt_len, prefix, max_new_tokens, device):
        P = prefix.size(1) if prefix is not None else 0
        max_len = min(P + prompt_len + max_new_tokens, self.config.block_size)
        return KVCache(self.config, batch_size, max_len, device, self.lm_head.weight.dtype)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, prefix=None, *, temperature=1.0, top_k=None, top_p=None,
                 greedy=False, grammar=None, eos_id=None, use_cache=True, generator=None):
        """Extend the prompt `idx` (B, T0) by up to `max_new_tokens` tokens; returns (B, T0 + n).

        greedy=True (or temperature=0) takes the most likely token; otherwise samples from the
        distribution restricted to the top_k tokens and/or the top_p probability mass.
        grammar: one `Grammar` (cloned per row) or a list of B; forbidden tokens are never chosen.
        eos_id: a row stops at this token and is padded with it; generation ends when all stopped.
        generator: a torch.Generator for reproducible sampling.
        Decoding runs on one torch thread (mesh3d.nn.threads.one_thread).
        """
        with one_thread():
            return self._generate(idx, max_new_tokens, prefix, temperature, top_k, top_p, greedy, grammar, eos_id, use_cache, generator)

    def _generate(self, idx, max_new_tokens, prefix, temperature, top_k, top_p, greedy, grammar, eos_id, use_cache, generator):
        B = idx.size(0)
        grammars = _start_grammars(grammar, idx)
        cache = self._new_cache(B, idx.size(1), prefix, max_new_tokens, idx.device) if use_cache else None
        seq, new = idx, idx
        finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            logits = self._next_logits(seq, new, prefix, cache)
            if grammars is not None:
                allowed = _grammar_mask(grammars, ~finished.cpu(), logits.size(-1)).to(logits.device)
                logits = logits.masked_fill(~allowed, float("-inf"))
            if greedy or temperature == 0:
                token = logits.argmax(dim=-1)
            else:
                token = sample(logits / temperature, top_k, top_p, generator)
            if eos_id is not None:
                token = torch.where(finished, torch.full_like(token, eos_id), token)
            seq = torch.cat([seq, token[:, None]], dim=1)
            new = token[:, None]
            if grammars is not None:
                for b in (~finished).nonzero().flatten().tolist():
                    grammars[b].advance(int(token[b]))
            if eos_id is not None:
                finished |= token == eos_id
                if finished.all():
                    break
        return seq

    @torch.no_grad()
    def beam_search(self, idx, max_new_tokens, beam_size, prefix=None, *, grammar=None, eos_id=None,
                    length_penalty=0.0, use_cache=True):
        """Most likely continuation of each prompt row under beam search.

        Score = sum of log-probabilities of the generated tokens (under the grammar-masked,
        renormalised distribution) / (number of generated tokens) ** length_penalty.
        Returns a list of B (tokens (T0 + n,), score) pairs, tokens including the prompt.
        """
        grammars = _start_grammars(grammar, idx)
        results = []
        for b in range(idx.size(0)):
            with one_thread():
                results.append(self._beam_search_row(
                    idx[b:b + 1], max_new_tokens, beam_size, None if prefix is None else prefix[b:b + 1],
                    None if grammars is None else grammars[b], eos_id, length_penalty, use_cache))
        return results

    def _beam_search_row(self, idx, max_new_tokens, beam_size, prefix, grammar, eos_id, length_penalty, use_cache):
        def normalised(score, n_new):
            return score / (n_new ** length_penalty) if length_penalty else score

        beams, new = idx, idx  # (k, T) alive hypotheses; k grows from 1 to beam_size
        scores = torch.zeros(1, device=idx.device)
        grammars = None if grammar is None else [grammar]
        cache = self._new_cache(1, idx.size(1), prefix, max_new_tokens, idx.device) if use_cache else None
        finished = []  # (normalised score, tokens) of hypotheses that emitted eos_id
        for step in range(1, max_new_tokens + 1):
            logits = self._next_logits(beams, new, None if prefix is None else prefix.expand(beams.size(0), -1, -1), cache)
            if grammars is not None:
                allowed = _grammar_mask(grammars, torch.ones(len(grammars), dtype=torch.bool), logits.size(-1))
                logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
            candidates = (scores[:, None] + F.log_softmax(logits, dim=-1)).flatten()
            top_scores, top_index = candidates.topk(min(2 * beam_size, candidates.numel()))
            origin, tokens, kept = [], [], []
            V = logits.size(-1)
            for s, i in zip(top_scores.tolist(), top_index.tolist()):
                if s == float("-inf") or len(kept) == beam_size:
                    break
                src, token = divmod(i, V)
                if token == eos_id:
                    finished.append((normalised(s, step), torch.cat([beams[src], beams.new_tensor([token])])))
                else:
                    origin.append(src)
                    tokens.append(token)
                    kept.append(s)
            if not kept:  # every hypothesis ended: only the finished ones remain
                beams, scores = beams[:0], scores[:0]
                break
            origin_t = torch.tensor(origin, device=idx.device)
            new = torch.tensor(tokens, device=idx.device)[:, None]
            beams = torch.cat([beams[origin_t], new], dim=1)
            scores = torch.tensor(kept, device=idx.device)
            if grammars is not None:
                grammars = [grammars[src].clone() for src in origin]
                for g, token in zip(grammars, tokens):
                    g.advance(token)
            if cache is not None:
                cache.reorder(origin_t)
            # Without length normalisation scores only fall, so no alive hypothesis can still win.
            if not length_penalty and finished and max(f[0] for f in finished) >= scores.max().item():
                break
        n_new = beams.size(1) - idx.size(1)
        finals = finished + [(normalised(s, n_new), t) for s, t in zip(scores.tolist(), beams)]
        best = max(finals, key=lambda f: f[0])
        return best[1], best[0]


def sample(logits: torch.Tensor, top_k=None, top_p=None, generator=None) -> torch.Tensor:
    """Sample one token per row of `logits` (B, V) after keeping the top_k tokens and the top_p mass."""
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass of the more likely ones already reaches top_p (keeps the first).
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# ----------------------------------------------------------------------------- conditioning glue


class CategoryPrefix(nn.Module):
    """A learned prefix of `prefix_len` embeddings per category id: (B,) long -> (B, P, n_embd)."""

    def __init__(self, n_categories: int, prefix_len: int, n_embd: int):
        super().__init__()
        self.prefix_len, self.n_embd = prefix_len, n_embd
        self.table = nn.Embedding(n_categories, prefix_len * n_embd)
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)

    def forward(self, category: torch.Tensor) -> torch.Tensor:
        return self.table(category).view(-1, self.prefix_len, self.n_embd)


class ConditionedGPT(nn.Module):
    """A condition encoder (anything -> prefix (B, P, n_embd)) followed by the decoder.

    `forward` returns the training loss, so the whole model trains through one call (as
    DistributedDataParallel requires); `generate` and `beam_search` encode the condition once.
    """

    def __init__(self, encoder: nn.Module, decoder: GPT):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, cond, tokens: torch.Tensor, pad_id: int | None = None) -> torch.Tensor:
        """Next-token cross-entropy over tokens (B, T); positions whose target is pad_id are ignored."""
        targets = tokens[:, 1:]
        if pad_id is not None:
            targets = targets.masked_fill(targets == pad_id, -1)
        _, loss = self.decoder(tokens[:, :-1], self.encoder(cond), targets)
        return loss

    @torch.no_grad()
    def generate(self, cond, idx, max_new_tokens, **kwargs):
        return self.decoder.generate(idx, max_new_tokens, self.encoder(cond), **kwargs)

    @torch.no_grad()
    def beam_search(self, cond, idx, max_new_tokens, beam_size, **kwargs):
        return self.decoder.beam_search(idx, max_new_tokens, beam_size, self.encoder(cond), **kwargs)
