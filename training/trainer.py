"""The training loop shared by the detector and both refiners: step-indexed data order (so resume
reproduces the run), AdamW with warm-up + cosine decay, gradient clipping, bf16 autocast on CUDA,
DistributedDataParallel under torchrun, TensorBoard scalars, tqdm progress and safetensors checkpoints."""

from __future__ import annotations

import math
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ros2_pose6d.nets.checkpoint import CheckpointError, load_weights, save_weights, tensor_names


@dataclass
class OptimConfig:
    lr: float = 2e-4
    backbone_lr_scale: float = 0.1  # parameters named 'backbone.*' learn at lr * this
    weight_decay: float = 1e-4
    batch_size: int = 8  # global batch (split over DDP ranks)
    steps: int = 1000
    warmup_steps: int = 50
    grad_clip: float = 0.1
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    log_every: int = 10
    ckpt_every: int = 200
    num_workers: int = 0
    seed: int = 0
    # train only the parameters whose names start with one of these (the rest stay frozen), e.g. a part
    # added to trained weights: [depth_matcher.]; null trains everything
    train_only: list[str] | None = None


@dataclass
class DataConfig:
    train: str | list[str] = ""  # BOP split folder (e.g. made by pose6d-generate), or a list of them
    val: str | None = None
    objects: str | None = None  # objects.yaml (default: the shipped demo set)
    models_dir: str | None = None  # or a BOP models/ folder
    min_visib: float = 0.1
    jitter: float = 0.2


@dataclass
class TrainConfig:
    task: Literal["detector", "deepim", "nemo", "flow"] = "detector"
    out_dir: str = "runs/detector"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: dict = field(default_factory=dict)  # the task's network config (validated by the task)
    loss: dict = field(default_factory=dict)  # the task's loss config
    pairs: dict = field(default_factory=dict)  # task flow: its procedural pairs (training/synth/flow_pairs.py)
    # weights of the same architecture and shape to start from when out_dir holds no checkpoint (fine-tuning:
    # e.g. DeepIM for new objects from the demo DeepIM, whose network does not depend on the object set);
    # the step count and the optimiser start afresh
    init_from: str | None = None


