"""Training shards on disk: safetensors files of examples, one file per source asset (no pickle).

An example is a few arrays of fixed shape (e.g. surface points (N, 6), stored stacked) and a few
of varying length (e.g. joints (J, 3) or tokens (T,), stored concatenated along their first axis
with one `offsets` vector, the same for every ragged array). Each shard records its source and
split in its metadata; the folder's index.json lists the shards (written by each data module).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mesh3d.errors import Mesh3DError


def write_shard(path: Path, fixed: dict[str, np.ndarray], ragged: dict[str, list[np.ndarray]], metadata: dict) -> None:
    """Write one shard. fixed: name -> (E, ...) array, one row per example (float16 stays float16).
    ragged: name -> E arrays whose first axes have the same lengths for every name."""
    sizes = [len(a) for a in next(iter(ragged.values()))]
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in fixed.items()}
    for name, arrays in ragged.items():
        tensors[name] = torch.from_numpy(np.concatenate(arrays))
    tensors["offsets"] = torch.from_numpy(np.cumsum([0] + sizes).astype(np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"mesh3d": json.dumps(metadata)})


def read_shards(folder, split: str, fixed: tuple[str, ...], ragged: tuple[str, ...], rebuild: str) -> list[dict]:
    """Examples of `split` listed in folder/index.json: dicts of the fixed arrays (float16 read as
    float32), the ragged arrays and "source". rebuild: the command that writes the folder (for errors)."""
    folder = Path(folder)
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise Mesh3DError(f"no training data in {folder}: build it with `{rebuild} --out {folder}`")
    out = []
    for shard in json.loads(index_path.read_text())["shards"]:
        if shard["split"] != split:
            continue
        t = load_file(str(folder / shard["file"]))
        missing = [name for name in fixed + ragged if name not in t]
        if missing:
            raise Mesh3DError(f"{folder / shard['file']} has no {', '.join(missing)}: it was built by an older version; "
                              f"rebuild with `{rebuild} --out {folder}`")
        off = t["offsets"].tolist()
        for e in range(len(off) - 1):
            example = {name: t[name][e].float() if t[name].dtype == torch.float16 else t[name][e] for name in fixed}
            example |= {name: t[name][off[e]:off[e + 1]] for name in ragged}
            out.append(example | {"source": shard["source"]})
    if not out:
        raise Mesh3DError(f"{folder}: no {split} examples in index.json")
    return out


def write_index(folder: Path, config, shards: list[dict]) -> dict:
    """Write folder/index.json: the data config (a dataclass) and the shard list; returns the index."""
    from dataclasses import asdict

    index = {"config": asdict(config), "shards": shards}
    (Path(folder) / "index.json").write_text(json.dumps(index, indent=1))
    return index


def build_command(argv, description: str, default_out: str, config_cls, build) -> None:
    """The command line of a data module: one flag per field of the `config_cls` dataclass, then
    `build(out, config)` (which returns the index) and a one-line summary."""
    import argparse
    from dataclasses import asdict

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    for name, default in asdict(config_cls()).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):  # a switch: type=bool would read "False" as True
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    out = Path(args.pop("out"))
    index = build(out, config_cls(**args))
    n = {s: sum(x["examples"] for x in index["shards"] if x["split"] == s) for s in ("train", "dev")}
    print(f"wrote {out}: {n['train']} train and {n['dev']} dev examples")
