"""Loads the compiled extension ``ros2_pose6d._C`` once and says which backend the ops use.

When the extension is missing (no compiler at install time, ``ROS2_POSE6D_NO_EXT=1``) the ops fall
back to their pure-PyTorch references with one warning. ``ROS2_POSE6D_FORCE_REFERENCE=1`` forces
the references even when the extension exists (for debugging and comparisons).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from types import ModuleType

import torch

_C: ModuleType | None = None
_load_error: str | None = None
_warned = False

try:  # the one import guard of the package: its failure is reported, never silent
    from ros2_pose6d import _C  # type: ignore[attr-defined,no-redef]
except ImportError as exc:  # pragma: no cover - depends on the build
    _load_error = str(exc)


@dataclass(frozen=True)
class Backend:
    """What the ops run on. ``kernels`` is "extension" or "reference"."""

    kernels: str
    extension_cuda: bool
    torch_cuda: bool
    reason: str


def backend() -> Backend:
    """Report whether the compiled kernels or the pure-PyTorch references are in use, and why."""
    if os.environ.get("ROS2_POSE6D_FORCE_REFERENCE") == "1":
        return Backend("reference", False, torch.cuda.is_available(), "ROS2_POSE6D_FORCE_REFERENCE=1")
    if _C is None:
        return Backend("reference", False, torch.cuda.is_available(),
                       f"extension ros2_pose6d._C not importable: {_load_error}")
    return Backend("extension", bool(_C.with_cuda), torch.cuda.is_available(), "compiled kernels loaded")


def extension_for(device: torch.device) -> ModuleType | None:
    """The extension module if it can run on ``device``, else None (after warning once)."""
    global _warned
    info = backend()
    usable = info.kernels == "extension" and (device.type == "cpu" or (device.type == "cuda" and info.extension_cuda))
    if usable:
        return _C
    if not _warned:
        _warned = True
        why = info.reason if info.kernels == "reference" else f"extension built without CUDA, tensors on {device}"
        warnings.warn(f"ros2_pose6d: using the pure-PyTorch reference ops ({why})", RuntimeWarning, stacklevel=3)
    return None
