"""The pose update from a flow matcher's correspondences (nets/flow_matcher.py; our addition to DeepIM).

Each stride-4 cell (stride-2 with the matcher's fine level) of the rendered crop that the silhouette
covers gives one 3D point (the rendered depth, back-projected at the covered pixels' centroid) and where
the matcher sees it in the observed crop. Weighted Gauss-Newton PnP (geometry/pnp.py) turns them into
the pose update."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ros2_pose6d.geometry.pnp import gauss_newton_pnp
from ros2_pose6d.nets.flow_matcher import STRIDE


def cell_points(depth: Tensor, mask: Tensor, K: Tensor, min_cover: float = 0.5,
                stride: int = STRIDE) -> tuple[Tensor, Tensor, Tensor]:
    """Per stride-s cell of a rendered crop (depth (N, h, w) [m], mask (N, 1, h, w), crop K (N, 3, 3)): the
    centroid of its rendered pixels (N, h/s, w/s, 2) [crop px], their mean 3D point in the camera frame
    (N, h/s, w/s, 3) and whether the silhouette covers at least ``min_cover`` of it (N, h/s, w/s)."""
    N, h, w = depth.shape
    m = mask[:, 0].to(depth.dtype)
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype, device=depth.device),
                          torch.arange(w, dtype=depth.dtype, device=depth.device), indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).expand(N, h, w, 3)
    rays = uv1 @ torch.linalg.inv(K)[:, None].transpose(-1, -2)  # (N, h, w, 3), z = 1
    cam = rays * depth[..., None]
    stacked = torch.cat([uv1[..., :2], cam], -1).permute(0, 3, 1, 2) * m[:, None]  # (N, 5, h, w)
    pooled = F.avg_pool2d(stacked, stride)
    cover = F.avg_pool2d(m[:, None], stride)[:, 0]
    mean = (pooled / cover[:, None].clamp_min(1e-6)).permute(0, 2, 3, 1)
    return mean[..., :2], mean[..., 2:], cover >= min_cover


def cell_flow(flow: Tensor, valid: Tensor, stride: int = STRIDE) -> tuple[Tensor, Tensor]:
    """Mean of a dense flow (N, 2, h, w) over the valid pixels (N, h, w) of each stride-s cell, the
    matcher's training target (N, 2, h/s, w/s), and whether at least half of the cell is valid."""
    v = valid[:, None].to(flow.dtype)
    share = F.avg_pool2d(v, stride)
    mean = F.avg_pool2d(flow * v, stride) / share.clamp_min(1e-6)
    return mean, share[:, 0] >= 0.5


def pose_from_flow(R: Tensor, t: Tensor, depth: Tensor, mask: Tensor, K: Tensor, flow: Tensor, confidence: Tensor,
                   min_confidence: float = 0.5, min_cells: int = 12, iterations: int = 10,
                   huber_px: float = 2.0, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The pose (R (N, 3, 3), t (N, 3)) moved so that its rendered cells land where the matcher's flow
    (N, 2, h/s, w/s) [crop px] puts them (s = 4 or 2, read from the shapes), over the cells whose confidence
    (N, h/s, w/s) is at or above ``min_confidence``, each weighted by ``weights`` (N, h/s, w/s; default the
    confidence). depth, mask and K are the zoomed pair's rendering at the pose. Returns R_new, t_new and
    whether each row had ``min_cells`` such cells and a finite solution in front of the camera (where not, the
    pose is returned unchanged)."""
    stride = depth.shape[-1] // flow.shape[-1]
    if flow.shape[-2:] != (depth.shape[-2] // max(stride, 1), depth.shape[-1] // max(stride, 1)) or stride < 1 \
            or depth.shape[-1] % stride or depth.shape[-2] % stride:
        raise ValueError(f"pose_from_flow: a flow grid of {tuple(flow.shape[-2:])} cells is not a whole-stride grid "
                         f"of the {tuple(depth.shape[-2:])} crop")
    uv, xyz, covered = cell_points(depth, mask, K, stride=stride)
    weights = ((confidence if weights is None else weights) * (covered & (confidence >= min_confidence))).flatten(1)
    target = uv + flow.permute(0, 2, 3, 1)
    ok = (weights > 0).sum(1) >= min_cells
    dtype = torch.float64  # the normal equations of ~1000 points in metres and pixels: float32 loses digits
    dR, dt = gauss_newton_pnp(xyz.flatten(1, 2).to(dtype), target.flatten(1, 2).to(dtype), weights.to(dtype),
                              K.to(dtype), t.to(dtype), iterations, huber_px)
    R_new = (dR @ R.to(dtype)).to(R.dtype)
    t_new = (t.to(dtype) + dt).to(t.dtype)
    ok = ok & torch.isfinite(R_new).flatten(1).all(1) & torch.isfinite(t_new).all(1) & (t_new[:, 2] > 0)
    return torch.where(ok[:, None, None], R_new, R), torch.where(ok[:, None], t_new, t), ok
