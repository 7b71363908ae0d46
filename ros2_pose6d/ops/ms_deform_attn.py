"""Multi-scale deformable attention (Deformable-DETR), in five layers: the csrc kernels, the C++
dispatcher, a private autograd Function, the public typed function and the ``MSDeformAttn`` module.

Shapes (N batch, S flattened positions over all levels, M heads, D channels per head, L levels,
Lq queries, P points per level and head):
  value               (N, S, M, D)      float32/float64 (half/bfloat16 are computed in float32)
  spatial_shapes      (L, 2) int64      (H_l, W_l) of every level, sum of H_l * W_l == S
  level_start_index   (L,) int64        offset of each level in S
  sampling_locations  (N, Lq, M, L, P, 2) normalised (x, y) in [0, 1]; (0, 0) is the top-left corner
                      of the top-left pixel, pixel centres sit at (i + 0.5) / W_l
  attention_weights   (N, Lq, M, L, P)  (softmax over L * P in the module)
  output              (N, Lq, M * D)
Samples outside a level read zeros (bilinear, zero padding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ros2_pose6d._ext import extension_for


def ms_deform_attn_reference(value: Tensor, spatial_shapes: Tensor, sampling_locations: Tensor,
                             attention_weights: Tensor) -> Tensor:
    """Pure-PyTorch multi-scale deformable attention with ``grid_sample``: fallback and test oracle."""
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_levels = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] with align_corners=False
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_levels[lvl].flatten(2).transpose(1, 2).reshape(N * M, D, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (N*M, D, Lq, L, P) weighted by (N*M, 1, Lq, L, P)
    stacked = torch.stack(sampled, dim=-2)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L, P)
    out = (stacked * weights).sum(dim=(-1, -2)).view(N, M * D, Lq)
    return out.transpose(1, 2).contiguous()


class _MSDeformAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                im2col_step, ext):
        ctx.im2col_step = im2col_step
        ctx.ext = ext
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights, im2col_step)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.ext.ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            grad_output.contiguous(), ctx.im2col_step)
        grad_shapes = grad_start = grad_step = grad_ext = None
        return grad_value, grad_shapes, grad_start, grad_locations, grad_weights, grad_step, grad_ext


def _validate(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
              attention_weights: Tensor) -> None:
    """Raise ValueError with the offending shape before anything reaches a kernel."""
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations must be (N, Lq, M, L, P, 2), got {tuple(sampling_locations.shape)}")
    if attention_weights.shape != sampling_locations.shape[:5]:
        raise ValueError(f"attention_weights {tuple(attention_weights.shape)} must equal "
                         f"sampling_locations.shape[:5] = {tuple(sampling_locations.shape[:5])}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2 or spatial_shapes.dtype != torch.long:
        raise ValueError(f"spatial_shapes must be an int64 (L, 2) tensor, got {spatial_shapes.dtype} "
                         f"{tuple(spatial_shapes.shape)}")
    if level_start_index.shape != spatial_shapes.shape[:1] or level_start_index.dtype != torch.long:
        raise ValueError(f"level_start_index must be int64 (L,) = ({spatial_shapes.shape[0]},), got "
                         f"{level_start_index.dtype} {tuple(level_start_index.shape)}")
    N, S, M, _ = value.shape
    if sampling_locations.shape[0] != N or sampling_locations.shape[2] != M \
            or sampling_locations.shape[3] != spatial_shapes.shape[0]:
        raise ValueError(f"sampling_locations {tuple(sampling_locations.shape)} does not match value "
                         f"{tuple(value.shape)} and {spatial_shapes.shape[0]} levels")
    if not (value.is_floating_point() and sampling_locations.dtype == value.dtype
            and attention_weights.dtype == value.dtype):
        raise ValueError(f"value, sampling_locations and attention_weights must share one floating dtype, got "
                         f"{value.dtype}, {sampling_locations.dtype}, {attention_weights.dtype}")
    devices = {t.device for t in (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    if total != S:
        raise ValueError(f"spatial_shapes sum to {total} positions but value has S = {S}")


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor, im2col_step: int = 64) -> Tensor:
    """Multi-scale deformable attention; shapes in the module docstring. Returns (N, Lq, M * D).

    Runs the compiled kernel for the inputs' device when it exists, else the reference (warned once).
    Half and bfloat16 inputs are computed in float32 and cast back.
    """
    _validate(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    out_dtype = value.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        value, sampling_locations, attention_weights = (
            t.float() for t in (value, sampling_locations, attention_weights))
    ext = extension_for(value.device)
    if ext is None:
        out = ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights)
    else:
        out = _MSDeformAttnFunction.apply(value.contiguous(), spatial_shapes.contiguous(),
                                          level_start_index.contiguous(), sampling_locations.contiguous(),
                                          attention_weights.contiguous(), im2col_step, ext)
    return out.to(out_dtype)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (value/offset/weight projections, Deformable-DETR init).

    Args:
        d_model: channels C of queries and values (divisible by n_heads).
        n_levels: feature levels L. n_heads: heads M. n_points: sampling points P per level and head.
        im2col_step: batch chunk of the CUDA kernel (kept for the standard signature).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 im2col_step: int = 64) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.im2col_step = im2col_step
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring around the reference point: head h looks along angle 2*pi*h/M, and
        point p at distance p + 1 (in pixels of its level); attention starts uniform."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        ring = torch.stack([angles.cos(), angles.sin()], dim=-1)
        ring = ring / ring.abs().max(dim=-1, keepdim=True).values
        ring = ring.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        ring = ring * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1], or (N, Lq, L, 4) boxes
                (cx, cy, w, h) whose size scales the offsets.
            input_flatten: (N, S, C) features of all levels, flattened.
            spatial_shapes: (L, 2) int64. level_start_index: (L,) int64.
            padding_mask: (N, S) bool, True where input_flatten is padding.
        Returns:
            (N, Lq, C).
        """
        N, Lq, _ = query.shape
        _, S, _ = input_flatten.shape
        M, L, P = self.n_heads, self.n_levels, self.n_points
        if spatial_shapes.shape[0] != L:
            raise ValueError(f"module has n_levels={L} but spatial_shapes has {spatial_shapes.shape[0]} levels")
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.d_model // M)
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1).view(N, Lq, M, L, P)
        if reference_points.shape[-1] == 2:
            normaliser = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
            locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points last dim must be 2 or 4, got {reference_points.shape[-1]}")
        out = ms_deform_attn(value, spatial_shapes, level_start_index, locations.to(value.dtype),
                             weights.to(value.dtype), self.im2col_step)
        return self.output_proj(out)
