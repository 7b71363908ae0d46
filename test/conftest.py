"""Shared test helpers: tolerance-stating comparisons and the extension requirement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ros2_pose6d._ext import backend

REPO = Path(__file__).resolve().parents[1]
LMO = REPO.parent / "shared" / "data" / "lmo"


needs_lmo = pytest.mark.skipif(not (LMO / "test" / "000002").is_dir(), reason=f"LM-O data not found at {LMO}")


def refine_lmo_from_perturbed_truth(refiner: str, weights: Path, out: Path) -> tuple[dict, dict]:
    """``pose6d-evaluate`` of a refiner ('deepim' or 'nemo') with ``weights`` on the 50 real LM-O frames from
    DeepIM-perturbed ground truth: the summary's (initial, refined) metrics, both over BOP's targets: the 368 of the
    383 instances at least 10 % visible (the other 15 counted as such)."""
    import json

    from ros2_pose6d.training.cli_evaluate import main as evaluate

    assert evaluate([str(LMO / "test"), "--models-dir", str(LMO / "models"), "--init", "perturbed", "--refiner",
                     refiner, f"--{refiner}", str(weights), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    before, after = summary["initial"], summary["refined"]
    assert before["n"] == after["n"] == 368
    assert summary["targets not counted"] == {"initial": 15, "refined": 15}
    return before, after


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0, what: str = "") -> None:
    """Fail with the max difference and where it is."""
    diff = (actual.detach().double() - expected.detach().double()).abs()
    bound = atol + rtol * expected.detach().double().abs()
    if not bool((diff <= bound).all()):
        idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
        pytest.fail(f"{what}: max |diff| = {diff.max().item():.3e} at {idx} "
                    f"(actual {actual[idx].item():.6g}, expected {expected[idx].item():.6g}); atol={atol}, rtol={rtol}")


@pytest.fixture
def kernels():
    """The compiled extension; skips without it unless ROS2_POSE6D_REQUIRE_EXT=1 (CI), where it fails."""
    info = backend()
    if info.kernels != "extension":
        if os.environ.get("ROS2_POSE6D_REQUIRE_EXT") == "1":
            pytest.fail(f"ROS2_POSE6D_REQUIRE_EXT=1 but {info.reason}")
        pytest.skip(info.reason)
    from ros2_pose6d import _C

    return _C


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
