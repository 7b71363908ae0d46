"""The table layout: objects resting on a textured table plane, seen by a camera above it, as in LM-O and
most robot cells. Free-floating objects at any orientation in front of a flat background teach a detector
neither the upright poses nor the scenes of real tabletops (objects on a surface, clutter around them)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from ros2_pose6d.training.synth.backgrounds import _marker_board, random_background
from ros2_pose6d.training.synth.poses import look_at_rotation

from ros2_pose6d.geometry.rotations import quaternion_to_matrix, rotation_about_axis

TEXTURE_SIZE = 512  # table texture pixels per side


@dataclass
class TableCamera:
    """The table frame: plane z = 0, +z up, look-at point at the origin. R (3, 3), t (3,) map table
    coordinates into the camera frame (X_cam = R X_table + t)."""

    R: np.ndarray
    t: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """The camera centre in table coordinates."""
        return -self.R.T @ self.t


def table_camera(rng: np.random.Generator, distance: tuple[float, float], elevation_deg: tuple[float, float],
                 roll_deg: float) -> TableCamera:
    """A camera at a distance from ``distance`` to the look-at point, ``elevation_deg`` above the table, any
    azimuth, turned by up to +-``roll_deg`` about its axis."""
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = np.deg2rad(rng.uniform(*elevation_deg))
    roll = np.deg2rad(rng.uniform(-roll_deg, roll_deg))
    return TableCamera(look_at_rotation(azimuth, elevation, roll), np.array([0.0, 0.0, rng.uniform(*distance)]))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation uniform over SO(3) (normalised Gaussian quaternion), drawn from a numpy generator."""
    return quaternion_to_matrix(torch.as_tensor(rng.normal(size=4))).numpy()


def resting_rotation(rng: np.random.Generator, upright_prob: float, tilt_deg: float) -> np.ndarray:
    """Object-to-table rotation: upright (the model's +z up, as LINEMOD's and most BOP models lie on their
    scanning table) turned about the vertical and tilted by up to ``tilt_deg``, with probability
    ``upright_prob``; otherwise any orientation (an object lying on its side)."""
    if rng.random() >= upright_prob:
        return random_rotation(rng)
    yaw = rng.uniform(0, 2 * np.pi)
    axis_angle = rng.uniform(0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(0, tilt_deg))
    axes = torch.tensor([[0.0, 0.0, 1.0], [np.cos(axis_angle), np.sin(axis_angle), 0.0]], dtype=torch.float64)
    R_yaw, R_tilt = rotation_about_axis(axes, torch.tensor([yaw, tilt], dtype=torch.float64)).numpy()
    return R_tilt @ R_yaw  # turned about the vertical, then leaning about a horizontal axis


