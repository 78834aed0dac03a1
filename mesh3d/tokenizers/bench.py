"""Compression benchmark of the mesh tokenizers.

    python -m mesh3d.tokenizers.bench [--data DIR] [--json] [--bits N] [--schemes a,b] [--breakdown]
    mesh3d bench tokenizers [--data DIR] [--json]

Over the shared static meshes (or every mesh file under ``--data``), grouped by face count after
cleaning (< 800 and < 1,600 faces; larger meshes are skipped), prints per scheme: mean and median
tokens per face (per mesh, all tokens including BOS and EOS), the mean as a share of the naive 9,
vocabulary size, encode and decode speed (faces per CPU second of this single-threaded process, so
other jobs on the machine do not distort it; encode includes preprocessing) and round-trip failures
(decode(encode(m)) differs from the cleaned quantised m, or decoding reported problems).
``--json`` prints one JSON object per scheme, for the < 1,600 group, with the keys ``scheme``,
``tokens_per_face``, ``share_of_9`` and ``roundtrip_failures`` (plus the other figures and a
``groups`` breakdown). ``--breakdown`` adds tokens per face of each token kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mesh3d.asset import Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.io import LOAD_FORMATS, load
from mesh3d.tokenizers import TOKENIZERS, get_tokenizer, quantize_mesh

GROUPS = (800, 1600)


def load_mesh(path: Path) -> Mesh:
    """The merged, Y-up mesh of a file (any format :func:`mesh3d.io.load` reads)."""
    return load(path).mesh


def default_paths() -> list[Path]:
    """The static meshes of the shared corpus."""
    from data_prep.corpus import records

    return [r.path for r in records(kind="static")]


def folder_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise Mesh3DError(f"--data {folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in LOAD_FORMATS)
    if not paths:
        raise Mesh3DError(f"no mesh files ({', '.join(LOAD_FORMATS)}) under {folder}")
    return paths


def run_benchmark(paths: Sequence[Path], schemes: Optional[Sequence[str]] = None, bits: int = 7,
                  groups: Sequence[int] = GROUPS) -> list[dict]:
    """Measure every scheme on the meshes at ``paths`` with fewer than ``max(groups)`` faces.

    Returns one dict per scheme: ``scheme``, ``vocab_size``, ``tokens_per_face_by_kind`` (total
    tokens of each kind over total faces, all measured meshes) and, for every face limit ``g`` in
    ``groups``, under ``groups["<g"]``: ``meshes``, ``faces``, ``tokens_per_face`` (mean over
    meshes), ``median_tokens_per_face``, ``share_of_9``, ``encode_faces_per_s``,
    ``decode_faces_per_s``, ``roundtrip_failures``.
    """
    tokenizers = [get_tokenizer(s, bits) for s in (schemes or list(TOKENIZERS))]
    limit = max(groups)
    meshes = []
    for p in paths:
        q = quantize_mesh(load_mesh(Path(p)), bits)
        if 0 < len(q.faces) < limit:
            meshes.append(q)
    rows = {t.name: [] for t in tokenizers}  # per mesh: faces, tokens, encode s, decode s, failed
    counts = {t.name: np.zeros(t.vocab_size, np.int64) for t in tokenizers}  # token histogram
    for q in meshes:
        for t in tokenizers:
            t0 = time.process_time()  # CPU time: fair on a machine shared with other jobs
            tokens = t.encode(q)
            t1 = time.process_time()
            d = t.decode(tokens)
            t2 = time.process_time()
            failed = d.problems > 0 or not d.mesh.same_as(q)
            rows[t.name].append((len(q.faces), len(tokens), t1 - t0, t2 - t1, failed))
            counts[t.name] += np.bincount(tokens, minlength=t.vocab_size)
    results = []
    for t in tokenizers:
        r = np.array(rows[t.name], dtype=np.float64).reshape(-1, 5)
        by_kind: dict[str, float] = {}
        for tok_id in np.flatnonzero(counts[t.name]):
            kind = t.token_kind(int(tok_id))
            by_kind[kind] = by_kind.get(kind, 0.0) + counts[t.name][tok_id] / max(r[:, 0].sum(), 1)
        out = {"scheme": t.name, "vocab_size": t.vocab_size, "bits": bits, "tokens_per_face_by_kind": by_kind,
               "groups": {}}
        for g in groups:
            s = r[r[:, 0] < g]
            tpf = s[:, 1] / s[:, 0] if len(s) else np.zeros(0)
            out["groups"][f"<{g}"] = {
                "meshes": len(s),
                "faces": int(s[:, 0].sum()),
                "tokens_per_face": float(tpf.mean()) if len(s) else float("nan"),
                "median_tokens_per_face": float(np.median(tpf)) if len(s) else float("nan"),
                "share_of_9": float(tpf.mean() / 9) if len(s) else float("nan"),
                "encode_faces_per_s": float(s[:, 0].sum() / max(s[:, 2].sum(), 1e-9)),
                "decode_faces_per_s": float(s[:, 0].sum() / max(s[:, 3].sum(), 1e-9)),
                "roundtrip_failures": int(s[:, 4].sum()),
            }
        results.append(out)
    return results


def format_table(results: list[dict]) -> str:
    """Markdown table, one row per group and scheme."""
    lines = [
        "| faces | meshes | scheme | mean tok/face | median tok/face | share of 9 | vocab | encode faces/CPU s | decode faces/CPU s | round-trip failures |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = list(results[0]["groups"]) if results else []
    for g in names:
        for r in results:
            s = r["groups"][g]
            lines.append(
                f"| {g} | {s['meshes']} | {r['scheme']} | {s['tokens_per_face']:.3f} | {s['median_tokens_per_face']:.3f} "
                f"| {s['share_of_9']:.3f} | {r['vocab_size']} | {s['encode_faces_per_s']:,.0f} "
                f"| {s['decode_faces_per_s']:,.0f} | {s['roundtrip_failures']} |"
            )
    return "\n".join(lines)


def format_breakdown(results: list[dict]) -> str:
    """Where the tokens go: tokens per face of each kind, by total count over all measured meshes."""
    lines = []
    for r in results:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["tokens_per_face_by_kind"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{r['scheme']}: {kinds}")
    return "\n".join(lines)


def json_lines(results: list[dict]) -> str:
    """One JSON object per scheme: the largest group's figures at top level, plus all groups."""
    out = []
    for r in results:
        top = r["groups"][list(r["groups"])[-1]]
        out.append(json.dumps({"scheme": r["scheme"], **top, "vocab_size": r["vocab_size"], "bits": r["bits"],
                               "tokens_per_face_by_kind": r["tokens_per_face_by_kind"], "groups": r["groups"]}))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="mesh3d bench tokenizers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="folder of mesh files (default: the shared static meshes)")
    ap.add_argument("--json", action="store_true", help="one JSON object per scheme")
    ap.add_argument("--bits", type=int, default=7, help="quantisation bits per coordinate (7-10)")
    ap.add_argument("--schemes", default=",".join(TOKENIZERS), help="comma-separated schemes")
    ap.add_argument("--breakdown", action="store_true", help="also print tokens per face of each token kind")
    args = ap.parse_args(argv)
    try:
        paths = folder_paths(args.data) if args.data else default_paths()
        results = run_benchmark(paths, [s for s in args.schemes.split(",") if s], args.bits)
    except Mesh3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json_lines(results) if args.json else format_table(results))
    if args.breakdown and not args.json:
        print()
        print(format_breakdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
