"""The one trainer of mesh3d: every learned model trains through `train(task, config)`.

A model is a `Task` (model, batches, loss, metrics); the trainer adds everything else: AdamW with a
cosine schedule and warmup, gradient clipping, a CSV log, periodic evaluation, checkpoint/resume
(safetensors + JSON, no pickle) and distributed data parallel. The same command runs on one process
or many:

    python -m mesh3d.nn.trainer run.toml
    python -m torch.distributed.run --nproc_per_node 2 -m mesh3d.nn.trainer run.toml   # gloo on CPU, nccl on GPU

Config file (TOML or JSON) layout:

    task = "mesh3d.nn.toy:ToyTask"   # module:Class implementing Task
    [task_options]                   # keyword arguments of the Task class
    n_sequences = 4
    [train]                          # fields of TrainConfig
    out_dir = "runs/toy"
    max_steps = 200

Files in out_dir: log.csv (step,split,name,value), checkpoint/ (model.safetensors,
optimizer.safetensors, state.json; average.safetensors with `ema`), and model.safetensors (the
final weights, with the task and its options in the metadata; with `ema`, the moving average of
the weights, which smooths out the last steps' noise). A run restarted with the same config
resumes from checkpoint/. A run with `init_from` (and no checkpoint yet) starts from those weights
instead of a fresh model.
"""

import argparse
import copy
import csv
import dataclasses
import importlib
import json
import math
import os
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mesh3d.errors import Mesh3DError
from mesh3d.nn.weights import load_optimizer, load_weights, save_optimizer, save_weights


class Task(Protocol):
    """What a learned model adds to the trainer: its model, data, loss and metrics."""

    def build_model(self) -> torch.nn.Module:
        """A fresh model (the trainer seeds torch first, so every rank builds the same one)."""
        ...

    def batch(self, step: int, rank: int, world_size: int, batch_size: int) -> dict:
        """This rank's share (batch_size / world_size examples) of the global batch of `step`.

        A pure function of its arguments (see `batch_indices`), so a resumed run sees the same data.
        Values that are tensors are moved to the training device by the trainer.
        """
        ...

    def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """Scalar training loss. Call `model(...)` exactly once: it may be the DDP wrapper."""
        ...

    def evaluate(self, model: torch.nn.Module) -> dict:
        """Metrics {name: float} on held-out data; runs on rank 0 in eval mode under no_grad."""
        ...


@dataclass
class TrainConfig:
    out_dir: str
    max_steps: int
    batch_size: int = 32  # global: split evenly over the ranks
    lr: float = 3e-4  # peak learning rate, reached after warmup
    min_lr: float = 3e-5  # reached at max_steps by the cosine decay
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on weight matrices and embeddings only (see configure_optimizer)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end
    ckpt_every: int = 100
    seed: int = 0
    init_from: str = ""  # weights file (same architecture) to start from instead of a fresh model: fine-tuning
    ema: float = 0.0  # > 0: decay of a moving average of the weights, which is then what is evaluated and saved


def batch_indices(n_items: int, batch_size: int, step: int, rank: int, world_size: int, seed: int = 0) -> torch.Tensor:
    """Indices of this rank's examples at `step`, for a dataset of n_items seen in shuffled epochs.

    The global batch of step s holds positions s*batch_size .. (s+1)*batch_size - 1 of the endless
    stream of per-epoch permutations (epoch e shuffled with seed + e); rank r takes the r-th slice.
    """
    if batch_size % world_size:
        raise Mesh3DError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")
    local = batch_size // world_size
    first = step * batch_size + rank * local
    out = []
    for position in range(first, first + local):
        epoch, offset = divmod(position, n_items)
        perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(perm[offset])
    return torch.stack(out)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr at cfg.max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only, as nanoGPT: norms and biases are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def load_task(spec: str, options: dict):
    """Instantiate the Task class named "package.module:Class" with keyword options."""
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise Mesh3DError(f"cannot find task {spec!r} (expected 'package.module:Class'): {e}") from e
    return cls(**options)


def load_config(path) -> tuple[str, dict, TrainConfig]:
    """Read (task spec, task options, TrainConfig) from a .toml or .json file."""
    path = Path(path)
    if not path.is_file():
        raise Mesh3DError(f"config file not found: {path}")
    with open(path, "rb") as f:
        raw = tomllib.load(f) if path.suffix == ".toml" else json.load(f)
    if "task" not in raw or "train" not in raw:
        raise Mesh3DError(f"{path}: needs a top-level 'task' and a [train] section")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(raw["train"]) - known
    if unknown:
        raise Mesh3DError(f"{path}: unknown [train] keys {sorted(unknown)}; known: {sorted(known)}")
    return raw["task"], raw.get("task_options", {}), TrainConfig(**raw["train"])


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(out_dir: Path, model, optimizer, step: int, metadata: dict, average=None) -> None:
    """Write out_dir/checkpoint/ atomically: a crash mid-write leaves the previous one intact.
    average: the moving average of the weights (TrainConfig.ema), kept beside the model."""
    tmp, final, old = out_dir / "checkpoint.tmp", out_dir / "checkpoint", out_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors", metadata | {"step": step})
    if average is not None:
        save_weights(average, tmp / "average.safetensors", metadata | {"step": step})
    optim_state = save_optimizer(optimizer, tmp / "optimizer.safetensors", {"rng.torch": torch.get_rng_state()})
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": optim_state}, indent=1))
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out_dir: Path, model, optimizer, device, average=None) -> int:
    """Restore model, optimiser, RNG (and the weights' moving average) from out_dir/checkpoint/;
    return the step to continue at."""
    ckpt = out_dir / "checkpoint"
    state = json.loads((ckpt / "state.json").read_text())
    load_weights(model, ckpt / "model.safetensors", device)
    if average is not None:
        if not (ckpt / "average.safetensors").exists():
            raise Mesh3DError(f"{ckpt} was written without ema; resume with the config that started the run")
        load_weights(average, ckpt / "average.safetensors", device)
    extra = load_optimizer(optimizer, ckpt / "optimizer.safetensors", state["optimizer"])
    torch.set_rng_state(extra["rng.torch"])
    return state["step"]


