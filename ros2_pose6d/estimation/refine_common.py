"""What both refiners do before refining: turn the frame into a tensor, and screen the incoming
estimates (unknown object, non-finite pose, behind the camera, centre far off the image), which come back
unrefined with the reason in their notes; and after: put an occlusion mask of a crop back into the image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ros2_pose6d.estimation.types import Frame, PoseEstimate, validate_frame
from ros2_pose6d.objects.registry import ObjectRegistry

MIN_DEPTH = 0.02  # [m] closer than this (or behind the camera) is not a pose we can render
# how every refiner's note on an estimate it hands back unrefined begins (a cascade counts on it)
NOT_REFINED = "not refined: "
# What a refiner's reported visibility is (its ``visibility_source``; None: it passes its input's on). DeepIM's
# occlusion head reads, at the refined pose, which cells of the rendered object its matches find in the image:
# a wrong pose leaves much of it unmatched, so that share also verifies the pose (the pipeline ranks by it).
# NeMo's comes from its occlusion map, where clutter explains the features better than the mesh.
SEEN_SHARE = "seen share"
OCCLUSION_MAP = "occlusion map"


def frame_tensor(frame: Frame, device: torch.device) -> Tensor:
    """(1, 3, H, W) float in [0, 1]."""
    validate_frame(frame)
    return torch.as_tensor(frame.image, device=device).permute(2, 0, 1)[None].float() / 255.0


def screen_reason(frame: Frame, e: PoseEstimate, registry: ObjectRegistry) -> str:
    """'' when ``e`` can be refined, else why not."""
    if e.object_id not in registry.ids:
        return f"object {e.object_id} is not in the object set"
    R, t = np.asarray(e.R, float), np.asarray(e.t, float)
    if R.shape != (3, 3) or t.shape != (3,) or not (np.isfinite(R).all() and np.isfinite(t).all()):
        return "pose is not a finite 3x3 rotation and 3-vector"
    if abs(np.linalg.det(R) - 1) > 1e-2:
        return "R is not a rotation (det != 1)"
    if t[2] < MIN_DEPTH:
        return f"object is behind or at the camera (z = {t[2]:.3f} m)"
    h, w = frame.image.shape[:2]
    uvw = np.asarray(frame.K, float) @ t
    u, v = uvw[:2] / uvw[2]
    if not (-0.5 * w <= u <= 1.5 * w and -0.5 * h <= v <= 1.5 * h):
        return f"object centre projects far outside the image ({u:.0f}, {v:.0f})"
    return ""


def screen_estimates(frame: Frame, estimates: list[PoseEstimate],
                     registry: ObjectRegistry) -> tuple[list[int], list[PoseEstimate]]:
    """(indices that can be refined, result list prefilled with the unrefinable ones annotated)."""
    usable, results = [], []
    for i, e in enumerate(estimates):
        reason = screen_reason(frame, e, registry)
        if reason:
            results.append(replace(e, notes=[*e.notes, NOT_REFINED + reason]))
        else:
            usable.append(i)
            results.append(e)
    return usable, results


def refined_here(before: PoseEstimate, after: PoseEstimate) -> bool:
    """Whether a refiner refined ``before`` into ``after``: refiners hand back what they cannot refine
    unchanged, with a NOT_REFINED note added (``screen_estimates``, NeMo's divergence)."""
    added = after.notes[len(before.notes):]
    return after.stage == "refined" and not any(n.startswith(NOT_REFINED) for n in added)


def paste_crop_mask(crop_mask: np.ndarray, window: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A (h, w) mask of the crop ``window`` (x0, y0, x1, y1) put back into an (H, W) image (nearest)."""
    H, W = hw
    h, w = crop_mask.shape
    x0, y0, x1, y1 = window
    us, vs = np.arange(W), np.arange(H)
    cu = np.floor((us - x0) / (x1 - x0) * w).astype(int)
    cv = np.floor((vs - y0) / (y1 - y0) * h).astype(int)
    valid = (cv[:, None] >= 0) & (cv[:, None] < h) & (cu[None] >= 0) & (cu[None] < w)
    out = crop_mask[cv.clip(0, h - 1)[:, None], cu.clip(0, w - 1)[None]]
    return out & valid
