"""Every training recipe we ship (training/configs, and the YAML beside each shipped weights file) is a valid
config for its task: a misspelt model or loss key would otherwise surface only when someone runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from ros2_pose6d.training.tasks import build_task
from ros2_pose6d.training.trainer import TrainConfig

from ros2_pose6d.config import build_config, load_yaml
from ros2_pose6d.objects.registry import ObjectRegistry

RECIPES = sorted((REPO / "training" / "configs").glob("*.yaml")) + sorted((REPO / "models" / "weights").glob("*.yaml"))


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_builds_its_task(path: Path, registry):
    cfg = build_config(TrainConfig, load_yaml(path))
    build_task(cfg, registry)  # validates model.* and loss.* (the LM-O recipes' networks fit any object set)
    if cfg.init_from:
        assert (path.parent / cfg.init_from).is_file(), f"{path.name}: init_from {cfg.init_from} is missing"
