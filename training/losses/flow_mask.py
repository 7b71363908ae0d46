"""DeepIM's auxiliary losses, shared by its training step and the flow pre-training: the heads predict at
stride 4, so the full-resolution targets are subsampled (nearest) to their grid."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


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
