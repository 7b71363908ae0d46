"""NeMo training: crops around perturbed poses, image features at the projected visible vertices pulled
to their vertex features and pushed from the other (non-neighbouring) vertices and from the clutter bank;
background features pushed from every vertex feature. The vertex bank follows the observed features by
momentum and the clutter bank queues background features (both synchronised across DDP ranks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from ros2_pose6d.training.datasets import InstanceDataset, collate_instances
from ros2_pose6d.training.tasks import TaskBase
from ros2_pose6d.training.tasks.deepim_task import perturb_poses
from torch import Tensor

from ros2_pose6d.config import build_config
from ros2_pose6d.estimation.nemo_core import NeuralMeshes, feature_intrinsics, visible_vertices
from ros2_pose6d.estimation.zoom import zoom_window
from ros2_pose6d.geometry.camera import crop_resize, crop_resize_intrinsics
from ros2_pose6d.nets.backbone import normalise_images
from ros2_pose6d.nets.nemo import NemoConfig, NemoModel
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.render.rasterize import RasterSettings


@dataclass
class NemoLossConfig:
    rot_std_deg: float = 15.0  # crops are cut around perturbed poses, as at test time
    trans_std: tuple[float, float, float] = (0.01, 0.01, 0.03)
    w_vertex: float = 1.0
    w_background: float = 0.5
    background_per_image: int = 64


def _gather(x: Tensor) -> Tensor:
    """Concatenate a (M, ...) tensor over DDP ranks (sizes may differ); identity without DDP."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    top = int(max(s.item() for s in sizes))
    pad = torch.zeros((top - len(x), *x.shape[1:]), dtype=x.dtype, device=x.device)
    parts = [torch.zeros((top, *x.shape[1:]), dtype=x.dtype, device=x.device) for _ in sizes]
    dist.all_gather(parts, torch.cat([x, pad]))
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


class NemoTask(TaskBase):
    arch = "nemo"

    def __init__(self, cfg, registry: ObjectRegistry) -> None:
        self.cfg, self.registry = cfg, registry
        self.model_cfg = build_config(NemoConfig, cfg.model, prefix="model")
        self.loss_cfg = build_config(NemoLossConfig, cfg.loss, prefix="loss")
        self.meshes = NeuralMeshes(registry, self.model_cfg.mesh_vertices)
        self.model = NemoModel(self.model_cfg, self.meshes.num_vertices)
        self.forward_module = self.model
        self.offsets = self.meshes.renderer.vert_offsets
        self.neighbours = self.meshes.neighbour_mask(self.model_cfg.neighbour_exclusion)
        self._dev_meshes: dict[str, NeuralMeshes] = {"cpu": self.meshes}

    def _meshes(self, device: torch.device) -> NeuralMeshes:
        key = str(device)
        if key not in self._dev_meshes:
            self._dev_meshes[key] = NeuralMeshes(self.registry, self.model_cfg.mesh_vertices, device)
        return self._dev_meshes[key]

    def train_dataset(self):
        d = self.cfg.data
        return InstanceDataset(d.train, self.registry, max(0.2, d.min_visib), d.jitter, self.cfg.optim.seed), \
            collate_instances

    def step(self, batch: dict[str, Tensor], device: torch.device, gen: torch.Generator):
        mc, lc = self.model_cfg, self.loss_cfg
        images, K = batch["image"].to(device), batch["K"].to(device)
        label, R_gt, t_gt = batch["label"].to(device), batch["R"].to(device), batch["t"].to(device)
        meshes = self._meshes(device)
        with torch.no_grad():
            R_p, t_p = perturb_poses(R_gt, t_gt, gen, lc.rot_std_deg, lc.trans_std)
            pts = meshes.extent_points(label)
            windows = zoom_window(pts, R_p, t_p, K, None, mc.input_size, mc.zoom_scale)
            crops = crop_resize(images, windows, mc.input_size)
            Kf = feature_intrinsics(crop_resize_intrinsics(K, windows, mc.input_size), mc.input_size, mc.stride)
        feats = self.forward_module(normalise_images(crops))  # (B, C, h, w)
        B, C, h, w = feats.shape
        vis = visible_vertices(meshes, label, R_gt, t_gt, Kf, (h, w))
        grid = torch.stack([(vis.uv[:, 0] + 0.5) / w * 2 - 1, (vis.uv[:, 1] + 0.5) / h * 2 - 1], -1)
        f_v = F.grid_sample(feats[vis.instance], grid[:, None, None], align_corners=False)[:, :, 0, 0]
        f_v = F.normalize(f_v, dim=1)
        bank = self.model.bank
        T = mc.temperature
        logits_v = f_v @ bank.vertex_features.t() / T  # (M, V)
        logits_c = f_v @ bank.clutter.t() / T  # (M, K)
        # neighbours of the positive (same object, closer than the exclusion radius) are not negatives
        obj = label[vis.instance].cpu()
        exclude = torch.zeros_like(logits_v, dtype=torch.bool)
        for o in obj.unique().tolist():
            rows = torch.nonzero(obj == o)[:, 0]
            local = vis.vertex[rows].cpu() - int(self.offsets[o])
            off = int(self.offsets[o])
            n_o = self.neighbours[o].shape[0]
            block = self.neighbours[o][local].to(device)
            exclude[rows.to(device), off:off + n_o] = block
        positive = vis.vertex
        exclude[torch.arange(len(positive), device=device), positive] = False
        logits_v = logits_v.masked_fill(exclude, float("-inf"))
        logits = torch.cat([logits_v, logits_c], 1)
        loss_v = F.cross_entropy(logits, positive) if len(positive) else feats.sum() * 0
        # background: pixels off the object's silhouette (at the true pose) prefer clutter over all vertices
        with torch.no_grad():
            sil = meshes.renderer.render(label, R_gt, t_gt, Kf, RasterSettings(h, w), shade=False).mask
            bg_idx = []
            for b in range(B):
                cand = torch.nonzero(~sil[b].flatten())[:, 0]
                if len(cand):
                    pick = torch.randperm(len(cand), generator=gen)[: lc.background_per_image].to(device)
                    bg_idx.append(b * h * w + cand[pick])
            bg_idx = torch.cat(bg_idx) if bg_idx else torch.zeros(0, dtype=torch.long, device=device)
        f_bg = feats.permute(0, 2, 3, 1).reshape(-1, C)[bg_idx]
        if len(f_bg):
            lb = torch.cat([f_bg @ bank.clutter.t() / T, f_bg @ bank.vertex_features.t() / T], 1)
            # likelihood of clutter: log sum over clutter entries against all entries
            K_c = bank.clutter.shape[0]
            loss_bg = -(torch.logsumexp(lb[:, :K_c], 1) - torch.logsumexp(lb, 1)).mean()
        else:
            loss_bg = feats.sum() * 0
        loss = lc.w_vertex * loss_v + lc.w_background * loss_bg
        self._pending = (_gather(vis.vertex), _gather(f_v.detach()), _gather(f_bg.detach()))
        return loss, {"vertex": float(loss_v.detach()), "background": float(loss_bg.detach()),
                      "visible_vertices": float(len(positive)), "total": float(loss.detach())}

    def after_step(self, step: int) -> None:
        """Momentum update of the vertex bank and clutter queue with this step's (detached) features."""
        index, f_v, f_bg = self._pending
        self.model.bank.update_vertices(index, f_v, self.model_cfg.momentum)
        self.model.bank.enqueue_clutter(f_bg)

