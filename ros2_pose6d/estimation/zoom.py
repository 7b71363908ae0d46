"""DeepIM's zoom-in, shared by refinement and training: a crop centred on the projected object centre
at the current pose, sized from the union of the rendered box and the estimated box with the aspect
ratio of the network input and a margin; the observed image is resampled into it and the object is
rendered straight into it with the crop's intrinsics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ros2_pose6d.geometry.camera import boxes_from_points, crop_resize, crop_resize_intrinsics, project, zoom_in_boxes
from ros2_pose6d.render.rasterize import RasterSettings
from ros2_pose6d.render.renderer import MeshRenderer


@dataclass
class ZoomedPair:
    """observed, rendered (N, 3, h, w) in [0, 1]; mask (N, 1, h, w) float; depth (N, h, w) [m];
    boxes (N, 4) crop windows in the source image; K (N, 3, 3) of the crops."""

    observed: Tensor
    rendered: Tensor
    mask: Tensor
    depth: Tensor
    boxes: Tensor
    K: Tensor


def projected_boxes(points: Tensor, R: Tensor, t: Tensor, K: Tensor) -> Tensor:
    """(N, P, 3) object points at poses (N, 3, 3), (N, 3) -> (N, 4) xyxy boxes of their projections."""
    cam = torch.einsum("nij,npj->npi", R, points) + t[:, None]
    return boxes_from_points(project(cam, K))


def zoom_window(points: Tensor, R: Tensor, t: Tensor, K: Tensor, est_boxes: Tensor | None,
                out_hw: tuple[int, int], scale: float) -> Tensor:
    """(N, 4) crop windows: centred on the projected object centre, holding the union of the projected
    ``points`` (N, P, 3) at the poses and ``est_boxes`` (N, 4) xyxy (rows of NaN: no estimate), with the
    aspect ratio of ``out_hw`` and the margin ``scale``."""
    box = projected_boxes(points, R, t, K)
    if est_boxes is not None:
        box = torch.cat([torch.fmin(box[:, :2], est_boxes[:, :2]), torch.fmax(box[:, 2:], est_boxes[:, 2:])], -1)
    return zoom_in_boxes(project(t[:, None], K)[:, 0], box, out_hw, scale)


def zoom_in(renderer: MeshRenderer, mesh_idx: Tensor, R: Tensor, t: Tensor, K: Tensor, images: Tensor,
            points: Tensor, est_boxes: Tensor | None, out_hw: tuple[int, int], scale: float) -> ZoomedPair:
    """Zoomed observed/rendered pairs for N instances.

    mesh_idx (N,); R (N, 3, 3), t (N, 3) current poses; K (N, 3, 3) source intrinsics; images (N, 3, H, W)
    the observed image of each instance in [0, 1]; points (N, P, 3) object points (for the rendered box);
    est_boxes (N, 4) xyxy estimated boxes (e.g. the detector's) or None.
    """
    windows = zoom_window(points, R, t, K, est_boxes, out_hw, scale)
    Kc = crop_resize_intrinsics(K, windows, out_hw)
    observed = crop_resize(images, windows, out_hw)
    r = renderer.render(mesh_idx, R, t, Kc, RasterSettings(*out_hw))
    return ZoomedPair(observed, r.color.permute(0, 3, 1, 2), r.mask[:, None].to(images.dtype), r.depth, windows, Kc)


def flow_between(depth_src: Tensor, mask_src: Tensor, R_src: Tensor, t_src: Tensor, R_tgt: Tensor, t_tgt: Tensor,
                 K: Tensor, depth_tgt: Tensor | None = None, tolerance: float = 0.01) -> tuple[Tensor, Tensor]:
    """Optical flow (N, 2, h, w) [px] that moves each rendered pixel of the source pose to where the same
    surface point lands under the target pose (same camera K (N, 3, 3)), and its validity (N, h, w):
    rendered at the source and, when ``depth_tgt`` is given, not hidden at the target (depth within
    ``tolerance`` m). The flow is 0 where not valid."""
    N, h, w = depth_src.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=depth_src.dtype, device=depth_src.device),
                          torch.arange(w, dtype=depth_src.dtype, device=depth_src.device), indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, -1, 3)
    cam = (uv1 @ torch.linalg.inv(K).transpose(-1, -2)) * depth_src.reshape(N, -1, 1)
    obj = (cam - t_src[:, None]) @ R_src  # R^T (x - t), row-vector form
    cam_t = obj @ R_tgt.transpose(-1, -2) + t_tgt[:, None]
    uv_t = project(cam_t, K)
    flow = (uv_t - uv1[..., :2]).reshape(N, h, w, 2).permute(0, 3, 1, 2)
    valid = mask_src.reshape(N, h, w) > 0
    if depth_tgt is not None:
        ui = uv_t[..., 0].round().long()
        vi = uv_t[..., 1].round().long()
        inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        z_seen = depth_tgt.reshape(N, -1).gather(1, (vi.clamp(0, h - 1) * w + ui.clamp(0, w - 1)))
        visible = inside & ((z_seen - cam_t[..., 2]).abs() < tolerance)
        valid = valid & visible.reshape(N, h, w)
    # background pixels (depth 0) project through the camera centre: 0/0 when source and target poses
    # agree; zero them so a masked loss stays finite
    flow = torch.where(valid[:, None], flow, torch.zeros((), dtype=flow.dtype, device=flow.device))
    return flow, valid
