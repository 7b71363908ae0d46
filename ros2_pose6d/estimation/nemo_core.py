"""NeMo's geometry shared by training and refinement: the neural meshes (simplified object meshes on one
renderer), visible-vertex projection, and the render-and-compare loss with the clutter model.

Loss (negative log-likelihood of the feature map, up to a pose-independent constant): every pixel is
explained by clutter (similarity to the clutter bank) except where the rendered object explains it
better, so L = -sum over rendered pixels of relu(s_object - s_clutter) / pixels. Pixels inside the
rendered silhouette where clutter wins are the occlusion map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ros2_pose6d.geometry.camera import crop_resize_intrinsics, project
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.objects.simplify import simplify_mesh
from ros2_pose6d.render.rasterize import RasterSettings
from ros2_pose6d.render.renderer import MeshRenderer


class NeuralMeshes:
    """Simplified meshes of the object set on one renderer; vertex v of object i has the global id
    ``vert_offsets[i] + v`` (its row in the feature bank)."""

    def __init__(self, registry: ObjectRegistry, target_vertices: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.meshes = [simplify_mesh(o.mesh, target_vertices) for o in registry]
        self.renderer = MeshRenderer(self.meshes, device, dtype)
        self.device = torch.device(device)
        self.num_vertices = int(self.renderer.num_verts.sum())
        self.diameters = torch.tensor([o.diameter for o in registry], device=self.device, dtype=dtype)
        # 200 vertices spread over each whole mesh (evenly spaced indices), built once: see extent_points
        self._extent = torch.stack([torch.as_tensor(
            m.vertices[np.linspace(0, len(m.vertices) - 1, 200).round().astype(np.int64)], dtype=dtype)
            for m in self.meshes]).to(self.device)

    def extent_points(self, mesh_idx: Tensor) -> Tensor:
        """(N, 200, 3) vertices spread over each whole mesh, for the boxes that size zoom windows: a prefix or
        a strided prefix of the vertex list covers only a slab of the object."""
        return self._extent[mesh_idx.to(self.device)]

    def neighbour_mask(self, exclusion: float) -> list[Tensor]:
        """Per object (V_i, V_i) bool: vertex pairs closer than ``exclusion`` x diameter (not negatives)."""
        out = []
        for i, m in enumerate(self.meshes):
            v = torch.as_tensor(m.vertices, device=self.device)
            out.append(torch.cdist(v, v) < exclusion * float(self.diameters[i]))
        return out


def feature_intrinsics(K_crop: Tensor, input_hw: tuple[int, int], stride: int) -> Tensor:
    """Intrinsics of the feature map (input / stride) of a crop with intrinsics K_crop (N, 3, 3)."""
    H, W = input_hw
    full = torch.tensor([-0.5, -0.5, W - 0.5, H - 0.5], device=K_crop.device, dtype=K_crop.dtype)
    return crop_resize_intrinsics(K_crop, full.expand(len(K_crop), 4), (H // stride, W // stride))


@dataclass
class VisibleVertices:
    """Visible vertices of N instances: global vertex id (M,), instance (M,), pixel position (M, 2)."""

    vertex: Tensor
    instance: Tensor
    uv: Tensor


@torch.no_grad()
def visible_vertices(meshes: NeuralMeshes, mesh_idx: Tensor, R: Tensor, t: Tensor, K: Tensor,
                     hw: tuple[int, int], tolerance: float = 0.03) -> VisibleVertices:
    """Vertices of each instance (one per image) that project inside the (h, w) image and are not hidden:
    their depth is within ``tolerance`` x diameter of the rendered depth at their pixel."""
    h, w = hw
    r = meshes.renderer.render(mesh_idx, R, t, K, RasterSettings(h, w), shade=False)
    verts, _, src_v, inst_v, _ = meshes.renderer.pack(mesh_idx, R, t)
    uv = project(verts[:, None], K[inst_v])[:, 0]
    ui, vi = uv[:, 0].round().long(), uv[:, 1].round().long()
    inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h) & (verts[:, 2] > 0)
    z = r.depth[inst_v, vi.clamp(0, h - 1), ui.clamp(0, w - 1)]
    tol = tolerance * meshes.diameters[mesh_idx[inst_v]]
    ok = inside & (z > 0) & ((z - verts[:, 2]).abs() < tol)
    return VisibleVertices(src_v[ok], inst_v[ok], uv[ok])


def clutter_score(features: Tensor, clutter: Tensor, temperature: float) -> Tensor:
    """(N, h, w, C) unit features, (K, C) clutter bank -> (N, h, w) log mean exp similarity / T."""
    sim = features @ clutter.t() / temperature
    return torch.logsumexp(sim, -1) - torch.log(torch.tensor(float(clutter.shape[0]), device=sim.device))


def render_compare(meshes: NeuralMeshes, vertex_features: Tensor, features: Tensor, clutter_log: Tensor,
                   mesh_idx: Tensor, R: Tensor, t: Tensor, K_feat: Tensor, temperature: float):
    """NeMo loss per instance (N,), the occlusion map (N, h, w) bool, rendered mask (N, h, w) bool.

    features (N, h, w, C) unit image features of each instance's crop; clutter_log (N, h, w) from
    ``clutter_score``; K_feat (N, 3, 3) of the feature maps. Differentiable w.r.t. R and t.
    """
    _, h, w, _ = features.shape
    r = meshes.renderer.render(mesh_idx, R, t, K_feat, RasterSettings(h, w), shade=False,
                               vertex_features=vertex_features)
    phi = torch.nn.functional.normalize(r.features, dim=-1, eps=1e-8)
    s_obj = (features * phi).sum(-1) / temperature
    mask = r.mask
    gain = torch.relu(s_obj - clutter_log) * mask
    loss = -gain.flatten(1).sum(1) / (h * w)
    occluded = mask & (s_obj <= clutter_log)
    return loss, occluded, mask
