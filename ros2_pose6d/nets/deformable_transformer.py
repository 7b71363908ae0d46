"""Deformable-DETR transformer on our MSDA op: multi-scale input projection (with an extra level),
encoder of deformable self-attention, decoder of query self-attention + deformable cross-attention,
optional iterative box refinement (each layer's box head moves the next layer's reference boxes)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ros2_pose6d.nets.position_encoding import sine_position_encoding
from ros2_pose6d.ops.ms_deform_attn import MSDeformAttn


@dataclass
class TransformerConfig:
    d_model: int = 256
    n_heads: int = 8
    n_points: int = 4
    n_levels: int = 4  # backbone C3-C5 plus one extra stride-64 level
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 1024
    dropout: float = 0.1
    num_queries: int = 100
    box_refine: bool = True


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class MLP(nn.Module):
    """Linear layers with ReLU between them."""

    def __init__(self, cin: int, hidden: int, cout: int, layers: int) -> None:
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1) + [cout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class _FFN(nn.Module):
    def __init__(self, d: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.drop(self.lin2(self.drop(F.relu(self.lin1(x))))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attn = MSDeformAttn(cfg.d_model, cfg.n_levels, cfg.n_heads, cfg.n_points)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.ffn = _FFN(cfg.d_model, cfg.ffn_dim, cfg.dropout)

    def forward(self, src: Tensor, pos: Tensor, ref: Tensor, shapes: Tensor, starts: Tensor, mask: Tensor) -> Tensor:
        src = self.norm(src + self.drop(self.attn(src + pos, ref, src, shapes, starts, mask)))
        return self.ffn(src)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.cross_attn = MSDeformAttn(cfg.d_model, cfg.n_levels, cfg.n_heads, cfg.n_points)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.ffn = _FFN(cfg.d_model, cfg.ffn_dim, cfg.dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, ref: Tensor, memory: Tensor, shapes: Tensor, starts: Tensor,
                mask: Tensor) -> Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.drop(self.self_attn(q, k, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.drop(self.cross_attn(tgt + query_pos, ref, memory, shapes, starts, mask)))
        return self.ffn(tgt)


class DeformableTransformer(nn.Module):
    """forward(features, masks, box_heads) -> (hs (D, B, Nq, C), references (D, B, Nq, 4) cxcywh in [0, 1]
    used by each layer, pred_boxes (D, B, Nq, 4)).

    ``features``: backbone maps C3..C5 (B, C_l, H_l, W_l); ``masks`` (B, H, W) True at image padding.
    ``box_heads``: one box MLP per decoder layer (shared or not); their deltas refine the references when
    ``box_refine``, otherwise the reference points stay those predicted from the query embedding.
    """

    def __init__(self, cfg: TransformerConfig, in_channels: list[int]) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        gn = lambda: nn.GroupNorm(min(32, d // 4), d)  # noqa: E731
        projs = [nn.Sequential(nn.Conv2d(c, d, 1), gn()) for c in in_channels]
        cin = in_channels[-1]
        for _ in range(cfg.n_levels - len(in_channels)):  # extra levels: strided 3x3 convs on the last map
            projs.append(nn.Sequential(nn.Conv2d(cin, d, 3, 2, 1), gn()))
            cin = d
        self.input_proj = nn.ModuleList(projs)
        self.level_embed = nn.Parameter(torch.randn(cfg.n_levels, d) * 0.02)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.query_embed = nn.Embedding(cfg.num_queries, 2 * d)  # positional part + content part
        self.reference = nn.Linear(d, 2)
        nn.init.xavier_uniform_(self.reference.weight, gain=1.0)
        nn.init.zeros_(self.reference.bias)

    def _levels(self, features: list[Tensor], image_mask: Tensor):
        srcs, masks, pos = [], [], []
        x = features[-1]
        for lvl, proj in enumerate(self.input_proj):
            s = proj(features[lvl]) if lvl < len(features) else proj(x if lvl == len(features) else srcs[-1])
            m = F.interpolate(image_mask[None].float(), size=s.shape[-2:])[0].bool()
            srcs.append(s)
            masks.append(m)
            enc = sine_position_encoding(m, self.cfg.d_model // 2).to(s.dtype)
            pos.append(enc + self.level_embed[lvl][:, None, None])
        return srcs, masks, pos

    @staticmethod
    def _encoder_reference(shapes: Tensor, valid: Tensor, device) -> Tensor:
        """Centres of every position of every level, normalised by the valid extent: (B, S, L, 2)."""
        refs = []
        for lvl, (H, W) in enumerate(shapes.tolist()):
            ys, xs = torch.meshgrid(torch.linspace(0.5, H - 0.5, H, device=device),
                                    torch.linspace(0.5, W - 0.5, W, device=device), indexing="ij")
            ref_y = ys.reshape(1, -1) / (valid[:, None, lvl, 1] * H)
            ref_x = xs.reshape(1, -1) / (valid[:, None, lvl, 0] * W)
            refs.append(torch.stack([ref_x, ref_y], -1))
        ref = torch.cat(refs, 1)
        return ref[:, :, None] * valid[:, None]

    def forward(self, features: list[Tensor], image_mask: Tensor, box_heads: nn.ModuleList):
        srcs, masks, pos = self._levels(features, image_mask)
        shapes = torch.as_tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=srcs[0].device)
        starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        mask = torch.cat([m.flatten(1) for m in masks], 1)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1)
        # valid ratio of each level (padding on the right/bottom for batched images of different size)
        valid = torch.stack([torch.stack([(~m[:, 0, :]).float().sum(1) / m.shape[2],
                                          (~m[:, :, 0]).float().sum(1) / m.shape[1]], -1) for m in masks], 1)
        enc_ref = self._encoder_reference(shapes, valid, src.device)
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pos_flat, enc_ref, shapes, starts, mask)
        B = src.shape[0]
        query_pos, tgt = self.query_embed.weight.split(self.cfg.d_model, dim=1)
        query_pos = query_pos[None].expand(B, -1, -1)
        tgt = tgt[None].expand(B, -1, -1)
        ref = self.reference(query_pos).sigmoid()  # (B, Nq, 2) centre; initial size from the first box head
        ref = torch.cat([ref, torch.full_like(ref, 0.1)], -1)
        hs, refs, boxes = [], [], []
        for layer, head in zip(self.decoder, box_heads):
            ref_in = ref[:, :, None] * torch.cat([valid, valid], -1)[:, None]
            tgt = layer(tgt, query_pos, ref_in, memory, shapes, starts, mask)
            box = (head(tgt) + inverse_sigmoid(ref)).sigmoid()
            hs.append(tgt)
            refs.append(ref)
            boxes.append(box)
            if self.cfg.box_refine:
                ref = box.detach()
        return torch.stack(hs), torch.stack(refs), torch.stack(boxes)
