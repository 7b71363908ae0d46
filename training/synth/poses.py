"""Object poses for a synthetic image: viewpoint on a sphere band, position inside the image,
and rejection of objects that would sit inside each other."""

from __future__ import annotations

import numpy as np
import torch

from ros2_pose6d.geometry.rotations import ray_rotation


def look_at_rotation(azimuth: float, elevation: float, roll: float) -> np.ndarray:
    """Object-to-camera rotation of a camera on the viewing sphere looking at the object origin.

    azimuth/elevation [rad] place the camera in the object frame (elevation above the xy plane, up = +z);
    roll [rad] turns the image about the optical axis.
    """
    ce = np.cos(elevation)
    cam = np.array([ce * np.cos(azimuth), ce * np.sin(azimuth), np.sin(elevation)])
    z = -cam  # optical axis, in the object frame, points from the camera to the object
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.999 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)  # image x: right
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # image y: down
    R_cam_in_obj = np.stack([x, y, z], 1)  # columns: camera axes in the object frame
    c, s = np.cos(roll), np.sin(roll)
    R_roll = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return R_roll @ R_cam_in_obj.T


def sample_poses(rng: np.random.Generator, radii: np.ndarray, K: np.ndarray, hw: tuple[int, int],
                 distance: tuple[float, float], elevation_deg: tuple[float, float], border: float,
                 min_separation: float, tries: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Poses (R (N, 3, 3), t (N, 3)) for objects of bounding radii ``radii`` (N,) [m].

    Each object's centre projects inside the image (``border`` fraction kept free) at a depth drawn from
    ``distance``; objects whose bounding spheres overlap by more than ``min_separation`` are re-drawn
    (up to ``tries`` times, then accepted: dense scenes still get made).
    """
    h, w = hw
    Kinv = np.linalg.inv(K)
    Rs, ts = [], []
    for r in radii:
        for _ in range(tries):
            u = rng.uniform(border * w, (1 - border) * w)
            v = rng.uniform(border * h, (1 - border) * h)
            z = rng.uniform(*distance)
            t = Kinv @ np.array([u, v, 1.0]) * z
            if all(np.linalg.norm(t - t2) >= min_separation * (r + r2) for t2, r2 in zip(ts, radii)):
                break
        az = rng.uniform(0, 2 * np.pi)
        el = np.deg2rad(rng.uniform(*elevation_deg))
        R = look_at_rotation(az, el, rng.uniform(-np.pi, np.pi))
        # look_at views the object from the optical axis; turning by the ray's direction keeps the view
        # angle relative to the line of sight (what the image shows) as sampled.
        ray = t / np.linalg.norm(t)
        Rs.append(ray_rotation(torch.as_tensor(ray)).numpy() @ R)
        ts.append(t)
    if not ts:
        return np.zeros((0, 3, 3)), np.zeros((0, 3))
    return np.stack(Rs), np.stack(ts)
