"""DeepIM's network: a FlowNetSimple encoder over the stacked zoomed-in observed image, rendered
image and rendered mask, two FC layers to a rotation delta (unit quaternion, camera frame) and the
disentangled translation delta (vx, vy, vz); auxiliary optical-flow and mask heads on a FlowNetS-style
decoder with skip connections, switchable by config. Trained from scratch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ros2_pose6d.geometry.rotations import quaternion_to_matrix
from ros2_pose6d.nets.flow_matcher import FlowMatcher
from ros2_pose6d.nets.scale_matcher import ScaleMatcher

# FlowNetS encoder: (name, out channels at width 1, kernel, stride)
FLOWNETS = (("conv1", 64, 7, 2), ("conv2", 128, 5, 2), ("conv3", 256, 5, 2), ("conv3_1", 256, 3, 1),
            ("conv4", 512, 3, 2), ("conv4_1", 512, 3, 1), ("conv5", 512, 3, 2), ("conv5_1", 512, 3, 1),
            ("conv6", 1024, 3, 2), ("conv6_1", 1024, 3, 1))


@dataclass
class DeepimConfig:
    """input_size (H, W) of the zoomed-in crops (DeepIM: 480x640); width scales every channel count;
    zoom_scale: crop size relative to the union box (margin); flow/mask heads are auxiliary."""

    input_size: tuple[int, int] = (240, 320)
    width: float = 1.0
    fc_dim: int = 256
    observed_mask: bool = False  # an extra input channel (when a segmentation is available)
    flow_head: bool = True
    mask_head: bool = True
    zoom_scale: float = 1.4
    iterations: int = 4
    # an object stops iterating once an update turns it by less than stop_rotation_deg and moves it by less
    # than stop_translation of its depth (0: always all iterations). Starts far off (a detector's) need more
    # iterations than near ones; converged objects stop costing time
    stop_rotation_deg: float = 0.0
    stop_translation: float = 0.0
    # "none": FlowNetS as published; "group": GroupNorm after every encoder conv (the idea of FlowNetS-BN
    # with batch-size-independent statistics; its flow and mask heads start learning sooner from scratch)
    norm: str = "none"
    # the encoder level the pose head reads (pooled to 4x4). DeepIM's conv6_1 is an 8x10 map of a 480x640
    # crop; of a 64x80 crop it is 1x2, which keeps no layout of the object for the FC layers. A shallower
    # level (conv4_1: 4x5 there) keeps it.
    pose_level: str = "conv6_1"
    # the depth update vz from a scale cost volume (nets/scale_matcher.py, our addition) next to the FC head:
    # vz = matcher_weight * matcher's + (1 - matcher_weight) * FC's. matcher_range is the largest |log scale|
    # searched, matcher_shift the shift allowed (stride-4 cells), matcher_blocks the residual blocks on its
    # features (each starts as the identity, so blocks can be added to trained matcher weights)
    depth_matcher: bool = False
    matcher_weight: float = 1.0
    matcher_channels: int = 32
    matcher_scales: int = 21
    matcher_range: float = 0.2
    matcher_shift: int = 3
    matcher_blocks: int = 0
    matcher_renormalise: bool = False  # warped features back to unit length (ScaleMatcher's docstring)
    # correspondences from a local correlation matcher (nets/flow_matcher.py, our addition): with
    # pose_from_flow the update of each iteration is solved from them by PnP (estimation/flow_pose.py) where
    # enough cells match with at least flow_min_confidence; elsewhere the FC head's update is kept.
    # flow_matcher_refine > 0 adds the matcher's stride-2 level with windows of that many half-cells either way;
    # flow_matcher_occlusion its occlusion head (hidden cells weigh little in the pose; the seen share is the
    # refiner's visibility)
    flow_matcher: bool = False
    flow_matcher_channels: int = 32
    flow_matcher_radius: int = 4
    flow_matcher_blocks: int = 2
    flow_matcher_refine: int = 0
    flow_matcher_occlusion: bool = False
    # > 0: at inference the matches are also read backward (observed to rendered cells) and averaged with the
    # forward ones (nets/flow_matcher.symmetric_flow: the two share a bias toward the object's inside that the
    # average cancels); cells whose forward and backward matches disagree by more than this [crop px] drop out
    flow_symmetric_px: float = 0.0
    pose_from_flow: bool = False
    flow_min_confidence: float = 0.5
    # "flow": the solved pose as it is; "network": its rotation and its centre on the image, at the depth of
    # the network's own update (the FC head, blended with the depth matcher's when it is on); "blend": at the
    # geometric mean of the two depths, the solved one weighted flow_depth_weight. The two err differently:
    # the matches read the outline of a visible object better, the depth matcher degrades less with occlusion
    flow_depth: str = "flow"
    flow_depth_weight: float = 0.5
    # with flow_depth blend and the occlusion head: the solved depth's weight for an object the head sees half of
    # or less, growing linearly from flow_depth_weight (all seen) to it (half seen). Occlusion costs the depth
    # matcher more than the matches, once the hidden cells are weighed down. None: flow_depth_weight always
    flow_depth_weight_hidden: float | None = None
    # after the iterations at input_size, polish_iterations more (each object again until it stops moving) on
    # crops of polish_size (H, W), a multiple of 4 (None: no polish). The network is convolutional up to its
    # pooled pose head and runs on crops larger than it was trained on; there the flow matcher's cells are a
    # smaller part of the object and pin its outline, and so its depth, finer (models/weights/README.md,
    # session 32). A polish iteration costs about (polish area / input area) coarse ones
    polish_size: tuple[int, int] | None = None
    polish_iterations: int = 0
    # refining several objects of one frame: each object's cells that another one, rendered at its current pose,
    # covers nearer are left out of the pose solved from the matches (they show that object, not this one; two
    # instances of one object look alike to the matcher and its occlusion head)
    mutual_occlusion: bool = False


def _conv(cin: int, cout: int, k: int, s: int, norm: str) -> nn.Sequential:
    if norm == "none":
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2), nn.LeakyReLU(0.1, inplace=True))
    if norm == "group":
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.GroupNorm(min(8, cout // 4), cout),
                             nn.LeakyReLU(0.1, inplace=True))
    raise ValueError(f"model.norm: {norm!r} is not one of 'none', 'group'")


class DeepimNet(nn.Module):
    """forward(observed (B, 3, H, W), rendered (B, 3, H, W), rendered_mask (B, 1, H, W)[, observed_mask])
    -> dict: quat (B, 4) unit xyzw, R_delta (B, 3, 3), v (B, 3) (vz blended with the depth matcher's when it
    is on, with its scale_logits (B, S)); flow (B, 2, H/4, W/4) [crop px] and
    mask_logits (B, 1, H/4, W/4) when the heads are on; match_flow, match_confidence and match_logits
    (nets/flow_matcher.py) with the flow matcher, plus match_coarse_flow, match_fine_centre and
    match_fine_logits with its stride-2 level, match_seen_logits with its occlusion head. Images normalised,
    masks in {0, 1}."""

    def __init__(self, cfg: DeepimConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = lambda c: max(8, round(c * cfg.width))  # noqa: E731
        cin = 3 + 3 + 1 + (1 if cfg.observed_mask else 0)
        self.encoder = nn.ModuleDict()
        self.channels = {}
        levels = [name for name, *_ in FLOWNETS]
        if cfg.pose_level not in levels:
            raise ValueError(f"model.pose_level: {cfg.pose_level!r} is not an encoder level ({', '.join(levels)})")
        # without the flow/mask decoder nothing reads the levels deeper than the pose head's: they are not built
        last = len(levels) if cfg.flow_head or cfg.mask_head else levels.index(cfg.pose_level) + 1
        for name, c, k, s in FLOWNETS[:last]:
            self.encoder[name] = _conv(cin, ch(c), k, s, cfg.norm)
            cin = self.channels[name] = ch(c)
        self.pool = nn.AdaptiveAvgPool2d((4, 4))  # FC input independent of the crop size
        self.fc = nn.Sequential(nn.Linear(self.channels[cfg.pose_level] * 16, cfg.fc_dim),
                                nn.LeakyReLU(0.1, inplace=True),
                                nn.Linear(cfg.fc_dim, cfg.fc_dim), nn.LeakyReLU(0.1, inplace=True))
        # MSRA initialisation as in FlowNet: with PyTorch's default init the input-dependent part of the signal
        # of this 10-layer encoder (no normalisation) shrinks ~1e5x by conv6_1, the pose head sees the same
        # features for every input and training only learns the mean update.
        for m in self.encoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.rot = nn.Linear(cfg.fc_dim, 4)
        self.trans = nn.Linear(cfg.fc_dim, 3)
        for layer in (self.rot, self.trans):
            nn.init.normal_(layer.weight, std=1e-3)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.rot.bias[3] = 1.0  # identity quaternion (x, y, z, w)
        if cfg.flow_head or cfg.mask_head:
            c = self.channels
            self.up5 = nn.ConvTranspose2d(c["conv6_1"], ch(512), 4, 2, 1)
            self.up4 = nn.ConvTranspose2d(ch(512) + c["conv5_1"], ch(256), 4, 2, 1)
            self.up3 = nn.ConvTranspose2d(ch(256) + c["conv4_1"], ch(128), 4, 2, 1)
            self.up2 = nn.ConvTranspose2d(ch(128) + c["conv3_1"], ch(64), 4, 2, 1)
            self.predict = nn.Conv2d(ch(64) + c["conv2"], 3, 3, 1, 1)  # flow (2) + mask logit (1) at stride 4
        if cfg.stop_rotation_deg < 0 or cfg.stop_translation < 0:
            raise ValueError("model.stop_rotation_deg and model.stop_translation must be >= 0")
        if not 0.0 <= cfg.matcher_weight <= 1.0:
            raise ValueError(f"model.matcher_weight: {cfg.matcher_weight} is not in [0, 1]")
        if cfg.depth_matcher:
            self.depth_matcher = ScaleMatcher(cfg.matcher_channels, cfg.matcher_scales, cfg.matcher_range,
                                              cfg.matcher_shift, cfg.matcher_blocks, cfg.matcher_renormalise)
        if cfg.pose_from_flow and not cfg.flow_matcher:
            raise ValueError("model.pose_from_flow needs model.flow_matcher: true")
        if cfg.flow_depth not in ("flow", "network", "blend"):
            raise ValueError(f"model.flow_depth: {cfg.flow_depth!r} is not one of 'flow', 'network', 'blend'")
        if not 0.0 <= cfg.flow_depth_weight <= 1.0:
            raise ValueError(f"model.flow_depth_weight: {cfg.flow_depth_weight} is not in [0, 1]")
        if cfg.flow_symmetric_px < 0:
            raise ValueError(f"model.flow_symmetric_px: {cfg.flow_symmetric_px} is negative")
        if cfg.flow_depth_weight_hidden is not None:
            if not 0.0 <= cfg.flow_depth_weight_hidden <= 1.0:
                raise ValueError(f"model.flow_depth_weight_hidden: {cfg.flow_depth_weight_hidden} is not in [0, 1]")
            if not (cfg.flow_matcher_occlusion and cfg.flow_depth == "blend"):
                raise ValueError("model.flow_depth_weight_hidden needs model.flow_matcher_occlusion: true and "
                                 "model.flow_depth: blend")
        if cfg.polish_iterations < 0:
            raise ValueError(f"model.polish_iterations: {cfg.polish_iterations} is negative")
        if cfg.polish_iterations and cfg.polish_size is None:
            raise ValueError("model.polish_iterations needs model.polish_size (H, W)")
        if cfg.polish_size is not None and (len(cfg.polish_size) != 2 or any(v < 4 or v % 4 for v in cfg.polish_size)):
            raise ValueError(f"model.polish_size: {cfg.polish_size} is not two positive multiples of 4 (H, W): "
                             "the flow matcher's cells are 4 px")
        if cfg.flow_matcher:
            self.flow_matcher = FlowMatcher(cfg.flow_matcher_channels, cfg.flow_matcher_radius,
                                            cfg.flow_matcher_blocks, cfg.flow_matcher_refine,
                                            cfg.flow_matcher_occlusion, cfg.flow_symmetric_px)
        elif cfg.flow_matcher_occlusion or cfg.flow_symmetric_px:
            raise ValueError("model.flow_matcher_occlusion and model.flow_symmetric_px need model.flow_matcher: true")

    # parameters that may start at their initialisation when fine-tuning from weights without them
    # (training's init_from): the depth and flow matchers can be added to trained weights
    init_fresh_prefixes = ("depth_matcher.", "flow_matcher.")

    def forward(self, observed: Tensor, rendered: Tensor, rendered_mask: Tensor,
                observed_mask: Tensor | None = None) -> dict[str, Tensor]:
        inputs = [observed, rendered, rendered_mask]
        if self.cfg.observed_mask:
            if observed_mask is None:
                raise ValueError("this DeepIM network was configured with an observed-mask input")
            inputs.append(observed_mask)
        x = torch.cat(inputs, 1)
        skips = {}
        for name, layer in self.encoder.items():
            x = layer(x)
            skips[name] = x
        h = self.fc(self.pool(skips[self.cfg.pose_level]).flatten(1))
        quat = F.normalize(self.rot(h), dim=-1)
        v = self.trans(h)
        out = {"quat": quat, "R_delta": quaternion_to_matrix(quat)}
        if self.cfg.depth_matcher:
            vz, out["scale_logits"] = self.depth_matcher(observed, rendered, rendered_mask)
            w = self.cfg.matcher_weight
            v = torch.cat([v[:, :2], w * vz[:, None].to(v.dtype) + (1 - w) * v[:, 2:]], 1)
        out["v"] = v
        if self.cfg.flow_matcher:
            match = self.flow_matcher(observed, rendered)
            out.update({"match_flow": match["flow"], "match_confidence": match["confidence"],
                        "match_logits": match["logits"]})
            if "fine_logits" in match:
                out.update({"match_coarse_flow": match["coarse_flow"], "match_fine_centre": match["fine_centre"],
                            "match_fine_logits": match["fine_logits"]})
            if "seen_logits" in match:
                out["match_seen_logits"] = match["seen_logits"]
        if self.cfg.flow_head or self.cfg.mask_head:
            y = skips["conv6_1"]
            for up, skip in ((self.up5, "conv5_1"), (self.up4, "conv4_1"), (self.up3, "conv3_1"), (self.up2, "conv2")):
                y = F.leaky_relu(up(y), 0.1)
                s = skips[skip]
                if y.shape[-2:] != s.shape[-2:]:  # odd feature sizes: match the skip's grid
                    y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
                y = torch.cat([y, s], 1)
            pred = self.predict(y)
            if self.cfg.flow_head:
                out["flow"] = pred[:, :2] * 4.0
            if self.cfg.mask_head:
                out["mask_logits"] = pred[:, 2:3]
        return out
