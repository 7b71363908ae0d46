"""Rotation representations, batched over leading dimensions (torch, differentiable).

Quaternions are (x, y, z, w) as in ROS; axis-angle is a vector whose norm is the angle [rad];
the 6D representation (Zhou et al. 2019) is the first two columns of the matrix, (..., 6) = (c1, c2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """(..., 4) quaternion (x, y, z, w), any norm > 0 -> (..., 3, 3) rotation matrix."""
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrix -> (..., 4) unit quaternion (x, y, z, w) with w >= 0.

    Uses the numerically best of the four branches (largest diagonal term) per matrix.
    """
    m = R
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack([
        torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
                     1 + trace], -1),
        torch.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
        torch.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                     m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
    ], dim=-2)  # (..., 4 branches, 4), each proportional to q with scale 4 * |component|
    keys = torch.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = keys.argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)


def axis_angle_to_matrix(v: Tensor) -> Tensor:
    """(..., 3) axis * angle [rad] -> (..., 3, 3) via Rodrigues; exact at angle 0."""
    angle = v.norm(dim=-1, keepdim=True)
    safe = torch.where(angle > 1e-12, angle, torch.ones_like(angle))
    half = angle / 2
    # sin(half)/angle tends to 1/2 at 0
    scale = torch.where(angle > 1e-12, torch.sin(half) / safe, 0.5 - angle * angle / 48)
    q = torch.cat([v * scale, torch.cos(half)], dim=-1)
    return quaternion_to_matrix(q)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3) axis * angle with angle in [0, pi]."""
    q = matrix_to_quaternion(R)
    xyz, w = q[..., :3], q[..., 3:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, w)
    scale = torch.where(s > 1e-12, angle / torch.where(s > 1e-12, s, torch.ones_like(s)), 2.0 / w)
    return xyz * scale


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """(..., 6) first two columns (c1, c2) -> (..., 3, 3) by Gram-Schmidt (Zhou et al. 2019)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, concatenated."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def geodesic_angle(R1: Tensor, R2: Tensor) -> Tensor:
    """Angle [rad] of R1^T R2, in [0, pi], (...). Stable near 0 and pi (atan2 of sin and cos)."""
    Rd = R1.transpose(-1, -2) @ R2
    cos = (Rd[..., 0, 0] + Rd[..., 1, 1] + Rd[..., 2, 2] - 1) / 2
    skew = torch.stack([Rd[..., 2, 1] - Rd[..., 1, 2], Rd[..., 0, 2] - Rd[..., 2, 0],
                        Rd[..., 1, 0] - Rd[..., 0, 1]], -1)
    sin = skew.norm(dim=-1) / 2
    return torch.atan2(sin, cos)


def random_rotation(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(n, 3, 3) rotations uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return quaternion_to_matrix(q)


def rotation_grid(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(n, 3, 3) rotations spread evenly over SO(3), the same for every call: the Super-Fibonacci spiral of
    unit quaternions (Alexa, CVPR 2022). A starting grid for a global rotation search, where random samples
    would leave gaps and NeMo's azimuth/elevation grid crowds at the poles."""
    if n < 1:
        raise ValueError(f"a rotation grid needs at least one rotation, not {n}")
    s = torch.arange(n, dtype=torch.float64) + 0.5
    r, r_c = torch.sqrt(s / n), torch.sqrt(1.0 - s / n)
    alpha = 2 * math.pi * s / math.sqrt(2.0)
    beta = 2 * math.pi * s / 1.533751168755204288118041  # the real root of psi^4 = psi + 4
    q = torch.stack([r * torch.sin(alpha), r * torch.cos(alpha), r_c * torch.sin(beta), r_c * torch.cos(beta)], -1)
    return quaternion_to_matrix(q).to(dtype)


def rotation_about_axis(axis: Tensor, angle: Tensor) -> Tensor:
    """(..., 3) axis (any norm > 0) and (...) angle [rad] -> (..., 3, 3)."""
    unit = axis / axis.norm(dim=-1, keepdim=True)
    return axis_angle_to_matrix(unit * angle[..., None])


def ray_rotation(t: Tensor) -> Tensor:
    """(..., 3) translation -> (..., 3, 3) smallest rotation taking the optical axis +z onto the ray t/|t|.

    Allocentric rotations (what the object looks like along its line of sight) are R_ray^T R; networks
    predict those because appearance depends on them, not on where in the image the object sits.
    """
    d = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d.unbind(-1)
    # Rodrigues for the axis z x d = (-y, x, 0), with 1 / (1 + z) (well defined for z > -1; objects are in front)
    k = 1.0 / (1.0 + z).clamp_min(1e-6)
    row0 = torch.stack([1 - x * x * k, -x * y * k, x], -1)
    row1 = torch.stack([-x * y * k, 1 - y * y * k, y], -1)
    row2 = torch.stack([-x, -y, z], -1)
    return torch.stack([row0, row1, row2], -2)


def allocentric_to_egocentric(R_allo: Tensor, t: Tensor) -> Tensor:
    return ray_rotation(t) @ R_allo


def egocentric_to_allocentric(R: Tensor, t: Tensor) -> Tensor:
    return ray_rotation(t).transpose(-1, -2) @ R
