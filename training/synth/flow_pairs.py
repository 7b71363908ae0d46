"""Procedural image pairs with exact optical flow, for pre-training DeepIM's encoder to match: DeepIM started
from FlowNet weights pre-trained on FlyingChairs, and none can be downloaded here.

Each pair looks like DeepIM's zoomed-in input. The "rendered" crop is a textured shape on black with its
mask. The "observed" crop shows the same texture moved as a rigid plane would move (a homography: shift,
in-plane rotation, scale and an out-of-plane tilt, which foreshortens the texture as an object's rotation
does), plus a small smooth non-rigid field, relit, on a textured background, with occluders, blur and noise.
The flow moves every shape pixel of the rendered crop to where it lands in the observed one, as
``flow_between`` does for DeepIM's auxiliary head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from ros2_pose6d.training.synth.backgrounds import KINDS, random_background
from torch import Tensor
from torch.utils.data import Dataset

# the textures of the moved shape and the occluders: all but the desk clutter, which is several times slower to
# draw (it stays among the backgrounds, where real clutter is)
SHAPE_TEXTURES = tuple(k for k in KINDS if k.__name__ != "_clutter")


@dataclass
class FlowPairConfig:
    """The motion and appearance ranges of the pairs (all uniform draws)."""

    count: int = 100_000  # the dataset's length: pair i is a function of (seed, i) alone
    shape_size: tuple[float, float] = (0.5, 0.9)  # the shape's extent over the crop's (DeepIM's zoom: 1/1.4)
    shift: float = 0.1  # translation, up to this fraction of the crop size in x and y
    rotation_deg: float = 20.0  # in-plane rotation, +-
    scale: tuple[float, float] = (0.85, 1.18)
    tilt_deg: float = 30.0  # out-of-plane rotation of the textured plane about an axis in it, +-
    field_of_view_deg: float = 40.0  # of the virtual camera that sees the plane tilt (perspective strength)
    nonrigid: float = 0.01  # amplitude of the smooth non-rigid displacement, as a fraction of the crop width
    gain: tuple[float, float] = (0.6, 1.4)  # the observed shape's brightness change (lighting)
    light_variation: float = 0.1  # std of a smooth per-channel gain field on top of it
    occluders: tuple[int, int] = (0, 3)
    blur_prob: float = 0.3
    noise: float = 0.02  # std of the observed crop's pixel noise


def _shape_mask(rng: np.random.Generator, h: int, w: int, size: tuple[float, float]) -> np.ndarray:
    """A blob of 1-3 overlapping ellipses and polygons around the crop's centre, (h, w) uint8 in {0, 1}."""
    mask = np.zeros((h, w), np.uint8)
    extent = rng.uniform(*size) * min(h, w) / 2
    centre = np.array([w / 2, h / 2]) + rng.normal(0, 0.05, 2) * (w, h)
    for _ in range(int(rng.integers(1, 4))):
        c = centre + rng.normal(0, 0.25 * extent, 2)
        r = extent * rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:
            axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.5, 1.0))))
            cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            n = int(rng.integers(5, 9))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = r * rng.uniform(0.6, 1.0, n)
            pts = c + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
            cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
    return mask


def plane_homography(R: np.ndarray, T: np.ndarray, f: float, h: int, w: int) -> np.ndarray:
    """The pixel homography of a fronto-parallel plane at depth 1 through the crop's centre (focal ``f`` [px],
    principal point at the centre) under the rigid motion X -> R (X - C) + C + T about its centre C: with
    normalised coordinates on the plane z = 1, H = R + (C - R C + T) e3^T."""
    Kc = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    C = np.array([0.0, 0.0, 1.0])
    H = R + np.outer(C - R @ C + T, [0.0, 0.0, 1.0])
    return Kc @ H @ np.linalg.inv(Kc)


def _random_plane_motion(rng: np.random.Generator, cfg: FlowPairConfig, h: int, w: int) -> np.ndarray:
    """A random ``plane_homography``: tilt about an in-plane axis, then in-plane rotation, a shift and a
    depth change that scales the image by ``cfg.scale``."""
    f = (w / 2) / math.tan(math.radians(cfg.field_of_view_deg) / 2)
    axis_angle = rng.uniform(0, 2 * np.pi)
    axis = np.array([math.cos(axis_angle), math.sin(axis_angle), 0.0])
    tilt = cv2.Rodrigues(axis * math.radians(rng.uniform(-cfg.tilt_deg, cfg.tilt_deg)))[0]
    spin = cv2.Rodrigues(np.array([0.0, 0.0, math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))]))[0]
    scale = rng.uniform(*cfg.scale)
    T = np.array([rng.uniform(-cfg.shift, cfg.shift) * w / f, rng.uniform(-cfg.shift, cfg.shift) * h / f,
                  1.0 / scale - 1.0])
    return plane_homography(spin @ tilt, T, f, h, w)


