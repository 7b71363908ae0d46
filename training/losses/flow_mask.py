"""DeepIM's auxiliary losses, shared by its training step and the flow pre-training: the heads predict at
stride 4, so the full-resolution targets are subsampled (nearest) to their grid. Also the flow matcher's
loss (our addition), whose targets are the flow averaged over each stride-4 (and stride-2) cell."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ros2_pose6d.estimation.flow_pose import cell_flow, cell_points
from ros2_pose6d.estimation.zoom import ZoomedPair
from ros2_pose6d.geometry.camera import crop_resize
from ros2_pose6d.nets.flow_matcher import FINE_STRIDE, STRIDE, FlowMatcher


def flow_mask_losses(out: dict[str, Tensor], flow: Tensor, valid: Tensor, target_mask: Tensor,
                     width: int) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Loss terms for the heads present in ``out``: 'flow', the L1 end-point error in crop widths over the
    valid pixels (flow (N, 2, H, W) [px], valid (N, H, W)), and 'mask', the binary cross-entropy against
    target_mask (N, 1, H, W). Also returns diagnostics: the flow's mean end-point error [px] and its ratio to
    that of predicting no motion (1: nothing learned)."""
    pred = out.get("flow", out.get("mask_logits"))
    if pred is None:
        return {}, {}
    sub = lambda x: F.interpolate(x, size=pred.shape[-2:], mode="nearest")  # noqa: E731
    terms, diag = {}, {}
    if "flow" in out:
        v = sub(valid[:, None].float())
        target = sub(flow)
        n = v.sum().clamp_min(1)
        err = (out["flow"] - target).abs().sum(1, keepdim=True) / width
        terms["flow"] = (err * v).sum() / n
        epe = ((out["flow"].detach().float() - target).norm(dim=1, keepdim=True) * v).sum() / n
        zero = (target.norm(dim=1, keepdim=True) * v).sum() / n
        diag["metric/flow_epe"] = float(epe)
        diag["metric/flow_epe_ratio"] = float(epe / zero.clamp_min(1e-6))
    if "mask_logits" in out:
        terms["mask"] = F.binary_cross_entropy_with_logits(out["mask_logits"], sub(target_mask.float()))
    return terms, diag


def _seen_cells(flow: Tensor, valid: Tensor, seen_crop: Tensor, zoomed: ZoomedPair,
                stride: int) -> tuple[Tensor, Tensor, Tensor]:
    """The true flow per stride-s cell (N, 2, h/s, w/s), the cells covered by the rendered silhouette (N, h/s,
    w/s) and those of them that have a match to learn: half valid (on the object's surface facing the camera at
    the true pose) and landing on the observed object's visible pixels."""
    target, half_valid = cell_flow(flow, valid, stride)
    uv, _, covered = cell_points(zoomed.depth, zoomed.mask, zoomed.K, stride=stride)
    h, w = zoomed.depth.shape[-2:]
    land = uv + target.permute(0, 2, 3, 1)  # (N, h/s, w/s, 2) where each cell's point is observed [crop px]
    grid = torch.stack([(2 * land[..., 0] + 1) / w - 1, (2 * land[..., 1] + 1) / h - 1], -1)
    seen = F.grid_sample(seen_crop, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0] > 0.5
    return target, covered, half_valid & covered & seen


def _epe_diag(pred: Tensor, target: Tensor, cells: Tensor, prefix: str) -> dict[str, float]:
    if not cells.any():
        return {}
    epe = (pred.detach() - target).norm(dim=1)[cells]
    zero = target.norm(dim=1)[cells]
    return {f"metric/{prefix}_epe": float(epe.median()),
            f"metric/{prefix}_epe_ratio": float(epe.median() / zero.median().clamp_min(1e-6)),
            f"metric/{prefix}_within_2px": float((epe < 2).float().mean())}


def _occlusion_diag(seen_logits: Tensor, seen: Tensor, candidates: Tensor) -> dict[str, float]:
    """The occlusion head's accuracy over the candidate cells, and the median over the objects with candidates
    of |predicted - true share of them seen| (the visibility the refiner reports)."""
    if not candidates.any():
        return {}
    pred = seen_logits.detach() > 0
    n = candidates.flatten(1).sum(1)
    has = n > 0
    share_pred = (pred & candidates).flatten(1).sum(1) / n.clamp_min(1)
    share_true = (seen & candidates).flatten(1).sum(1) / n.clamp_min(1)
    return {"metric/occlusion_accuracy": float((pred == seen)[candidates].float().mean()),
            "metric/seen_share_error": float((share_pred - share_true)[has].abs().median())}


def matcher_loss(matcher: FlowMatcher, out: dict[str, Tensor], flow: Tensor, valid: Tensor, visible: Tensor,
                 zoomed: ZoomedPair, w_occlusion: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """The flow matcher's cross-entropy against the true flow (N, 2, h, w) [crop px] averaged over each
    stride-4 cell, over the cells covered by the rendered silhouette whose true match is among the observed
    object's visible pixels (visible (N, H, W), the full-image masks; an occluded point has no match to
    learn); with the matcher's stride-2 level, plus its own on the stride-2 cells. Diagnostics per level: the
    median end-point error of the matcher's flow over those cells [crop px], its ratio to that of no motion,
    and the share of them it puts within 2 px. With the matcher's occlusion head, plus ``w_occlusion`` times its
    binary cross-entropy (FlowMatcher.occlusion_loss) on the output grid."""
    h, w = zoomed.depth.shape[-2:]
    seen_crop = crop_resize(visible[:, None].to(flow.dtype), zoomed.boxes, (h, w), mode="nearest")
    target, candidates, cells = _seen_cells(flow, valid, seen_crop, zoomed, STRIDE)
    loss = matcher.match_loss(out["match_logits"], target, cells)
    diag = _epe_diag(out.get("match_coarse_flow", out["match_flow"]), target, cells, "match")
    if "match_fine_logits" in out:
        target_f, candidates, cells = _seen_cells(flow, valid, seen_crop, zoomed, FINE_STRIDE)
        loss = loss + matcher.fine_loss(out["match_fine_logits"], target_f, out["match_fine_centre"], cells)
        diag.update(_epe_diag(out["match_flow"], target_f, cells, "match_fine"))
    if "match_seen_logits" in out:  # on the flow's grid: the candidates and seen cells of the last level
        occlusion = matcher.occlusion_loss(out["match_seen_logits"], cells, candidates)
        loss = loss + w_occlusion * occlusion
        diag.update(_occlusion_diag(out["match_seen_logits"], cells, candidates))
        diag["occlusion"] = float(occlusion.detach())
    return loss, diag
