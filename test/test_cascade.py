"""Refiner cascades: the name's grammar, the order the stages run in and what the result carries, loading,
and refusing one iteration count for a whole cascade (in the pipeline, the CLIs and the node parameters)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ros2_pose6d.estimation.cascade import CascadeRefiner, Stage, is_cascade, parse_refiner
from ros2_pose6d.estimation.pipeline import Pipeline, build_refiner
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.resources import default_objects_yaml, weights_dir
from ros2_pose6d.runtime.params import REFINER, accept_changes, validate


def test_names_parse_into_stages():
    assert parse_refiner("none") == []
    assert parse_refiner("nemo") == [Stage("nemo")]
    assert parse_refiner("deepim + nemo:40 + deepim : 1") == [Stage("deepim"), Stage("nemo", 40), Stage("deepim", 1)]
    assert not is_cascade("deepim") and not is_cascade("none")
    assert is_cascade("deepim:3") and is_cascade("nemo+deepim")
    for bad, why in (("icp", "unknown method 'icp'"), ("deepim+", "unknown method ''"),
                     ("none+deepim", "unknown method 'none'"), ("deepim:0", "'deepim:0' needs a whole number"),
                     ("nemo:2.5", "'nemo:2.5' needs a whole number"), ("", "refiner must be none, deepim, nemo")):
        with pytest.raises(ValueError, match=why):
            parse_refiner(bad)


class Shift:
    """A fake refiner: moves every pose by ``dx`` along x, records what it was given, and (like the real
    ones) hands back the estimates it cannot refine (object 99) unchanged with a 'not refined' note."""

    def __init__(self, name: str, dx: float, steps: int, log: list) -> None:
        self.name, self.dx, self.steps, self.log = name, dx, steps, log

    def refine(self, frame, estimates, iterations=None):
        self.log.append((self.name, iterations, [float(e.t[0]) for e in estimates]))
        n = self.steps if iterations is None else iterations
        return [replace(e, notes=[*e.notes, "not refined: unknown object"]) if e.object_id == 99 else
                replace(e, t=e.t + [self.dx, 0, 0], stage="refined", iterations=n, fit_error=self.dx,
                        notes=[*e.notes, f"{self.name} was here"])
                for e in estimates]


def test_stages_run_in_turn_each_from_the_last_ones_poses():
    log: list = []
    a, b = Shift("a", 0.01, 2, log), Shift("b", 0.1, 40, log)
    cascade = CascadeRefiner([(Stage("deepim"), a), (Stage("nemo", 5), b), (Stage("deepim", 1), a)])
    frame = Frame(np.zeros((4, 4, 3), np.uint8), np.eye(3))
    starts = [PoseEstimate(1, np.eye(3), np.array([0.0, 0, 1])),
              PoseEstimate(99, np.eye(3), np.array([0.5, 0, 1]), stage="refined", iterations=7),
              PoseEstimate(2, np.eye(3), np.array([1.0, 0, 1]), stage="tracked", iterations=7)]
    out = cascade.refine(frame, starts)
    # each stage gets its own count (None: the weights' default) and the previous stage's poses
    assert [(name, it) for name, it, _ in log] == [("a", None), ("b", 5), ("a", 1)]
    assert log[1][2] == pytest.approx([0.01, 0.5, 1.01]) and log[2][2] == pytest.approx([0.11, 0.5, 1.11])
    assert [float(e.t[0]) for e in out] == pytest.approx([0.12, 0.5, 1.12])
    # iterations add up over the stages, the fit error is the last stage's, every stage's notes are kept
    assert [e.iterations for e in out] == [2 + 5 + 1, 7, 2 + 5 + 1]
    assert out[0].fit_error == 0.01 and out[0].stage == "refined"
    assert out[0].notes == ["a was here", "b was here", "a was here"]
    # what no stage could refine comes back as it was (an earlier refinement's count too), with each reason
    assert out[1].stage == "refined" and out[1].t[0] == 0.5 and len(out[1].notes) == 3
    with pytest.raises(ValueError, match="takes its iterations from its stages"):
        cascade.refine(frame, starts, iterations=3)
    with pytest.raises(ValueError, match="at least one stage"):
        CascadeRefiner([])


def test_a_cascade_loads_each_method_once_and_refuses_one_count_for_all():
    registry = ObjectRegistry.from_yaml(default_objects_yaml())
    weights = {m: weights_dir() / f"{m}_demo.safetensors" for m in ("deepim", "nemo")}
    cascade = build_refiner("deepim+nemo:10+deepim:1", weights, registry, "cpu")
    assert isinstance(cascade, CascadeRefiner)
    first, second, third = (r for _, r in cascade.stages)
    assert first is third and type(first).__name__ == "DeepimRefiner" and type(second).__name__ == "NemoRefiner"
    assert [s for s, _ in cascade.stages] == [Stage("deepim"), Stage("nemo", 10), Stage("deepim", 1)]
    assert type(build_refiner("nemo", weights, registry, "cpu")).__name__ == "NemoRefiner"
    assert build_refiner("none", {}, registry, "cpu") is None
    with pytest.raises(ValueError, match="no nemo weights given"):
        build_refiner("deepim+nemo", {"deepim": weights["deepim"]}, registry, "cpu")
    with pytest.raises(ValueError, match="takes its iterations from its stages"):
        Pipeline(registry, None, cascade, iterations=4)


def test_node_parameters_take_a_cascade_but_not_with_one_iteration_count():
    assert validate(REFINER, {"method": "deepim+nemo+deepim:1"}) == []
    assert validate(REFINER, {"method": "deepim", "iterations": 4}) == []
    assert validate(REFINER, {"method": "deepim+nemo", "iterations": 4}) == [
        "iterations must stay 0 with the cascade method 'deepim+nemo': give each stage's count in method "
        "(e.g. deepim:2+nemo:40)"]
    assert validate(REFINER, {"method": "deepim+icp"})[0].startswith("method: refiner 'deepim+icp': unknown method")
    # a live change is checked against the values the node runs with
    applied: list = []
    running = {"method": "deepim+nemo", "iterations": 0}
    assert "iterations must stay 0" in accept_changes(REFINER, {"iterations": 3}, applied.append, running)
    assert accept_changes(REFINER, {"iterations": 3}, applied.append, {"method": "nemo", "iterations": 0}) == ""
    assert applied == [{"iterations": 3}]


def test_cli_refuses_a_bad_cascade_and_missing_weights(tmp_path, capsys):
    from ros2_pose6d.training.cli_evaluate import main as evaluate

    with pytest.raises(SystemExit) as exc:
        evaluate([str(tmp_path), "--refiner", "deepim+icp"])
    assert exc.value.code == 2 and "unknown method 'icp'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--refiner deepim\\+nemo needs --nemo WEIGHTS"):
        evaluate([str(tmp_path), "--init", "perturbed", "--refiner", "deepim+nemo", "--deepim", "x.safetensors"])


def test_evaluate_runs_a_cascade_of_the_shipped_weights(tmp_path):
    """End to end on two demo-like renders: NeMo then one DeepIM iteration, from DeepIM-perturbed truth,
    brings the poses closer (AR up) and reports every target."""
    import json

    from ros2_pose6d.training.cli_evaluate import main as evaluate
    from ros2_pose6d.training.synth import SynthConfig, generate_dataset

    registry = ObjectRegistry.from_yaml(default_objects_yaml())
    split = generate_dataset(registry, tmp_path / "split", 2, SynthConfig(height=240, width=320, focal=(280.0, 300.0)),
                             seed=5, progress=False)
    wd = weights_dir()
    assert evaluate([str(split), "--init", "perturbed", "--refiner", "nemo:10+deepim:1", "--nemo",
                     str(wd / "nemo_demo.safetensors"), "--deepim", str(wd / "deepim_demo.safetensors"),
                     "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["refined"]["n"] == summary["initial"]["n"] >= 6
    assert summary["refined"]["AR"] > summary["initial"]["AR"] + 0.05, summary
