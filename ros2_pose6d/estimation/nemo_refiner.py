"""NeMo refinement stage: zoom in on each object, extract unit features once, then optimise the pose
(axis-angle update on the rotation and an offset on the translation) with Adam so that the rendered
neural-mesh features explain the image better than clutter; several rotated starting poses optionally,
and the best rotations of a global search (NeMo's initialisation), keeping the best. Outputs the pose, an
occlusion map and the visibility it implies, and the final loss."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from ros2_pose6d.config import build_config
from ros2_pose6d.estimation.nemo_core import NeuralMeshes, clutter_score, feature_intrinsics, render_compare
from ros2_pose6d.estimation.refine_common import (
    NOT_REFINED,
    OCCLUSION_MAP,
    frame_tensor,
    paste_crop_mask,
    screen_estimates,
)
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.estimation.zoom import zoom_window
from ros2_pose6d.geometry.camera import crop_resize, crop_resize_intrinsics
from ros2_pose6d.geometry.rotations import axis_angle_to_matrix, rotation_grid
from ros2_pose6d.nets.backbone import normalise_images
from ros2_pose6d.nets.checkpoint import CheckpointError, load_weights, read_model_config
from ros2_pose6d.nets.nemo import NemoConfig, NemoModel
from ros2_pose6d.objects.registry import ObjectRegistry

ARCH = "nemo"


def hypothesis_rotations(n: int, device: torch.device) -> Tensor:
    """(n, 3, 3) camera-frame rotations applied to the start pose: identity, then +-30 deg about z, x, y."""
    axes = [(0, 0, 1), (0, 0, -1), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0)]
    out = [torch.eye(3, device=device)]
    for a in axes[: max(0, n - 1)]:
        out.append(axis_angle_to_matrix(torch.tensor(a, dtype=torch.float32, device=device) * math.radians(30)))
    return torch.stack(out[:n])


def rotation_prior(m: Tensor, outlier: float) -> Tensor:
    """-log((1 - p) exp(-m / 2) + p) of the squared Mahalanobis distance m of a rotation from the given one:
    m / 2 near it (p = 0: everywhere), levelling off at -log(p) far from it (an outlier share p of starts
    whose rotation is wrong, uniform over SO(3)). Zero at m = 0."""
    if outlier <= 0.0:
        return 0.5 * m
    return -torch.logaddexp(math.log1p(-outlier) - 0.5 * m, torch.full_like(m, math.log(outlier)))


class NemoRefiner:
    visibility_source = OCCLUSION_MAP

    def __init__(self, model: NemoModel, registry: ObjectRegistry, device: str | torch.device = "cpu",
                 meshes: NeuralMeshes | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg: NemoConfig = model.cfg
        self.registry = registry
        outlier = self.cfg.prior_rotation_outlier
        if not 0.0 <= outlier < 1.0:
            raise ValueError(f"model.prior_rotation_outlier: {outlier} is not a share in [0, 1)")
        for key in ("search_rotations", "search_keep"):  # 0 turns the search off; a negative count is a typo
            if getattr(self.cfg, key) < 0:
                raise ValueError(f"model.{key}: {getattr(self.cfg, key)} is negative")
        self.meshes = meshes or NeuralMeshes(registry, self.cfg.mesh_vertices, self.device)
        if self.meshes.num_vertices != model.bank.vertex_features.shape[0]:
            raise ValueError(f"the weights hold features for {model.bank.vertex_features.shape[0]} vertices but the "
                             f"object set's neural meshes have {self.meshes.num_vertices}: other objects?")

    @classmethod
    def from_weights(cls, path: str | Path, registry: ObjectRegistry,
                     device: str | torch.device = "cpu") -> NemoRefiner:
        cfg = build_config(NemoConfig, read_model_config(path, ARCH), prefix="model")
        meshes = NeuralMeshes(registry, cfg.mesh_vertices, device)
        with safe_open(str(path), framework="pt") as f:
            stored = f.get_slice("bank.vertex_features").get_shape()[0]
        if stored != meshes.num_vertices:
            raise CheckpointError(f"{path}: NeMo weights for another object set (features for {stored} vertices, "
                                  f"this set's neural meshes have {meshes.num_vertices})")
        model = NemoModel(cfg, meshes.num_vertices)
        load_weights(path, model, ARCH)
        return cls(model, registry, device, meshes)

    def crops(self, images: Tensor, K: Tensor, mesh_idx: Tensor, R: Tensor, t: Tensor,
              est_boxes: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Zoom windows (N, 4), crops (N, 3, H, W) and crop intrinsics (N, 3, 3) around the start poses."""
        pts = self.meshes.extent_points(mesh_idx)
        windows = zoom_window(pts, R, t, K, est_boxes, self.cfg.input_size, self.cfg.zoom_scale)
        return windows, crop_resize(images, windows, self.cfg.input_size), crop_resize_intrinsics(K, windows,
                                                                                                 self.cfg.input_size)

    @torch.no_grad()
    def search_rotations(self, features: Tensor, clutter_log: Tensor, K_feat: Tensor, mesh_idx: Tensor,
                         t0: Tensor, count: int, keep: int) -> Tensor:
        """NeMo's initialisation: the data term of ``count`` rotations spread over SO(3) at the translations
        t0 (N, 3); returns the ``keep`` best per instance, best first (keep, N, 3, 3)."""
        N = len(mesh_idx)
        grid = rotation_grid(count).to(self.device)
        chunk = max(1, 512 // N)  # instances rendered at once, to bound the memory
        scores = []
        for g in grid.split(chunk):
            c = len(g)
            R = g[:, None].expand(c, N, 3, 3).reshape(c * N, 3, 3)
            loss, _, _ = render_compare(self.meshes, self.model.bank.vertex_features, features.repeat(c, 1, 1, 1),
                                        clutter_log.repeat(c, 1, 1), mesh_idx.repeat(c), R, t0.repeat(c, 1),
                                        K_feat.repeat(c, 1, 1), self.cfg.temperature)
            scores.append(loss.view(c, N))
        best = torch.cat(scores).topk(min(keep, count), dim=0, largest=False).indices  # (keep, N)
        return grid[best]

    def optimise(self, features: Tensor, K_feat: Tensor, mesh_idx: Tensor, R0: Tensor, t0: Tensor,
                 steps: int, hypotheses: int):
        """Gradient descent from (R0, t0) (N, ...), its rotated starts and the best rotations of the global
        search (``search_rotations``); returns the best R, t (lowest loss plus prior), the loss (N,) there
        (the data term alone: the fit error), occlusion map and rendered mask (N, h, w) at the best pose."""
        N = len(mesh_idx)
        bank = self.model.bank
        clutter_one = clutter_score(features, bank.clutter, self.cfg.temperature).detach()
        local = hypothesis_rotations(max(1, hypotheses), self.device)  # (Hl, 3, 3)
        Rs = (local[:, None] @ R0[None]).reshape(-1, 3, 3)
        if self.cfg.search_rotations > 0 and self.cfg.search_keep > 0:
            found = self.search_rotations(features, clutter_one, K_feat, mesh_idx, t0, self.cfg.search_rotations,
                                          self.cfg.search_keep)
            Rs = torch.cat([Rs, found.reshape(-1, 3, 3)])
        Hn = len(Rs) // N
        R0_all = R0.repeat(Hn, 1, 1)
        ts = t0.repeat(Hn, 1)
        idx = mesh_idx.repeat(Hn)
        feats = features.repeat(Hn, 1, 1, 1)
        Kf = K_feat.repeat(Hn, 1, 1)
        clutter_log = clutter_one.repeat(Hn, 1, 1)
        omega = torch.zeros(Hn * N, 3, device=self.device, requires_grad=True)
        delta = torch.zeros(Hn * N, 3, device=self.device, requires_grad=True)
        opt = torch.optim.Adam([{"params": [omega], "lr": self.cfg.lr_rotation},
                                {"params": [delta], "lr": self.cfg.lr_translation}])
        sigma_r = math.radians(self.cfg.prior_sigma_rotation_deg)
        sigma_t = torch.tensor(self.cfg.prior_sigma_translation, device=self.device)
        best_loss = torch.full((Hn * N,), float("inf"), device=self.device)
        best_R, best_t = Rs.clone(), ts.clone()
        alive = torch.ones(Hn * N, dtype=torch.bool, device=self.device)
        z_min = 0.5 * ts[:, 2]
        for _ in range(steps + 1):
            with torch.no_grad():  # a hypothesis that went non-finite or too close stops where it was
                sane = (torch.isfinite(omega).all(1) & torch.isfinite(delta).all(1)
                        & ((ts[:, 2] + delta[:, 2]) > z_min))
                alive &= sane
                omega[~sane] = 0.0
                delta[~sane] = 0.0
            R = axis_angle_to_matrix(omega) @ Rs
            t = ts + delta
            loss, _, _ = render_compare(self.meshes, bank.vertex_features, feats, clutter_log, idx, R, t, Kf,
                                        self.cfg.temperature)
            if self.cfg.prior_weight > 0:  # distance from the given pose (a rotated start is already off it);
                # |R - R0|_F^2 = 4 (1 - cos angle) ~ 2 angle^2, smooth at 0 where the angle's gradient is not
                rot_sq = (R - R0_all).square().flatten(1).sum(1) / 2
                prior = rotation_prior(rot_sq / sigma_r**2, self.cfg.prior_rotation_outlier)
                loss = loss + self.cfg.prior_weight * (prior + 0.5 * (delta / sigma_t).square().sum(1))
            with torch.no_grad():
                better = alive & torch.isfinite(loss) & (loss < best_loss)
                best_loss = torch.where(better, loss, best_loss)
                best_R = torch.where(better[:, None, None], R, best_R)
                best_t = torch.where(better[:, None], t, best_t)
            opt.zero_grad()
            (loss * alive).sum().backward()
            opt.step()
        best_loss = best_loss.view(Hn, N)
        pick = best_loss.argmin(0)
        sel = pick * N + torch.arange(N, device=self.device)
        with torch.no_grad():
            loss, occluded, mask = render_compare(self.meshes, bank.vertex_features, features, clutter_one,
                                                  mesh_idx, best_R[sel], best_t[sel], K_feat, self.cfg.temperature)
        return best_R[sel], best_t[sel], loss, occluded, mask

    def refine_tensors(self, images: Tensor, K: Tensor, mesh_idx: Tensor, R: Tensor, t: Tensor,
                       est_boxes: Tensor | None, steps: int | None = None, hypotheses: int | None = None):
        """Batched core. Returns R, t, loss (N,), visibility (N,), occlusion (N, h, w) bool, windows (N, 4)."""
        steps = self.cfg.steps if steps is None else steps
        hypotheses = self.cfg.hypotheses if hypotheses is None else hypotheses
        windows, crops, Kc = self.crops(images, K, mesh_idx, R, t, est_boxes)
        with torch.no_grad():
            features = self.model(normalise_images(crops)).permute(0, 2, 3, 1)
        Kf = feature_intrinsics(Kc, self.cfg.input_size, self.cfg.stride)
        with torch.enable_grad():
            R2, t2, loss, occluded, mask = self.optimise(features, Kf, mesh_idx, R, t, steps, hypotheses)
        fg = mask.flatten(1).sum(1)
        visibility = 1 - occluded.flatten(1).sum(1) / fg.clamp_min(1)
        visibility = torch.where(fg > 0, visibility, torch.zeros_like(visibility))
        return R2.detach(), t2.detach(), loss.detach(), visibility, occluded, windows

    def refine(self, frame: Frame, estimates: list[PoseEstimate], steps: int | None = None) -> list[PoseEstimate]:
        """Refined copies of ``estimates`` with visibility from the occlusion map, fit_error = final loss and
        the occlusion map (full-image bool) in ``occlusion``; unrefinable ones unchanged with the reason."""
        usable, results = screen_estimates(frame, estimates, self.registry)
        if not usable:
            return results
        dev = self.device
        idx = torch.tensor([self.registry.index(estimates[i].object_id) for i in usable], device=dev)
        R = torch.as_tensor(np.stack([estimates[i].R for i in usable]), dtype=torch.float32, device=dev)
        t = torch.as_tensor(np.stack([estimates[i].t for i in usable]), dtype=torch.float32, device=dev)
        boxes = torch.as_tensor(np.stack([estimates[i].bbox_xyxy for i in usable]), dtype=torch.float32, device=dev)
        n = len(usable)
        K = torch.tensor(np.asarray(frame.K), dtype=torch.float32, device=dev).expand(n, 3, 3).contiguous()
        has_box = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        img = frame_tensor(frame, dev).expand(n, -1, -1, -1)
        est = torch.where(has_box[:, None], boxes, torch.full_like(boxes, float("nan")))  # NaN: no estimate
        R2, t2, loss, vis, occ, windows = self.refine_tensors(img, K, idx, R, t, est, steps)
        hw = frame.image.shape[:2]
        for k, i in enumerate(usable):
            e = estimates[i]
            ok = bool(torch.isfinite(R2[k]).all() and torch.isfinite(t2[k]).all() and t2[k, 2] > 0.02)
            if not ok:
                results[i] = replace(e, notes=[*e.notes, NOT_REFINED + "optimisation diverged"])
                continue
            occlusion = paste_crop_mask(occ[k].cpu().numpy(), windows[k].cpu().numpy(), hw)
            results[i] = replace(e, R=R2[k].double().cpu().numpy(), t=t2[k].double().cpu().numpy(), stage="refined",
                                 iterations=self.cfg.steps if steps is None else steps, fit_error=float(loss[k]),
                                 visibility=float(vis[k]), occlusion=occlusion)
        return results
