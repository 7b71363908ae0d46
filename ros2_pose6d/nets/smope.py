"""SMOPE-Net: Deformable-DETR queries fused with 3D object-model latents.

For every query and decoder layer: class scores are the 3D attention scores of the query against
the N_m model latents (plus a no-object logit), so the object set is an input and adding an object
means encoding its mesh. The attention-weighted model features, concatenated with the query, feed
the pose head: allocentric rotation (6D), the projected centre as an offset inside the predicted box,
a log depth normalised by the focal length in image widths (log(z W / fx): unchanged by
resizing the image), and visibility (visible fraction of the projection, as BOP's visib_fract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ros2_pose6d.geometry.rotations import allocentric_to_egocentric, rotation_6d_to_matrix
from ros2_pose6d.nets.backbone import BackboneConfig, ResNet
from ros2_pose6d.nets.deformable_transformer import MLP, DeformableTransformer, TransformerConfig
from ros2_pose6d.nets.point_encoder import PointDecoder, PointEncoder, PointEncoderConfig


@dataclass
class SmopeConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    points: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    image_size: tuple[int, int] = (480, 640)  # (H, W) network input; frames are resized to it, K follows
    depth_init: float = 0.7  # initial normalised depth z * W / fx (about z [m] for usual lenses)


class ModelAttention(nn.Module):
    """3D attention of queries over model latents: logits (..., N_m + 1) and fused features (..., d)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.no_object = nn.Linear(d, 1)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, hs: Tensor, latents: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.q(hs) @ self.k(latents).t() * self.scale  # (..., N_m)
        logits = torch.cat([scores, self.no_object(hs)], -1)
        fused = scores.softmax(-1) @ self.v(latents)
        return logits, fused


class SmopeNet(nn.Module):
    """forward(images (B, 3, H, W) normalised, latents (N_m, d)) -> dict of per-layer outputs, each
    (D, B, N_q, ...): logits (N_m + 1), boxes (4, cxcywh in [0, 1]), rot6d (6, allocentric),
    centre (2, offset of the projected centre in box widths/heights from the box centre),
    log_depth (), visibility () in [0, 1]."""

    def __init__(self, cfg: SmopeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.transformer.d_model
        self.backbone = ResNet(cfg.backbone)
        self.transformer = DeformableTransformer(cfg.transformer, self.backbone.channels[1:])
        n_dec = cfg.transformer.dec_layers
        self.box_heads = nn.ModuleList(MLP(d, d, 4, 3) for _ in range(n_dec))
        for head in self.box_heads:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        self.model_encoder = PointEncoder(cfg.points, d)
        self.model_decoder = PointDecoder(cfg.points, d)
        self.attention = ModelAttention(d)
        self.pose_head = MLP(2 * d, d, 6 + 2 + 1 + 1, 3)
        with torch.no_grad():
            bias = self.pose_head.layers[-1].bias
            bias.zero_()
            bias[:6] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])  # identity allocentric rotation
            bias[8] = math.log(cfg.depth_init)
            self.pose_head.layers[-1].weight.mul_(0.1)

    def encode_models(self, model_points: Tensor) -> Tensor:
        """(N_m, P, 10) model points -> (N_m, d) latents (cache them: they do not depend on the image)."""
        if model_points.dim() != 3 or model_points.shape[0] == 0 or model_points.shape[-1] != 10:
            raise ValueError(f"model_points must be (N_m >= 1, P, 10), got {tuple(model_points.shape)}")
        return self.model_encoder(model_points)

    def forward(self, images: Tensor, model_points: Tensor | None = None, latents: Tensor | None = None,
                image_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Give ``model_points`` (training: the model branch runs and its reconstruction is returned as
        'recon_points', 'recon_centre', 'recon_log_scale') or cached ``latents`` (inference)."""
        B, _, H, W = images.shape
        out: dict[str, Tensor] = {}
        if latents is None:
            if model_points is None:
                raise ValueError("SmopeNet needs model_points or latents")
            latents = self.encode_models(model_points)
            out["recon_points"], out["recon_centre"], out["recon_log_scale"] = self.model_decoder(latents)
        if image_mask is None:
            image_mask = torch.zeros(B, H, W, dtype=torch.bool, device=images.device)
        feats = self.backbone(images)[1:]
        hs, _refs, boxes = self.transformer(feats, image_mask, self.box_heads)
        logits, fused = self.attention(hs, latents)
        p = self.pose_head(torch.cat([hs, fused], -1))
        out.update(logits=logits, boxes=boxes, rot6d=p[..., :6], centre=p[..., 6:8], log_depth=p[..., 8],
                   visibility=p[..., 9].sigmoid(), visibility_logit=p[..., 9])
        return out


def decode_poses(boxes: Tensor, rot6d: Tensor, centre: Tensor, log_depth: Tensor, K: Tensor,
                 image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Network outputs (..., N_q, ·) and the network-input intrinsics K (..., 3, 3) -> egocentric
    R (..., N_q, 3, 3) and t (..., N_q, 3) [m] in the camera frame of K."""
    H, W = image_hw
    cx, cy, w, h = boxes.unbind(-1)
    u = (cx + centre[..., 0] * w) * W - 0.5  # normalised -> pixel coordinates (centres at integers)
    v = (cy + centre[..., 1] * h) * H - 0.5
    fx = K[..., 0, 0][..., None]
    z = log_depth.exp() * fx / W
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1)
    rays = uv1 @ torch.linalg.inv(K).transpose(-1, -2)
    t = rays * z[..., None]
    R = allocentric_to_egocentric(rotation_6d_to_matrix(rot6d), t)
    return R, t
