"""Writing BOP-format scenes (rgb/, depth/, mask/, mask_visib/, scene_camera/gt/gt_info JSON), as the
synthetic generator and the demo produce them. JSON is written once at the end, atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEPTH_SCALE = 0.1  # depth png stores mm / 0.1: 0.1 mm resolution up to 6.5 m


@dataclass
class GtRecord:
    """One annotated instance as it goes into scene_gt / scene_gt_info. Pose in metres, boxes (x, y, w, h)."""

    obj_id: int
    R: np.ndarray
    t: np.ndarray
    bbox_obj: tuple[int, int, int, int]
    bbox_visib: tuple[int, int, int, int]
    px_count_all: int
    px_count_visib: int

    @property
    def visib_fract(self) -> float:
        return self.px_count_visib / self.px_count_all if self.px_count_all > 0 else 0.0


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x, y, w, h) of a boolean mask, (-1, -1, -1, -1) when empty (BOP's convention)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (-1, -1, -1, -1)
    return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _imwrite(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not write image")


def write_frame_files(scene_dir: Path, im_id: int, rgb: np.ndarray, depth: np.ndarray | None,
                      masks: list[np.ndarray], masks_visib: list[np.ndarray], jpeg: bool = False) -> None:
    """Image files of one frame: rgb (H, W, 3) uint8 RGB, depth (H, W) [m], full and visible masks."""
    for sub in ("rgb", "depth", "mask", "mask_visib"):
        (scene_dir / sub).mkdir(parents=True, exist_ok=True)
    _imwrite(scene_dir / "rgb" / f"{im_id:06d}.{'jpg' if jpeg else 'png'}", np.ascontiguousarray(rgb[..., ::-1]))
    if depth is not None:
        raw = np.clip(np.round(depth * 1000.0 / DEPTH_SCALE), 0, 65535).astype(np.uint16)
        _imwrite(scene_dir / "depth" / f"{im_id:06d}.png", raw)
    for i, (m, mv) in enumerate(zip(masks, masks_visib)):
        _imwrite(scene_dir / "mask" / f"{im_id:06d}_{i:06d}.png", m.astype(np.uint8) * 255)
        _imwrite(scene_dir / "mask_visib" / f"{im_id:06d}_{i:06d}.png", mv.astype(np.uint8) * 255)


class SceneAnnotations:
    """Collects the per-image annotations of one scene and writes the three JSON files."""

    def __init__(self, scene_dir: str | Path) -> None:
        self.dir = Path(scene_dir)
        self.camera: dict[str, dict] = {}
        self.gt: dict[str, list] = {}
        self.info: dict[str, list] = {}

    def add(self, im_id: int, K: np.ndarray, records: list[GtRecord]) -> None:
        key = str(im_id)
        self.camera[key] = {"cam_K": [float(x) for x in np.asarray(K).reshape(-1)], "depth_scale": DEPTH_SCALE}
        self.gt[key] = [{"cam_R_m2c": [float(x) for x in np.asarray(r.R).reshape(-1)],
                         "cam_t_m2c": [float(x) * 1000.0 for x in np.asarray(r.t).reshape(-1)],
                         "obj_id": int(r.obj_id)} for r in records]
        self.info[key] = [{"bbox_obj": list(r.bbox_obj), "bbox_visib": list(r.bbox_visib),
                           "px_count_all": r.px_count_all, "px_count_valid": r.px_count_all,
                           "px_count_visib": r.px_count_visib, "visib_fract": r.visib_fract} for r in records]

    def write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        order = lambda d: dict(sorted(d.items(), key=lambda kv: int(kv[0])))  # noqa: E731
        _write_json_atomic(self.dir / "scene_camera.json", order(self.camera))
        _write_json_atomic(self.dir / "scene_gt.json", order(self.gt))
        _write_json_atomic(self.dir / "scene_gt_info.json", order(self.info))
