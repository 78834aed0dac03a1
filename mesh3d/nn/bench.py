"""Generation speed of the shared decoder with and without the KV cache.

    python -m mesh3d.nn.bench                       # defaults: 6 layers, 256 wide, 64 prefix + 512 tokens
    python -m mesh3d.nn.bench --n-layer 12 --n-embd 512 --tokens 1024 --batch 4

Weights are random (speed does not depend on them); generation is greedy without early stop, so
both runs produce exactly `--tokens` new tokens per sequence. Prints tokens/s and the speed-up.
"""

import argparse
import time

import torch

from mesh3d.nn.model import GPT, GPTConfig


def time_generation(model: GPT, prefix: torch.Tensor, n_tokens: int, use_cache: bool) -> float:
    """Seconds to greedily generate n_tokens after a one-token prompt, for every row of prefix."""
    prompt = torch.zeros(prefix.size(0), 1, dtype=torch.long)
    t0 = time.perf_counter()
    model.generate(prompt, n_tokens, prefix, greedy=True, use_cache=use_cache)
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--prefix", type=int, default=64, help="condition tokens before the sequence")
    parser.add_argument("--tokens", type=int, default=512, help="new tokens to generate")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=args.vocab, block_size=args.prefix + args.tokens + 1, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config).eval()
    prefix = torch.randn(args.batch, args.prefix, args.n_embd)
    print(f"decoder: {model.num_params() / 1e6:.2f} M parameters, {args.n_layer} layers x {args.n_embd}, "
          f"prefix {args.prefix}, {args.tokens} new tokens, batch {args.batch}, {torch.get_num_threads()} threads")
    time_generation(model, prefix, 8, use_cache=True)  # warm-up: first calls allocate and dispatch slowly
    n = args.batch * args.tokens
    with_cache = time_generation(model, prefix, args.tokens, use_cache=True)
    without_cache = time_generation(model, prefix, args.tokens, use_cache=False)
    print(f"with KV cache:    {n / with_cache:9.1f} tokens/s ({with_cache:.2f} s)")
    print(f"without KV cache: {n / without_cache:9.1f} tokens/s ({without_cache:.2f} s)")
    print(f"KV cache speed-up: {without_cache / with_cache:.1f}x")


if __name__ == "__main__":
    main()
