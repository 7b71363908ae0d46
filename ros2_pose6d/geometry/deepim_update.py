"""DeepIM's pose update rules (Li et al., ECCV 2018), as pure functions.

A relative pose is a rotation delta R_d applied in the camera frame about the object centre, and a
disentangled translation v = (vx, vy, vz):
    vx = fx (x_tgt / z_tgt - x_src / z_src),  vy = fy (y_tgt / z_tgt - y_src / z_src),
    vz = log(z_src / z_tgt),
so that (vx, vy) is a shift in pixels of the projected centre and vz a scale change, both independent
of the object's size and distance. Target pose: R_tgt = R_d R_src and t_tgt from v. ``fx, fy`` are the
focal lengths of the image the network looks at (the zoomed-in crop), passed per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor


def apply_update(R_src: Tensor, t_src: Tensor, R_delta: Tensor, v: Tensor, fxy: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 3, 3), (B, 3), (B, 3, 3), (B, 3), (B, 2) focal lengths -> (R_tgt, t_tgt)."""
    R_tgt = R_delta @ R_src
    z_src = t_src[..., 2]
    z_tgt = z_src / torch.exp(v[..., 2])
    x_over_z = v[..., 0] / fxy[..., 0] + t_src[..., 0] / z_src
    y_over_z = v[..., 1] / fxy[..., 1] + t_src[..., 1] / z_src
    t_tgt = torch.stack([x_over_z * z_tgt, y_over_z * z_tgt, z_tgt], dim=-1)
    return R_tgt, t_tgt


def update_target(R_src: Tensor, t_src: Tensor, R_tgt: Tensor, t_tgt: Tensor, fxy: Tensor) -> tuple[Tensor, Tensor]:
    """The (R_delta, v) that ``apply_update`` turns (R_src, t_src) into (R_tgt, t_tgt) with: training labels."""
    R_delta = R_tgt @ R_src.transpose(-1, -2)
    vx = fxy[..., 0] * (t_tgt[..., 0] / t_tgt[..., 2] - t_src[..., 0] / t_src[..., 2])
    vy = fxy[..., 1] * (t_tgt[..., 1] / t_tgt[..., 2] - t_src[..., 1] / t_src[..., 2])
    vz = torch.log(t_src[..., 2] / t_tgt[..., 2])
    return R_delta, torch.stack([vx, vy, vz], dim=-1)
