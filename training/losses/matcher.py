"""Hungarian matching of queries to ground-truth objects (DETR): the one-to-one assignment of least
total cost, cost = class + L1 box + GIoU (+ optional pose), solved with scipy per image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ros2_pose6d.geometry.boxes import cxcywh_to_xyxy, generalized_box_iou


@dataclass
class MatcherConfig:
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0


class HungarianMatcher:
    def __init__(self, cfg: MatcherConfig | None = None) -> None:
        self.cfg = cfg or MatcherConfig()

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """logits (B, N_q, N_m + 1), boxes (B, N_q, 4) cxcywh; targets[b] with 'labels' (T,) and 'boxes' (T, 4).

        Returns per image (query indices, target indices), both (min(N_q, T),) int64, sorted by query.
        """
        B, Q = logits.shape[:2]
        sizes = [len(t["labels"]) for t in targets]
        empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        if sum(sizes) == 0:
            return [empty for _ in targets]
        # one cost matrix for the whole batch (every query against every target of every image) and one
        # device -> host copy, as DETR does: on a GPU a copy per image would stall the step B times
        labels = torch.cat([t["labels"] for t in targets])
        tboxes = torch.cat([t["boxes"] for t in targets])
        prob = logits.flatten(0, 1).softmax(-1)
        qboxes = boxes.flatten(0, 1)
        cost = (-self.cfg.cost_class * prob[:, labels]
                + self.cfg.cost_bbox * torch.cdist(qboxes, tboxes, p=1)
                - self.cfg.cost_giou * generalized_box_iou(cxcywh_to_xyxy(qboxes), cxcywh_to_xyxy(tboxes)))
        cost = cost.view(B, Q, -1).cpu().double().numpy()
        out, start = [], 0
        for b, n in enumerate(sizes):
            if n == 0:
                out.append(empty)
                continue
            q, t = linear_sum_assignment(cost[b, :, start:start + n])
            out.append((torch.as_tensor(q, dtype=torch.long), torch.as_tensor(t, dtype=torch.long)))
            start += n
        return out
