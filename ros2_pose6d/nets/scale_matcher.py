"""A scale cost volume for DeepIM's depth update (our addition; not in the paper).

DeepIM reads the depth change vz = log(z_src / z_tgt) from how much larger the observed object is than
the rendered one. Its FC head reads it poorly: the demo network misjudges the scale by ~1.5 % even when
the observed crop is a clean render of the object at the true rotation (session 23; 2 % ~ 0.1d in depth
at the demo distances). Moving the object along its viewing ray by z -> z / s scales its image by s about
the projected centre, which zoom-in puts at the crop centre. So the depth update is a 1-D search: warp
the rendered crop's features by candidate scales, correlate them with the observed crop's features
(over the rendered silhouette and a ring around it, allowing a small shift), and take the expected log
scale under a softmax of the correlations. The features are learned end to end from the depth loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_gn(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 convolution, GroupNorm, leaky ReLU: the matchers' building block."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(min(8, cout // 4), cout),
                         nn.LeakyReLU(0.1, inplace=True))


def matcher_stem(channels: int) -> nn.Sequential:
    """The matchers' feature extractor: three GroupNorm convolutions to stride 4, then a linear projection."""
    return nn.Sequential(conv_gn(3, 16, 2), conv_gn(16, 32, 2), conv_gn(32, 32, 1),
                         nn.Conv2d(32, channels, 3, 1, 1))


class ResidualBlock(nn.Module):
    """Pre-activation residual block whose last convolution starts at zero: added to trained matcher
    weights (``blocks`` > 0 with init_from), the matcher starts as it was and grows from there."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        groups = min(8, channels // 4)
        self.body = nn.Sequential(nn.GroupNorm(groups, channels), nn.LeakyReLU(0.1),
                                  nn.Conv2d(channels, channels, 3, 1, dilation, dilation, bias=False),
                                  nn.GroupNorm(groups, channels), nn.LeakyReLU(0.1),
                                  nn.Conv2d(channels, channels, 3, 1, dilation, dilation))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def scale_grid(log_scales: Tensor, size: tuple[int, int]) -> Tensor:
    """(S,) log scales -> (S, h, w, 2) grid_sample grid (align_corners=False) that enlarges an image by
    exp(log_scale) about its centre: output pixel x samples the input at x / s."""
    h, w = size
    theta = torch.zeros(len(log_scales), 2, 3, dtype=log_scales.dtype, device=log_scales.device)
    inv = torch.exp(-log_scales)
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    return F.affine_grid(theta, [len(log_scales), 1, h, w], align_corners=False)


def shifted_correlation(observed: Tensor, rendered: Tensor, weight: Tensor, radius: int) -> Tensor:
    """Weighted mean dot product of observed (B, C, h, w) with rendered (B, S, C, h, w) features moved by
    every shift in [-radius, radius]^2 cells (weight (B, S, 1, h, w) moves with them) -> (B, S, 2r+1, 2r+1):
    entry [b, s, i, j] pairs rendered cell (y, x) with observed cell (y + i - r, x + j - r). One grouped
    convolution: the weighted rendered features of each sample are its filters."""
    B, S, C, h, w = rendered.shape
    r = radius
    obs = F.pad(observed, (r, r, r, r)).reshape(1, B * C, h + 2 * r, w + 2 * r)
    filters = (rendered * weight).reshape(B * S, C, h, w)
    corr = F.conv2d(obs, filters, groups=B).reshape(B, S, 2 * r + 1, 2 * r + 1)
    return corr / weight.flatten(2).sum(2).clamp_min(1e-6)[..., None, None]


class ScaleMatcher(nn.Module):
    """forward(observed (B, 3, H, W), rendered (B, 3, H, W), rendered_mask (B, 1, H, W)) ->
    (vz (B,), scale_logits (B, S)). Features at stride 4, unit length per cell; ``blocks`` residual blocks
    (dilations 1, 2, 4, 1, ...) after the three plain convolutions widen their view.

    ``renormalise``: bilinear warping averages neighbouring unit features into shorter vectors, except at the
    identity scale, which copies them; so the unwarped candidate correlates best and pulls every answer toward
    no change (session 29: at the true rotation, a true log scale of +-0.02 read as about +-0.01). Scaling each
    warped cell back to unit length removes that pull."""

    def __init__(self, channels: int = 32, scales: int = 21, max_log_scale: float = 0.2, shift: int = 3,
                 blocks: int = 0, renormalise: bool = False) -> None:
        super().__init__()
        if scales < 2 or max_log_scale <= 0 or shift < 0 or blocks < 0:
            raise ValueError("scale matcher: needs scales >= 2, max_log_scale > 0, shift >= 0 and blocks >= 0")
        self.features = matcher_stem(channels)
        self.blocks = nn.Sequential(*(ResidualBlock(channels, 2 ** (i % 3)) for i in range(blocks)))
        self.register_buffer("log_scales", torch.linspace(-max_log_scale, max_log_scale, scales), persistent=False)
        self.shift = shift
        self.renormalise = renormalise
        # softmax temperature of the correlations (in [-1, 1]); learned
        self.log_inv_temp = nn.Parameter(torch.tensor(3.0))

    def forward(self, observed: Tensor, rendered: Tensor, rendered_mask: Tensor) -> tuple[Tensor, Tensor]:
        B = len(observed)
        f = F.normalize(self.blocks(self.features(torch.cat([observed, rendered]))), dim=1)
        fo, fr = f[:B], f[B:]
        h, w = fo.shape[-2:]
        # the silhouette and a ring of one cell around it: the outline is where the scale shows
        m = F.max_pool2d(F.adaptive_avg_pool2d(rendered_mask, (h, w)), 3, 1, 1)
        S = len(self.log_scales)
        # in float32 even under autocast: the candidates' correlations differ by ~1e-2, about bfloat16's step
        with torch.autocast(fo.device.type, enabled=False):
            fo, fr, m = fo.float(), fr.float(), m.float()
            grid = scale_grid(self.log_scales.float(), (h, w))  # (S, h, w, 2)
            grid = grid[None].expand(B, -1, -1, -1, -1).reshape(B * S, h, w, 2)
            both = torch.cat([fr, m], 1)[:, None].expand(-1, S, -1, -1, -1).reshape(B * S, -1, h, w)
            warped = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            warped = warped.reshape(B, S, -1, h, w)
            feats = F.normalize(warped[:, :, :-1], dim=2) if self.renormalise else warped[:, :, :-1]
            corr = shifted_correlation(fo, feats, warped[:, :, -1:], self.shift)  # (B, S, k, k)
            logits = torch.logsumexp(corr.flatten(2) * self.log_inv_temp.exp(), -1)  # soft max over the shifts
            vz = (logits.softmax(-1) * self.log_scales).sum(-1)
        return vz, logits

    def bin_loss(self, logits: Tensor, vz_true: Tensor) -> Tensor:
        """Cross-entropy of the scale logits (B, S) against the true log scale (B,), split between its two
        nearest candidates (clamped to the searched range). The expected-value readout alone trains slowly
        from scratch: its gradient spreads over every candidate; this one points at the right one."""
        ls = self.log_scales.to(logits.dtype)
        pos = (vz_true.to(logits.dtype).clamp(ls[0], ls[-1]) - ls[0]) / (ls[1] - ls[0])  # in candidate steps
        index = torch.arange(len(ls), device=logits.device, dtype=logits.dtype)
        target = (1 - (pos[:, None] - index).abs()).clamp_min(0)
        return -(target * logits.log_softmax(-1)).sum(-1).mean()
