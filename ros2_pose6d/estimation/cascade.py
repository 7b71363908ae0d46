"""Refiners run in sequence, each stage starting from the last one's poses (our addition; neither paper
chains them).

Why: the two methods fail in different parts of the pose. NeMo's feature-level search puts the rotation
right more often than DeepIM's FC head, and DeepIM's depth matcher reads the scale better once the
rotation is right: it takes part of a rotation error for a change of scale (models/weights/README.md,
"Cascades"). A cascade is named by its stages joined with '+', each 'method' or 'method:N' (N iterations
for DeepIM, steps for NeMo; without N, the weights' own default): ``deepim+nemo+deepim:1``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from ros2_pose6d.estimation.refine_common import refined_here
from ros2_pose6d.estimation.types import Frame, PoseEstimate

METHODS = ("deepim", "nemo")
# What the node, replay and the demo run unless told otherwise: with the shipped demo weights it corrects
# more poses than either method alone, from detections and from perturbed truth (models/weights/README.md).
DEFAULT_REFINER = "nemo+deepim"
_KINDS = "none, deepim, nemo or a cascade of them such as deepim+nemo+deepim:1"
ONE_COUNT_ERROR = "a cascade takes its iterations from its stages ('deepim:2+nemo:40'), not one count"


class Refiner(Protocol):
    def refine(self, frame: Frame, estimates: list[PoseEstimate],
               iterations: int | None = None) -> list[PoseEstimate]: ...


@dataclass(frozen=True)
class Stage:
    method: str  # one of METHODS
    iterations: int | None = None  # None: the weights' default


def parse_refiner(spec: str) -> list[Stage]:
    """'none' -> [], 'deepim' -> [Stage('deepim')], 'deepim:2+nemo' -> two stages. Raises ValueError naming
    the part that is not 'method' or 'method:N' (N >= 1)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"refiner must be {_KINDS}, got {spec!r}")
    if spec.strip() == "none":
        return []
    stages = []
    for part in spec.split("+"):
        method, sep, count = (piece.strip() for piece in part.partition(":"))
        if method not in METHODS:
            raise ValueError(f"refiner {spec!r}: unknown method {method!r} (a refiner is {_KINDS})")
        if sep and not (count.isdigit() and int(count) >= 1):
            raise ValueError(f"refiner {spec!r}: {part.strip()!r} needs a whole number of iterations >= 1 after ':'")
        stages.append(Stage(method, int(count) if sep else None))
    return stages


def is_cascade(spec: str | list[Stage]) -> bool:
    """True for a spec (or its parsed stages) that ``build_refiner`` turns into a CascadeRefiner: more than
    a bare method."""
    stages = parse_refiner(spec) if isinstance(spec, str) else spec
    return len(stages) > 1 or (len(stages) == 1 and stages[0].iterations is not None)


class CascadeRefiner:
    """Runs ``stages`` ((Stage, refiner) pairs) in order. The result of an estimate carries the last stage's
    fit error, the iterations of all stages together and every stage's notes; its visibility and occlusion
    map are those of the last stage that estimates them (NeMo, and DeepIM with an occlusion head; a DeepIM
    without one passes its input's on)."""

    def __init__(self, stages: list[tuple[Stage, Refiner]]) -> None:
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        self.stages = stages

    @property
    def visibility_source(self) -> str | None:
        """That of the last stage that reports a visibility of its own (refine_common.SEEN_SHARE, ...)."""
        return next((src for _, r in reversed(self.stages) if (src := getattr(r, "visibility_source", None))), None)

    def refine(self, frame: Frame, estimates: list[PoseEstimate],
               iterations: int | None = None) -> list[PoseEstimate]:
        """Refined copies of ``estimates``, same order. ``iterations`` must be None: a cascade's counts are
        part of its name (one number for every stage would mean DeepIM iterations and NeMo steps at once)."""
        if iterations is not None:
            raise ValueError(ONE_COUNT_ERROR)
        current = list(estimates)
        total = [0] * len(current)
        touched = [False] * len(current)
        for stage, refiner in self.stages:
            before, current = current, refiner.refine(frame, current, stage.iterations)
            for k, (b, e) in enumerate(zip(before, current, strict=True)):
                if refined_here(b, e):
                    total[k] += e.iterations
                    touched[k] = True
        return [replace(e, iterations=n) if hit else e for e, n, hit in zip(current, total, touched, strict=True)]

