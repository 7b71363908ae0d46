"""2D boxes: (cx, cy, w, h) <-> (x0, y0, x1, y1), IoU and generalised IoU (for the detector's matcher
and losses). Works on normalised or pixel coordinates alike."""

from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def box_area(b: Tensor) -> Tensor:
    return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)


def box_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU and union of (N, 4) and (M, 4) xyxy boxes -> (N, M) each."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None] - inter
    return inter / union.clamp_min(1e-12), union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise GIoU of (N, 4) and (M, 4) xyxy boxes -> (N, M) in [-1, 1]."""
    iou, union = box_iou(a, b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    hull = (rb - lt).clamp_min(0).prod(-1)
    return iou - (hull - union) / hull.clamp_min(1e-12)


def suppress_duplicates(boxes: Tensor, scores: Tensor, labels: Tensor, iou: float) -> Tensor:
    """Greedy class-wise non-maximum suppression: indices of the boxes kept, best score first. A box is
    dropped when a better-scoring box of the same label overlaps it by more than ``iou`` (>= 1 keeps all).
    DETR's one-to-one matching makes duplicates rare once trained; an undertrained detector still emits
    them, and each would become a second pose (and TF frame) of one object. (N, 4) xyxy, (N,), (N,)."""
    order = scores.argsort(descending=True)
    if iou >= 1.0 or len(order) < 2:
        return order
    b, lab = boxes[order], labels[order]
    dup = ((box_iou(b, b)[0] > iou) & (lab[:, None] == lab[None, :])).cpu()  # one host copy
    alive = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if alive[i]:
            alive[i + 1:] &= ~dup[i, i + 1:]
    return order[alive.to(order.device)]
