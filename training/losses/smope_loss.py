"""SMOPE set criterion: Hungarian matching per decoder layer, then
L_D (softmax focal class loss with a no-object class, L1 + GIoU boxes), L_P (symmetry-aware allocentric
point matching + projected-centre L1 + log-depth L1), visibility L1, and L_M (Chamfer + L1 on scale and
centre of the reconstructed models). Every decoder layer gets the same losses (auxiliary losses)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from ros2_pose6d.training.losses.matcher import HungarianMatcher, MatcherConfig
from ros2_pose6d.training.losses.point_matching import symmetric_point_matching
from torch import Tensor

from ros2_pose6d.geometry.boxes import cxcywh_to_xyxy, generalized_box_iou
from ros2_pose6d.geometry.rotations import egocentric_to_allocentric, rotation_6d_to_matrix
from ros2_pose6d.nets.point_encoder import chamfer_distance, normalise_points


@dataclass
class SmopeLossConfig:
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    w_class: float = 2.0
    w_bbox: float = 5.0
    w_giou: float = 2.0
    w_rot: float = 5.0
    w_centre: float = 2.0
    w_depth: float = 2.0
    w_visibility: float = 1.0
    # "l1": |p - v| on the sigmoid output. "kl": the Bernoulli KL divergence of the predicted visible fraction
    # from the true one (binary cross-entropy with soft targets less the target's entropy, so 0 at p = v), on
    # the logit. With L1 the gradient through a saturated sigmoid vanishes and the constant minimiser is the
    # median, which is 1 where most objects are fully visible: the session-13 demo detector predicts ~1 for
    # every object (error +0.8 at 10-30 % visible).
    visibility_loss: str = "l1"
    w_model: float = 1.0
    focal_gamma: float = 2.0
    no_object_weight: float = 0.1


def softmax_focal_loss(logits: Tensor, target: Tensor, gamma: float, weight: Tensor) -> Tensor:
    """Sum over queries of -w_c (1 - p_t)^gamma log p_t. logits (Q, C), target (Q,), weight (C,)."""
    logp = logits.log_softmax(-1).gather(-1, target[:, None])[:, 0]
    return (-(1 - logp.exp()) ** gamma * logp * weight[target]).sum()


def _global_mean_count(local: int, device: torch.device) -> float:
    """Targets per process averaged over DDP ranks (DETR's normalisation): with gradient averaging the
    loss then equals the single-process loss on the whole batch."""
    count = torch.tensor(float(local), device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / torch.distributed.get_world_size()
    return max(1.0, float(count))


class SmopeCriterion:
    """Call with the network outputs, per-image targets, the network-input K (B, 3, 3), image size,
    model geometry and the reconstruction of the model branch; returns (total, dict of parts)."""

    def __init__(self, cfg: SmopeLossConfig) -> None:
        if cfg.visibility_loss not in ("l1", "kl"):
            raise ValueError(f"loss.visibility_loss: {cfg.visibility_loss!r} is not one of 'l1', 'kl'")
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.matcher)

    def layer_losses(self, out: dict[str, Tensor], targets: list[dict[str, Tensor]], K: Tensor,
                     image_hw: tuple[int, int], points: Tensor, symmetries: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        logits, boxes = out["logits"], out["boxes"]
        B, Q, C1 = logits.shape
        num_models = C1 - 1
        matches = self.matcher(logits, boxes, targets)
        num = _global_mean_count(sum(len(t["labels"]) for t in targets), logits.device)
        cls_target = torch.full((B, Q), num_models, dtype=torch.long, device=logits.device)
        b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)]).to(logits.device)
        q_idx = torch.cat([q for q, _ in matches]).to(logits.device)
        cat = lambda key: torch.cat([t[key][ti.to(t[key].device)] for t, (_, ti) in zip(targets, matches)])  # noqa: E731
        labels = cat("labels")
        cls_target[b_idx, q_idx] = labels
        weight = torch.ones(C1, device=logits.device)
        weight[-1] = cfg.no_object_weight
        focal = softmax_focal_loss(logits.flatten(0, 1), cls_target.flatten(), cfg.focal_gamma, weight)
        losses = {"class": focal / num}
        zero = logits.sum() * 0
        if len(labels) == 0:
            return losses | {k: zero for k in ("bbox", "giou", "rot", "centre", "depth", "visibility")}
        pb, tb = boxes[b_idx, q_idx], cat("boxes")
        losses["bbox"] = F.l1_loss(pb, tb, reduction="sum") / num
        losses["giou"] = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(pb), cxcywh_to_xyxy(tb)))).sum() / num
        R_gt, t_gt = cat("R"), cat("t")
        R_allo_gt = egocentric_to_allocentric(R_gt, t_gt)
        R_allo = rotation_6d_to_matrix(out["rot6d"][b_idx, q_idx])
        losses["rot"] = symmetric_point_matching(R_allo, R_allo_gt, points[labels], symmetries[labels]).sum() / num
        H, W = image_hw
        Kb = K[b_idx]
        uvw = (t_gt[:, None] @ Kb.transpose(-1, -2))[:, 0]
        uv_n = torch.stack([(uvw[:, 0] / uvw[:, 2] + 0.5) / W, (uvw[:, 1] / uvw[:, 2] + 0.5) / H], -1)
        box_d = pb.detach()
        centre_target = (uv_n - box_d[:, :2]) / box_d[:, 2:].clamp_min(1e-3)
        losses["centre"] = F.l1_loss(out["centre"][b_idx, q_idx], centre_target, reduction="sum") / num
        depth_target = torch.log(t_gt[:, 2] * W / Kb[:, 0, 0])
        losses["depth"] = F.l1_loss(out["log_depth"][b_idx, q_idx], depth_target, reduction="sum") / num
        vis = cat("visib")
        if cfg.visibility_loss == "kl":
            entropy = -(torch.special.xlogy(vis, vis) + torch.special.xlogy(1 - vis, 1 - vis))
            bce = F.binary_cross_entropy_with_logits(out["visibility_logit"][b_idx, q_idx], vis, reduction="none")
            losses["visibility"] = (bce - entropy).sum() / num
        else:
            losses["visibility"] = F.l1_loss(out["visibility"][b_idx, q_idx], vis, reduction="sum") / num
        return losses

    def __call__(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], K: Tensor,
                 image_hw: tuple[int, int], points: Tensor, symmetries: Tensor,
                 model_xyz: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """outputs: SmopeNet's dict, per-layer tensors (D, B, Q, ...) plus the model reconstruction;
        points (N_m, P, 3) / diameter; symmetries (N_m, S, 4, 4) with translations / diameter;
        model_xyz (N_m, P, 3) the encoder's input points, for L_M."""
        cfg = self.cfg
        weights = {"class": cfg.w_class, "bbox": cfg.w_bbox, "giou": cfg.w_giou, "rot": cfg.w_rot,
                   "centre": cfg.w_centre, "depth": cfg.w_depth, "visibility": cfg.w_visibility}
        total = outputs["logits"].sum() * 0
        parts: dict[str, float] = {}
        D = outputs["logits"].shape[0]
        per_layer = [k for k in ("logits", "boxes", "rot6d", "centre", "log_depth", "visibility", "visibility_logit")
                     if k in outputs]
        for layer in range(D):
            out = {k: outputs[k][layer] for k in per_layer}
            losses = self.layer_losses(out, targets, K, image_hw, points, symmetries)
            for k, v in losses.items():
                total = total + weights[k] * v
                if layer == D - 1:
                    parts[k] = float(v.detach())
        if "recon_points" in outputs and model_xyz is not None:
            pts, centre, log_scale = outputs["recon_points"], outputs["recon_centre"], outputs["recon_log_scale"]
            gt_pts, gt_centre, gt_scale = normalise_points(model_xyz)
            lm = (chamfer_distance(pts, gt_pts) + (centre - gt_centre).abs().sum(-1) * 10
                  + (log_scale - gt_scale.log()).abs()).mean()
            total = total + cfg.w_model * lm
            parts["model"] = float(lm.detach())
        parts["total"] = float(total.detach())
        return total, parts
