"""The shipped weights (models/weights/): each file loads into the network its stored config describes, has the
YAML it was trained with beside it, and all of them together stay within the repository's 50 MB budget."""

from __future__ import annotations

import pytest
import yaml
from safetensors import safe_open

from ros2_pose6d.config import build_config
from ros2_pose6d.nets.checkpoint import load_weights, read_metadata
from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.nets.nemo import NemoConfig, NemoModel
from ros2_pose6d.nets.smope import SmopeConfig, SmopeNet
from ros2_pose6d.resources import weights_dir

SHIPPED = sorted(weights_dir().glob("*.safetensors"))
TASK = {"smope": "detector", "deepim": "deepim", "nemo": "nemo"}  # the architecture a task trains


def build_network(path, arch: str, config: dict):
    """The network ``path`` was saved from, built from its stored config (no object set needed)."""
    if arch == "smope":
        return SmopeNet(build_config(SmopeConfig, config["model"], prefix="model"))
    if arch == "deepim":
        return DeepimNet(build_config(DeepimConfig, config["model"], prefix="model"))
    if arch == "nemo":
        with safe_open(str(path), framework="pt") as f:
            vertices = f.get_slice("bank.vertex_features").get_shape()[0]
        return NemoModel(build_config(NemoConfig, config["model"], prefix="model"), vertices)
    raise AssertionError(f"{path.name}: unknown architecture {arch!r}")


def test_every_kind_of_network_ships_for_the_demo_objects():
    assert {p.name for p in SHIPPED} >= {"detector_demo.safetensors", "deepim_demo.safetensors",
                                         "nemo_demo.safetensors"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_weights_load_and_come_with_their_training_config(path):
    arch, config, _ = read_metadata(path)
    load_weights(path, build_network(path, arch, config), arch)  # CheckpointError on any mismatch
    recipe = path.with_suffix(".yaml")
    assert recipe.is_file(), f"{path.name} has no {recipe.name} beside it"
    assert yaml.safe_load(recipe.read_text())["task"] == TASK[arch]


def test_all_shipped_weights_together_stay_within_50_mb():
    total = sum(p.stat().st_size for p in SHIPPED)
    assert total <= 50e6, f"models/weights holds {total / 1e6:.1f} MB of weights"
