"""Weights and optimiser state on disk as safetensors + JSON: nothing is ever pickled.

A weights file carries its own description in the safetensors metadata (key "mesh3d", a JSON
object: e.g. the task options that rebuild the model), so a loader needs only the file.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from mesh3d.errors import Mesh3DError


def save_weights(module: torch.nn.Module, path, metadata: dict | None = None) -> None:
    """Write the module's parameters and persistent buffers (tied weights stored once)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_model(module, str(path), metadata={"mesh3d": json.dumps(metadata or {})})


def load_weights(module: torch.nn.Module, path, device="cpu") -> None:
    """Load weights saved by `save_weights` into `module` (which must have the same architecture)."""
    if not Path(path).is_file():
        raise Mesh3DError(f"weights file not found: {path}")
    try:
        missing, unexpected = load_model(module, str(path), strict=False, device=str(device))
    except RuntimeError as e:  # shape mismatch
        raise Mesh3DError(f"{path} does not match this model; was it trained with other model options? ({str(e)[:300]})") from e
    if missing or unexpected:
        raise Mesh3DError(f"{path} does not match this model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}); "
                          "was it trained with other model options?")


def read_metadata(path) -> dict:
    """The JSON description stored in a weights file by `save_weights`."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("mesh3d", "{}"))


def save_optimizer(optimizer: torch.optim.Optimizer, tensors_path, extra_tensors: dict | None = None) -> dict:
    """Write the optimiser's tensor state to safetensors; return its other state as a JSON-able dict.

    extra_tensors (e.g. RNG states) are stored in the same file under their own names.
    """
    state = optimizer.state_dict()
    tensors, scalars = dict(extra_tensors or {}), {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    save_file(tensors, str(tensors_path))
    return {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors_path, json_state: dict) -> dict:
    """Restore the state written by `save_optimizer`; return the extra tensors stored beside it."""
    tensors = load_file(str(tensors_path))
    state, extra = {}, {}
    for name, value in tensors.items():
        if name.startswith("state."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
        else:
            extra[name] = value
    for pid, entries in json_state["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": json_state["param_groups"]})
    return extra
