"""SMOPE's 3D model branch: a PointNet-style encoder turns each object model (sampled surface points
with normals and colours) into one latent vector; a decoder reconstructs the model's normalised points,
scale and centre from it (loss L_M), which keeps the latent faithful to the geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn

from ros2_pose6d.objects.mesh import ObjectMesh, farthest_point_sampling, sample_surface


@dataclass
class PointEncoderConfig:
    num_points: int = 1024  # surface points per model fed to the encoder
    hidden: int = 128
    recon_points: int = 256  # points the decoder reconstructs


def model_point_features(meshes: list[ObjectMesh], num_points: int, seed: int = 0) -> Tensor:
    """(N_m, P, 10) per model: xyz [m], unit normal, colour in [0, 1], and a flag column of ones.

    Points: a dense surface sample thinned by farthest-point sampling (even coverage)."""
    out = []
    for mesh in meshes:
        pts, normals = sample_surface(mesh.vertices, mesh.faces, num_points * 4, seed=seed)
        keep = farthest_point_sampling(pts, num_points, seed=seed)
        pts, normals = pts[keep], normals[keep]
        colour = mesh.vertex_colors[cKDTree(mesh.vertices).query(pts)[1]]  # colour of the nearest vertex
        n = normals
        out.append(np.concatenate([pts, n, colour, np.ones((num_points, 1))], 1))
    return torch.as_tensor(np.stack(out), dtype=torch.float32)


def normalise_points(xyz: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, P, 3) -> (normalised points, centre (N, 3), scale (N,)): centred on the box centre, divided by
    the largest distance from it."""
    centre = (xyz.amax(1) + xyz.amin(1)) / 2
    rel = xyz - centre[:, None]
    scale = rel.norm(dim=-1).amax(1).clamp_min(1e-9)
    return rel / scale[:, None, None], centre, scale


class PointEncoder(nn.Module):
    """(N_m, P, 10) model points -> (N_m, d) latents. Shared per-point MLP, max-pool, a second per-point
    MLP on (point feature, global feature), max-pool, then the box centre and log-scale are mixed in."""

    def __init__(self, cfg: PointEncoderConfig, d_model: int) -> None:
        super().__init__()
        h = cfg.hidden
        self.mlp1 = nn.Sequential(nn.Linear(9, h), nn.LayerNorm(h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.mlp2 = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.LayerNorm(2 * h), nn.ReLU(), nn.Linear(2 * h, d_model))
        self.out = nn.Sequential(nn.Linear(d_model + 4, d_model), nn.ReLU(), nn.Linear(d_model, d_model))

    def forward(self, points: Tensor) -> Tensor:
        xyz, rest = points[..., :3], points[..., 3:9]
        norm_xyz, centre, scale = normalise_points(xyz)
        f = self.mlp1(torch.cat([norm_xyz, rest], -1))
        g = f.amax(1, keepdim=True).expand_as(f)
        f = self.mlp2(torch.cat([f, g], -1)).amax(1)
        return self.out(torch.cat([f, centre * 10.0, scale.log()[:, None]], -1))


class PointDecoder(nn.Module):
    """(N_m, d) latents -> normalised points (N_m, R, 3), centre (N_m, 3) [m], log scale (N_m,)."""

    def __init__(self, cfg: PointEncoderConfig, d_model: int) -> None:
        super().__init__()
        self.recon_points = cfg.recon_points
        self.points = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(),
                                    nn.Linear(2 * d_model, cfg.recon_points * 3))
        self.geometry = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 4))

    def forward(self, latent: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pts = torch.tanh(self.points(latent)).view(-1, self.recon_points, 3)
        geo = self.geometry(latent)
        return pts, geo[:, :3] / 10.0, geo[:, 3]


def chamfer_distance(a: Tensor, b: Tensor) -> Tensor:
    """Symmetric mean squared nearest-neighbour distance between (N, P, 3) and (N, Q, 3): (N,)."""
    d = torch.cdist(a, b) ** 2
    return d.amin(2).mean(1) + d.amin(1).mean(1)
