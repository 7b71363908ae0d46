"""The one code path from image to poses: detector, then the chosen refiner. The nodes, the bag replay,
the demo and ``evaluate`` all run this object; they only convert messages or files around it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from ros2_pose6d.estimation.detector import Detector
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.objects.registry import ObjectRegistry

RefinerName = Literal["deepim", "nemo", "none"]
# Whose visibility a refined detection reports: the refiner's own (NeMo: from its occlusion map; DeepIM has
# none and keeps its input's), or the detector's (the visibility head, trained on visib_fract). Poses refined
# from earlier poses (tracking) always take the refiner's: the detector's would be stale. The default is the
# detector's, the more accurate of the two with the shipped weights (models/weights/README.md).
VisibilitySource = Literal["refiner", "detector"]
VISIBILITY_SOURCES: tuple[str, ...] = get_args(VisibilitySource)


@dataclass
class PipelineConfig:
    """Weights paths (safetensors written by pose6d-train); refiner 'none' publishes detections as poses."""

    detector_weights: str = ""
    refiner: RefinerName = "deepim"
    deepim_weights: str = ""
    nemo_weights: str = ""
    device: str = "cpu"
    score_threshold: float = 0.5
    nms_iou: float = 0.7  # class-wise duplicate suppression (see Detector); 1 = off
    refine_iterations: int | None = None  # DeepIM iterations / NeMo steps; None = the weights' default
    visibility: VisibilitySource = "detector"  # see VisibilitySource


def build_refiner(method: RefinerName, weights: str | Path, registry: ObjectRegistry, device: str):
    """The refiner named by ``method`` loaded from ``weights``, or None for 'none'."""
    if method == "deepim":
        from ros2_pose6d.estimation.deepim_refiner import DeepimRefiner
        return DeepimRefiner.from_weights(weights, registry, device)
    if method == "nemo":
        from ros2_pose6d.estimation.nemo_refiner import NemoRefiner
        return NemoRefiner.from_weights(weights, registry, device)
    return None


@dataclass
class PipelineResult:
    detections: list[PoseEstimate]
    poses: list[PoseEstimate]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class Pipeline:
    def __init__(self, registry: ObjectRegistry, detector: Detector | None, refiner=None,
                 iterations: int | None = None, visibility: VisibilitySource = "detector") -> None:
        """``detector`` may be None for refinement only (tracking, evaluation from given poses);
        ``iterations``: DeepIM iterations / NeMo steps per call, None for the weights' default;
        ``visibility``: whose visibility a refined detection reports (VisibilitySource)."""
        if visibility not in VISIBILITY_SOURCES:
            raise ValueError(f"visibility must be one of {', '.join(VISIBILITY_SOURCES)}, got {visibility!r}")
        self.registry, self.detector, self.refiner, self.iterations = registry, detector, refiner, iterations
        self.visibility = visibility

    @classmethod
    def from_config(cls, cfg: PipelineConfig, registry: ObjectRegistry) -> Pipeline:
        for name, path in (("detector_weights", cfg.detector_weights),
                           ("deepim_weights", cfg.deepim_weights if cfg.refiner == "deepim" else "x"),
                           ("nemo_weights", cfg.nemo_weights if cfg.refiner == "nemo" else "x")):
            if not path:
                raise ValueError(f"pipeline: {name} is not set")
            if path != "x" and not Path(path).is_file():
                raise FileNotFoundError(f"pipeline: {name} file not found: {path}")
        detector = Detector.from_weights(cfg.detector_weights, registry, cfg.device,
                                         score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou)
        weights = cfg.deepim_weights if cfg.refiner == "deepim" else cfg.nemo_weights
        return cls(registry, detector, build_refiner(cfg.refiner, weights, registry, cfg.device), cfg.refine_iterations,
                   cfg.visibility)

    def refine(self, frame: Frame, estimates: list[PoseEstimate]) -> list[PoseEstimate]:
        """Refine given estimates (tracking reuses the last poses through here)."""
        if self.refiner is None or not estimates:
            return list(estimates)
        refined = self.refiner.refine(frame, estimates, self.iterations)
        if self.visibility == "detector":  # refiners return their inputs' order
            refined = [replace(r, visibility=e.visibility) if e.stage == "detected" else r
                       for e, r in zip(estimates, refined, strict=True)]
        return refined

    def process(self, frame: Frame) -> PipelineResult:
        """Detect and refine one frame. Raises FrameError for a frame that cannot be used."""
        t0 = time.perf_counter()
        detections = self.detector.detect(frame)
        t1 = time.perf_counter()
        poses = self.refine(frame, detections)
        t2 = time.perf_counter()
        return PipelineResult(detections, poses, {"detection": t1 - t0, "refinement": t2 - t1})
