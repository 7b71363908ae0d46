"""SMOPE detector training: set criterion over all decoder layers plus the model reconstruction."""

from __future__ import annotations

import torch
from ros2_pose6d.training.datasets import DetectionDataset, collate_detection
from ros2_pose6d.training.losses.smope_loss import SmopeCriterion, SmopeLossConfig
from ros2_pose6d.training.tasks import TaskBase
from torch import Tensor

from ros2_pose6d.config import build_config
from ros2_pose6d.estimation.model_set import build_model_set
from ros2_pose6d.nets.backbone import normalise_images
from ros2_pose6d.nets.smope import SmopeConfig, SmopeNet
from ros2_pose6d.objects.registry import ObjectRegistry


class DetectorTask(TaskBase):
    arch = "smope"

    def __init__(self, cfg, registry: ObjectRegistry) -> None:
        self.cfg, self.registry = cfg, registry
        self.model_cfg = build_config(SmopeConfig, cfg.model, prefix="model")
        self.loss_cfg = build_config(SmopeLossConfig, cfg.loss, prefix="loss")
        self.model = SmopeNet(self.model_cfg)
        self.forward_module = self.model
        self.models = build_model_set(registry, self.model_cfg.points.num_points)
        self.criterion = SmopeCriterion(self.loss_cfg)

    def train_dataset(self):
        d = self.cfg.data
        return DetectionDataset(d.train, self.registry, self.model_cfg.image_size, d.min_visib, d.jitter,
                                self.cfg.optim.seed), collate_detection

    def step(self, batch, device: torch.device, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        images, K, targets = batch
        images, K = images.to(device), K.to(device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        m = self.models.to(device)
        out = self.forward_module(normalise_images(images), m.model_points)
        return self.criterion(out, targets, K, self.model_cfg.image_size, m.loss_points, m.symmetries,
                              m.model_points[..., :3])
