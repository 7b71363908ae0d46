"""Mesh renderer: colour, depth, masks, normals and per-vertex feature maps for batches of posed
object instances, several per image (one z-buffer, so they occlude each other).

Used by DeepIM (colour/depth/mask crops), NeMo (feature maps with gradients to the pose), the synthetic
data generator and VSD. Poses are object-to-camera: X_cam = R X_obj + t [m].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ros2_pose6d.objects.mesh import ObjectMesh
from ros2_pose6d.render.interpolate import barycentrics, covered_pixels, interpolate
from ros2_pose6d.render.rasterize import Fragments, RasterSettings, rasterize


@dataclass(frozen=True)
class Lighting:
    """Lambert + ambient. ``direction``: where the light travels, camera frame (default: from the camera)."""

    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    ambient: float = 0.5
    diffuse: float = 0.5


@dataclass(frozen=True)
class RenderOutput:
    """Rendered maps, all (B, H, W, ...); background is 0 (instance -1).

    color (B, H, W, 3) in [0, 1]; depth (B, H, W) [m]; mask (B, H, W) bool; instance (B, H, W) int64
    index of the instance in the render call; normals (B, H, W, 3) unit, camera frame;
    features (B, H, W, C) or None; fragments from the rasteriser.
    """

    color: Tensor | None
    depth: Tensor
    mask: Tensor
    instance: Tensor
    normals: Tensor | None
    features: Tensor | None
    fragments: Fragments


def _exclusive_cumsum(x: Tensor) -> Tensor:
    return torch.cumsum(x, 0) - x


class MeshRenderer:
    """Holds a set of meshes packed on one device and renders posed instances of them.

    Args:
        meshes: the object meshes (metres); ``mesh_idx`` in ``render`` indexes this list.
        device, dtype: where and in which precision to render.
    """

    def __init__(self, meshes: Sequence[ObjectMesh], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if not meshes:
            raise ValueError("MeshRenderer needs at least one mesh")
        self.device, self.dtype = torch.device(device), dtype
        nv = torch.tensor([len(m.vertices) for m in meshes])
        nf = torch.tensor([len(m.faces) for m in meshes])
        self.num_verts, self.num_faces = nv.to(self.device), nf.to(self.device)
        self.vert_offsets = _exclusive_cumsum(nv).to(self.device)
        self.face_offsets = _exclusive_cumsum(nf).to(self.device)
        as_t = lambda a: torch.as_tensor(a, device=self.device, dtype=dtype)  # noqa: E731
        self.verts = torch.cat([as_t(m.vertices) for m in meshes])
        # faces keep per-mesh vertex indices; ``pack`` offsets them per instance
        self.faces = torch.cat([torch.as_tensor(m.faces, device=self.device, dtype=torch.long) for m in meshes])
        self.colors = torch.cat([as_t(m.vertex_colors) for m in meshes])
        self.normals = torch.cat([as_t(m.normals) for m in meshes])
        self.textures: dict[int, Tensor] = {}
        uv = []
        for i, m in enumerate(meshes):
            if m.uv is not None and m.texture is not None:
                self.textures[i] = as_t(m.texture).permute(2, 0, 1)[None] / 255.0
                uv.append(as_t(m.uv))
            else:
                uv.append(torch.zeros(len(m.vertices), 2, device=self.device, dtype=dtype))
        self.uv = torch.cat(uv) if self.textures else None

    def pack(self, mesh_idx: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Posed camera-frame vertices of N instances (in the given order).

        Returns verts (Vp, 3), faces (Fp, 3) into verts, source vertex index (Vp,) into the mesh set,
        instance of each vertex (Vp,) and of each face (Fp,).
        """
        N = len(mesh_idx)
        nv, nf = self.num_verts[mesh_idx], self.num_faces[mesh_idx]
        inst_v = torch.repeat_interleave(torch.arange(N, device=self.device), nv)
        inst_f = torch.repeat_interleave(torch.arange(N, device=self.device), nf)
        vbase = _exclusive_cumsum(nv)
        src_v = self.vert_offsets[mesh_idx][inst_v] + torch.arange(len(inst_v), device=self.device) - vbase[inst_v]
        src_f = (self.face_offsets[mesh_idx][inst_f] + torch.arange(len(inst_f), device=self.device)
                 - _exclusive_cumsum(nf)[inst_f])
        verts = torch.einsum("vij,vj->vi", R[inst_v], self.verts[src_v]) + t[inst_v]
        faces = self.faces[src_f] + vbase[inst_f, None]  # self.faces index within their own mesh
        return verts, faces, src_v, inst_v, inst_f

    def render(self, mesh_idx: Tensor, R: Tensor, t: Tensor, K: Tensor, settings: RasterSettings,
               image_idx: Tensor | None = None, vertex_features: Tensor | None = None,
               lighting: Lighting | None = None, shade: bool = True, normals: bool = False) -> RenderOutput:
        """Render N posed instances into B images.

        Args:
            mesh_idx: (N,) int64 index into the mesh list.
            R: (N, 3, 3), t: (N, 3) object-to-camera poses [m]; gradients flow to them.
            K: (B, 3, 3) intrinsics per image.
            image_idx: (N,) int64 image of each instance; default ``arange(N)`` (one instance per image, B = N).
            vertex_features: (V_total, C) features for every vertex of the mesh set (NeMo), or None.
            shade: compute colour (vertex colours or texture, Lambert + ambient). normals: output normals.
        """
        N = len(mesh_idx)
        B = K.shape[0]
        mesh_idx = mesh_idx.to(self.device).long()
        image_idx = torch.arange(N, device=self.device) if image_idx is None else image_idx.to(self.device).long()
        if R.shape != (N, 3, 3) or t.shape != (N, 3) or image_idx.shape != (N,):
            raise ValueError(f"R {tuple(R.shape)}, t {tuple(t.shape)} and image_idx {tuple(image_idx.shape)} "
                             f"must be (N, 3, 3), (N, 3), (N,) for N = {N} instances")
        if N and (int(image_idx.min()) < 0 or int(image_idx.max()) >= B):
            raise ValueError(f"image_idx must lie in [0, {B}) for {B} cameras")
        if N and (int(mesh_idx.min()) < 0 or int(mesh_idx.max()) >= len(self.num_verts)):
            raise ValueError(f"mesh_idx must lie in [0, {len(self.num_verts)})")
        order = torch.argsort(image_idx, stable=True)
        verts, faces, src_v, inst_v, inst_f = self.pack(mesh_idx[order], R[order].to(self.dtype),
                                                        t[order].to(self.dtype))
        per_image = torch.zeros(B, dtype=torch.long, device=self.device).index_add_(
            0, image_idx[order], self.num_faces[mesh_idx[order]])
        face_offsets = torch.cat([per_image.new_zeros(1), torch.cumsum(per_image, 0)])
        K = K.to(self.device, self.dtype)
        frags = rasterize(verts, faces, face_offsets, K, settings)
        pix = covered_pixels(frags.face_id)
        bary = barycentrics(frags.face_id, verts, faces, K, pix)
        mask = frags.face_id >= 0
        instance = torch.where(mask, order[inst_f[frags.face_id.clamp_min(0)]], torch.full_like(frags.face_id, -1))
        depth = interpolate(verts[:, 2:3], faces, frags.face_id, bary, pix)[..., 0]
        color = normal_map = None
        if shade or normals:
            rot = R[order].to(self.dtype)[inst_v]
            n_cam = torch.einsum("vij,vj->vi", rot, self.normals[src_v])
            normal_map = F.normalize(interpolate(n_cam, faces, frags.face_id, bary, pix), dim=-1, eps=1e-12)
        if shade:
            albedo = self._albedo(frags.face_id, faces, bary, pix, src_v, mesh_idx[order][inst_f])
            light = lighting or Lighting()
            direction = torch.tensor(light.direction, device=self.device, dtype=self.dtype)
            lambert = (-(normal_map * F.normalize(direction, dim=0)).sum(-1)).clamp_min(0)
            color = (albedo * (light.ambient + light.diffuse * lambert)[..., None]).clamp(0, 1)
            color = torch.where(mask[..., None], color, torch.zeros_like(color))
        features = None
        if vertex_features is not None:
            if vertex_features.shape[0] != len(self.verts):
                raise ValueError(f"vertex_features must have one row per vertex of the mesh set "
                                 f"({len(self.verts)}), got {tuple(vertex_features.shape)}")
            features = interpolate(vertex_features[src_v], faces, frags.face_id, bary, pix)
        return RenderOutput(color, depth, mask, instance, normal_map if normals else None, features, frags)

    def _albedo(self, face_id: Tensor, faces: Tensor, bary: Tensor, pix: Tensor, src_v: Tensor,
                face_mesh: Tensor) -> Tensor:
        albedo = interpolate(self.colors[src_v], faces, face_id, bary, pix)
        if not self.textures:
            return albedo
        uv = interpolate(self.uv[src_v], faces, face_id, bary, pix)
        pixel_mesh = torch.where(face_id >= 0, face_mesh[face_id.clamp_min(0)], torch.full_like(face_id, -1))
        for m, tex in self.textures.items():
            sel = pixel_mesh == m
            if not sel.any():
                continue
            grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1)  # v up in texture space
            sampled = torch.stack([F.grid_sample(tex, g[None], align_corners=False)[0].permute(1, 2, 0)
                                   for g in grid])
            albedo = torch.where(sel[..., None], sampled, albedo)
        return albedo
