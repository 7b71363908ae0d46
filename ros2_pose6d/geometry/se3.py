"""Rigid transforms as (R, t) pairs or 4x4 matrices. Poses are object-to-camera: X_cam = R X_obj + t."""

from __future__ import annotations

import torch
from torch import Tensor


def to_matrix(R: Tensor, t: Tensor) -> Tensor:
    """(..., 3, 3), (..., 3) -> (..., 4, 4) homogeneous transform."""
    T = torch.zeros(R.shape[:-2] + (4, 4), dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def from_matrix(T: Tensor) -> tuple[Tensor, Tensor]:
    """(..., 4, 4) -> (R (..., 3, 3), t (..., 3))."""
    return T[..., :3, :3], T[..., :3, 3]


def compose(R1: Tensor, t1: Tensor, R2: Tensor, t2: Tensor) -> tuple[Tensor, Tensor]:
    """(R1, t1) after (R2, t2): x -> R1 (R2 x + t2) + t1."""
    return R1 @ R2, (R1 @ t2[..., None])[..., 0] + t1


def inverse(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse transform: x -> R^T (x - t)."""
    Rt = R.transpose(-1, -2)
    return Rt, -(Rt @ t[..., None])[..., 0]


def transform_points(R: Tensor, t: Tensor, points: Tensor) -> Tensor:
    """(..., 3, 3), (..., 3), (..., N, 3) -> (..., N, 3) = points R^T + t."""
    return points @ R.transpose(-1, -2) + t[..., None, :]
