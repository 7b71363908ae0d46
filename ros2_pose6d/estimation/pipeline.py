"""The one code path from image to poses: detector, then the chosen refiner. The nodes, the bag replay,
the demo and ``evaluate`` all run this object; they only convert messages or files around it."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from ros2_pose6d.estimation.cascade import ONE_COUNT_ERROR, CascadeRefiner, is_cascade, parse_refiner
from ros2_pose6d.estimation.detector import Detector
from ros2_pose6d.estimation.duplicates import drop_duplicates
from ros2_pose6d.estimation.refine_common import SEEN_SHARE, refined_here
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.objects.registry import ObjectRegistry

# Whose visibility a refined detection reports: the refiner's own (NeMo: from its occlusion map; DeepIM: from
# its flow matcher's occlusion head where the weights have one, else its input's), or the detector's (the
# visibility head, trained on visib_fract). Poses refined from earlier poses (tracking) always take the
# refiner's: the detector's would be stale. The default is the detector's, the more accurate of the two with
# the shipped weights (models/weights/README.md).
VisibilitySource = Literal["refiner", "detector"]
VISIBILITY_SOURCES: tuple[str, ...] = get_args(VisibilitySource)
MAX_SEEN_POWER = 10.0


@dataclass
class PipelineConfig:
    """Weights paths (safetensors written by pose6d-train); refiner 'none' publishes detections as poses."""

    detector_weights: str = ""
    refiner: str = "deepim"  # 'deepim', 'nemo', 'none' or a cascade such as 'deepim+nemo+deepim:1' (cascade.py)
    deepim_weights: str = ""
    nemo_weights: str = ""
    device: str = "cpu"
    score_threshold: float = 0.5
    nms_iou: float = 0.7  # class-wise duplicate suppression (see Detector); 1 = off
    refine_iterations: int | None = None  # DeepIM iterations / NeMo steps; None = the weights' default
    visibility: VisibilitySource = "detector"  # see VisibilitySource
    # after refinement, a detection whose centre is within this many diameters of a better one of the same object
    # is that object again, and dropped (duplicates.py); 0 = keep all
    duplicate_distance: float = 0.25
    # a refined detection's score is the detector's times the refiner's seen share to this power (0: the
    # detector's score); see Pipeline.refine
    seen_power: float = 4.0


def build_refiner(method: str, weights: Mapping[str, str | Path | None], registry: ObjectRegistry, device: str):
    """The refiner ``method`` names (cascade.parse_refiner: 'deepim', 'nemo', 'none' or a cascade such as
    'deepim+nemo+deepim:1'), each method loaded once from ``weights[method]``; None for 'none'. Raises
    ValueError for a bad name or a method whose weights are not given."""
    stages = parse_refiner(method)
    loaded = {}
    for stage in stages:
        if stage.method in loaded:
            continue
        path = weights.get(stage.method)
        if not path:
            raise ValueError(f"refiner {method}: no {stage.method} weights given")
        loaded[stage.method] = _load_refiner(stage.method, path, registry, device)
    if not stages:
        return None
    if not is_cascade(stages):
        return loaded[stages[0].method]
    return CascadeRefiner([(stage, loaded[stage.method]) for stage in stages])


def _load_refiner(method: str, weights: str | Path, registry: ObjectRegistry, device: str):
    if method == "deepim":
        from ros2_pose6d.estimation.deepim_refiner import DeepimRefiner
        return DeepimRefiner.from_weights(weights, registry, device)
    from ros2_pose6d.estimation.nemo_refiner import NemoRefiner
    return NemoRefiner.from_weights(weights, registry, device)


@dataclass
class PipelineResult:
    detections: list[PoseEstimate]
    poses: list[PoseEstimate]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class Pipeline:
    def __init__(self, registry: ObjectRegistry, detector: Detector | None, refiner=None,
                 iterations: int | None = None, visibility: VisibilitySource = PipelineConfig.visibility,
                 duplicate_distance: float = PipelineConfig.duplicate_distance,
                 seen_power: float = PipelineConfig.seen_power) -> None:
        """``detector`` may be None for refinement only (tracking, evaluation from given poses);
        ``iterations``: DeepIM iterations / NeMo steps per call, None for the weights' default;
        ``visibility``: whose visibility a refined detection reports (VisibilitySource);
        ``duplicate_distance``: see ``refine_detections`` (0: off); ``seen_power``: see ``refine`` (0: off)."""
        if visibility not in VISIBILITY_SOURCES:
            raise ValueError(f"visibility must be one of {', '.join(VISIBILITY_SOURCES)}, got {visibility!r}")
        if not 0.0 <= duplicate_distance <= 1.0:
            raise ValueError(f"duplicate_distance must be in [0, 1] object diameters, got {duplicate_distance}")
        if not 0.0 <= seen_power <= MAX_SEEN_POWER:
            raise ValueError(f"seen_power must be in [0, {MAX_SEEN_POWER:g}], got {seen_power}")
        self.duplicate_distance, self.seen_power = duplicate_distance, seen_power
        self.diameters = {i: registry[i].diameter for i in registry.ids}
        if isinstance(refiner, CascadeRefiner) and iterations is not None:
            raise ValueError(ONE_COUNT_ERROR)  # here, not on every frame
        self.registry, self.detector, self.refiner, self.iterations = registry, detector, refiner, iterations
        self.visibility = visibility

    @classmethod
    def from_config(cls, cfg: PipelineConfig, registry: ObjectRegistry) -> Pipeline:
        weights = {"deepim": cfg.deepim_weights, "nemo": cfg.nemo_weights}
        needed = ["detector"] + sorted({stage.method for stage in parse_refiner(cfg.refiner)})
        for name in needed:
            path = cfg.detector_weights if name == "detector" else weights[name]
            if not path:
                raise ValueError(f"pipeline: {name}_weights is not set")
            if not Path(path).is_file():
                raise FileNotFoundError(f"pipeline: {name}_weights file not found: {path}")
        detector = Detector.from_weights(cfg.detector_weights, registry, cfg.device,
                                         score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou)
        return cls(registry, detector, build_refiner(cfg.refiner, weights, registry, cfg.device), cfg.refine_iterations,
                   cfg.visibility, cfg.duplicate_distance, cfg.seen_power)

    def refine(self, frame: Frame, estimates: list[PoseEstimate]) -> list[PoseEstimate]:
        """Refine given estimates (tracking reuses the last poses through here). A detection the refiner refined
        scores, with a refiner whose visibility is its seen share (refine_common.SEEN_SHARE), the detector's
        score times that share to ``seen_power``: the share is near 1 where the refined pose explains the image
        and well under it where the pose is wrong, so of an object's hypotheses the ones the image confirms rank
        first (which duplicate stays, which BOP scores; models/weights/README.md). Tracked poses keep theirs."""
        if self.refiner is None or not estimates:
            return list(estimates)
        refined = self.refiner.refine(frame, estimates, self.iterations)
        rescore = self.seen_power > 0 and getattr(self.refiner, "visibility_source", None) == SEEN_SHARE
        out = []
        for e, r in zip(estimates, refined, strict=True):  # refiners return their inputs' order
            if e.stage == "detected":
                if rescore and refined_here(e, r) and math.isfinite(r.visibility):
                    r = replace(r, score=float(e.score) * min(max(float(r.visibility), 0.0), 1.0) ** self.seen_power)
                if self.visibility == "detector":
                    r = replace(r, visibility=e.visibility)
            out.append(r)
        return out

    def refine_detections(self, frame: Frame, detections: list[PoseEstimate]) -> list[PoseEstimate]:
        """``refine``, then, of the refined poses of one object whose centres ended within ``duplicate_distance``
        of its diameter, only the best-scoring (a detector's duplicates converge on one instance; duplicates.py).
        For hypotheses, a detector's or tracked ones; ``refine`` keeps one output per given start."""
        poses = self.refine(frame, detections)
        return drop_duplicates(poses, self.diameters, self.duplicate_distance) if self.refiner is not None else poses

    def process(self, frame: Frame) -> PipelineResult:
        """Detect and refine one frame. Raises FrameError for a frame that cannot be used."""
        t0 = time.perf_counter()
        detections = self.detector.detect(frame)
        t1 = time.perf_counter()
        poses = self.refine_detections(frame, detections)
        t2 = time.perf_counter()
        return PipelineResult(detections, poses, {"detection": t1 - t0, "refinement": t2 - t1})
