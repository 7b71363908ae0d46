"""DeepIM refinement stage: render at the current pose, zoom in on observed and rendered, predict the
relative pose, update, repeat; batched over all objects of a frame. Estimates that cannot be refined
(behind the camera, off the image, nothing rendered, diverging) come back unrefined with the reason. With
the flow matcher's occlusion head the refined estimates also carry a visibility and an occlusion map."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ros2_pose6d.config import build_config
from ros2_pose6d.estimation.flow_pose import cell_points, pose_from_flow
from ros2_pose6d.estimation.model_set import ModelSet, build_model_set
from ros2_pose6d.estimation.refine_common import SEEN_SHARE, frame_tensor, paste_crop_mask, screen_estimates
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.estimation.zoom import ZoomedPair, projected_boxes, zoom_in
from ros2_pose6d.geometry.deepim_update import apply_update
from ros2_pose6d.geometry.rotations import geodesic_angle
from ros2_pose6d.nets.backbone import normalise_images
from ros2_pose6d.nets.checkpoint import load_weights, read_model_config
from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.render.rasterize import RasterSettings
from ros2_pose6d.render.renderer import MeshRenderer

ARCH = "deepim"
OCCLUDER_MARGIN_M = 0.005  # another object hides a pixel when rendered this much nearer


def crop_focal(K_crop: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Focal lengths of the crop in crop widths/heights (N, 2): the unit of DeepIM's (vx, vy) here, so the
    network's translation output is independent of the crop resolution."""
    h, w = out_hw
    return torch.stack([K_crop[:, 0, 0] / w, K_crop[:, 1, 1] / h], -1)


class FrameObjects(NamedTuple):
    """All N objects being refined, for ``mutual_occlusion``: mesh_idx (N,), their current R (N, 3, 3) and t (N, 3),
    the group (frame) of each (N,): objects hide only objects of their own group; and their diameters (N,) [m]."""

    mesh_idx: Tensor
    R: Tensor
    t: Tensor
    groups: Tensor
    diameters: Tensor


def occluder_depth(renderer: MeshRenderer, objects: FrameObjects, which: Tensor, K_crop: Tensor,
                   size: tuple[int, int]) -> Tensor:
    """(n, h, w) depth [m] of the nearest other object of the same group in the crops of ``which`` (n,) of the
    ``objects`` (crop intrinsics K_crop (n, 3, 3), ``size`` (h, w)), all at their current poses; inf where none.
    Two estimates of one object with centres within half its diameter are one instance (a detector's duplicate),
    not an occluder: real instances would interpenetrate."""
    g, m = objects.groups, objects.mesh_idx
    pairs = (g[which][:, None] == g[None]) & (which[:, None] != torch.arange(len(g), device=g.device)[None])
    apart = (objects.t[which][:, None] - objects.t[None]).norm(dim=-1) >= 0.5 * objects.diameters[None]
    pairs &= (m[which][:, None] != m[None]) | apart
    i, j = torch.nonzero(pairs, as_tuple=True)
    depth = torch.full((len(which), *size), math.inf, device=K_crop.device)
    if len(i):
        out = renderer.render(objects.mesh_idx[j], objects.R[j], objects.t[j], K_crop, RasterSettings(*size),
                              image_idx=i, shade=False)
        depth = torch.where(out.mask, out.depth, depth)
    return depth


