"""A local correlation matcher for DeepIM's pose update from flow (our addition; not in the paper).

DeepIM's FC head regresses the whole pose change from pooled features, and at our CPU training budget it
barely learns the rotation (models/weights/README.md). Its flow head regresses the flow and shrinks it
toward zero, as a regression under uncertainty does. A pose solved from many correspondences averages
their errors away instead: with the true flow on the rendered silhouette's stride-4 cells, blurred by
3 px of independent noise, Gauss-Newton PnP alone reaches ADD(-S) 0.1d 0.96 from DeepIM's perturbation
(session 28's oracle probe). This matcher gives such correspondences: siamese features of both crops at
stride 4, the correlation of every rendered cell with the observed cells within ``radius`` cells, and the
displacement read as a soft argmax around the best match (not over the whole window: that would pull
every answer toward zero), with the probability mass there as its confidence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ros2_pose6d.nets.scale_matcher import ResidualBlock, matcher_stem

STRIDE = 4


def local_correlation(rendered: Tensor, observed: Tensor, radius: int) -> Tensor:
    """Dot products of rendered (B, C, h, w) features with the observed features (B, C, h, w) moved by every
    shift in [-radius, radius]^2 cells -> (B, (2r+1)^2, h, w); entry k = i (2r+1) + j pairs rendered cell
    (y, x) with observed cell (y + i - r, x + j - r) (zero outside the crop)."""
    r = radius
    h, w = rendered.shape[-2:]
    padded = F.pad(observed, (r, r, r, r))
    return torch.stack([(rendered * padded[..., i:i + h, j:j + w]).sum(1)
                        for i in range(2 * r + 1) for j in range(2 * r + 1)], 1)


def peak_readout(logits: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Sub-cell displacement and confidence from correlation logits (B, K, h, w), K = (2r+1)^2: the
    probability-weighted mean shift over the 3x3 shifts around the most likely one, in cells (B, 2, h, w)
    as (dx, dy), and the probability mass there (B, h, w)."""
    B, _, h, w = logits.shape
    n = 2 * radius + 1
    prob = logits.softmax(1)
    best = logits.argmax(1)  # (B, h, w)
    bi, bj = best // n, best % n
    mass = torch.zeros(B, h, w, dtype=prob.dtype, device=prob.device)
    sx, sy = torch.zeros_like(mass), torch.zeros_like(mass)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i, j = bi + di, bj + dj
            inside = (i >= 0) & (i < n) & (j >= 0) & (j < n)
            k = (i.clamp(0, n - 1) * n + j.clamp(0, n - 1))[:, None]
            p = prob.gather(1, k)[:, 0] * inside
            mass = mass + p
            sx = sx + p * (j - radius)
            sy = sy + p * (i - radius)
    disp = torch.stack([sx, sy], 1) / mass.clamp_min(1e-12)[:, None]
    return disp, mass


class FlowMatcher(nn.Module):
    """forward(observed (B, 3, H, W), rendered (B, 3, H, W)) -> dict: flow (B, 2, H/4, W/4) [crop px] that
    moves each stride-4 cell of the rendered crop to its match in the observed one, confidence (B, H/4, W/4)
    in [0, 1], logits (B, (2r+1)^2, H/4, W/4). Cell (y, x) stands for crop pixel (4x + 1.5, 4y + 1.5)."""

    def __init__(self, channels: int = 32, radius: int = 4, blocks: int = 2) -> None:
        super().__init__()
        if radius < 1 or blocks < 0:
            raise ValueError("flow matcher: needs radius >= 1 and blocks >= 0")
        self.features = matcher_stem(channels)
        self.blocks = nn.Sequential(*(ResidualBlock(channels, 2 ** (i % 3)) for i in range(blocks)))
        self.radius = radius
        self.log_inv_temp = nn.Parameter(torch.tensor(3.0))  # softmax temperature of the correlations

    def forward(self, observed: Tensor, rendered: Tensor) -> dict[str, Tensor]:
        B = len(observed)
        f = F.normalize(self.blocks(self.features(torch.cat([observed, rendered]))), dim=1)
        with torch.autocast(f.device.type, enabled=False):  # correlations differ by ~1e-2: float32
            logits = local_correlation(f[B:].float(), f[:B].float(), self.radius) * self.log_inv_temp.exp()
            disp, mass = peak_readout(logits, self.radius)
        return {"flow": disp * STRIDE, "confidence": mass, "logits": logits}

    def match_loss(self, logits: Tensor, flow: Tensor, valid: Tensor) -> Tensor:
        """Cross-entropy of the correlation logits (B, K, h, w) against the true flow at the cells (B, 2, h, w)
        [crop px], split bilinearly between its four nearest shifts, over the valid cells (B, h, w) whose
        flow lies within the searched window."""
        r = self.radius
        n = 2 * r + 1
        cells = flow / STRIDE + r  # (B, 2, h, w): position in the window, x then y
        inside = valid & (cells >= 0).all(1) & (cells <= n - 1).all(1)
        idx = torch.arange(n, dtype=logits.dtype, device=logits.device)
        wx = (1 - (cells[:, 0, None] - idx[None, :, None, None]).abs()).clamp_min(0)  # (B, n, h, w)
        wy = (1 - (cells[:, 1, None] - idx[None, :, None, None]).abs()).clamp_min(0)
        target = (wy[:, :, None] * wx[:, None]).reshape(logits.shape)  # k = i n + j: i from y, j from x
        ce = -(target * logits.log_softmax(1)).sum(1)
        return (ce * inside).sum() / inside.sum().clamp_min(1)
