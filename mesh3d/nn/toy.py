"""A toy `Task`: memorise a few token sequences, each tied to its own condition.

The smallest complete example of a task for `mesh3d.nn.trainer` (tests, the DDP check and the
benchmark use it). Each example is a random sequence BOS, body..., EOS conditioned either on a
category id (`CategoryPrefix`) or on a random cloud of points with normals (`ShapeEncoder`): the
model can only reproduce the right body by reading its prefix.
"""

import torch

from mesh3d.errors import Mesh3DError

from mesh3d.nn.model import GPT, CategoryPrefix, ConditionedGPT, GPTConfig
from mesh3d.nn.shape_encoder import ShapeEncoder, ShapeEncoderConfig
from mesh3d.nn.trainer import batch_indices

BOS, EOS = 0, 1  # token ids; body tokens are 2 .. vocab_size - 1


class ToyTask:
    def __init__(self, n_sequences: int = 4, seq_len: int = 8, vocab_size: int = 16, condition: str = "category",
                 n_points: int = 256, prefix_len: int = 4, n_layer: int = 2, n_head: int = 2, n_embd: int = 32,
                 dropout: float = 0.0, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        body = torch.randint(2, vocab_size, (n_sequences, seq_len), generator=g)
        bos, eos = torch.full((n_sequences, 1), BOS), torch.full((n_sequences, 1), EOS)
        self.sequences = torch.cat([bos, body, eos], dim=1)  # (K, seq_len + 2)
        if condition == "points":
            xyz = torch.rand(n_sequences, n_points, 3, generator=g) - 0.5
            normals = torch.nn.functional.normalize(torch.randn(n_sequences, n_points, 3, generator=g), dim=-1)
            self.conditions = torch.cat([xyz, normals], dim=-1)  # (K, N, 6)
        elif condition == "category":
            self.conditions = torch.arange(n_sequences)
        else:
            raise Mesh3DError(f"condition must be 'category' or 'points', not {condition!r}")
        self.condition, self.seed = condition, seed
        self.gpt_config = GPTConfig(vocab_size=vocab_size, block_size=prefix_len + seq_len + 2,
                                    n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=dropout)
        self.prefix_len = prefix_len

    def build_model(self) -> ConditionedGPT:
        c = self.gpt_config
        if self.condition == "points":
            encoder = ShapeEncoder(ShapeEncoderConfig(n_latents=self.prefix_len, n_embd=c.n_embd, n_head=c.n_head, n_layer=1))
        else:
            encoder = CategoryPrefix(len(self.sequences), self.prefix_len, c.n_embd)
        return ConditionedGPT(encoder, GPT(c))

    def batch(self, step, rank, world_size, batch_size):
        index = batch_indices(len(self.sequences), batch_size, step, rank, world_size, self.seed)
        return {"cond": self.conditions[index], "tokens": self.sequences[index]}

    def loss(self, model, batch):
        return model(batch["cond"], batch["tokens"])

    def generate(self, model: ConditionedGPT) -> torch.Tensor:
        """Greedy generation of every sequence from its condition: (K, seq_len + 2)."""
        device = next(model.parameters()).device
        prompt = torch.full((len(self.sequences), 1), BOS, device=device)
        n_new = self.sequences.size(1) - 1
        return model.generate(self.conditions.to(device), prompt, n_new, greedy=True, eos_id=EOS).cpu()

    def evaluate(self, model) -> dict:
        exact = (self.generate(model) == self.sequences).all(dim=1).float().mean().item()
        return {"exact_match": exact}
