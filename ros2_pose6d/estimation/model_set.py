"""Tensors the networks and losses need about the object set, built once from the registry:
encoder input points, loss points and symmetries normalised by the diameter, diameters, meshes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ros2_pose6d.nets.point_encoder import model_point_features
from ros2_pose6d.objects.registry import ObjectRegistry


@dataclass
class ModelSet:
    """model_points (N_m, P, 10) encoder input; loss_points (N_m, P_l, 3) object-frame points / diameter;
    symmetries (N_m, S, 4, 4), translations / diameter, padded with identities; diameters (N_m,) [m];
    symmetric (N_m,) bool; obj_ids in class order."""

    model_points: Tensor
    loss_points: Tensor
    symmetries: Tensor
    diameters: Tensor
    symmetric: Tensor
    obj_ids: list[int]

    def to(self, device: torch.device | str) -> ModelSet:
        return ModelSet(self.model_points.to(device), self.loss_points.to(device), self.symmetries.to(device),
                        self.diameters.to(device), self.symmetric.to(device), self.obj_ids)


def build_model_set(registry: ObjectRegistry, encoder_points: int = 1024, loss_points: int = 500,
                    seed: int = 0) -> ModelSet:
    meshes = [o.mesh for o in registry]
    model_points = model_point_features(meshes, encoder_points, seed)
    diam = torch.tensor([o.diameter for o in registry], dtype=torch.float32)
    lp = torch.stack([model_points[i, :loss_points, :3] / diam[i] for i in range(len(meshes))])
    syms = [np.asarray(o.symmetries, np.float64) for o in registry]
    S = max(len(s) for s in syms)
    sym = torch.eye(4).repeat(len(syms), S, 1, 1)
    for i, s in enumerate(syms):
        s = torch.as_tensor(s, dtype=torch.float32).clone()
        s[:, :3, 3] /= diam[i]
        sym[i, : len(s)] = s
    symmetric = torch.tensor([o.info.is_symmetric for o in registry])
    return ModelSet(model_points, lp, sym, diam, symmetric, registry.ids)
