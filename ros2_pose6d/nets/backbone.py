"""ResNet-18/34/50 written here (no torchvision), returning the stride-8/16/32 feature maps that the
deformable transformer and the NeMo feature net consume. Width and normalisation are configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


@dataclass
class BackboneConfig:
    """depth 18 | 34 | 50; base_width 64 is the standard ResNet (smaller for tiny configs); norm
    'group' trains with the small batches of pose training, 'batch' matches the original."""

    depth: Literal[18, 34, 50] = 18
    base_width: int = 64
    norm: Literal["batch", "group"] = "group"
    in_channels: int = 3


def _norm(kind: str, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if kind == "batch" else nn.GroupNorm(min(32, c // 4) or 1, c)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = _norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = _norm(norm, width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = _norm(norm, cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """forward(x (B, C_in, H, W)) -> [C2 (stride 4), C3 (stride 8), C4 (stride 16), C5 (stride 32)];
    ``channels`` lists their channel counts."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        kind, blocks = LAYERS[cfg.depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        w = cfg.base_width
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, w, 7, 2, 3, bias=False), _norm(cfg.norm, w),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.ModuleList()
        cin = w
        self.channels = []
        for i, n in enumerate(blocks):
            width = w * 2**i
            layers = []
            for j in range(n):
                layers.append(block(cin, width, 2 if (j == 0 and i > 0) else 1, cfg.norm))
                cin = width * block.expansion
            self.stages.append(nn.Sequential(*layers))
            self.channels.append(cin)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_images(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> zero-mean unit-variance per channel (the usual image statistics)."""
    mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images.new_tensor(IMAGENET_STD)[:, None, None]
    return (images - mean) / std
