"""Overlay images: each estimate's projected model silhouette contour and object axes in a colour per
object, with name, score and visibility; optional occlusion map tint. What the rviz overlay topic, the
replay video and the demo show."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.render.rasterize import RasterSettings
from ros2_pose6d.render.renderer import MeshRenderer


def object_colour(obj_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per object id."""
    hue = (obj_id * 47) % 180
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


class OverlayDrawer:
    """Draws estimates onto RGB images; renders silhouettes with our rasteriser (CPU, no gradients)."""

    def __init__(self, registry: ObjectRegistry, renderer: MeshRenderer | None = None) -> None:
        self.registry = registry
        self.renderer = renderer or MeshRenderer([o.mesh for o in registry])

    def silhouettes(self, estimates: list[PoseEstimate], K: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """(N, H, W) bool: each estimate's own full silhouette."""
        if not estimates:
            return np.zeros((0, *hw), bool)
        idx = torch.tensor([self.registry.index(e.object_id) for e in estimates])
        R = torch.as_tensor(np.stack([e.R for e in estimates]), dtype=torch.float32)
        t = torch.as_tensor(np.stack([e.t for e in estimates]), dtype=torch.float32)
        Ks = torch.tensor(np.asarray(K), dtype=torch.float32).expand(len(estimates), 3, 3)
        with torch.no_grad():
            out = self.renderer.render(idx, R, t, Ks, RasterSettings(*hw), shade=False)
        return out.mask.numpy()

    def draw(self, rgb: np.ndarray, K: np.ndarray, estimates: list[PoseEstimate], thickness: int = 2,
             show_occlusion: bool = True) -> np.ndarray:
        """A copy of ``rgb`` (H, W, 3) uint8 with the estimates drawn (estimates with poses behind the
        camera are skipped)."""
        img = np.ascontiguousarray(rgb.copy())
        h, w = img.shape[:2]
        drawable = [e for e in estimates if np.isfinite(e.t).all() and e.t[2] > 0.01
                    and e.object_id in self.registry.ids]
        masks = self.silhouettes(drawable, K, (h, w))
        for e, m in zip(drawable, masks):
            colour = object_colour(e.object_id)
            if show_occlusion and e.occlusion is not None and e.occlusion.shape == (h, w):
                occ = e.occlusion & m
                img[occ] = (0.5 * img[occ] + 0.5 * np.array([255, 0, 255])).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, colour, thickness)
            self._axes(img, K, e, 0.5 * self.registry[e.object_id].diameter)
            ys, xs = np.nonzero(m)
            anchor = (int(xs.min()), max(12, int(ys.min()) - 4)) if len(xs) else (5, 15)
            text = f"{self.registry[e.object_id].name} {e.score:.2f} v{e.visibility:.2f}"
            cv2.putText(img, text, anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, text, anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        return img

    @staticmethod
    def _axes(img: np.ndarray, K: np.ndarray, e: PoseEstimate, length: float) -> None:
        pts = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, length]], np.float64)
        cam = pts @ np.asarray(e.R).T + np.asarray(e.t)
        if (cam[:, 2] <= 0.01).any():
            return
        uv = cam @ np.asarray(K).T
        uv = uv[:, :2] / uv[:, 2:]
        if not np.isfinite(uv).all() or np.abs(uv).max() > 1e5:
            return
        o = tuple(int(np.rint(v)) for v in uv[0])
        for k, colour in zip(range(1, 4), ((255, 0, 0), (0, 255, 0), (0, 0, 255))):  # x red, y green, z blue
            cv2.line(img, o, tuple(int(np.rint(v)) for v in uv[k]), colour, 2, cv2.LINE_AA)
