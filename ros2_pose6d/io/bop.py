"""Reading BOP-format dataset splits (https://bop.felk.cvut.cz/datasets/) into frames with ground truth.

Units are converted at this boundary: translations and depth in metres, masks as bool arrays, and
rotations projected onto SO(3) (the files round them; LM-O's are up to 1.4 % off orthonormal).
A split folder holds scenes ``<split>/<scene_id:06d>/`` with scene_camera.json, scene_gt.json,
scene_gt_info.json (optional), rgb/ (or gray/), depth/ and mask_visib/ (optional).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


class BopError(ValueError):
    """A BOP folder or file that cannot be read; the message names the file."""


@dataclass
class GtInstance:
    """One annotated object: pose in metres, boxes (x, y, w, h) [px], visible fraction, optional mask."""

    obj_id: int
    R: np.ndarray
    t: np.ndarray
    bbox_obj: np.ndarray | None = None
    bbox_visib: np.ndarray | None = None
    visib_fract: float | None = None
    mask_visib: np.ndarray | None = None


@dataclass
class BopFrame:
    scene_id: int
    im_id: int
    K: np.ndarray  # (3, 3)
    rgb: np.ndarray | None  # (H, W, 3) uint8
    depth: np.ndarray | None  # (H, W) float32 [m], 0 unknown
    gt: list[GtInstance] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BopError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise BopError(f"{path}: not valid JSON ({exc})") from exc


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """Closest rotation matrix (SVD projection): BOP files store rounded, slightly non-orthonormal R."""
    U, _, Vt = np.linalg.svd(R)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _find_image(folder: Path, im_id: int) -> Path | None:
    for ext in (".png", ".jpg", ".tif"):
        p = folder / f"{im_id:06d}{ext}"
        if p.is_file():
            return p
    return None


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise BopError(f"{path}: cannot be decoded as an image")
    return np.ascontiguousarray(img[..., ::-1])


class BopScene:
    """One scene of a split; iterate for BopFrames. ``im_ids`` lists the annotated images."""

    def __init__(self, scene_dir: str | Path, load_rgb: bool = True, load_depth: bool = True,
                 load_masks: bool = False) -> None:
        self.dir = Path(scene_dir)
        if not self.dir.is_dir():
            raise BopError(f"{self.dir}: scene folder not found")
        self.scene_id = int(self.dir.name)
        self.load_rgb, self.load_depth, self.load_masks = load_rgb, load_depth, load_masks
        self.camera = _read_json(self.dir / "scene_camera.json")
        gt_path = self.dir / "scene_gt.json"
        self.gt = _read_json(gt_path) if gt_path.is_file() else {}
        info_path = self.dir / "scene_gt_info.json"
        self.info = _read_json(info_path) if info_path.is_file() else {}
        for key, instances in self.gt.items():
            if self.info and len(self.info.get(key, [])) != len(instances):
                raise BopError(f"{info_path}: image {key} has {len(self.info.get(key, []))} info entries but "
                               f"{gt_path} lists {len(instances)} objects")
        self.im_ids = sorted(int(k) for k in self.camera)

    def __len__(self) -> int:
        return len(self.im_ids)

    def __iter__(self) -> Iterator[BopFrame]:
        for im_id in self.im_ids:
            yield self.frame(im_id)

    def frame(self, im_id: int) -> BopFrame:
        cam = self.camera.get(str(im_id))
        if cam is None or "cam_K" not in cam:
            raise BopError(f"{self.dir / 'scene_camera.json'}: no cam_K for image {im_id}")
        K = np.asarray(cam["cam_K"], dtype=np.float64).reshape(3, 3)
        rgb = depth = None
        if self.load_rgb:
            path = _find_image(self.dir / "rgb", im_id) or _find_image(self.dir / "gray", im_id)
            if path is None:
                raise BopError(f"{self.dir}: no rgb/ or gray/ image for image {im_id}")
            rgb = _read_rgb(path)
        if self.load_depth:
            path = _find_image(self.dir / "depth", im_id)
            if path is not None:
                raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
                if raw is None:
                    raise BopError(f"{path}: cannot be decoded as a depth image")
                depth = raw.astype(np.float32) * float(cam.get("depth_scale", 1.0)) / 1000.0
        gts = []
        infos = self.info.get(str(im_id), [])
        for i, g in enumerate(self.gt.get(str(im_id), [])):
            try:
                R = nearest_rotation(np.asarray(g["cam_R_m2c"], dtype=np.float64).reshape(3, 3))
                t = np.asarray(g["cam_t_m2c"], dtype=np.float64).reshape(3) / 1000.0
                obj_id = int(g["obj_id"])
            except (KeyError, ValueError) as exc:
                raise BopError(f"{self.dir / 'scene_gt.json'}: image {im_id} object {i} is malformed ({exc})") from exc
            inst = GtInstance(obj_id, R, t)
            if i < len(infos):
                info = infos[i]
                inst.bbox_obj = np.asarray(info.get("bbox_obj", [-1] * 4), dtype=np.float64)
                inst.bbox_visib = np.asarray(info.get("bbox_visib", [-1] * 4), dtype=np.float64)
                inst.visib_fract = float(info["visib_fract"]) if "visib_fract" in info else None
            if self.load_masks:
                mpath = self.dir / "mask_visib" / f"{im_id:06d}_{i:06d}.png"
                if mpath.is_file():
                    inst.mask_visib = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE) > 0
            gts.append(inst)
        return BopFrame(self.scene_id, im_id, K, rgb, depth, gts)


def read_bop_split(split_dir: str | Path, scene_ids: list[int] | None = None, **kwargs) -> list[BopScene]:
    """All scenes (or ``scene_ids``) of a split folder such as ``lmo/test``; kwargs go to BopScene."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise BopError(f"{split_dir}: split folder not found")
    dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if scene_ids is not None:
        dirs = [d for d in dirs if int(d.name) in set(scene_ids)]
    if not dirs:
        raise BopError(f"{split_dir}: no scene folders (expected <split>/000001/ ...)")
    return [BopScene(d, **kwargs) for d in dirs]


