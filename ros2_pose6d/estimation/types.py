"""Core types that travel from image to published pose. No ROS here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One camera image. image (H, W, 3) uint8 RGB; K (3, 3) intrinsics; stamp [s]; frame_id the camera
    optical frame; depth (H, W) float32 [m] (0 unknown) when a depth camera is present."""

    image: np.ndarray
    K: np.ndarray
    stamp: float = 0.0
    frame_id: str = "camera"
    depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        validate_frame(self)


class FrameError(ValueError):
    """A frame the pipeline cannot use; the message says why (nodes log it and skip the frame)."""


def validate_frame(frame: Frame) -> None:
    img, K = frame.image, np.asarray(frame.K)
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise FrameError(f"image must be an (H, W, 3) array, got {getattr(img, 'shape', type(img))}")
    if img.dtype != np.uint8:
        raise FrameError(f"image must be uint8 RGB, got {img.dtype}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise FrameError(f"image is empty: {img.shape}")
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise FrameError(f"K must be a finite 3x3 matrix, got {K.tolist() if K.size <= 9 else K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise FrameError(f"K has non-positive focal lengths fx={K[0, 0]}, fy={K[1, 1]}")
    if frame.depth is not None and frame.depth.shape != img.shape[:2]:
        raise FrameError(f"depth {frame.depth.shape} does not match image {img.shape[:2]}")


STAGES = ("detected", "refined", "tracked")


@dataclass
class PoseEstimate:
    """One object instance. R (3, 3), t (3,) [m] object-to-camera; bbox_xyxy [px]; visibility in [0, 1];
    stage one of STAGES; iterations of refinement; fit_error (lower is better, NaN if not refined);
    occlusion (H, W) bool where the object is hidden (NeMo), or None; notes: why a step was skipped."""

    object_id: int
    R: np.ndarray
    t: np.ndarray
    score: float = 1.0
    instance: int = 0
    bbox_xyxy: np.ndarray = field(default_factory=lambda: np.zeros(4))
    visibility: float = 1.0
    stage: str = "detected"
    iterations: int = 0
    fit_error: float = float("nan")
    notes: list[str] = field(default_factory=list)
    occlusion: np.ndarray | None = None
