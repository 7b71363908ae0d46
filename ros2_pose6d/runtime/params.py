"""Node parameters: one spec each (type, default, description, range or choices, read-only), validated
here so an invalid value is refused with a clear reason before it reaches the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ros2_pose6d.estimation.cascade import DEFAULT_REFINER, is_cascade, parse_refiner
from ros2_pose6d.estimation.pipeline import MAX_SEEN_POWER, PipelineConfig


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None  # inclusive numeric range
    choices: tuple[str, ...] | None = None
    read_only: bool = False

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> str:
        """'' when ``value`` is acceptable, else why not."""
        t = self.type
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            return f"{self.name} must be a {t.__name__}, got {type(value).__name__} {value!r}"
        if self.range is not None and not (self.range[0] <= value <= self.range[1]):
            return f"{self.name} must lie in [{self.range[0]}, {self.range[1]}], got {value}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got '{value}'"
        if self.name == "device" and not valid_device(value):
            return f"device must be auto, cpu or cuda[:N], got '{value}'"
        if self.name == "method":
            return refiner_reason(value)
        return ""


def refiner_reason(value: str) -> str:
    """'' for a refiner the pipeline can build (none, deepim, nemo or a cascade), else why not."""
    try:
        parse_refiner(value)
    except ValueError as exc:
        return f"method: {exc}"
    return ""


def conflicts(values: dict[str, Any]) -> list[str]:
    """Reasons two parameters do not go together (empty: none). A cascade's iterations are in its method
    string; one ``iterations`` count for all its stages would mean DeepIM iterations and NeMo steps at once."""
    method, iterations = values.get("method"), values.get("iterations")
    if iterations and isinstance(method, str) and not refiner_reason(method) and is_cascade(method):
        return [f"iterations must stay 0 with the cascade method '{method}': give each stage's count in method "
                "(e.g. deepim:2+nemo:40)"]
    return []


def valid_device(value: str) -> bool:
    if value in ("auto", "cpu", "cuda"):
        return True
    return value.startswith("cuda:") and value[5:].isdigit()


COMMON = (
    ParamSpec("objects", "", "objects.yaml of the object set (empty: the shipped demo objects)", read_only=True),
    ParamSpec("device", "auto", "auto | cpu | cuda | cuda:N (auto: the first GPU if torch sees one)", read_only=True),
    ParamSpec("sync_slop", 0.02, "max stamp difference [s] to pair image and camera_info", (0.0, 1.0),
              read_only=True),
    ParamSpec("queue_size", 10, "message_filters synchroniser queue", (1, 1000), read_only=True),
    ParamSpec("diagnostics_period", 1.0, "seconds between diagnostics messages", (0.1, 60.0), read_only=True),
)

DETECTOR = COMMON + (
    ParamSpec("detector_weights", "", "SMOPE weights (.safetensors; empty: shipped demo weights)", read_only=True),
    ParamSpec("score_threshold", 0.5, "keep detections with at least this class probability", (0.0, 1.0)),
    ParamSpec("max_detections", 50, "per frame, best first", (1, 1000)),
    ParamSpec("nms_iou", 0.7, "drop a detection overlapping a better one of the same object by more than this "
              "box IoU (1: keep all)", (0.0, 1.0)),
)

REFINER = COMMON + (
    ParamSpec("method", DEFAULT_REFINER, "refinement method: deepim | nemo | none, or a cascade run in turn "
              "such as nemo+deepim, the default (':N' sets a stage's iterations)", read_only=True),
    ParamSpec("deepim_weights", "", "DeepIM weights (empty: shipped demo weights)", read_only=True),
    ParamSpec("nemo_weights", "", "NeMo weights (empty: shipped demo weights)", read_only=True),
    ParamSpec("iterations", 0, "DeepIM iterations / NeMo steps (0: the weights' default; a cascade takes its "
              "counts from method and needs 0)", (0, 1000)),
    ParamSpec("visibility", "detector", "whose visibility a refined detection reports: the detector's (set "
              "refiner if your detections carry none) or the refiner's own (NeMo: its occlusion map; DeepIM: its "
              "occlusion head, where its weights have one); tracked "
              "poses always take the refiner's",
              choices=("refiner", "detector")),
    ParamSpec("duplicate_distance", PipelineConfig.duplicate_distance,
              "after refinement, drop a pose whose centre is within this many object diameters of a better-scoring "
              "one of the same object: one instance found twice (0: keep all)", (0.0, 1.0)),
    ParamSpec("seen_power", PipelineConfig.seen_power,
              "a refined detection scores the detector's score times the share of the object DeepIM's occlusion "
              "head sees matched at the refined pose, to this power: wrong poses score low, and of two duplicates "
              "the confirmed one stays (0: the detector's score)", (0.0, MAX_SEEN_POWER)),
    ParamSpec("frame_cache", 30, "images kept to match late detections by stamp", (1, 1000), read_only=True),
    ParamSpec("publish_tf", True, "broadcast a TF frame per object instance", read_only=True),
    ParamSpec("tf_prefix", "pose6d/", "prefix of the per-instance TF frame names"),
    ParamSpec("tracking", False, "reuse the last refined poses as initialisation between detections",
              read_only=True),
    ParamSpec("redetect_every", 10, "tracking: take a fresh detection every K frames", (1, 10000)),
    ParamSpec("redetect_fit_error", 0.25, "tracking: re-detect when a fit error passes this (DeepIM scale)",
              (0.0, 1e6)),
)


def validate(specs: tuple[ParamSpec, ...], values: dict[str, Any]) -> list[str]:
    """Reasons for every invalid or unknown value in ``values`` (empty: all fine)."""
    by_name = {s.name: s for s in specs}
    out = []
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            out.append(f"unknown parameter '{name}'")
            continue
        reason = spec.check(value)
        if reason:
            out.append(reason)
    return out or conflicts(values)


# The parameters each node applies while running (`ros2 param set`); every other one is read-only, so that
# no change is accepted and then silently ignored (test_runtime checks the two lists agree with the specs).
DETECTOR_LIVE = ("score_threshold", "max_detections", "nms_iou")
REFINER_LIVE = ("iterations", "visibility", "duplicate_distance", "seen_power", "tf_prefix", "redetect_every",
                "redetect_fit_error")


def accept_changes(specs: tuple[ParamSpec, ...], changes: dict[str, Any],
                   apply: Callable[[dict[str, Any]], None] | None = None,
                   current: dict[str, Any] | None = None) -> str:
    """The on-set rule of both nodes: '' when the changes to our parameters are valid, also together with
    the ``current`` values of the others (they are then handed to ``apply``), else the reason. Names that are
    not ours (use_sim_time, the QoS overrides rclpy declares for a subscription) are left to their owners:
    rejecting them would refuse those declarations."""
    names = {s.name for s in specs}
    ours = {k: v for k, v in changes.items() if k in names}
    reasons = validate(specs, ours) or conflicts({**(current or {}), **ours})
    if reasons:
        return "; ".join(reasons)
    if ours and apply is not None:
        apply(ours)
    return ""
