"""Procedural backgrounds: the network must not learn that objects sit on a plain colour."""

from __future__ import annotations

import cv2
import numpy as np


def _value_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sum of upsampled random grids (octaves), (h, w, 3) in [0, 1]."""
    out = np.zeros((h, w, 3), np.float32)
    amp, total = 1.0, 0.0
    for cells in (4, 8, 16, 32):
        grid = rng.random((cells, cells, 3)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    return np.clip(out / total, 0, 1)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.random(3), rng.random(3)
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    s = xs * np.cos(angle) + ys * np.sin(angle)
    s = (s - s.min()) / max(np.ptp(s), 1e-6)
    return (c0 * (1 - s[..., None]) + c1 * s[..., None]).astype(np.float32)


def _tiles(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    size = int(rng.integers(12, 80))
    ys, xs = np.mgrid[0:h, 0:w]
    checker = ((xs // size + ys // size) % 2).astype(np.float32)[..., None]
    c0, c1 = rng.random(3), rng.random(3)
    return (c0 * checker + c1 * (1 - checker)).astype(np.float32)


def _shapes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.ascontiguousarray(_gradient(rng, h, w))
    for _ in range(int(rng.integers(10, 40))):
        colour = tuple(float(c) for c in rng.random(3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.circle(img, centre, int(rng.integers(5, max(6, w // 6))), colour, -1)
        else:
            size = rng.integers(5, max(6, w // 4), 2)
            cv2.rectangle(img, centre, (centre[0] + int(size[0]), centre[1] + int(size[1])), colour, -1)
    return img


KINDS = (_value_noise, _gradient, _tiles, _shapes)


def random_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 RGB in [0, 1], one of noise / gradient / tiles / shapes, mixed with noise."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    img = kind(rng, h, w)
    if kind is not _value_noise:
        img = 0.8 * img + 0.2 * _value_noise(rng, h, w)
    return img.astype(np.float32)
