"""Side-by-side pictures of one frame's poses stage by stage against the ground truth: what a person looks at to see
why a stage misses (a far-off rotation, a depth a few per cent off, a hidden object), where the tables only count.
``pose6d-evaluate --gallery`` writes them for the frames with the most misses."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.viz.overlay import OverlayDrawer

TRUTH_COLOUR = (255, 255, 255)


def outline(drawer: OverlayDrawer, img: np.ndarray, K: np.ndarray, poses: list[PoseEstimate],
            colour: tuple[int, int, int] = TRUTH_COLOUR, thickness: int = 1) -> np.ndarray:
    """``img`` (H, W, 3) uint8 with the silhouette outline of each pose drawn in one colour, in place; poses behind
    the camera or of objects outside the registry are skipped."""
    drawable = [p for p in poses if np.isfinite(p.t).all() and p.t[2] > 0.01 and p.object_id in drawer.registry.ids]
    for m in drawer.silhouettes(drawable, K, img.shape[:2]):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, colour, thickness)
    return img


def _caption(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)


def compare_panel(drawer: OverlayDrawer, rgb: np.ndarray, K: np.ndarray, truth: list[PoseEstimate],
                  stages: dict[str, list[PoseEstimate]], captions: dict[str, str] | None = None,
                  min_width: int = 640) -> np.ndarray:
    """One (s H, s W * len(stages), 3) uint8 picture: per stage, the image with the ground truth's outlines (thin,
    white) under the stage's estimates (``OverlayDrawer.draw``: outline, axes, name), captioned with the stage's name
    and ``captions[stage]``. Images narrower than ``min_width`` are enlarged by a whole factor s first (the camera
    with them), so that the names stay legible."""
    s = max(1, -(-min_width // rgb.shape[1]))
    if s > 1:
        rgb = cv2.resize(rgb, (rgb.shape[1] * s, rgb.shape[0] * s), interpolation=cv2.INTER_LINEAR)
        K = np.diag([s, s, 1.0]) @ np.asarray(K, np.float64)
        K[:2, 2] += (s - 1) / 2  # pixel centres: u' + 0.5 = s (u + 0.5)
    panels = []
    for stage, estimates in stages.items():
        img = outline(drawer, np.ascontiguousarray(rgb.copy()), K, truth)
        img = drawer.draw(img, K, estimates, show_occlusion=False)
        _caption(img, f"{stage}: {(captions or {}).get(stage, '')}".rstrip(": "))
        panels.append(img)
    return np.concatenate(panels, axis=1)


@dataclass(order=True)
class _Entry:
    misses: int
    order: int  # later frames lose ties: the first frames of a split come first
    name: str = field(compare=False)
    rgb: np.ndarray = field(compare=False)
    K: np.ndarray = field(compare=False)
    truth: list = field(compare=False)
    stages: dict = field(compare=False)
    captions: dict = field(compare=False)


class WorstFrames:
    """Keeps the ``size`` frames with the most missed targets seen so far (their image and poses only: a split of
    any length costs ``size`` frames of memory) and writes their ``compare_panel`` pictures."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[_Entry] = []
        self._seen = 0

    def offer(self, name: str, misses: int, rgb: np.ndarray, K: np.ndarray, truth: list[PoseEstimate],
              stages: dict[str, list[PoseEstimate]], captions: dict[str, str]) -> None:
        """A frame named ``name`` whose last stage missed ``misses`` targets; frames without a miss are not kept."""
        self._seen += 1
        if self.size <= 0 or misses <= 0:
            return
        entry = _Entry(misses, -self._seen, name, rgb, np.asarray(K), truth, stages, captions)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry > self._heap[0]:
            heapq.heapreplace(self._heap, entry)

    def write(self, out_dir: Path, drawer: OverlayDrawer) -> list[Path]:
        """PNG pictures in ``out_dir``, most misses first (file names start with the rank); [] when no frame missed.
        An earlier run's pictures there (the same naming) are removed first: they would pass for this run's."""
        for old in out_dir.glob("[0-9][0-9]_*.png"):
            old.unlink()
        paths = []
        for rank, e in enumerate(sorted(self._heap, reverse=True), 1):
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{rank:02d}_{e.name}.png"
            panel = compare_panel(drawer, e.rgb, e.K, e.truth, e.stages, e.captions)
            cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
            paths.append(path)
        return paths
