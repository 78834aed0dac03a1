"""Mesh tokenizers: lossless face sequences for the autoregressive decoder.

One interface (:class:`~mesh3d.tokenizers.base.MeshTokenizer`), four schemes:

* ``naive`` -- 9 coordinate tokens per face (MeshGPT);
* ``amt`` -- adjacency continuation (MeshAnything V2);
* ``bpt`` -- block/offset coordinates with patch-centred traversal (BPT);
* ``vst`` -- ours: vertex-sharing traversal over face adjacency with block/offset coordinates.

Shared preprocessing and the round-trip contract are described in :mod:`mesh3d.tokenizers.base`;
``python -m mesh3d.tokenizers.bench`` measures them (see docs/tokenizers.md).
"""

from mesh3d.errors import Mesh3DError
from mesh3d.tokenizers.amt import AMTTokenizer
from mesh3d.tokenizers.base import BOS, EOS, PAD, Decoded, MeshTokenizer, QuantizedMesh, canonicalize, quantize_mesh
from mesh3d.tokenizers.bpt import BPTTokenizer
from mesh3d.tokenizers.naive import NaiveTokenizer
from mesh3d.tokenizers.vst import VSTTokenizer

TOKENIZERS = {t.name: t for t in (NaiveTokenizer, AMTTokenizer, BPTTokenizer, VSTTokenizer)}


def get_tokenizer(name: str, bits: int = 7) -> MeshTokenizer:
    """The tokenizer called ``name`` (one of ``TOKENIZERS``) at ``bits`` bits per coordinate."""
    if name not in TOKENIZERS:
        raise Mesh3DError(f"unknown mesh tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name](bits)


__all__ = [
    "AMTTokenizer", "BOS", "BPTTokenizer", "Decoded", "EOS", "MeshTokenizer", "NaiveTokenizer", "PAD",
    "QuantizedMesh", "TOKENIZERS", "VSTTokenizer", "canonicalize", "get_tokenizer", "quantize_mesh",
]