def deepim_step(net: DeepimNet, renderer: MeshRenderer, mesh_idx: Tensor, R: Tensor, t: Tensor, K: Tensor,
                images: Tensor, points: Tensor, est_boxes: Tensor | None, flow_pose: bool = True,
                size: tuple[int, int] | None = None, others: tuple[FrameObjects, Tensor] | None = None):
    """One render-and-compare iteration: returns (R_new, t_new, network output, zoomed pair). ``net`` may be
    wrapped in DistributedDataParallel (training). With the network's ``pose_from_flow`` and ``flow_pose``
    the update is solved from the flow matcher's matches; training passes False, so that the losses see the
    network's own update. ``size`` (H, W) of the crops: default the network's input_size (the polish passes
    its polish_size). ``others``: all objects of the frame(s) and which of them these are (``mutual_occlusion``:
    the cells another object covers nearer are left out of the solved pose)."""
    cfg = getattr(net, "module", net).cfg
    size = cfg.input_size if size is None else size
    with torch.no_grad():
        z = zoom_in(renderer, mesh_idx, R, t, K, images, points, est_boxes, size, cfg.zoom_scale)
    out = net(normalise_images(z.observed), normalise_images(z.rendered), z.mask)
    R_new, t_new = apply_update(R, t, out["R_delta"], out["v"], crop_focal(z.K, size))
    if cfg.pose_from_flow and flow_pose:  # where enough cells match, the update solved from the matcher's flow
        with torch.no_grad():  # the occlusion head's probabilities weigh the cells (nets/flow_matcher.py)
            weights = out["match_confidence"] * out["match_seen_logits"].sigmoid() if "match_seen_logits" in out \
                else None
            if others is not None:  # cells mostly covered by a nearer object of the frame show that one
                near = occluder_depth(renderer, others[0], others[1], z.K, size) < z.depth - OCCLUDER_MARGIN_M
                cell = z.depth.shape[-1] // out["match_flow"].shape[-1]
                hidden = F.avg_pool2d((near & (z.mask[:, 0] > 0)).float()[:, None], cell)[:, 0] >= 0.5
                weights = (out["match_confidence"] if weights is None else weights) * ~hidden
            R_flow, t_flow, ok = pose_from_flow(R, t, z.depth, z.mask, z.K, out["match_flow"],
                                                out["match_confidence"], cfg.flow_min_confidence, weights=weights)
        if cfg.flow_depth != "flow":  # the solved pose's centre on the image, at the network's (or a blended) depth
            w = cfg.flow_depth_weight if cfg.flow_depth == "blend" else 0.0
            if cfg.flow_depth_weight_hidden is not None:  # more of the solved depth for partly hidden objects
                hidden = 1 - seen_cells(out["match_seen_logits"], z)[0]
                w = w + (2 * hidden).clamp(0, 1)[:, None] * (cfg.flow_depth_weight_hidden - w)
            depth = torch.exp(w * t_flow[:, 2:].log() + (1 - w) * t_new[:, 2:].log())
            t_flow = t_flow / t_flow[:, 2:] * depth
        R_new = torch.where(ok[:, None, None], R_flow, R_new)
        t_new = torch.where(ok[:, None], t_flow, t_new)
    return R_new, t_new, out, z


class DeepimResult(NamedTuple):
    """refine_tensors' output for N objects: refined R (N, 3, 3), t (N, 3); fit error (N,), the mean |observed -
    rendered| over the rendered mask; the iterations kept (N,); a reason per object ('' when all went well).
    With the flow matcher's occlusion head, at the refined pose: visibility (N,), the share of the rendered
    silhouette's cells seen; occlusion (N, h, w) bool, the silhouette's hidden pixels in the zoomed crop, and
    windows (N, 4) the crops (x0, y0, x1, y1) in the image; else None."""

    R: Tensor
    t: Tensor
    fit: Tensor
    iterations: Tensor
    reasons: list[str]
    visibility: Tensor | None = None
    occlusion: Tensor | None = None
    windows: Tensor | None = None


