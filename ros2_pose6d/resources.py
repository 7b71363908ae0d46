"""Where the shipped config/, models/ and launch/ live: the source checkout (editable install) or
``<prefix>/share/ros2_pose6d`` of a colcon/pip install."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "ros2_pose6d"


def share_dir() -> Path:
    """The folder holding config/, models/ and launch/. Raises FileNotFoundError naming where it looked."""
    candidates = [Path(__file__).resolve().parents[1]]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(p) / "share" / PACKAGE for p in prefixes]
    for c in candidates:
        if (c / "config" / "objects.yaml").is_file():
            return c
    raise FileNotFoundError("cannot find the ros2_pose6d share folder (config/objects.yaml) in: "
                            + ", ".join(str(c) for c in candidates))


def default_objects_yaml() -> Path:
    return share_dir() / "config" / "objects.yaml"


def weights_dir() -> Path:
    return share_dir() / "models" / "weights"
