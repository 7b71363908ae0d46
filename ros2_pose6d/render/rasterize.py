"""Hard z-buffer rasterisation: per pixel, the visible face and its depth. No gradient flows through
it; ``render.interpolate`` recomputes barycentrics differentiably from the face ids.

Semantics (the same in the CPU kernel, the CUDA kernel and the reference below):
- pixel centres at integer coordinates (OpenCV/BOP): pixel (u, v) samples the point x = u, y = v;
- vertices are in the camera frame (REP-103 optical: x right, y down, z forward), projected with K,
  whose last row must be (0, 0, 1);
- near plane: a face with any vertex at z < znear is dropped whole (no clipping);
- back faces (outward normal pointing away from the camera, for faces wound counter-clockwise seen
  from outside) are dropped when ``cull_backfaces``; zero-area faces always;
- a pixel centre on a shared edge is covered by both faces; the z-test keeps the smallest float32
  depth, ties going to the lowest face index; depth is perspective-correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ros2_pose6d._ext import extension_for


@dataclass(frozen=True)
class RasterSettings:
    """Image size [px], near plane [m] and back-face culling."""

    height: int
    width: int
    znear: float = 0.01
    cull_backfaces: bool = True


@dataclass(frozen=True)
class Fragments:
    """face_id (B, H, W) int64 index into the packed faces, -1 for background;
    depth (B, H, W) z in the camera frame [m], 0 for background."""

    face_id: Tensor
    depth: Tensor

    @property
    def mask(self) -> Tensor:
        return self.face_id >= 0


def _validate(verts: Tensor, faces: Tensor, face_offsets: Tensor, K: Tensor, settings: RasterSettings) -> None:
    if verts.dim() != 2 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (V, 3), got {tuple(verts.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
    if K.dim() != 3 or K.shape[1:] != (3, 3):
        raise ValueError(f"K must be (B, 3, 3), got {tuple(K.shape)}")
    if face_offsets.shape != (K.shape[0] + 1,):
        raise ValueError(f"face_offsets must be (B + 1,) = ({K.shape[0] + 1},), got {tuple(face_offsets.shape)}")
    devices = {t.device for t in (verts, faces, face_offsets, K)}
    if len(devices) != 1:
        raise ValueError(f"all rasterize inputs must be on one device, got {sorted(map(str, devices))}")
    if settings.height <= 0 or settings.width <= 0:
        raise ValueError(f"image size must be positive, got {settings.height}x{settings.width}")
    if settings.znear <= 0:
        raise ValueError(f"znear must be positive, got {settings.znear}")
    if len(faces) and (int(faces.min()) < 0 or int(faces.max()) >= len(verts)):
        raise ValueError(f"face indices must lie in [0, {len(verts)}), got [{int(faces.min())}, {int(faces.max())}]")
    if not torch.isfinite(verts).all():
        raise ValueError("verts contain NaN or Inf")
    if not torch.isfinite(K).all():
        raise ValueError("K contains NaN or Inf")
    last = K[:, 2].detach().double().cpu()
    if len(last) and not torch.equal(last, torch.tensor([0.0, 0.0, 1.0], dtype=last.dtype).expand_as(last)):
        raise ValueError("K's last row must be (0, 0, 1) for every camera")


def rasterize(verts: Tensor, faces: Tensor, face_offsets: Tensor, K: Tensor, settings: RasterSettings) -> Fragments:
    """Rasterise packed meshes into B images.

    Args:
        verts: (V, 3) float32/float64 camera-frame vertices [m] of every instance of every image.
        faces: (F, 3) int64 indices into verts.
        face_offsets: (B + 1,) int64; the faces of image b are faces[face_offsets[b]:face_offsets[b + 1]],
            so one image can hold several objects that occlude each other.
        K: (B, 3, 3) intrinsics of each image, same dtype as verts.
    Returns:
        Fragments with face_id and depth of shape (B, H, W).
    """
    _validate(verts, faces, face_offsets, K, settings)
    verts, faces = verts.detach().contiguous(), faces.long().contiguous()
    face_offsets, K = face_offsets.long().contiguous(), K.detach().to(verts.dtype).contiguous()
    ext = extension_for(verts.device)
    if ext is None:
        return rasterize_reference(verts, faces, face_offsets, K, settings)
    face_id, depth = ext.rasterize(verts, faces, face_offsets, K, settings.height, settings.width,
                                   float(settings.znear), bool(settings.cull_backfaces))
    return Fragments(face_id, depth)


def _face_setup(tri: Tensor, Kb: Tensor, znear: float, cull: bool, H: int, W: int):
    """Projected corners, inverse depths, signed area and validity of faces (C, 3, 3), as in the kernel."""
    X, Y, Z = tri.unbind(-1)  # (C, 3) each
    x = (Kb[0, 0] * X + Kb[0, 1] * Y + Kb[0, 2] * Z) / Z
    y = (Kb[1, 1] * Y + Kb[1, 2] * Z) / Z
    inv_z = 1 / Z
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    valid = (znear <= Z).all(-1) & (area != 0)
    if cull:
        valid &= area < 0
    lo_x, hi_x = x.amin(-1), x.amax(-1)
    lo_y, hi_y = y.amin(-1), y.amax(-1)
    valid &= (hi_x >= 0) & (hi_y >= 0) & (lo_x <= W - 1) & (lo_y <= H - 1)
    return x, y, inv_z, area, valid, (lo_x, hi_x, lo_y, hi_y)


def rasterize_reference(verts: Tensor, faces: Tensor, face_offsets: Tensor, K: Tensor,
                        settings: RasterSettings, pixels_per_chunk: int = 2_000_000) -> Fragments:
    """Pure-PyTorch rasteriser with the kernel's exact arithmetic: slow and simple; fallback and test oracle."""
    H, W = settings.height, settings.width
    B = K.shape[0]
    dev, dt = verts.device, verts.dtype
    face_id = torch.full((B, H * W), -1, dtype=torch.long, device=dev)
    depth = torch.zeros((B, H * W), dtype=dt, device=dev)
    v, u = torch.meshgrid(torch.arange(H, device=dev, dtype=dt), torch.arange(W, device=dev, dtype=dt), indexing="ij")
    px, py = u.reshape(1, -1), v.reshape(1, -1)
    chunk = max(1, pixels_per_chunk // (H * W))
    for b in range(B):
        best_key = torch.full((H * W,), float("inf"), dtype=torch.float32, device=dev)
        best_depth = torch.zeros((H * W,), dtype=dt, device=dev)
        best_face = torch.full((H * W,), -1, dtype=torch.long, device=dev)
        for f0 in range(int(face_offsets[b]), int(face_offsets[b + 1]), chunk):
            f1 = min(f0 + chunk, int(face_offsets[b + 1]))
            x, y, iz, area, valid, (lx, hx, ly, hy) = _face_setup(verts[faces[f0:f1]], K[b], settings.znear,
                                                                   settings.cull_backfaces, H, W)
            if not valid.any():
                continue
            x, y, iz, area = x[:, :, None], y[:, :, None], iz[:, :, None], area[:, None]
            e0 = (x[:, 2] - x[:, 1]) * (py - y[:, 1]) - (y[:, 2] - y[:, 1]) * (px - x[:, 1])
            e1 = (x[:, 0] - x[:, 2]) * (py - y[:, 2]) - (y[:, 0] - y[:, 2]) * (px - x[:, 2])
            e2 = (x[:, 1] - x[:, 0]) * (py - y[:, 0]) - (y[:, 1] - y[:, 0]) * (px - x[:, 0])
            w0, w1, w2 = e0 / area, e1 / area, e2 / area
            inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & valid[:, None]
            inside &= (px >= lx[:, None]) & (px <= hx[:, None]) & (py >= ly[:, None]) & (py <= hy[:, None])
            z = 1 / (w0 * iz[:, 0] + w1 * iz[:, 1] + w2 * iz[:, 2])
            key = torch.where(inside, z.float(), torch.full_like(z, float("inf"), dtype=torch.float32))
            chunk_key, chunk_arg = key.min(0)  # first (lowest) face among equal keys
            better = chunk_key < best_key
            best_key = torch.where(better, chunk_key, best_key)
            best_face = torch.where(better, chunk_arg + f0, best_face)
            best_depth = torch.where(better, z.gather(0, chunk_arg[None])[0], best_depth)
        face_id[b], depth[b] = best_face, best_depth
    return Fragments(face_id.view(B, H, W), depth.view(B, H, W))
