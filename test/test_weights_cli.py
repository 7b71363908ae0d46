"""pose6d-weights: inference settings changed in a copy of a weights file, checked before anything is written."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

from ros2_pose6d.cli.weights import main
from ros2_pose6d.estimation.deepim_refiner import DeepimRefiner
from ros2_pose6d.estimation.nemo_refiner import NemoRefiner
from ros2_pose6d.nets.checkpoint import read_metadata
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.resources import weights_dir


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


def test_set_changes_only_the_named_model_keys(registry, tmp_path):
    src, dst = weights_dir() / "nemo_demo.safetensors", tmp_path / "nemo.safetensors"
    assert main(["set", str(src), str(dst), "--set", "search_rotations=0", "--set", "model.steps=12"]) == 0
    _, before, meta_before = read_metadata(src)
    _, after, meta_after = read_metadata(dst)
    assert after["model"] == {**before["model"], "search_rotations": 0, "steps": 12}
    assert after.get("train") == before.get("train") and meta_after == meta_before  # the training record stays
    a, b = load_file(str(src)), load_file(str(dst))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref = NemoRefiner.from_weights(dst, registry)
    assert ref.cfg.steps == 12 and ref.cfg.search_rotations == 0


def test_set_works_for_deepim_and_in_place(registry, tmp_path):
    dst = tmp_path / "deepim.safetensors"
    assert main(["set", str(weights_dir() / "deepim_demo.safetensors"), str(dst), "--set", "iterations=2"]) == 0
    assert main(["set", str(dst), str(dst), "--set", "iterations=3"]) == 0  # the source itself: no --force needed
    assert DeepimRefiner.from_weights(dst, registry).net.cfg.iterations == 3


@pytest.mark.parametrize("override, message", [
    ("serch_rotations=288", "unknown key 'serch_rotations' in 'model'"),
    ("steps=many", "model.steps"),
    ("feature_dim=32", "weights do not fit this nemo configuration"),
])
def test_a_bad_setting_is_one_line_and_writes_nothing(tmp_path, capsys, override, message):
    dst = tmp_path / "out.safetensors"
    assert main(["set", str(weights_dir() / "nemo_demo.safetensors"), str(dst), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not dst.exists() and not list(tmp_path.iterdir())


def test_an_existing_destination_is_kept_without_force(tmp_path, capsys):
    src, dst = weights_dir() / "nemo_demo.safetensors", tmp_path / "out.safetensors"
    dst.write_bytes(b"precious")
    assert main(["set", str(src), str(dst), "--set", "steps=5"]) == 2
    assert "exists; use --force" in capsys.readouterr().err and dst.read_bytes() == b"precious"
    assert main(["set", str(src), str(dst), "--set", "steps=5", "--force"]) == 0
    assert read_metadata(dst)[1]["model"]["steps"] == 5


def test_show_prints_the_architecture_and_model_config(capsys):
    assert main(["show", str(weights_dir() / "detector_demo.safetensors")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arch: smope\n") and "\nmodel:\n" in out and "image_size:" in out
    assert main(["show", str(REPO / "README.md")]) == 2
