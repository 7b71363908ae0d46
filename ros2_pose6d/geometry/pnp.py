"""Batched weighted Gauss-Newton PnP for a pose update near the identity.

Render-and-compare gives 3D points of the object at its current pose (the rendered depth) and, from a
matcher, where each of them is seen in the observed image. The update that moves them there is found by
Gauss-Newton on the reprojection error with Huber weights (iteratively reweighted), which tolerates the
share of wrong matches that occlusion leaves. The rotation is about a given centre (the object's origin),
so a pure rotation of the object does not also shift it, as in DeepIM's update.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ros2_pose6d.geometry.rotations import axis_angle_to_matrix


def _skew(v: Tensor) -> Tensor:
    z = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], z, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def gauss_newton_pnp(points: Tensor, pixels: Tensor, weights: Tensor, K: Tensor, centre: Tensor,
                     iterations: int = 10, huber_px: float = 2.0, damping: float = 1e-6) -> tuple[Tensor, Tensor]:
    """points (N, P, 3) in the camera frame, pixels (N, P, 2) where they should project, weights (N, P) >= 0
    (0: unused), K (N, 3, 3), centre (N, 3). Returns dR (N, 3, 3), dt (N, 3) such that
    dR (X - centre) + centre + dt projects onto the pixels. Rows with fewer than 3 weighted points come back
    as the identity; points behind the camera and non-finite entries get no weight."""
    finite = torch.isfinite(points).all(-1) & torch.isfinite(pixels).all(-1) & torch.isfinite(weights)
    weights = torch.where(finite, weights, torch.zeros_like(weights))
    points, pixels = torch.nan_to_num(points) * finite[..., None], torch.nan_to_num(pixels) * finite[..., None]
    dtype = points.dtype
    N, P, _ = points.shape
    dR = torch.eye(3, dtype=dtype, device=points.device).repeat(N, 1, 1)
    dt = torch.zeros(N, 3, dtype=dtype, device=points.device)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    enough = (weights > 0).sum(1) >= 3
    eye6 = torch.eye(6, dtype=dtype, device=points.device)
    for _ in range(iterations):
        Y = (points - centre[:, None]) @ dR.transpose(1, 2)
        x, y, z = (Y + centre[:, None] + dt[:, None]).unbind(-1)
        front = z > 1e-3
        z = torch.where(front, z, torch.ones_like(z))
        r = torch.stack([fx * x / z + cx - pixels[..., 0], fy * y / z + cy - pixels[..., 1]], -1)  # (N, P, 2)
        Jp = torch.zeros(N, P, 2, 3, dtype=dtype, device=points.device)
        Jp[..., 0, 0] = fx / z
        Jp[..., 0, 2] = -fx * x / z ** 2
        Jp[..., 1, 1] = fy / z
        Jp[..., 1, 2] = -fy * y / z ** 2
        J = torch.cat([-Jp @ _skew(Y), Jp], -1)  # (N, P, 2, 6): d/d(omega, dt), omega left-multiplied
        norm = r.norm(dim=-1)
        w = weights * front * torch.where(norm < huber_px, torch.ones_like(norm), huber_px / norm.clamp_min(1e-12))
        H = torch.einsum("np,npki,npkj->nij", w, J, J) + damping * eye6
        g = torch.einsum("np,npki,npk->ni", w, J, r)
        step = -torch.linalg.solve(H, g)
        step = torch.where(enough[:, None] & torch.isfinite(step).all(1, keepdim=True), step, torch.zeros_like(step))
        dR = axis_angle_to_matrix(step[:, :3]) @ dR
        dt = dt + step[:, 3:]
    return dR, dt