def ray_directions(cam: TableCamera, K: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Directions (..., 3), in the table frame, of the rays through pixels ``uv`` (..., 2): a ray meets the
    table in front of the camera exactly when its z is negative (the camera is above the plane)."""
    uv1 = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)
    return uv1 @ (cam.R.T @ np.linalg.inv(K)).T


def ray_to_table(cam: TableCamera, K: np.ndarray, uv: np.ndarray) -> np.ndarray | None:
    """The table-plane point (x, y) seen at pixel ``uv``, or None when the ray misses the plane (at or
    above the horizon)."""
    d = ray_directions(cam, K, np.asarray(uv, np.float64))
    c = cam.centre
    if d[2] >= -1e-9:
        return None
    return (c - d * (c[2] / d[2]))[:2]


def place_on_table(rng: np.random.Generator, cam: TableCamera, K: np.ndarray, hw: tuple[int, int],
                   vertices: list[np.ndarray], rotations: list[np.ndarray], border: float, min_separation: float,
                   taken: list[tuple[np.ndarray, float]], max_range: float, min_range: float = 0.0,
                   tries: int = 50, keep_crowded: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rest objects (``vertices`` (V, 3) in the object frame, ``rotations`` object-to-table) on the plane.

    Each object's foot point is the table point seen at a pixel drawn inside the image (``border`` fraction
    free) between ``min_range`` and ``max_range`` from the camera; footprints (circles about the foot point)
    keep centres ``min_separation`` times the sum of their radii apart, counting those in ``taken``
    (appended to).
    An object that finds no free spot in ``tries`` draws is kept where it was last drawn when
    ``keep_crowded`` (dense scenes still get made) and dropped otherwise. Returns (kept indices, R (N, 3, 3)
    object-to-camera, t (N, 3))."""
    h, w = hw
    kept, Rs, ts = [], [], []
    for i, (v, R_ot) in enumerate(zip(vertices, rotations)):
        rotated = v @ R_ot.T
        radius = float(np.linalg.norm(rotated[:, :2], axis=1).max())
        foot, free = None, False
        for _ in range(tries):
            uv = np.array([rng.uniform(border * w, (1 - border) * w), rng.uniform(border * h, (1 - border) * h)])
            p = ray_to_table(cam, K, uv)
            if p is None or not min_range <= np.linalg.norm(np.append(p, 0.0) - cam.centre) <= max_range:
                continue
            foot = p
            if all(np.linalg.norm(p - q) >= min_separation * (radius + r) for q, r in taken):
                free = True
                break
        if foot is None or not (free or keep_crowded):
            continue
        taken.append((foot, radius))
        t_table = np.array([foot[0], foot[1], -rotated[:, 2].min()])  # the lowest point touches the plane
        kept.append(i)
        Rs.append(cam.R @ R_ot)
        ts.append(cam.R @ t_table + cam.t)
    if not kept:
        return np.zeros(0, np.int64), np.zeros((0, 3, 3)), np.zeros((0, 3))
    return np.array(kept, np.int64), np.stack(Rs), np.stack(ts)


@dataclass
class TableTop:
    """The table top in the image: ``image`` (h, w, 3) float32 unshaded, ``seen`` (h, w) bool where the
    table is in view; the square's ``side`` [m] and ``centre`` (x, y)."""

    image: np.ndarray
    seen: np.ndarray
    side: float
    centre: np.ndarray


def table_surface(rng: np.random.Generator, cam: TableCamera, K: np.ndarray, hw: tuple[int, int],
                  size: tuple[float, float], marker_prob: float) -> TableTop:
    """The table top as the camera sees it: a square of side drawn from ``size`` [m] near the look-at point
    with a procedural texture (and, with ``marker_prob``, a fiducial board lying on it, as in LM-O)."""
    h, w = hw
    side = rng.uniform(*size)
    centre = rng.uniform(-0.15, 0.15, 2) * side
    texture = random_background(rng, TEXTURE_SIZE, TEXTURE_SIZE)
    if marker_prob > 0 and rng.random() < marker_prob:
        texture = _marker_board(rng, texture, scale=(0.3, 0.6))
    s = side / TEXTURE_SIZE  # metres per texture pixel; texture pixel (i, j) centre -> table (x, y)
    tex_to_table = np.array([[s, 0, centre[0] - side / 2 + s / 2], [0, s, centre[1] - side / 2 + s / 2], [0, 0, 1]])
    table_to_image = K @ np.stack([cam.R[:, 0], cam.R[:, 1], cam.t], 1)
    H = table_to_image @ tex_to_table
    image = cv2.warpPerspective(texture, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inside = cv2.warpPerspective(np.ones((TEXTURE_SIZE, TEXTURE_SIZE), np.uint8), H, (w, h),
                                 flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    # pixels whose ray meets the plane behind the camera map onto the texture too: keep the real hits only
    v, u = np.mgrid[0:h, 0:w]
    seen = inside & (ray_directions(cam, K, np.stack([u, v], -1).astype(np.float64))[..., 2] < 0)
    return TableTop(image.astype(np.float32), seen, side, centre)
