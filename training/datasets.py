"""Datasets over BOP splits (synthetic or real) for detector and refiner training.

Detection samples: the image resized to the network input, its K, and per visible instance the class
index, normalised visible box (cxcywh), pose and visib_fract. Refiner samples: one annotated instance
(image, K, pose, object class) that the refiner's training step perturbs and renders itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ros2_pose6d.geometry.camera import crop_resize_intrinsics
from ros2_pose6d.io.bop import BopScene, read_bop_split
from ros2_pose6d.objects.registry import ObjectRegistry


class EmptyDatasetError(ValueError):
    """A dataset with no usable samples; the message says where it looked."""


def read_splits(split_dirs: str | Sequence[str]) -> list[BopScene]:
    """The scenes of one BOP split folder or of several (e.g. two ``pose6d-generate`` runs with different
    backgrounds), in the order given."""
    dirs = [split_dirs] if isinstance(split_dirs, (str, Path)) else list(split_dirs)
    if not dirs:
        raise EmptyDatasetError("no training split given")
    return [scene for d in dirs for scene in read_bop_split(d, load_depth=False)]


def _index(scenes: list[BopScene], registry: ObjectRegistry, min_visib: float) -> list[tuple[int, int]]:
    ids = set(registry.ids)
    items = []
    for si, scene in enumerate(scenes):
        for im_id in scene.im_ids:
            gts = scene.gt.get(str(im_id), [])
            infos = scene.info.get(str(im_id), [])
            if any(int(g["obj_id"]) in ids and (not infos or infos[i].get("visib_fract", 1.0) >= min_visib)
                   for i, g in enumerate(gts)):
                items.append((si, im_id))
    return items


def photometric_jitter(img: Tensor, gen: torch.Generator, strength: float) -> Tensor:
    """Brightness/contrast/per-channel gain on (3, H, W) in [0, 1]."""
    if strength <= 0:
        return img
    r = torch.rand(5, generator=gen) * 2 - 1
    img = img * (1 + 0.5 * strength * r[0])
    mean = img.mean()
    img = (img - mean) * (1 + 0.5 * strength * r[1]) + mean
    img = img * (1 + 0.2 * strength * r[2:5])[:, None, None]
    return img.clamp(0, 1)


@dataclass
class DetectionSample:
    image: Tensor  # (3, H, W) in [0, 1]
    K: Tensor  # (3, 3) of the resized image
    target: dict[str, Tensor]  # labels (T,), boxes (T, 4) cxcywh normalised, R (T, 3, 3), t (T, 3), visib (T,)
    key: tuple[int, int]


class DetectionDataset(Dataset):
    def __init__(self, split_dir: str | Sequence[str], registry: ObjectRegistry, image_size: tuple[int, int],
                 min_visib: float = 0.1, jitter: float = 0.0, seed: int = 0) -> None:
        self.scenes = read_splits(split_dir)
        self.registry, self.image_size = registry, image_size
        self.min_visib, self.jitter, self.seed = min_visib, jitter, seed
        self.items = _index(self.scenes, registry, min_visib)
        if not self.items:
            raise EmptyDatasetError(f"{split_dir}: no image shows an object of the set with visib_fract >= {min_visib}")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> DetectionSample:
        si, im_id = self.items[i]
        frame = self.scenes[si].frame(im_id)
        H, W = self.image_size
        h, w = frame.rgb.shape[:2]
        img = torch.as_tensor(frame.rgb).permute(2, 0, 1).float()[None] / 255.0
        if (h, w) != (H, W):
            img = F.interpolate(img, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + i)
        img = photometric_jitter(img[0], gen, self.jitter)
        full = torch.tensor([-0.5, -0.5, w - 0.5, h - 0.5], dtype=torch.float64)
        K = crop_resize_intrinsics(torch.as_tensor(frame.K), full, (H, W)).float()
        labels, boxes, Rs, ts, vis = [], [], [], [], []
        for g in frame.gt:
            if g.obj_id not in self.registry.ids:
                continue
            v = 1.0 if g.visib_fract is None else g.visib_fract
            if v < self.min_visib or g.bbox_visib is None or g.bbox_visib[2] <= 0:
                continue
            x, y, bw, bh = g.bbox_visib
            boxes.append([(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h])
            labels.append(self.registry.index(g.obj_id))
            Rs.append(g.R)
            ts.append(g.t)
            vis.append(v)
        target = {"labels": torch.tensor(labels, dtype=torch.long),
                  "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "R": torch.tensor(np.array(Rs), dtype=torch.float32).reshape(-1, 3, 3),
                  "t": torch.tensor(np.array(ts), dtype=torch.float32).reshape(-1, 3),
                  "visib": torch.tensor(vis, dtype=torch.float32)}
        return DetectionSample(img, K, target, (self.scenes[si].scene_id, im_id))


def collate_detection(samples: list[DetectionSample]) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    return (torch.stack([s.image for s in samples]), torch.stack([s.K for s in samples]),
            [s.target for s in samples])


@dataclass
class InstanceSample:
    image: Tensor  # (3, H, W) in [0, 1], full frame
    K: Tensor  # (3, 3)
    label: int  # class index in the registry
    R: Tensor  # (3, 3)
    t: Tensor  # (3,)
    visib: float
    mask_visib: Tensor | None = None  # (H, W) bool: the object's visible pixels (with load_masks)


class InstanceDataset(Dataset):
    """Every annotated instance with visib_fract >= min_visib, for the refiners; with ``load_masks`` also its
    visible mask (``mask_visib/``, which must then exist)."""

    def __init__(self, split_dir: str | Sequence[str], registry: ObjectRegistry, min_visib: float = 0.2,
                 jitter: float = 0.0, seed: int = 0, load_masks: bool = False) -> None:
        self.scenes = read_splits(split_dir)
        for scene in self.scenes:
            scene.load_masks = load_masks
            if load_masks and not (scene.dir / "mask_visib").is_dir():
                raise EmptyDatasetError(f"{scene.dir}: no mask_visib/ folder, whose visible masks this training "
                                        "needs (model.flow_matcher)")
        self.registry, self.jitter, self.seed = registry, jitter, seed
        self.items = []
        for si, scene in enumerate(self.scenes):
            for im_id in scene.im_ids:
                infos = scene.info.get(str(im_id), [])
                for k, g in enumerate(scene.gt.get(str(im_id), [])):
                    v = infos[k].get("visib_fract", 1.0) if k < len(infos) else 1.0
                    if int(g["obj_id"]) in registry.ids and v >= min_visib:
                        self.items.append((si, im_id, k))
        if not self.items:
            raise EmptyDatasetError(f"{split_dir}: no instance of the object set with visib_fract >= {min_visib}")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> InstanceSample:
        si, im_id, k = self.items[i]
        frame = self.scenes[si].frame(im_id)
        g = frame.gt[k]
        img = torch.as_tensor(frame.rgb).permute(2, 0, 1).float() / 255.0
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + i)
        img = photometric_jitter(img, gen, self.jitter)
        mask = None
        if self.scenes[si].load_masks:
            if g.mask_visib is None:
                raise EmptyDatasetError(f"{self.scenes[si].dir}: no mask_visib/{im_id:06d}_{k:06d}.png, whose "
                                        "visible mask this training needs (model.flow_matcher)")
            mask = torch.as_tensor(g.mask_visib)
        return InstanceSample(img, torch.as_tensor(frame.K, dtype=torch.float32), self.registry.index(g.obj_id),
                              torch.as_tensor(g.R, dtype=torch.float32), torch.as_tensor(g.t, dtype=torch.float32),
                              1.0 if g.visib_fract is None else g.visib_fract, mask)


def collate_instances(samples: list[InstanceSample]) -> dict[str, Tensor]:
    return {"image": torch.stack([s.image for s in samples]), "K": torch.stack([s.K for s in samples]),
            "label": torch.tensor([s.label for s in samples]), "R": torch.stack([s.R for s in samples]),
            "t": torch.stack([s.t for s in samples]), "visib": torch.tensor([s.visib for s in samples]),
            **({"mask_visib": torch.stack([s.mask_visib for s in samples])} if samples[0].mask_visib is not None
               else {})}