class CSVLog:
    """Rows (step, split, name, value) appended to out_dir/log.csv; on resume, later rows are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if resume_step and path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            rows = [r for r in rows if int(r[0]) <= resume_step]
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([["step", "split", "name", "value"], *rows])

    def write(self, step: int, split: str, metrics: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerows([[step, split, k, f"{v:.6g}"] for k, v in metrics.items()])


# ----------------------------------------------------------------------------- training loop


def _setup_distributed():
    """(rank, world_size, device); starts the process group when run under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world_size, device


def train(task, cfg: TrainConfig, task_spec: str = "", task_options: dict | None = None,
          stop_at: int | None = None) -> torch.nn.Module:
    """Train `task`'s model for cfg.max_steps steps (resuming from out_dir/checkpoint/ if present).

    task_spec and task_options are recorded in the weights' metadata so they can be rebuilt.
    stop_at: checkpoint and return after this step (to split a run into chunks); the schedule
    still follows cfg.max_steps. Returns the trained model (unwrapped from DDP), or with cfg.ema
    the moving average of its weights, which is also what is evaluated and saved.
    """
    rank, world_size, device = _setup_distributed()
    out_dir = Path(cfg.out_dir)
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = task.build_model().to(device)
    optimizer = configure_optimizer(model, cfg)
    step = 0
    resume = (out_dir / "checkpoint" / "state.json").exists()
    if cfg.init_from and not resume:
        load_weights(model, cfg.init_from, device)
    average = copy.deepcopy(model).requires_grad_(False) if cfg.ema else None  # starts at the starting weights
    if resume:
        step = load_checkpoint(out_dir, model, optimizer, device, average)
    ddp_model = DistributedDataParallel(model) if world_size > 1 else model
    metadata = {"task": task_spec, "task_options": task_options or {}, "train": dataclasses.asdict(cfg)}
    log = CSVLog(out_dir / "log.csv", step) if is_main else None
    if is_main:
        print(f"training {task_spec or type(task).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{world_size} process(es) on {device}, from step {step}", flush=True)

    kept = average if average is not None else model  # what is evaluated, saved and returned

    def evaluate(at_step):
        if is_main:
            kept.eval()
            with torch.no_grad():
                metrics = task.evaluate(kept)
            model.train()
            log.write(at_step, "eval", metrics)
            print(f"step {at_step} eval " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)
        if world_size > 1:
            dist.barrier()

    def checkpoint(at_step):
        if is_main:
            save_checkpoint(out_dir, model, optimizer, at_step, metadata, average)
        if world_size > 1:
            dist.barrier()

    last = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
    model.train()
    t0, t0_step = time.perf_counter(), step
    while step < last:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in task.batch(step, rank, world_size, cfg.batch_size).items()}
        loss = task.loss(ddp_model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over ranks here
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        step += 1
        if average is not None:
            update_average(average, model, min(cfg.ema, (1 + step) / (10 + step)))
        if step % cfg.log_every == 0 or step == last:
            loss_value = loss.detach().clone()
            if world_size > 1:  # the mean over ranks (gloo has no AVG)
                dist.all_reduce(loss_value)
                loss_value /= world_size
            if is_main:
                ms = 1000 * (time.perf_counter() - t0) / (step - t0_step)
                log.write(step, "train", {"loss": loss_value.item(), "lr": lr, "grad_norm": grad_norm.item(), "ms_per_step": ms})
                print(f"step {step} loss {loss_value.item():.4f} lr {lr:.3g} {ms:.0f} ms/step", flush=True)
            t0, t0_step = time.perf_counter(), step
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
            evaluate(step)
        if step % cfg.ckpt_every == 0 or step == last:
            checkpoint(step)
    if step == cfg.max_steps:
        evaluate(step)
        if is_main:
            save_weights(kept, out_dir / "model.safetensors", metadata | {"step": step})
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return kept


@torch.no_grad()
def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, tensor by tensor (integer buffers copied).
    The decay is smaller in the first steps ((1 + step) / (10 + step)), so the average soon forgets
    the random start; every DDP rank holds the same parameters, so the same average."""
    for a, m in zip(average.state_dict().values(), model.state_dict().values()):
        if a.is_floating_point():
            a.lerp_(m, 1.0 - decay)
        else:
            a.copy_(m)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a mesh3d model from a config file (TOML or JSON).")
    parser.add_argument("config", help="config file: task, [task_options], [train]")
    parser.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop after this step")
    args = parser.parse_args(argv)
    spec, options, cfg = load_config(args.config)
    train(load_task(spec, options), cfg, spec, options, stop_at=args.stop_at)


if __name__ == "__main__":
    main()
