"""NeMo (Wang et al., ICLR 2021) adapted to known meshes: a feature extractor (ResNet encoder + upsampling
to stride 8 or 4, unit-normalised C-dim features), neural meshes (each object simplified to ~1,000
vertices carrying C-dim features kept as a momentum-updated bank, not by gradient) and a clutter bank of
background features (a FIFO queue), trained contrastively."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ros2_pose6d.nets.backbone import BackboneConfig, ResNet


@dataclass
class NemoConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    feature_dim: int = 128
    stride: Literal[4, 8] = 8
    input_size: tuple[int, int] = (128, 128)  # zoomed-in crop around the object (H, W)
    zoom_scale: float = 1.5
    mesh_vertices: int = 1000
    clutter_size: int = 2048  # background features kept in the clutter bank
    momentum: float = 0.9  # vertex feature bank: theta <- normalise(m theta + (1 - m) mean observed feature)
    temperature: float = 0.07  # contrastive softmax temperature (1 / kappa)
    neighbour_exclusion: float = 0.1  # vertices closer than this fraction of the diameter are not negatives
    # inference
    steps: int = 60
    lr_rotation: float = 0.05  # Adam step on the axis-angle update [rad]
    lr_translation: float = 0.004  # Adam step on the translation update [m]
    hypotheses: int = 1  # 1 = start from the given pose only; more adds rotated starts (+-30 deg about z, x)
    # NeMo's initialisation: score this many rotations spread over SO(3) at the start translation (the data
    # term alone, no descent) and add the best ``search_keep`` of them as starting poses; 0 = off. For start
    # poses whose rotation may be far off (a detector's), which the +-30 deg hypotheses cannot reach.
    search_rotations: int = 0
    search_keep: int = 2
    # Gaussian prior around the start pose (MAP instead of maximum likelihood): weight x 0.5 x the squared
    # Mahalanobis distance of the pose from the start pose, added to the loss (a mean over the crop's pixels);
    # 0 = off. It holds the pose where the features say little and lets strong evidence move it.
    prior_weight: float = 0.0
    prior_sigma_rotation_deg: float = 15.0
    # robust rotation prior: (1 - p) N(given rotation, sigma) + p uniform, so a rotation far from the given one
    # costs at most about prior_weight x -log(p) instead of growing without bound. That is what the image must
    # gain for a searched start to override the given rotation (a detector's can be far off), while a close
    # start (tracking) keeps its rotation where the features are unsure. 0 = the plain Gaussian.
    prior_rotation_outlier: float = 0.0
    prior_sigma_translation: tuple[float, float, float] = (0.01, 0.01, 0.05)  # [m], camera x, y, z


class NemoFeatureNet(nn.Module):
    """images (B, 3, H, W) normalised -> features (B, C, H / stride, W / stride), unit length per pixel."""

    def __init__(self, cfg: NemoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.backbone)
        c = self.backbone.channels  # C2..C5
        d = cfg.feature_dim
        self.lateral = nn.ModuleList(nn.Conv2d(ci, d, 1) for ci in c)
        self.head = nn.Sequential(nn.Conv2d(d, d, 3, 1, 1), nn.GroupNorm(min(32, d // 4), d), nn.ReLU(inplace=True),
                                  nn.Conv2d(d, d, 1))

    def forward(self, images: Tensor) -> Tensor:
        feats = self.backbone(images)
        first = 0 if self.cfg.stride == 4 else 1
        y = self.lateral[-1](feats[-1])
        for lvl in range(len(feats) - 2, first - 1, -1):  # top-down: upsample and add the lateral map
            lat = self.lateral[lvl](feats[lvl])
            y = F.interpolate(y, size=lat.shape[-2:], mode="bilinear", align_corners=False) + lat
        return F.normalize(self.head(y), dim=1)


class NeuralMeshBank(nn.Module):
    """Vertex features (V_total, C) of all neural meshes and the clutter queue (K, C), as buffers (saved
    with the weights, updated by momentum, not by the optimiser)."""

    def __init__(self, num_vertices: int, feature_dim: int, clutter_size: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("vertex_features", F.normalize(torch.randn(num_vertices, feature_dim, generator=g), dim=1))
        self.register_buffer("clutter", F.normalize(torch.randn(clutter_size, feature_dim, generator=g), dim=1))
        self.register_buffer("clutter_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("vertex_seen", torch.zeros(num_vertices, dtype=torch.bool))

    @torch.no_grad()
    def update_vertices(self, index: Tensor, features: Tensor, momentum: float) -> None:
        """Momentum update with the mean observed feature of each vertex in ``index`` (M,), features (M, C).
        A vertex seen for the first time takes the observed feature outright (its random start means nothing)."""
        if len(index) == 0:
            return
        V, C = self.vertex_features.shape
        sums = torch.zeros(V, C, device=features.device, dtype=features.dtype).index_add_(0, index, features)
        counts = torch.zeros(V, device=features.device, dtype=features.dtype).index_add_(
            0, index, torch.ones_like(index, dtype=features.dtype))
        seen = counts > 0
        mean = sums[seen] / counts[seen, None]
        m = torch.where(self.vertex_seen[seen], momentum, 0.0)[:, None].to(mean.dtype)
        self.vertex_features[seen] = F.normalize(m * self.vertex_features[seen] + (1 - m) * mean, dim=1)
        self.vertex_seen |= seen

    @torch.no_grad()
    def enqueue_clutter(self, features: Tensor) -> None:
        """Push (M, C) background features into the FIFO clutter bank."""
        K = self.clutter.shape[0]
        features = features[-K:]
        n = len(features)
        if n == 0:
            return
        idx = (self.clutter_ptr + torch.arange(n, device=features.device)) % K
        self.clutter[idx] = features.to(self.clutter.dtype)
        self.clutter_ptr.fill_(int((self.clutter_ptr + n) % K))


class NemoModel(nn.Module):
    """The feature net and the bank together: one state dict, one weights file."""

    def __init__(self, cfg: NemoConfig, num_vertices: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = NemoFeatureNet(cfg)
        self.bank = NeuralMeshBank(num_vertices, cfg.feature_dim, cfg.clutter_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)