def _apply_h(H: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    return (H[0, 0] * x + H[0, 1] * y + H[0, 2]) / d, (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / d


def _smooth_field(rng: np.random.Generator, h: int, w: int, amplitude: float) -> np.ndarray:
    """(h, w, 2) float32 displacement [px]: a random 4x5 grid, upsampled bicubically."""
    grid = rng.normal(0, amplitude, (4, 5, 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def make_flow_pair(rng: np.random.Generator, cfg: FlowPairConfig, h: int, w: int,
                   texture: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One pair: rendered (h, w, 3) and observed (h, w, 3) float32 RGB in [0, 1], mask (h, w) of the rendered
    shape, observed_mask (h, w) of the moved shape where not occluded, target_mask (h, w) of the moved shape
    (occluders ignored, as DeepIM's mask head target), flow (h, w, 2) [px] and valid (h, w): shape pixels of
    the rendered crop that land inside the observed one. observed(p + flow(p)) = rendered(p) up to the
    lighting, blur, noise and occluders. ``texture`` (h, w, 3) in [0, 1] replaces the procedural one."""
    texture = random_background(rng, h, w, kinds=SHAPE_TEXTURES) if texture is None else np.asarray(texture, np.float32)
    mask = _shape_mask(rng, h, w, cfg.shape_size)
    rendered = texture * mask[..., None]
    H = _random_plane_motion(rng, cfg, h, w)
    H_inv = np.linalg.inv(H)
    field = _smooth_field(rng, h, w, cfg.nonrigid * w)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # forward: p -> H(p) + d(p), exact on the rendered grid
    hx, hy = _apply_h(H, xs, ys)
    flow = np.stack([hx + field[..., 0] - xs, hy + field[..., 1] - ys], -1).astype(np.float32)
    # backward, to draw the observed crop: solve H(p) + d(p) = q for p by fixed-point iteration (d is smooth
    # and small, so the map is a contraction)
    px, py = _apply_h(H_inv, xs, ys)
    for _ in range(6):
        d = cv2.remap(field, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
        px, py = _apply_h(H_inv, xs - d[..., 0], ys - d[..., 1])
    px, py = px.astype(np.float32), py.astype(np.float32)
    moved_tex = cv2.remap(texture, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    moved_mask = cv2.remap(mask.astype(np.float32), px, py, cv2.INTER_LINEAR, borderValue=0.0)
    target_mask = moved_mask >= 0.5
    # relighting: a global gain times a smooth per-channel field, as a light that moved with the object
    variation = rng.normal(0, cfg.light_variation, (3, 3, 3)).astype(np.float32)
    light = rng.uniform(*cfg.gain) * (1 + cv2.resize(variation, (w, h), interpolation=cv2.INTER_CUBIC))
    fg = np.clip(moved_tex * light, 0, 1)
    observed = random_background(rng, h, w)
    alpha = moved_mask[..., None]
    observed = fg * alpha + observed * (1 - alpha)
    visible = target_mask.copy()
    for _ in range(int(rng.integers(cfg.occluders[0], cfg.occluders[1] + 1))):
        occ = _shape_mask(rng, h, w, (0.15, 0.4))
        shift = (rng.uniform(-0.45, 0.45, 2) * (w, h)).astype(np.float32)
        occ = cv2.warpAffine(occ, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (w, h)).astype(bool)
        colour = random_background(rng, h, w, kinds=SHAPE_TEXTURES) if rng.random() < 0.5 else \
            np.broadcast_to(rng.random(3), (h, w, 3))
        observed[occ] = colour[occ]
        visible &= ~occ
    if rng.random() < cfg.blur_prob:
        observed = cv2.GaussianBlur(observed, (0, 0), rng.uniform(0.5, 1.2))
    observed = np.clip(observed + rng.normal(0, cfg.noise, observed.shape), 0, 1).astype(np.float32)
    end_x, end_y = xs + flow[..., 0], ys + flow[..., 1]
    valid = (mask > 0) & (end_x >= 0) & (end_x <= w - 1) & (end_y >= 0) & (end_y <= h - 1)
    flow[~valid] = 0.0
    return {"rendered": rendered.astype(np.float32), "observed": observed, "mask": mask.astype(np.float32),
            "observed_mask": visible.astype(np.float32), "target_mask": target_mask.astype(np.float32),
            "flow": flow, "valid": valid}


def check_pair_config(cfg: FlowPairConfig) -> None:
    """Raise ValueError naming the first ``pairs.*`` key out of its range (a draw would fail or be garbage)."""
    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"pairs.{key}: {getattr(cfg, key)} {why}")

    if cfg.count < 1:
        raise bad("count", "must be at least 1")
    for key in ("shape_size", "scale", "gain", "occluders"):
        lo, hi = getattr(cfg, key)
        if lo > hi or lo < 0:
            raise bad(key, "must be a range [low, high] with 0 <= low <= high")
    if not (cfg.shape_size[0] > 0 and cfg.shape_size[1] <= 1):
        raise bad("shape_size", "must lie in (0, 1]")
    if cfg.scale[0] <= 0:
        raise bad("scale", "must be above 0")
    if not 0 <= cfg.blur_prob <= 1:
        raise bad("blur_prob", "is not a probability in [0, 1]")
    if not 0 < cfg.field_of_view_deg < 180:
        raise bad("field_of_view_deg", "must lie in (0, 180)")
    for key in ("shift", "rotation_deg", "tilt_deg", "nonrigid", "light_variation", "noise"):
        if getattr(cfg, key) < 0:
            raise bad(key, "must not be negative")


class FlowPairDataset(Dataset):
    """``cfg.count`` pairs of (h, w) crops drawn on demand: item i is the same for a seed wherever it is read
    (resume, DDP ranks, data-loader workers). Items are CHW tensors."""

    def __init__(self, cfg: FlowPairConfig, size: tuple[int, int], seed: int = 0) -> None:
        check_pair_config(cfg)
        self.cfg, self.size, self.seed = cfg, (int(size[0]), int(size[1])), seed

    def __len__(self) -> int:
        return self.cfg.count

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        pair = make_flow_pair(np.random.default_rng([self.seed, 7177, int(i)]), self.cfg, *self.size)
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
        return {"rendered": chw(pair["rendered"]), "observed": chw(pair["observed"]),
                **{k: torch.from_numpy(pair[k])[None] for k in ("mask", "observed_mask", "target_mask")},
                "flow": chw(pair["flow"]), "valid": torch.from_numpy(pair["valid"])}
