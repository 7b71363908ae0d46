"""Weights on disk: safetensors with the architecture name and its config (YAML) in the metadata, so a
file says what it is and loading the wrong one is a clear error, not a shape-mismatch wall."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ros2_pose6d.config import parse_yaml


class CheckpointError(ValueError):
    """A weights file that is missing, unreadable or for another architecture."""


def write_weights_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write through a temporary file and rename: an interrupted write never leaves a truncated file. The
    file gets the usual mode (0666 less the umask): safetensors creates it 0600, which a ROS node running
    as another user, or an install copied with its mode, could not read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def save_weights(path: str | Path, module: nn.Module, arch: str, config: dict, meta: dict[str, Any] | None = None,
                 extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``module``'s state (plus ``extra_tensors`` under 'extra.*') atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    metadata = {"arch": arch, "config": yaml.safe_dump(config, sort_keys=False),
                "meta": json.dumps(meta or {})}
    write_weights_file(Path(path), tensors, metadata)


def read_metadata(path: str | Path) -> tuple[str, dict, dict]:
    """(arch, config, meta) of a weights file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if "arch" not in md:
        raise CheckpointError(f"{path}: no architecture recorded (not a ros2_pose6d weights file)")
    return md["arch"], parse_yaml(md.get("config", "{}")) or {}, json.loads(md.get("meta", "{}"))


def load_weights(path: str | Path, module: nn.Module, arch: str,
                 fresh_prefixes: tuple[str, ...] = ()) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """Load into ``module``; returns (config, meta, extra tensors). Raises CheckpointError on mismatch.
    Tensors of ``module`` under ``fresh_prefixes`` may be absent from the file (fine-tuning weights with a
    part added to them); they keep their initial values."""
    found, config, meta = read_metadata(path)
    if found != arch:
        raise CheckpointError(f"{path}: holds '{found}' weights, expected '{arch}'")
    # shipped files may hold float16 (see compact_weights); the networks compute in float32
    tensors = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
               for k, v in load_file(str(path)).items()}
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    state = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
    check_fits(path, state, module, arch, fresh_prefixes)
    module.load_state_dict(state, strict=not fresh_prefixes)
    return config, meta, extra


def check_fits(path: str | Path, state: dict[str, torch.Tensor], module: nn.Module, arch: str,
               fresh_prefixes: tuple[str, ...] = ()) -> None:
    """CheckpointError naming the first missing (outside ``fresh_prefixes``), unexpected or wrongly shaped
    tensor of ``state`` (read from ``path``) for ``module``."""
    own = module.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(tuple(fresh_prefixes)))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            details.append(f"shape of {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise CheckpointError(f"{path}: weights do not fit this {arch} configuration ({'; '.join(details)})")


def tensor_names(path: str | Path) -> set[str]:
    """The names of the tensors stored in a weights file."""
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def read_model_config(path: str | Path, arch: str) -> dict:
    """The network config stored in a weights file, after checking it holds ``arch`` weights."""
    found, config, _ = read_metadata(path)
    if found != arch:
        raise CheckpointError(f"{path}: holds '{found}' weights, expected '{arch}'")
    return config.get("model", config)


def compact_weights(src: str | Path, dst: str | Path) -> None:
    """Copy a weights file with its float32 tensors stored as float16 (half the size, for the shipped
    weights and the 16 MiB transfer limit); metadata kept, ``load_weights`` reads them back as float32.

    Refuses tensors that float16 would overflow (a clear error, not silently infinite weights).
    """
    src, dst = Path(src), Path(dst)
    read_metadata(src)  # a ros2_pose6d weights file, or CheckpointError
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    tensors = {}
    for k, v in load_file(str(src)).items():
        if v.dtype == torch.float32:
            if v.numel() and float(v.abs().max()) > torch.finfo(torch.float16).max:
                raise CheckpointError(f"{src}: tensor {k} exceeds the float16 range; cannot compact")
            v = v.half()
        tensors[k] = v.contiguous()
    write_weights_file(dst, tensors, metadata)
