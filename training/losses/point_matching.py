"""Symmetry-aware point-matching loss (DeepIM, SMOPE L_P): mean distance between the model points under
the predicted and the ground-truth rotation, minimised over the object's symmetries."""

from __future__ import annotations

import torch
from torch import Tensor


def symmetric_point_matching(R_pred: Tensor, R_gt: Tensor, points: Tensor, symmetries: Tensor,
                             t_pred: Tensor | None = None, t_gt: Tensor | None = None) -> Tensor:
    """(N,) loss for N instances.

    R_pred, R_gt (N, 3, 3); points (N, P, 3) in the object frame (scale them by the diameter to make the
    loss unitless); symmetries (N, S, 4, 4) object-frame symmetry transforms (identity included, pad with
    identities); t_pred/t_gt (N, 3) add the translation term when given. Per instance:
    min_s mean_p | R_pred x_p + t_pred - (R_gt (S_s x_p) + t_gt) |_1.
    """
    S_R, S_t = symmetries[..., :3, :3], symmetries[..., :3, 3]
    sym_pts = torch.einsum("nsij,npj->nspi", S_R, points) + S_t[:, :, None]  # (N, S, P, 3)
    gt = torch.einsum("nij,nspj->nspi", R_gt, sym_pts)
    pred = torch.einsum("nij,npj->npi", R_pred, points)[:, None]
    if t_pred is not None and t_gt is not None:
        gt = gt + t_gt[:, None, None]
        pred = pred + t_pred[:, None, None]
    return (pred - gt).abs().sum(-1).mean(-1).amin(-1)
