"""``pose6d-weights``: show a weights file's network config, or copy it with inference settings changed
(NeMo's steps, prior and rotation search, DeepIM's iterations, ...) without retraining. The network reads its
config from the weights file, so this is how a deployment tunes it; the new config is checked against the
network's config class and against the stored tensors' shapes before anything is written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ros2_pose6d.config import ConfigError, apply_overrides, build_config
from ros2_pose6d.nets.checkpoint import CheckpointError, check_fits, read_metadata, write_weights_file


def build_network(arch: str, model_cfg: dict, tensors: dict) -> nn.Module:
    """The network of ``arch`` for a model config (ConfigError naming a bad key); NeMo takes its vertex count
    from the stored bank."""
    if arch == "smope":
        from ros2_pose6d.nets.smope import SmopeConfig, SmopeNet
        return SmopeNet(build_config(SmopeConfig, model_cfg, prefix="model"))
    if arch == "deepim":
        from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
        return DeepimNet(build_config(DeepimConfig, model_cfg, prefix="model"))
    if arch == "nemo":
        from ros2_pose6d.nets.nemo import NemoConfig, NemoModel
        if "bank.vertex_features" not in tensors:
            raise CheckpointError("NeMo weights without bank.vertex_features")
        return NemoModel(build_config(NemoConfig, model_cfg, prefix="model"),
                         tensors["bank.vertex_features"].shape[0])
    raise CheckpointError(f"unknown architecture '{arch}'")


def set_model_config(src: Path, dst: Path, overrides: list[str], force: bool = False) -> dict:
    """Copy ``src`` to ``dst`` with ``key=value`` overrides of its model config; returns the new model config.
    Keys are the model's (``steps``, ``backbone.depth``; a leading ``model.`` is accepted). Refuses an
    existing ``dst`` other than ``src`` unless ``force``, and a config the stored tensors do not fit."""
    arch, config, _ = read_metadata(src)
    if not overrides:
        raise ConfigError("nothing to change: give at least one --set key=value")
    if dst.exists() and not force and dst.resolve() != src.resolve():
        raise FileExistsError(f"{dst} exists; use --force to replace it")
    nested = "model" in config
    model = config["model"] if nested else config
    keys = [o[len("model."):] if o.startswith("model.") else o for o in overrides]
    new_model = apply_overrides(model, keys)
    tensors = load_file(str(src))
    net = build_network(arch, new_model, tensors)
    # the stored tensors must fit the new config (CheckpointError naming one)
    check_fits(src, {k: v for k, v in tensors.items() if not k.startswith("extra.")}, net, arch)
    new_config = {**config, "model": new_model} if nested else new_model
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata["config"] = yaml.safe_dump(new_config, sort_keys=False)
    write_weights_file(dst, tensors, metadata)
    return new_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pose6d-weights", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the architecture, training step and network config")
    show.add_argument("weights", type=Path)
    put = sub.add_parser("set", help="copy the weights with model config keys changed")
    put.add_argument("src", type=Path)
    put.add_argument("dst", type=Path)
    put.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="a model config key, e.g. --set search_rotations=288 (repeatable)")
    put.add_argument("--force", action="store_true", help="replace an existing DST")
    args = p.parse_args(argv)
    try:
        if args.command == "show":
            arch, config, meta = read_metadata(args.weights)
            print(f"arch: {arch}")
            if "step" in meta:
                print(f"step: {meta['step']}")
            print(yaml.safe_dump({"model": config.get("model", config)}, sort_keys=False), end="")
        else:
            model = set_model_config(args.src, args.dst, args.overrides, args.force)
            changed = ", ".join(o.split("=", 1)[0] for o in args.overrides)
            print(f"wrote {args.dst} ({changed} changed; {len(model)} model keys)")
    except (CheckpointError, ConfigError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
