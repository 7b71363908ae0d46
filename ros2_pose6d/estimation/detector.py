"""Detector stage: frames in, PoseEstimates out (class, box, 6D pose, visibility), one network pass
for all objects and instances. No ROS here; the node and the replay both call ``detect``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ros2_pose6d.config import build_config
from ros2_pose6d.estimation.model_set import ModelSet, build_model_set
from ros2_pose6d.estimation.types import Frame, FrameError, PoseEstimate, validate_frame
from ros2_pose6d.geometry.boxes import cxcywh_to_xyxy, suppress_duplicates
from ros2_pose6d.geometry.camera import crop_resize_intrinsics
from ros2_pose6d.nets.backbone import normalise_images
from ros2_pose6d.nets.checkpoint import load_weights
from ros2_pose6d.nets.smope import SmopeConfig, SmopeNet, decode_poses
from ros2_pose6d.objects.registry import ObjectRegistry

ARCH = "smope"


def frames_to_batch(frames: list[Frame], image_size: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Resize RGB frames to the network input (H, W) -> images (B, 3, H, W) in [0, 1] and their K (B, 3, 3)."""
    H, W = image_size
    imgs, Ks = [], []
    for f in frames:
        validate_frame(f)
        img = torch.as_tensor(f.image, device=device).permute(2, 0, 1).float()[None] / 255.0
        h, w = f.image.shape[:2]
        if (h, w) != (H, W):
            img = F.interpolate(img, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
        imgs.append(img[0])
        K = torch.tensor(np.asarray(f.K, np.float64), dtype=torch.float32, device=device)
        full = torch.tensor([-0.5, -0.5, w - 0.5, h - 0.5], device=device)
        Ks.append(crop_resize_intrinsics(K, full, (H, W)))
    return torch.stack(imgs), torch.stack(Ks)


class Detector:
    """SMOPE detector over an object set.

    Args:
        net: the network (its config fixes the input size). registry: the object set (class order).
        score_threshold: keep every (query, class) pair whose class probability reaches it.
        max_detections: per frame, best first.
        nms_iou: drop a detection overlapping a better one of the same object by more than this box IoU
            (duplicates of an undertrained detector); 1 keeps every detection.
    """

    def __init__(self, net: SmopeNet, registry: ObjectRegistry, device: str | torch.device = "cpu",
                 score_threshold: float = 0.5, max_detections: int = 50, model_set: ModelSet | None = None,
                 nms_iou: float = 0.7) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.registry = registry
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        if not nms_iou >= 0.0:
            raise ValueError(f"nms_iou must be >= 0 (1 keeps every detection), got {nms_iou}")
        self.nms_iou = nms_iou
        self.models = (model_set or build_model_set(registry, net.cfg.points.num_points)).to(self.device)
        if len(self.models.obj_ids) == 0:
            raise ValueError("the detector needs at least one object model")
        with torch.no_grad():
            self.latents = self.net.encode_models(self.models.model_points)

    @classmethod
    def from_weights(cls, path: str | Path, registry: ObjectRegistry, device: str | torch.device = "cpu",
                     **kwargs) -> Detector:
        from ros2_pose6d.nets.checkpoint import read_model_config
        net = SmopeNet(build_config(SmopeConfig, read_model_config(path, ARCH), prefix="model"))
        load_weights(path, net, ARCH)
        return cls(net, registry, device, **kwargs)

    @torch.no_grad()
    def detect_batch(self, frames: list[Frame]) -> list[list[PoseEstimate]]:
        """One list of PoseEstimates (stage 'detected', pose in each frame's camera) per frame.
        Raises FrameError for a frame the network cannot take, and for non-finite network output."""
        if not frames:
            return []
        cfg = self.net.cfg
        images, K_net = frames_to_batch(frames, cfg.image_size, self.device)
        out = self.net(normalise_images(images), latents=self.latents)
        last = {k: v[-1] for k, v in out.items()}
        R, t = decode_poses(last["boxes"], last["rot6d"], last["centre"], last["log_depth"], K_net, cfg.image_size)
        prob = last["logits"].softmax(-1)[..., :-1]
        results = []
        for b, frame in enumerate(frames):
            # Every (query, class) pair reaching the threshold is a hypothesis, as in Deformable DETR's
            # post-processing: a query unsure between two look-alikes names both. Under the softmax at most
            # one class of a query can pass a threshold above 0.5, so deployment thresholds see no change.
            queries, labels = torch.nonzero(prob[b] >= self.score_threshold, as_tuple=True)
            finite = (torch.isfinite(R[b, queries]).flatten(1).all(1) & torch.isfinite(t[b, queries]).all(1)
                      & torch.isfinite(last["boxes"][b, queries]).all(1))
            if not bool(finite.all()):
                raise FrameError("detector produced non-finite poses (NaN/inf); frame rejected")
            z = t[b, queries, 2]
            usable = (z > 0.0) & (z < 100.0)  # behind the camera or absurdly far: not a usable hypothesis
            queries, labels = queries[usable], labels[usable]
            scores = prob[b, queries, labels]
            order = suppress_duplicates(cxcywh_to_xyxy(last["boxes"][b, queries]), scores, labels, self.nms_iou)
            order = order[: self.max_detections]
            h, w = frame.image.shape[:2]
            counts: dict[int, int] = {}
            dets = []
            for q, label, score in zip(queries[order].tolist(), labels[order].tolist(), scores[order].tolist()):
                cx, cy, bw, bh = last["boxes"][b, q].tolist()
                box = np.array([(cx - bw / 2) * w - 0.5, (cy - bh / 2) * h - 0.5,
                                (cx + bw / 2) * w - 0.5, (cy + bh / 2) * h - 0.5])
                obj_id = self.models.obj_ids[label]
                inst = counts.get(obj_id, 0)
                counts[obj_id] = inst + 1
                dets.append(PoseEstimate(obj_id, R[b, q].double().cpu().numpy(), t[b, q].double().cpu().numpy(),
                                         score, inst, box, float(last["visibility"][b, q]), "detected"))
            results.append(dets)
        return results

    def detect(self, frame: Frame) -> list[PoseEstimate]:
        return self.detect_batch([frame])[0]
