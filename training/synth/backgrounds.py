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


def _clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A desk-like jumble: many overlapping polygons, ellipses and strokes at several scales, some filled with
    noise texture, with sharp edges and thin dark/light lines. Real scenes (LM-O: a cluttered desk, printed
    markers, cables) are full of high-frequency edges that smooth noise or gradients never show."""
    def muted(c: np.ndarray) -> np.ndarray:  # real clutter is mostly greys, browns and pale colours
        grey = c.mean(-1, keepdims=True)
        return grey + rng.uniform(0.1, 0.8) * (c - grey)

    img = np.ascontiguousarray(muted(_value_noise(rng, h, w) * 0.5 + rng.random(3).astype(np.float32) * 0.5))
    for scale in (4, 8, 16):  # large shapes first, small ones on top
        for _ in range(int(rng.integers(8, 25))):
            colour = tuple(float(c) for c in muted(rng.random(3)))
            centre = np.array([rng.integers(0, w), rng.integers(0, h)])
            r = max(3, int(rng.integers(max(w, h) // (2 * scale), max(w, h) // scale + 1)))
            layer = np.zeros((h, w), np.uint8)
            kind = rng.random()
            if kind < 0.4:
                pts = centre + rng.normal(0, r, (int(rng.integers(3, 7)), 2))
                cv2.fillPoly(layer, [pts.round().astype(np.int32)], 1)
            elif kind < 0.7:
                axes = (int(rng.integers(2, r + 1)), int(rng.integers(2, r + 1)))
                cv2.ellipse(layer, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            else:
                end = centre + rng.normal(0, 2 * r, 2)
                cv2.line(layer, (int(centre[0]), int(centre[1])), (int(end[0]), int(end[1])), 1,
                         int(rng.integers(1, max(2, r // 3))))
            m = layer.astype(bool)
            if rng.random() < 0.4:  # textured fill (muted per pixel: only where it shows)
                img[m] = muted((_value_noise(rng, h, w) if rng.random() < 0.5 else _tiles(rng, h, w))[m])
            else:
                img[m] = colour
    for _ in range(int(rng.integers(3, 15))):  # thin edges: cables, print, table borders
        p0 = np.array([rng.integers(0, w), rng.integers(0, h)])
        p1 = p0 + rng.normal(0, max(w, h) / 6, 2)
        cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), (float(rng.uniform(0, 1)),) * 3, 1)
    return np.clip(img, 0, 1)


KINDS = (_value_noise, _gradient, _tiles, _shapes, _clutter)


def _marker_board(rng: np.random.Generator, img: np.ndarray, scale: tuple[float, float] = (0.5, 1.3)) -> np.ndarray:
    """A white board of black fiducial squares with random binary cells, under a random perspective: robot
    cells and pose datasets are full of such boards, and their hard black/white corners are what a detector
    trained on soft procedural backgrounds mistakes for objects. Its size is ``scale`` times the image's."""
    h, w = img.shape[:2]
    n_x, n_y = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    cell = 64
    board = np.ones((n_y * cell, n_x * cell), np.float32)
    for j in range(n_y):
        for i in range(n_x):
            if rng.random() < 0.3 and 0 < i < n_x - 1 and 0 < j < n_y - 1:
                continue  # the board's middle is often empty (objects stand there)
            y0, x0 = j * cell + 8, i * cell + 8
            board[y0:y0 + 48, x0:x0 + 48] = 0.0
            bits = rng.random((4, 4)) < 0.5
            inner = np.kron(bits, np.ones((9, 9), np.float32))
            board[y0 + 6:y0 + 42, x0 + 6:x0 + 42] = inner
    src = np.float32([[0, 0], [n_x * cell, 0], [n_x * cell, n_y * cell], [0, n_y * cell]])
    size = rng.uniform(*scale) * max(h, w)
    centre = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    half = size / 2 * np.array([1.0, n_y / n_x])
    dst = centre + np.float32([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half + rng.normal(0, 0.08 * size, (4, 2))
    H = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(board, H, (w, h), flags=cv2.INTER_AREA, borderValue=-1.0)
    inside = warped >= 0
    tint = rng.uniform(0.75, 1.0) * np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.03, 3)
    out = img.copy()
    out[inside] = np.clip(warped[inside][:, None] * tint + 0.05, 0, 1)
    return out


def random_background(rng: np.random.Generator, h: int, w: int, marker_prob: float = 0.0,
                      kinds: tuple = KINDS) -> np.ndarray:
    """(h, w, 3) float32 RGB in [0, 1], one of ``kinds`` (noise / gradient / tiles / shapes / clutter), mixed
    with noise; with probability ``marker_prob`` a fiducial board on top (no draw at all when it is 0, so
    datasets made before it stay the same for a seed)."""
    kind = kinds[int(rng.integers(len(kinds)))]
    img = kind(rng, h, w)
    if kind is not _value_noise:
        img = 0.8 * img + 0.2 * _value_noise(rng, h, w)
    if marker_prob > 0 and rng.random() < marker_prob:
        img = _marker_board(rng, img)
    return img.astype(np.float32)