class StepBatchSampler(Sampler):
    """Batch indices as a function of the step: epoch e uses permutation(seed, e); rank r of w takes
    its slice of the global batch. Starting at ``start_step`` reproduces the rest of a run exactly."""

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes {world}")
        self.n, self.bs, self.seed, self.start, self.total = n, global_batch, seed, start_step, total_steps
        self.rank, self.world = rank, world

    def batch(self, step: int) -> list[int]:
        per_epoch = max(1, self.n // self.bs) if self.n >= self.bs else 1
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        if self.n < self.bs:
            perm = np.resize(perm, self.bs)
        idx = perm[k * self.bs:(k + 1) * self.bs]
        local = self.bs // self.world
        return [int(i) for i in idx[self.rank * local:(self.rank + 1) * local]]

    def __iter__(self):
        for step in range(self.start, self.total):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _worker_leaves_stop_signals_to_main(_: int) -> None:
    """DataLoader worker init: ignore SIGTERM and SIGINT. A scheduler (or ``pkill -f``, or Ctrl-C) signals
    every process of the job; a worker killed before the main process had saved made the loader raise
    'worker killed by signal' and the run ended without its checkpoint. The main process stops the workers."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class Trainer:
    """Runs ``task`` (see training/tasks) for cfg.optim.steps steps, resuming from out_dir/last.*."""

    def __init__(self, cfg: TrainConfig, task, device: torch.device, progress: bool = True) -> None:
        self.cfg, self.task, self.device, self.progress = cfg, task, device, progress
        self.rank, self.world, _ = _dist_info()
        self.out = Path(cfg.out_dir)
        self.model: nn.Module = task.model.to(device)
        if cfg.optim.train_only is not None:
            prefixes = tuple(cfg.optim.train_only)
            names = [n for n, _ in self.model.named_parameters()]
            if not any(n.startswith(prefixes) for n in names):
                raise ValueError(f"optim.train_only: no parameter of the {task.arch} network starts with any of "
                                 f"{list(prefixes)}")
            for n, p in self.model.named_parameters():
                p.requires_grad_(n.startswith(prefixes))
        backbone = [p for n, p in self.model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
        others = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW([{"params": others, "lr": o.lr},
                                            {"params": backbone, "lr": o.lr * o.backbone_lr_scale}],
                                           weight_decay=o.weight_decay)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.step = 0
        self.ddp = None
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=task.has_unused_parameters)
            task.forward_module = self.ddp

    # ---- checkpoints ----
    def _paths(self) -> tuple[Path, Path]:
        return self.out / "last.safetensors", self.out / "last.optim.pt"

    def save(self, final: bool = False) -> None:
        if self.rank != 0:
            return
        weights, optim = self._paths()
        meta = {"step": self.step, "task": self.cfg.task}
        config = {"model": self.task.model_config(), "train": _plain(self.cfg)}
        save_weights(weights, self.model, self.task.arch, config, meta, self.task.extra_tensors())
        tmp = optim.with_name(optim.name + ".tmp")
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step}, tmp)
        os.replace(tmp, optim)
        if final:
            shutil.copyfile(weights, self.out / "final.safetensors")

    def try_resume(self) -> bool:
        weights, optim = self._paths()
        if not weights.is_file():
            return False
        try:
            _, meta, extra = load_weights(weights, self.model, self.task.arch)
        except CheckpointError as exc:
            raise CheckpointError(f"cannot resume: {exc}") from None
        self.task.load_extra(extra)
        self.step = int(meta.get("step", 0))
        if optim.is_file():
            state = torch.load(optim, map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
        return True

    def init_from(self, path: str | Path) -> list[str]:
        """Start from the network weights in ``path`` (not its task extras, which belong to its objects).
        Parts the network allows to start fresh (its ``init_fresh_prefixes``) may be absent from the file;
        returns the names of the tensors that kept their initial values."""
        fresh = tuple(getattr(self.model, "init_fresh_prefixes", ()))
        own = set(self.model.state_dict())
        load_weights(path, self.model, self.task.arch, fresh)
        return sorted(own - tensor_names(path))

    # ---- loop ----
    def train(self, stop_at: int | None = None) -> list[float]:
        """Run to cfg.optim.steps (or stop after step ``stop_at``, as an interruption would, keeping the
        schedule of the full run). Returns the loss of every step run here. Ctrl-C saves a checkpoint."""
        try:
            return self._train(stop_at)
        except KeyboardInterrupt:
            self.save()
            raise

    def _train(self, stop_at: int | None) -> list[float]:
        o = self.cfg.optim
        dataset, collate = self.task.train_dataset()  # first: a bad dataset leaves no output folder behind
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            (self.out / "config.yaml").write_text(yaml.safe_dump(_plain(self.cfg), sort_keys=False))
        end = o.steps if stop_at is None else min(stop_at, o.steps)
        sampler = StepBatchSampler(len(dataset), o.batch_size, o.seed, self.step, end, self.rank, self.world)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=o.num_workers,
                            worker_init_fn=_worker_leaves_stop_signals_to_main if o.num_workers else None)
        writer = None
        if self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step)
            except ImportError:
                print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        bar = tqdm(total=o.steps, initial=self.step, desc=f"train {self.cfg.task}", disable=not self.progress
                   or self.rank != 0, unit="step")
        use_amp = o.amp and self.device.type == "cuda"
        losses = []
        self.model.train()
        for batch in loader:
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = base * lr_factor(self.step, o.warmup_steps, o.steps)
            gen = torch.Generator().manual_seed(o.seed * 1_000_003 + self.step)
            self.task.before_step(self.step)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, parts = self.task.step(batch, self.device, gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {self.step}: loss is {float(loss)} ({parts})")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            self.optimizer.step()
            self.task.after_step(self.step)
            self.step += 1
            losses.append(float(loss.detach()))
            if writer is not None and self.step % o.log_every == 0:
                for k, v in parts.items():  # a part named "group/name" is a diagnostic, not a loss term
                    writer.add_scalar(k if "/" in k else f"loss/{k}", v, self.step)
                writer.add_scalar("lr", self.optimizer.param_groups[0]["lr"], self.step)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update()
            if self.step % o.ckpt_every == 0 and self.step < o.steps:
                self.save()
        bar.close()
        if writer is not None:
            writer.close()
        self.save(final=self.step >= o.steps)
        return losses


def _plain(cfg) -> dict:
    from ros2_pose6d.config import to_dict
    return to_dict(cfg)


def setup_distributed(device_arg: str) -> torch.device:
    """Initialise torch.distributed under torchrun (gloo on CPU, nccl on CUDA) and pick the device."""
    _, world, local = _dist_info()
    if device_arg == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_arg)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown_distributed() -> None:
    """End a torchrun run: wait until every rank is done (rank 0 writes the final checkpoint last), then
    close the process group. A rank that closed its connections while a peer still used them could abort
    it; PyTorch also warns when the group is left open at exit."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
