"""Differentiable part of the renderer: barycentrics recomputed from the faces the rasteriser found,
then attribute interpolation. Gradients flow to the camera-frame vertices, and so to the pose."""

from __future__ import annotations

import torch
from torch import Tensor


def covered_pixels(face_id: Tensor) -> Tensor:
    """Flat indices (P,) of the pixels a face covers: the work below runs on these only (objects usually
    cover a small part of a frame) and is scattered back into the dense maps. A renderer computes them
    once per render and passes them to every call (on a GPU, each computation waits for the device)."""
    return torch.nonzero(face_id.reshape(-1) >= 0)[:, 0]


def barycentrics(face_id: Tensor, verts: Tensor, faces: Tensor, K: Tensor, pixels: Tensor | None = None) -> Tensor:
    """Perspective-correct barycentric coordinates of every pixel centre in its visible face.

    Args:
        face_id: (B, H, W) int64 from ``rasterize`` (-1 background).
        verts: (V, 3) camera-frame vertices [m] (the ones that were rasterised; may require grad).
        faces: (F, 3) int64.
        K: (B, 3, 3) intrinsics.
        pixels: ``covered_pixels(face_id)``, when the caller has it.
    Returns:
        (B, H, W, 3) weights summing to 1 on covered pixels, 0 on background; differentiable w.r.t.
        verts and K.
    """
    B, H, W = face_id.shape
    pix = covered_pixels(face_id) if pixels is None else pixels
    tri = verts[faces[face_id.reshape(-1)[pix]]]  # (P, 3 corners, 3 xyz)
    Kp = K[pix // (H * W)]  # (P, 3, 3)
    X, Y, Z = tri.unbind(-1)  # (P, 3) each
    x = (Kp[:, 0, 0, None] * X + Kp[:, 0, 1, None] * Y + Kp[:, 0, 2, None] * Z) / Z
    y = (Kp[:, 1, 1, None] * Y + Kp[:, 1, 2, None] * Z) / Z
    px, py = (pix % W).to(verts.dtype), ((pix // W) % H).to(verts.dtype)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    e0 = (x[:, 2] - x[:, 1]) * (py - y[:, 1]) - (y[:, 2] - y[:, 1]) * (px - x[:, 1])
    e1 = (x[:, 0] - x[:, 2]) * (py - y[:, 2]) - (y[:, 0] - y[:, 2]) * (px - x[:, 2])
    e2 = (x[:, 1] - x[:, 0]) * (py - y[:, 0]) - (y[:, 1] - y[:, 0]) * (px - x[:, 0])
    persp = torch.stack([e0, e1, e2], -1) / area[:, None] / Z
    bary = persp / persp.sum(-1, keepdim=True)
    out = bary.new_zeros(B * H * W, 3).index_copy(0, pix, bary)
    return out.view(B, H, W, 3)


def interpolate(attributes: Tensor, faces: Tensor, face_id: Tensor, bary: Tensor,
                pixels: Tensor | None = None) -> Tensor:
    """Interpolate per-vertex attributes (V, C) over faces: (B, H, W, C), zero on background. ``pixels``:
    ``covered_pixels(face_id)``, when the caller has it."""
    B, H, W = face_id.shape
    pix = covered_pixels(face_id) if pixels is None else pixels
    corners = faces[face_id.reshape(-1)[pix]]  # (P, 3)
    w = bary.reshape(-1, 3)[pix]
    vals = sum(attributes[corners[:, k]] * w[:, k:k + 1] for k in range(3))  # (P, C)
    out = vals.new_zeros(B * H * W, attributes.shape[-1]).index_copy(0, pix, vals)
    return out.view(B, H, W, -1)
