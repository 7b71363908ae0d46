"""A refined detection's score: the detector's times DeepIM's seen share to ``seen_power`` (4), so that of one object's
hypotheses the poses the image confirms rank first: in the pipeline's duplicate rule and in evaluate's top-n."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ros2_pose6d.estimation.cascade import CascadeRefiner, Stage
from ros2_pose6d.estimation.pipeline import Pipeline
from ros2_pose6d.estimation.refine_common import NOT_REFINED, OCCLUSION_MAP, SEEN_SHARE
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.eval.report import Report
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.resources import default_objects_yaml

FRAME = Frame(np.zeros((48, 64, 3), np.uint8), np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]))


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(default_objects_yaml())


def _det(obj: int, x: float, score: float, visibility: float = 0.9) -> PoseEstimate:
    return PoseEstimate(obj, np.eye(3), np.array([x, 0.0, 1.0]), score=score, visibility=visibility)


class _Seeing:
    """A refiner that leaves poses where they are and reports, per start, the seen share ``seen[x]`` (keyed by the
    start's x); ``onto`` moves every start onto one pose (two refined duplicates); ``fail`` hands starts back
    unrefined as refiners do."""

    def __init__(self, seen: dict[float, float], source: str | None = SEEN_SHARE, onto: bool = False,
                 fail: bool = False) -> None:
        self.seen, self.visibility_source, self.onto, self.fail = seen, source, onto, fail

    def refine(self, frame, estimates, iterations=None):
        if self.fail:
            return [replace(e, notes=[*e.notes, NOT_REFINED + "test"]) for e in estimates]
        return [replace(e, stage="refined", visibility=self.seen[round(float(e.t[0]), 3)],
                        t=np.array([0.0, 0.0, 1.0]) if self.onto else e.t) for e in estimates]


def test_refined_score_is_the_detectors_times_the_seen_share_to_the_fourth(registry):
    obj = registry.ids[0]
    starts = [_det(obj, 0.0, 0.8), _det(obj, 0.3, 0.5)]
    seen = {0.0: 0.5, 0.3: 1.0}
    out = Pipeline(registry, None, _Seeing(seen)).refine(FRAME, starts)
    assert [e.score for e in out] == pytest.approx([0.8 * 0.5**4, 0.5])
    assert [e.visibility for e in out] == [0.9, 0.9]  # the detector's visibility is still the one reported
    out = Pipeline(registry, None, _Seeing(seen), visibility="refiner", seen_power=1.0).refine(FRAME, starts)
    assert [e.score for e in out] == pytest.approx([0.4, 0.5]) and [e.visibility for e in out] == [0.5, 1.0]
    # off, a refiner whose visibility is no seen share, a start handed back unrefined, a tracked pose (its score
    # would shrink on every frame) and a NaN share: the score stays
    def scores(refiner, given=starts, **kw):
        return [e.score for e in Pipeline(registry, None, refiner, **kw).refine(FRAME, given)]
    assert scores(_Seeing(seen), seen_power=0.0) == [0.8, 0.5]
    assert scores(_Seeing(seen, OCCLUSION_MAP)) == scores(_Seeing(seen, None)) == [0.8, 0.5]
    assert scores(_Seeing(seen, fail=True)) == [0.8, 0.5]
    assert scores(_Seeing(seen), [replace(e, stage="refined") for e in starts]) == [0.8, 0.5]
    assert Pipeline(registry, None, _Seeing({0.0: float("nan")})).refine(FRAME, starts[:1])[0].score == 0.8
    for bad in (-1.0, 11.0, float("nan")):
        with pytest.raises(ValueError, match="seen_power"):
            Pipeline(registry, None, _Seeing(seen), seen_power=bad)


def test_of_two_duplicates_the_confirmed_pose_stays(registry):
    """Two hypotheses refined onto one instance: the detector liked the first more, but DeepIM sees only 40 % of
    the object matched there (0.9 * 0.4^4 = 0.023 < 0.6 * 1.0): the second stays, with its score."""
    obj = registry.ids[0]
    starts = [_det(obj, 0.0, 0.9), _det(obj, 0.01, 0.6)]
    out = Pipeline(registry, None, _Seeing({0.0: 0.4, 0.01: 1.0}, onto=True)).refine_detections(FRAME, starts)
    assert len(out) == 1 and out[0].score == pytest.approx(0.6)
    out = Pipeline(registry, None, _Seeing({0.0: 0.4, 0.01: 1.0}, onto=True), seen_power=0).refine_detections(
        FRAME, starts)
    assert len(out) == 1 and out[0].score == 0.9


def test_a_cascade_reports_the_last_stage_that_measures_visibility():
    seeing, nemo, blind = _Seeing({}), _Seeing({}, OCCLUSION_MAP), _Seeing({}, None)
    assert CascadeRefiner([(Stage("nemo"), nemo), (Stage("deepim"), seeing)]).visibility_source == SEEN_SHARE
    assert CascadeRefiner([(Stage("deepim"), seeing), (Stage("nemo"), nemo)]).visibility_source == OCCLUSION_MAP
    assert CascadeRefiner([(Stage("nemo"), nemo), (Stage("deepim"), blind)]).visibility_source == OCCLUSION_MAP
    assert CascadeRefiner([(Stage("deepim"), blind)]).visibility_source is None


def test_evaluate_ranks_extra_hypotheses_by_their_refined_score(registry):
    """One target; hypotheses 0.9 (refined, 30 % of it seen), 0.6 (all seen) and 0.4: with one extra hypothesis
    the 0.9 and the 0.6 are refined and the 0.6's pose ranks first; without, only the 0.9 is refined."""
    from ros2_pose6d.training.cli_evaluate import refine_scored

    from ros2_pose6d.eval.report import top_per_object

    obj = registry.ids[0]
    hyps = [_det(obj, 0.3, 0.6), _det(obj, 0.0, 0.9), _det(obj, 0.5, 0.4)]
    pipe = Pipeline(registry, None, _Seeing({0.0: 0.3, 0.3: 1.0, 0.5: 1.0}))
    started, refined = refine_scored(pipe, FRAME, hyps, {obj: 1}, extra=1)
    assert [e.score for e in started] == [0.9, 0.6]
    assert [e.t[0] for e in top_per_object(refined, {obj: 1})] == [0.3]
    started, refined = refine_scored(pipe, FRAME, hyps, {obj: 1})
    assert [e.score for e in started] == [0.9] and [e.t[0] for e in refined] == [0.0]
    # an object with no target in the frame has nothing refined, extra or not
    assert refine_scored(pipe, FRAME, hyps, {obj: 0}, extra=2) == ([], [])


def test_report_counts_hypotheses_left_out_before_the_ranking(registry):
    """``unranked``: evaluate's unrefined leftovers are counted beyond the targets' count, never scored."""
    obj = registry.ids[0]
    gt = PoseEstimate(obj, np.eye(3), np.array([0.0, 0.0, 1.0]))
    report = Report(min_visib=0.0)
    report.add_frame("refined", [_det(obj, 0.0, 0.5), _det(obj, 0.2, 0.4)], [gt], FRAME.K, registry, ranked=True,
                     unranked=3)
    assert report.beyond_top["refined"] == 4 and len(report.targets["refined"]) == 1
