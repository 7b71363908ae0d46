"""Tracking mode: refine from the last refined poses instead of detecting every frame, and ask for a
fresh detection every K frames, when the object set was lost, or when a fit error passes a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ros2_pose6d.estimation.types import PoseEstimate


@dataclass
class TrackingPolicy:
    redetect_every: int = 10
    fit_error_threshold: float = 0.25
    frames_since_detection: int = 0
    last: list[PoseEstimate] | None = None

    def needs_detection(self) -> tuple[bool, str]:
        """(detect?, why) for the next frame."""
        if not self.last:
            return True, "no poses to track"
        if self.frames_since_detection >= self.redetect_every:
            return True, f"{self.redetect_every} frames since the last detection"
        bad = [e for e in self.last if not math.isfinite(e.fit_error) or e.fit_error > self.fit_error_threshold]
        if bad:
            return True, f"fit error above {self.fit_error_threshold} for {len(bad)} object(s)"
        return False, "tracking"

    def update(self, poses: list[PoseEstimate], detected: bool) -> None:
        self.frames_since_detection = 0 if detected else self.frames_since_detection + 1
        self.last = [p for p in poses if p.stage in ("refined", "tracked")] or None
