"""Pinhole cameras: projection, back-projection, crops, resizes and DeepIM's zoom-in.

Pixel convention (OpenCV, BOP): pixel (u, v) has its centre at the continuous coordinate (u, v), so a
W-pixel-wide image spans x in [-0.5, W - 0.5]. Intrinsics K are (..., 3, 3) with last row (0, 0, 1).
Boxes are (x0, y0, x1, y1) in that continuous coordinate (edges, not pixel indices).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def project(points: Tensor, K: Tensor) -> Tensor:
    """(..., N, 3) camera-frame points [m], (..., 3, 3) K -> (..., N, 2) pixel coordinates."""
    uvw = points @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3]


def backproject(uv: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """(..., N, 2) pixels and (..., N) depth z [m] -> (..., N, 3) camera-frame points."""
    ones = torch.ones_like(uv[..., :1])
    rays = torch.cat([uv, ones], dim=-1) @ torch.linalg.inv(K).transpose(-1, -2)
    return rays * depth[..., None]


def crop_resize_intrinsics(K: Tensor, boxes: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Intrinsics of the crop ``boxes`` (..., 4) resized to ``out_hw`` (h, w): (..., 3, 3).

    A point at x in the source lands at (x - x0) * w / (x1 - x0) - 0.5 in the output, which is where
    ``crop_resize`` puts it.
    """
    h, w = out_hw
    x0, y0, x1, y1 = boxes.unbind(-1)
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    Kc = K.clone()
    Kc[..., 0, 0] = K[..., 0, 0] * sx
    Kc[..., 0, 1] = K[..., 0, 1] * sx
    Kc[..., 0, 2] = (K[..., 0, 2] - x0) * sx - 0.5
    Kc[..., 1, 1] = K[..., 1, 1] * sy
    Kc[..., 1, 2] = (K[..., 1, 2] - y0) * sy - 0.5
    return Kc


def crop_resize(images: Tensor, boxes: Tensor, out_hw: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Crop (B, C, H, W) images to boxes (B, 4) and resize to out_hw, differentiably (zeros outside).

    Output pixel j samples the source at x0 + (j + 0.5) * (x1 - x0) / w (continuous coordinates).
    """
    B, _, H, W = images.shape
    h, w = out_hw
    x0, y0, x1, y1 = (c[:, None] for c in boxes.to(images.dtype).unbind(-1))
    js = torch.arange(w, device=images.device, dtype=images.dtype)[None]
    is_ = torch.arange(h, device=images.device, dtype=images.dtype)[None]
    xs = x0 + (js + 0.5) * (x1 - x0) / w  # (B, w) source coordinates
    ys = y0 + (is_ + 0.5) * (y1 - y0) / h
    gx = (2 * xs + 1) / W - 1  # grid_sample, align_corners=False: x = ((g + 1) W - 1) / 2
    gy = (2 * ys + 1) / H - 1
    grid = torch.stack([gx[:, None, :].expand(B, h, w), gy[:, :, None].expand(B, h, w)], dim=-1)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def zoom_in_boxes(center: Tensor, boxes: Tensor, out_hw: tuple[int, int], scale: float = 1.4,
                  min_size: float = 8.0) -> Tensor:
    """DeepIM's zoom-in window: (B, 4) crops centred on ``center`` (B, 2) (the projected object centre),
    with the aspect ratio of ``out_hw`` and large enough to hold ``boxes`` (B, 4) (the union of the
    rendered and observed boxes) times ``scale``. Returns (B, 4) boxes (x0, y0, x1, y1).
    """
    h, w = out_hw
    aspect = w / h
    cx, cy = center.unbind(-1)
    x0, y0, x1, y1 = boxes.unbind(-1)
    half_w = torch.stack([cx - x0, x1 - cx, (cy - y0) * aspect, (y1 - cy) * aspect], -1).amax(-1)
    half_w = (half_w * scale).clamp_min(min_size / 2)
    half_h = half_w / aspect
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1)


def boxes_from_points(uv: Tensor) -> Tensor:
    """(..., N, 2) pixel coordinates -> (..., 4) tight box (x0, y0, x1, y1)."""
    return torch.cat([uv.amin(-2), uv.amax(-2)], dim=-1)
