"""``pose6d-generate``: render a synthetic BOP-format training/test set of an object set."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from ros2_pose6d.training.cli_common import load_config, run_cli
from ros2_pose6d.training.synth import SynthConfig, generate_dataset
from ros2_pose6d.training.synth.generate import GenerationError

from ros2_pose6d.cli.object_args import add_object_args, load_registry


def config_keys_help() -> str:
    """Every SynthConfig key with its default, for --help: the keys --set and --config take (their meaning:
    the SynthConfig docstring and comments in training/synth/config.py)."""
    defaults = SynthConfig()
    shown = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(SynthConfig)}
    keys = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in shown.items())  # as --set takes them
    return f"SynthConfig keys and defaults: {keys}. --set layout=table rests the objects on a table (README)."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pose6d-generate", description=__doc__, epilog=config_keys_help())
    p.add_argument("out", type=Path, help="output split folder (scenes 000000, 000001, ... inside)")
    p.add_argument("-n", "--num-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="same seed, same images (any number of workers)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--config", type=Path, help="YAML with SynthConfig keys (or a 'synth' section)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a SynthConfig key, e.g. --set height=240 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    add_object_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(SynthConfig, args.config, args.overrides)
    registry = load_registry(args)
    out = generate_dataset(registry, args.out, args.num_images, cfg, seed=args.seed, workers=args.workers,
                           overwrite=args.overwrite)
    print(f"wrote {args.num_images} images of {len(registry)} objects to {out}")
    return 0


def entry() -> None:
    from ros2_pose6d.objects.mesh import MeshError
    from ros2_pose6d.objects.registry import RegistryError
    run_cli(main, (GenerationError, RegistryError, MeshError))


if __name__ == "__main__":
    entry()
