"""Sine positional encoding of feature-map positions (DETR), normalised so it does not depend on
the image size."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_position_encoding(mask: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """mask (B, H, W) bool, True at padding -> (B, 2 * num_feats, H, W) encoding of (y, x) in [0, 2 pi]."""
    not_mask = ~mask
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    eps = 1e-6
    y = y / (y[:, -1:, :] + eps) * 2 * math.pi
    x = x / (x[:, :, -1:] + eps) * 2 * math.pi
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=mask.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack([px[..., 0::2].sin(), px[..., 1::2].cos()], dim=4).flatten(3)
    py = torch.stack([py[..., 0::2].sin(), py[..., 1::2].cos()], dim=4).flatten(3)
    return torch.cat([py, px], dim=3).permute(0, 3, 1, 2)
