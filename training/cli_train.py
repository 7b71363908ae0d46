"""``pose6d-train``: train the detector, DeepIM or NeMo (or pre-train DeepIM on flow) from a YAML config
(see training/configs/), with ``--set key.path=value`` overrides. Resumes from <out_dir>/last.safetensors
when it exists, else starts from the ``init_from`` weights when set; works under ``torchrun --nproc_per_node
N`` (DDP)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from ros2_pose6d.training.cli_common import run_cli

from ros2_pose6d.config import apply_overrides, build_config, load_yaml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pose6d-train", description=__doc__)
    p.add_argument("config", type=Path, help="training YAML (task, out_dir, data, optim, model, loss)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.steps=100 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in out_dir")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _stop_like_ctrl_c(signum: int, frame) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGTERM (``kill``, batch schedulers before preemption) and SIGINT stop training as Ctrl-C does: a
    checkpoint at the current step, then exit 130, so resume loses nothing. SIGINT is re-armed because a
    shell starts background jobs with it ignored, which made ``kill -INT`` of a ``... &`` run a no-op."""
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    signal.signal(signal.SIGINT, _stop_like_ctrl_c)


def main(argv: list[str] | None = None) -> int:
    import torch
    from ros2_pose6d.training.tasks import build_task
    from ros2_pose6d.training.trainer import TrainConfig, Trainer, setup_distributed, teardown_distributed

    from ros2_pose6d.objects.registry import ObjectRegistry
    from ros2_pose6d.resources import default_objects_yaml

    args = parse_args(argv)
    data = apply_overrides(load_yaml(args.config), args.overrides)
    cfg = build_config(TrainConfig, data)
    if not cfg.data.train and cfg.task != "flow":  # the flow pre-training draws its own pairs
        raise ValueError("data.train is not set: give the BOP split to train on (e.g. from pose6d-generate)")
    base = args.config.parent
    resolve = lambda p: str((base / p).resolve()) if p and not Path(p).is_absolute() and (base / p).exists() else p  # noqa: E731
    train = cfg.data.train
    cfg.data.train = [resolve(p) for p in train] if isinstance(train, list) else resolve(train)
    cfg.data.objects, cfg.data.models_dir = resolve(cfg.data.objects), resolve(cfg.data.models_dir)
    cfg.init_from = resolve(cfg.init_from)
    if cfg.data.models_dir:
        registry = ObjectRegistry.from_bop_models(cfg.data.models_dir)
    else:
        registry = ObjectRegistry.from_yaml(cfg.data.objects or default_objects_yaml())
    device = setup_distributed(args.device)
    torch.manual_seed(cfg.optim.seed)
    task = build_task(cfg, registry)
    trainer = Trainer(cfg, task, device, progress=not args.no_progress)
    if args.fresh:
        for name in ("last.safetensors", "last.optim.pt"):
            (Path(cfg.out_dir) / name).unlink(missing_ok=True)
    elif trainer.try_resume():
        print(f"resuming {cfg.task} from step {trainer.step} ({cfg.out_dir}/last.safetensors)")
    if trainer.step == 0 and cfg.init_from:
        fresh = trainer.init_from(cfg.init_from)
        print(f"starting {cfg.task} from the weights in {cfg.init_from}"
              + (f"; {len(fresh)} tensors not in it start fresh ({fresh[0]}, ...)" if fresh else ""))
    if trainer.step >= cfg.optim.steps:
        print(f"already trained for {trainer.step} steps (optim.steps = {cfg.optim.steps}); nothing to do")
        teardown_distributed()
        return 0
    stop_on_signals()
    losses = trainer.train()
    teardown_distributed()
    if trainer.rank == 0 and losses:
        print(f"trained {cfg.task} to step {trainer.step}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
              f"weights in {Path(cfg.out_dir) / 'final.safetensors'}")
    return 0


def entry() -> None:
    from ros2_pose6d.training.datasets import EmptyDatasetError

    from ros2_pose6d.io.bop import BopError
    from ros2_pose6d.nets.checkpoint import CheckpointError
    from ros2_pose6d.objects.registry import RegistryError
    run_cli(main, (CheckpointError, BopError, RegistryError, EmptyDatasetError, FloatingPointError))


if __name__ == "__main__":
    entry()
