"""Flow pre-training of DeepIM's network: its encoder and flow/mask decoder learn to match on procedural
pairs with exact flow (training/synth/flow_pairs.py), as DeepIM's started from FlowNet's pre-training on
FlyingChairs. The pose head gets no gradient. The weights are a DeepIM network's: a DeepIM run starts from
them with ``init_from``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ros2_pose6d.training.losses.flow_mask import flow_mask_losses
from ros2_pose6d.training.synth.flow_pairs import FlowPairConfig, FlowPairDataset
from ros2_pose6d.training.tasks import TaskBase
from torch import Tensor
from torch.utils.data import default_collate

from ros2_pose6d.config import build_config
from ros2_pose6d.nets.backbone import normalise_images
from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.objects.registry import ObjectRegistry


@dataclass
class FlowLossConfig:
    w_flow: float = 1.0
    w_mask: float = 0.1


class FlowPretrainTask(TaskBase):
    arch = "deepim"
    has_unused_parameters = True  # the pose head

    def __init__(self, cfg, registry: ObjectRegistry) -> None:
        self.cfg = cfg
        self.model_cfg = build_config(DeepimConfig, cfg.model, prefix="model")
        if not self.model_cfg.flow_head:
            raise ValueError("model.flow_head: false leaves the flow pre-training nothing to train; set it true")
        self.loss_cfg = build_config(FlowLossConfig, cfg.loss, prefix="loss")
        self.pair_cfg = build_config(FlowPairConfig, cfg.pairs, prefix="pairs")
        self.model = DeepimNet(self.model_cfg)
        self.forward_module = self.model

    def train_dataset(self):
        return FlowPairDataset(self.pair_cfg, self.model_cfg.input_size, self.cfg.optim.seed), default_collate

    def step(self, batch: dict[str, Tensor], device: torch.device, gen: torch.Generator):
        b = {k: v.to(device) for k, v in batch.items()}
        extra = (b["observed_mask"],) if self.model_cfg.observed_mask else ()
        out = self.forward_module(normalise_images(b["observed"]), normalise_images(b["rendered"]), b["mask"], *extra)
        terms, parts = flow_mask_losses(out, b["flow"], b["valid"], b["target_mask"], self.model_cfg.input_size[1])
        loss = self.loss_cfg.w_flow * terms["flow"]
        if "mask" in terms:
            loss = loss + self.loss_cfg.w_mask * terms["mask"]
        parts.update({name: float(term.detach()) for name, term in terms.items()})
        parts["total"] = float(loss.detach())
        return loss, parts
