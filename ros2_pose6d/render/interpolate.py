"""Differentiable part of the renderer: barycentrics recomputed from the faces the rasteriser found,
then attribute interpolation. Gradients flow to the camera-frame vertices, and so to the pose."""

from __future__ import annotations

import torch
from torch import Tensor


def barycentrics(face_id: Tensor, verts: Tensor, faces: Tensor, K: Tensor) -> Tensor:
    """Perspective-correct barycentric coordinates of every pixel centre in its visible face.

    Args:
        face_id: (B, H, W) int64 from ``rasterize`` (-1 background).
        verts: (V, 3) camera-frame vertices [m] (the ones that were rasterised; may require grad).
        faces: (F, 3) int64.
        K: (B, 3, 3) intrinsics.
    Returns:
        (B, H, W, 3) weights summing to 1 on covered pixels, 0 on background; differentiable w.r.t.
        verts and K.
    """
    _B, H, W = face_id.shape
    covered = face_id >= 0
    fid = face_id.clamp_min(0)
    tri = verts[faces[fid]]  # (B, H, W, 3 corners, 3 xyz)
    Kb = K[:, None, None, None]  # (B, 1, 1, 1, 3, 3)
    X, Y, Z = tri.unbind(-1)
    x = (Kb[..., 0, 0] * X + Kb[..., 0, 1] * Y + Kb[..., 0, 2] * Z) / Z
    y = (Kb[..., 1, 1] * Y + Kb[..., 1, 2] * Z) / Z
    v, u = torch.meshgrid(torch.arange(H, device=verts.device, dtype=verts.dtype),
                          torch.arange(W, device=verts.device, dtype=verts.dtype), indexing="ij")
    px, py = u[None], v[None]
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (y[..., 1] - y[..., 0])
    area = torch.where(covered, area, torch.ones_like(area))
    e0 = (x[..., 2] - x[..., 1]) * (py - y[..., 1]) - (y[..., 2] - y[..., 1]) * (px - x[..., 1])
    e1 = (x[..., 0] - x[..., 2]) * (py - y[..., 2]) - (y[..., 0] - y[..., 2]) * (px - x[..., 2])
    e2 = (x[..., 1] - x[..., 0]) * (py - y[..., 0]) - (y[..., 1] - y[..., 0]) * (px - x[..., 0])
    screen = torch.stack([e0, e1, e2], -1) / area[..., None]
    persp = screen / Z
    bary = persp / persp.sum(-1, keepdim=True)
    return torch.where(covered[..., None], bary, torch.zeros_like(bary))


def interpolate(attributes: Tensor, faces: Tensor, face_id: Tensor, bary: Tensor) -> Tensor:
    """Interpolate per-vertex attributes (V, C) over faces: (B, H, W, C), zero on background."""
    corners = faces[face_id.clamp_min(0)]  # (B, H, W, 3)
    out = sum(attributes[corners[..., k]] * bary[..., k:k + 1] for k in range(3))  # peak memory B*H*W*C
    return torch.where((face_id >= 0)[..., None], out, torch.zeros_like(out))
