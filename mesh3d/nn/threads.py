"""Thread count for many tiny torch operations."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread, restoring the caller's count after.

    Token-by-token decoding and posing a rig are many tiny operations, where hand-offs between
    threads cost more than they save: on the busy 2-core machine two threads decoded 16 tokens/s
    against 644 with one (docs/remesh.md) and posed rigs 20x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