def read_bop_targets(path: str | Path) -> dict[tuple[int, int], dict[int, int]]:
    """A BOP test-targets file (``test_targets_bop19.json``: a list of {scene_id, im_id, obj_id, inst_count}) as
    {(scene_id, im_id): {obj_id: inst_count}}: the images BOP evaluates and, in each, how many instances of an object
    are targets (its most visible ones)."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError:
        raise BopError(f"{path}: targets file not found") from None
    except (OSError, ValueError) as e:
        raise BopError(f"{path}: not a JSON targets file ({e})") from None
    if not isinstance(rows, list):
        raise BopError(f"{path}: expected a list of targets, got {type(rows).__name__}")
    out: dict[tuple[int, int], dict[int, int]] = {}
    for k, row in enumerate(rows):
        try:
            key, obj, count = (int(row["scene_id"]), int(row["im_id"])), int(row["obj_id"]), int(row["inst_count"])
        except (TypeError, KeyError, ValueError):
            raise BopError(f"{path}: target {k} is not {{scene_id, im_id, obj_id, inst_count}}: {row!r}") from None
        if count < 1:
            raise BopError(f"{path}: target {k} has inst_count {count}")
        out.setdefault(key, {})[obj] = out.get(key, {}).get(obj, 0) + count
    if not out:
        raise BopError(f"{path}: no targets")
    return out


def bop_target_mask(gts: list[GtInstance], counts: dict[int, int]) -> list[bool]:
    """Which of an image's ground-truth instances are BOP targets: per object, the ``counts[obj_id]`` most visible
    (by ``visib_fract``; unknown counts as fully visible; ties keep the ground truth's order)."""
    keep = [False] * len(gts)
    for obj, n in counts.items():
        idx = [i for i, g in enumerate(gts) if g.obj_id == obj]
        idx.sort(key=lambda i: -(1.0 if gts[i].visib_fract is None else gts[i].visib_fract))
        for i in idx[:n]:
            keep[i] = True
    return keep
