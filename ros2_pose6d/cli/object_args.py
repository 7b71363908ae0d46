"""The object set of a CLI: ``--objects objects.yaml`` or ``--models-dir`` a BOP models/ folder (LM-O's, say),
the shipped demo objects when neither is given. One definition for every CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.resources import default_objects_yaml


def add_object_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--objects", type=Path, help="objects.yaml (default: the shipped demo objects)")
    group.add_argument("--models-dir", type=Path, help="a BOP models/ folder (models_info.json + obj_XXXXXX.ply)")


def load_registry(args: argparse.Namespace) -> ObjectRegistry:
    if getattr(args, "models_dir", None):
        return ObjectRegistry.from_bop_models(args.models_dir)
    return ObjectRegistry.from_yaml(args.objects or default_objects_yaml())
