"""One instance found twice: refined duplicates are dropped by centre distance, in the pipeline and in evaluate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ros2_pose6d.estimation.duplicates import drop_duplicates
from ros2_pose6d.estimation.pipeline import Pipeline
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.resources import default_objects_yaml


def _est(obj: int, x: float, score: float) -> PoseEstimate:
    return PoseEstimate(obj, np.eye(3), np.array([x, 0.0, 1.0]), score=score)


def test_drop_duplicates_by_centre_distance_keeps_the_best_score():
    """Diameter 0.1 m, reach 0.25 of it (2.5 cm): 1 cm apart is one instance (the 0.9 stays, wherever it is in
    the list), 5 cm apart two; another object at the same place stays; ties keep the earlier; 0 keeps all."""
    d = {1: 0.1, 2: 0.1}
    a, dup, far, other = _est(1, 0.01, 0.6), _est(1, 0.0, 0.9), _est(1, 0.06, 0.5), _est(2, 0.0, 0.3)
    assert [e.score for e in drop_duplicates([a, dup, far, other], d, 0.25)] == [0.9, 0.5, 0.3]
    assert drop_duplicates([a, far], d, 0.25) == [a, far]
    assert drop_duplicates([a, dup], d, 0.05) == [a, dup]  # 1 cm is beyond 0.05 diameters (5 mm)
    tie = [_est(1, 0.0, 0.5), _est(1, 0.001, 0.5)]
    assert drop_duplicates(tie, d, 0.25)[0].t[0] == 0.0 and len(drop_duplicates(tie, d, 0.25)) == 1
    assert drop_duplicates([a, dup], d, 0.0) == [a, dup] and drop_duplicates([], d, 0.25) == []
    # the detector numbers an object's hypotheses by score (TF frames <object>_<n>): the kept ones close the gap
    numbered = [replace(e, instance=n) for n, e in enumerate([dup, a, far])] + [replace(other, instance=0)]
    assert [(e.score, e.instance) for e in drop_duplicates(numbered, d, 0.25)] == [(0.9, 0), (0.5, 1), (0.3, 0)]


class _Collapse:
    """A refiner that moves every start of an object onto one pose (what two refined duplicates do)."""

    def refine(self, frame, estimates, iterations=None):
        return [replace(e, t=np.array([0.0, 0.0, 1.0]), stage="refined") for e in estimates]


def test_pipeline_drops_refined_duplicates_but_not_given_starts():
    registry = ObjectRegistry.from_yaml(default_objects_yaml())
    obj = registry.ids[0]
    frame = Frame(np.zeros((48, 64, 3), np.uint8), np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]))
    starts = [_est(obj, 0.0, 0.7), _est(obj, 0.2, 0.8)]
    pipe = Pipeline(registry, None, _Collapse())
    out = pipe.refine_detections(frame, starts)
    assert len(out) == 1 and out[0].score == 0.8 and out[0].stage == "refined"
    assert len(pipe.refine(frame, starts)) == 2  # refining given poses (perturbed truth) keeps one per start
    pipe.duplicate_distance = 0.0
    assert len(pipe.refine_detections(frame, starts)) == 2
    assert len(Pipeline(registry, None, None).refine_detections(frame, starts)) == 2  # unrefined: as detected
    with pytest.raises(ValueError, match="duplicate_distance"):
        Pipeline(registry, None, _Collapse(), duplicate_distance=2.0)


def test_evaluate_refills_an_objects_count_when_two_refine_onto_one():
    """Object with 2 targets, hypotheses scoring 0.9, 0.8 (onto the first's pose) and 0.6: as the pipeline's
    output would hold them, the 0.8 is a duplicate and the 0.6 is scored in its place."""
    from ros2_pose6d.training.cli_evaluate import refine_scored

    registry = ObjectRegistry.from_yaml(default_objects_yaml())
    obj = registry.ids[0]
    frame = Frame(np.zeros((48, 64, 3), np.uint8), np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]))

    class OntoFirst:
        def refine(self, frame, estimates, iterations=None):
            return [replace(e, t=np.array([0.0, 0.0, 1.0]) if e.score > 0.7 else e.t, stage="refined")
                    for e in estimates]
    hyps = [_est(obj, 0.3, 0.6), _est(obj, 0.0, 0.9), _est(obj, 0.01, 0.8), _est(obj, 0.5, 0.4)]
    started, refined = refine_scored(Pipeline(registry, None, OntoFirst()), frame, hyps, {obj: 2})
    assert [e.score for e in started] == [0.9, 0.8, 0.6] and sorted(e.score for e in refined) == [0.6, 0.9]
    started, refined = refine_scored(Pipeline(registry, None, None), frame, hyps, {obj: 2})
    assert [e.score for e in started] == [0.9, 0.8] and refined == started  # no refiner: the best two, unmerged