def seen_cells(seen_logits: Tensor, z: ZoomedPair) -> tuple[Tensor, Tensor]:
    """From the occlusion head's logits (N, h, w) on a zoomed pair's cell grid: the share of the rendered
    silhouette's cells seen (N,) (0 where nothing is rendered) and which cells are seen (N, h, w) bool."""
    seen = seen_logits > 0
    covered = cell_points(z.depth, z.mask, z.K, stride=z.depth.shape[-1] // seen.shape[-1])[2]
    return (seen & covered).flatten(1).sum(1) / covered.flatten(1).sum(1).clamp_min(1), seen


def seen_at(net: DeepimNet, z: ZoomedPair) -> tuple[Tensor, Tensor]:
    """What the flow matcher's occlusion head says of a zoomed pair: the share of the rendered silhouette's cells
    seen (N,) and the silhouette's hidden pixels (N, h, w) bool."""
    match = net.flow_matcher(normalise_images(z.observed), normalise_images(z.rendered), backward=False)
    share, seen = seen_cells(match["seen_logits"], z)
    hidden = F.interpolate((~seen)[:, None].float(), size=z.depth.shape[-2:], mode="nearest")[:, 0] > 0.5
    return share, hidden & (z.mask[:, 0] > 0)


class DeepimRefiner:
    def __init__(self, net: DeepimNet, registry: ObjectRegistry, device: str | torch.device = "cpu",
                 model_set: ModelSet | None = None) -> None:
        if net.cfg.observed_mask:
            raise ValueError("this DeepIM network takes an observed-mask input, which the pipeline does not "
                             "provide (no segmentation stage); use weights trained with observed_mask: false")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.registry = registry
        self.models = (model_set or build_model_set(registry, 512, 256)).to(self.device)
        self.renderer = MeshRenderer([o.mesh for o in registry], self.device)
        self.points = self.models.loss_points * self.models.diameters[:, None, None]  # metres

    @classmethod
    def from_weights(cls, path: str | Path, registry: ObjectRegistry,
                     device: str | torch.device = "cpu") -> DeepimRefiner:
        net = DeepimNet(build_config(DeepimConfig, read_model_config(path, ARCH), prefix="model"))
        load_weights(path, net, ARCH)
        return cls(net, registry, device)

    @property
    def visibility_source(self) -> str | None:
        """SEEN_SHARE with the flow matcher's occlusion head; else None (the input's visibility is passed on)."""
        return SEEN_SHARE if self.net.cfg.flow_matcher_occlusion else None

    @torch.no_grad()
    def refine_tensors(self, images: Tensor, K: Tensor, mesh_idx: Tensor, R: Tensor, t: Tensor,
                       est_boxes: Tensor | None, iterations: int, groups: Tensor | None = None) -> DeepimResult:
        """Batched core: images (N, 3, H, W) [0, 1], K (N, 3, 3), mesh_idx (N,), poses (N, 3, 3)/(N, 3) ->
        DeepimResult. Each iteration runs on the objects still moving (the network's stop_rotation_deg /
        stop_translation); an object whose step failed stops there (the step would fail again from the same pose).
        With the network's polish_iterations, the objects that did not fail then go on on larger crops
        (polish_size) around their current pose; the fit, visibility and occlusion map are read at input_size, as
        trained. ``groups`` (N,): the frame of each object, for the network's ``mutual_occlusion`` (None: the
        objects do not hide each other)."""
        N = len(mesh_idx)
        cfg = self.net.cfg
        groups = groups if cfg.mutual_occlusion else None
        reasons = [""] * N
        done = torch.zeros(N, dtype=torch.long, device=self.device)
        R, t = R.clone(), t.clone()
        z0 = t[:, 2].clone()
        self._iterate(images, K, mesh_idx, R, t, est_boxes, iterations, cfg.input_size, z0, done, reasons, groups)
        if cfg.polish_iterations and iterations > 0:  # crops around the current pose alone: the estimated box
            # (a detector's, or the start's) was there to take in a far-off start; now it would only widen the crop
            self._iterate(images, K, mesh_idx, R, t, None, cfg.polish_iterations, cfg.polish_size, z0, done, reasons,
                          groups)
        z = zoom_in(self.renderer, mesh_idx, R, t, K, images, self.points[mesh_idx], est_boxes,
                    cfg.input_size, cfg.zoom_scale)
        diff = (z.observed - z.rendered).abs().mean(1, keepdim=True) * z.mask
        fit = diff.flatten(1).sum(1) / z.mask.flatten(1).sum(1).clamp_min(1)
        if not cfg.flow_matcher_occlusion:
            return DeepimResult(R, t, fit, done, reasons)
        visibility, occlusion = seen_at(self.net, z)
        return DeepimResult(R, t, fit, done, reasons, visibility, occlusion, z.boxes)

    def _iterate(self, images: Tensor, K: Tensor, mesh_idx: Tensor, R: Tensor, t: Tensor, est_boxes: Tensor | None,
                 iterations: int, size: tuple[int, int], z0: Tensor, done: Tensor, reasons: list[str],
                 groups: Tensor | None = None) -> None:
        """Up to ``iterations`` steps on crops of ``size`` for the objects without a failure reason, in place on
        R, t, done (successful steps) and reasons. An object stops once it converges or its step fails (the
        reason recorded); z0 (N,) are the starting depths a sane step stays within 0.5x-2x of."""
        N = len(mesh_idx)
        cfg = self.net.cfg
        active = torch.tensor([not r for r in reasons], dtype=torch.bool, device=self.device)
        for _ in range(iterations):
            a = torch.nonzero(active)[:, 0]
            if len(a) == 0:
                break
            imgs = images if len(a) == N else images[a]  # (the frame expanded over N: no copy while all move)
            R_new, t_new, _, z = deepim_step(self.net, self.renderer, mesh_idx[a], R[a], t[a], K[a], imgs,
                                             self.points[mesh_idx[a]], None if est_boxes is None else est_boxes[a],
                                             size=size, others=None if groups is None else
                                             (FrameObjects(mesh_idx, R, t, groups, self.models.diameters[mesh_idx]), a))
            empty = z.mask.flatten(1).sum(1) == 0
            finite = torch.isfinite(R_new).flatten(1).all(1) & torch.isfinite(t_new).all(1)
            za = z0[a]
            sane = finite & (t_new[:, 2] > 0.5 * za) & (t_new[:, 2] < 2.0 * za) & (t_new[:, 2] > 0.02)
            ok = sane & ~empty
            for k in torch.nonzero(~ok)[:, 0].tolist():
                reasons[int(a[k])] = ("nothing rendered in the zoomed crop" if bool(empty[k])
                                      else "iteration diverged (non-finite or absurd depth); kept the last good pose")
            still = ok  # a failed step would fail again from the same pose: that object stops too
            if cfg.stop_rotation_deg > 0 or cfg.stop_translation > 0:  # (NaN where not ok: no matter)
                turned = torch.rad2deg(geodesic_angle(R_new, R[a]))
                moved = (t_new - t[a]).norm(dim=1) / t[a, 2]
                still = ok & ((turned >= cfg.stop_rotation_deg) | (moved >= cfg.stop_translation))
            R[a] = torch.where(ok[:, None, None], R_new, R[a])
            t[a] = torch.where(ok[:, None], t_new, t[a])
            done[a] = done[a] + ok.long()
            active[a] = still

    def refine(self, frame: Frame, estimates: list[PoseEstimate], iterations: int | None = None) -> list[PoseEstimate]:
        """Refined copies of ``estimates`` (same order; stage 'refined', iterations and fit_error set; with the
        flow matcher's occlusion head also visibility and the occlusion map, at the refined pose).
        Estimates that cannot be refined come back unchanged with the reason in ``notes``."""
        iterations = self.net.cfg.iterations if iterations is None else iterations
        usable, results = screen_estimates(frame, estimates, self.registry)
        if not usable:
            return results
        idx = torch.tensor([self.registry.index(estimates[i].object_id) for i in usable], device=self.device)
        R = torch.as_tensor(np.stack([estimates[i].R for i in usable]), dtype=torch.float32, device=self.device)
        t = torch.as_tensor(np.stack([estimates[i].t for i in usable]), dtype=torch.float32, device=self.device)
        boxes = torch.as_tensor(np.stack([estimates[i].bbox_xyxy for i in usable]), dtype=torch.float32,
                                device=self.device)
        has_box = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        img = frame_tensor(frame, self.device)
        n = len(usable)
        K = torch.tensor(np.asarray(frame.K), dtype=torch.float32, device=self.device).expand(n, 3, 3)
        own = projected_boxes(self.points[idx], R, t, K)
        est = torch.where(has_box[:, None], boxes, own)
        out = self.refine_tensors(img.expand(n, -1, -1, -1), K, idx, R, t, est, iterations,
                                  groups=torch.zeros(n, dtype=torch.long, device=self.device))
        hw = frame.image.shape[:2]
        for k, i in enumerate(usable):
            e = estimates[i]
            notes = list(e.notes) + ([out.reasons[k]] if out.reasons[k] else [])
            seen = {} if out.visibility is None else {  # the occlusion head's, at the refined pose
                "visibility": float(out.visibility[k]),
                "occlusion": paste_crop_mask(out.occlusion[k].cpu().numpy(), out.windows[k].cpu().numpy(), hw)}
            results[i] = replace(e, R=out.R[k].double().cpu().numpy(), t=out.t[k].double().cpu().numpy(),
                                 stage="refined", iterations=int(out.iterations[k]), fit_error=float(out.fit[k]),
                                 notes=notes, **seen)
        return results
