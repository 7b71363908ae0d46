"""Pose error metrics (numpy, metres and pixels): ADD, ADD-S, 2D projection, 5cm5deg, rotation and
translation errors, MSSD and MSPD with symmetries, VSD, recalls and the BOP'19 average recall.

Poses are object-to-camera (R (3, 3), t (3,) [m]); ``points`` are model points (N, 3) [m]; symmetry
transforms are (S, 4, 4) with the identity included (``ModelInfo.symmetry_transforms``).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _transform(R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ np.asarray(R).T + np.asarray(t).reshape(1, 3)


def _project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    uvw = points_cam @ np.asarray(K).T
    return uvw[:, :2] / uvw[:, 2:3]


def add(R_e, t_e, R_g, t_g, points: np.ndarray) -> float:
    """Average distance of corresponding model points [m] (Hinterstoisser et al. 2012)."""
    return float(np.linalg.norm(_transform(R_e, t_e, points) - _transform(R_g, t_g, points), axis=1).mean())


def adds(R_e, t_e, R_g, t_g, points: np.ndarray) -> float:
    """Average distance to the closest estimated model point [m] (ADD-S, for symmetric objects)."""
    est = _transform(R_e, t_e, points)
    gt = _transform(R_g, t_g, points)
    dist, _ = cKDTree(est).query(gt, k=1)
    return float(dist.mean())


def add_or_adds(R_e, t_e, R_g, t_g, points: np.ndarray, symmetric: bool) -> float:
    """ADD(-S): ADD-S for symmetric objects, ADD otherwise [m]."""
    return adds(R_e, t_e, R_g, t_g, points) if symmetric else add(R_e, t_e, R_g, t_g, points)


def proj2d(R_e, t_e, R_g, t_g, points: np.ndarray, K: np.ndarray) -> float:
    """Average distance of projected corresponding model points [px]."""
    pe = _project(_transform(R_e, t_e, points), K)
    pg = _project(_transform(R_g, t_g, points), K)
    return float(np.linalg.norm(pe - pg, axis=1).mean())


def rotation_error(R_e, R_g) -> float:
    """Geodesic angle between rotations [deg]."""
    cos = (np.trace(np.asarray(R_e).T @ np.asarray(R_g)) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def translation_error(t_e, t_g) -> float:
    """Euclidean distance of translations [m]."""
    return float(np.linalg.norm(np.asarray(t_e).reshape(3) - np.asarray(t_g).reshape(3)))


def cm_degree(R_e, t_e, R_g, t_g, cm: float = 5.0, degree: float = 5.0) -> bool:
    """True when the rotation error is below ``degree`` and the translation error below ``cm``."""
    return rotation_error(R_e, R_g) < degree and translation_error(t_e, t_g) < cm / 100


def _symmetric_poses(R_g, t_g, symmetries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ground-truth poses equivalent under the symmetries: (S, 3, 3), (S, 3)."""
    S = np.asarray(symmetries, dtype=np.float64)
    Rs = np.asarray(R_g) @ S[:, :3, :3]
    ts = (np.asarray(R_g) @ S[:, :3, 3].T).T + np.asarray(t_g).reshape(1, 3)
    return Rs, ts


def mssd(R_e, t_e, R_g, t_g, points: np.ndarray, symmetries: np.ndarray) -> float:
    """Maximum Symmetry-aware Surface Distance [m] (BOP'19)."""
    est = _transform(R_e, t_e, points)
    Rs, ts = _symmetric_poses(R_g, t_g, symmetries)
    return float(min(np.linalg.norm(est - _transform(R, t, points), axis=1).max() for R, t in zip(Rs, ts)))


def _line_of_sight(t: np.ndarray) -> np.ndarray:
    """Unit direction from the camera to a centre ``t``; a centre at the camera: the optical axis."""
    dist = np.linalg.norm(t)
    return t / dist if dist > 0 else np.array([0.0, 0.0, 1.0])


def pose_error_parts(R_e, t_e, R_g, t_g, symmetries: np.ndarray) -> tuple[float, float, float]:
    """(rotation [deg], lateral [m], depth [m]) errors against the symmetric ground-truth pose with the
    smallest rotation error: which part of a pose is wrong. The translation error is split along the line
    of sight to the true centre (depth) and across it (lateral), as DeepIM splits its update into (vx, vy)
    and vz: an estimate on the right ray at the wrong distance has no lateral error. A symmetry's offset
    t_p moves the equivalent pose's translation."""
    Rs, ts = _symmetric_poses(R_g, t_g, symmetries)
    rot = [rotation_error(R_e, R) for R in Rs]
    k = int(np.argmin(rot))
    d = np.asarray(t_e, dtype=np.float64).reshape(3) - ts[k]
    ray = _line_of_sight(ts[k])
    along = float(d @ ray)
    return rot[k], float(np.linalg.norm(d - along * ray)), abs(along)


def add_with_exact_part(R_e, t_e, R_g, t_g, points: np.ndarray, symmetric: bool) -> tuple[float, float, float]:
    """ADD(-S) [m] of the estimate with its rotation, its lateral translation or its depth replaced by the
    truth's (the split of ``pose_error_parts``, about the true centre's line of sight): the part that, made
    exact, passes most targets is the one that holds an estimator back."""
    t_e, t_g = np.asarray(t_e, np.float64).reshape(3), np.asarray(t_g, np.float64).reshape(3)
    ray = _line_of_sight(t_g)
    along = float((t_e - t_g) @ ray)
    return (add_or_adds(R_g, t_e, R_g, t_g, points, symmetric),
            add_or_adds(R_e, t_g + along * ray, R_g, t_g, points, symmetric),
            add_or_adds(R_e, t_e - along * ray, R_g, t_g, points, symmetric))


def mspd(R_e, t_e, R_g, t_g, points: np.ndarray, symmetries: np.ndarray, K: np.ndarray) -> float:
    """Maximum Symmetry-aware Projection Distance [px] (BOP'19)."""
    pe = _project(_transform(R_e, t_e, points), K)
    Rs, ts = _symmetric_poses(R_g, t_g, symmetries)
    return float(min(np.linalg.norm(pe - _project(_transform(R, t, points), K), axis=1).max()
                     for R, t in zip(Rs, ts)))


def depth_to_distance(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Depth image z [m] (H, W) -> distance from the camera centre along each pixel ray [m]."""
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W]
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return depth * np.sqrt(x * x + y * y + 1)


def vsd(depth_est: np.ndarray, depth_gt: np.ndarray, depth_test: np.ndarray, K: np.ndarray, delta: float,
        taus: np.ndarray) -> np.ndarray:
    """Visible Surface Discrepancy (Hodan et al.; BOP'19) for several misalignment tolerances.

    Args:
        depth_est, depth_gt: depth [m] of the object rendered alone at the estimated / true pose (0 off it).
        depth_test: observed depth image [m] (0 where unknown). K: (3, 3).
        delta: tolerance for the visibility test [m] (BOP: 0.015). taus: (T,) tolerances [m].
    Returns:
        (T,) errors in [0, 1]; 1 where nothing is visible in either pose.
    """
    dist_est, dist_gt, dist_test = (depth_to_distance(d, K) for d in (depth_est, depth_gt, depth_test))
    test_valid = dist_test > 0
    visib_gt = (dist_gt > 0) & (~test_valid | (dist_gt <= dist_test + delta))
    # BOP: an estimated surface point is visible if in front of the test surface, or where the object
    # is visible in the ground truth (it may occlude the test surface there)
    visib_est = (dist_est > 0) & (~test_valid | (dist_est <= dist_test + delta) | visib_gt)
    union = visib_gt | visib_est
    inter = visib_gt & visib_est
    n_union = int(union.sum())
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    if n_union == 0:
        return np.ones(len(taus))
    cost = np.abs(dist_est[inter] - dist_gt[inter])
    matched = (cost[None, :] < taus[:, None]).sum(1)
    return (n_union - matched) / n_union


def recall(errors: np.ndarray, threshold: float) -> float:
    """Fraction of errors strictly below ``threshold`` (0 for an empty list)."""
    errors = np.asarray(errors, dtype=np.float64)
    return float((errors < threshold).mean()) if errors.size else 0.0


BOP_VSD_TAUS = np.arange(0.05, 0.51, 0.05)  # x diameter
BOP_THRESHOLDS = np.arange(0.05, 0.51, 0.05)  # VSD error and MSSD (x diameter)
BOP_MSPD_THRESHOLDS = np.arange(5, 51, 5)  # [px] at image width 640


def average_recall(vsd_errors: np.ndarray | None, mssd_errors: np.ndarray, mspd_errors: np.ndarray,
                   diameters: np.ndarray, image_width: int = 640) -> dict[str, float]:
    """BOP'19 AR = mean(AR_VSD, AR_MSSD, AR_MSPD).

    Args:
        vsd_errors: (n, len(BOP_VSD_TAUS)) VSD errors per target and tau, or None (AR without VSD).
        mssd_errors: (n,) [m]. mspd_errors: (n,) [px]. diameters: (n,) object diameters [m].
            A missed target counts with error inf (pass ``np.inf``).
    """
    diameters = np.asarray(diameters, dtype=np.float64)
    mssd_norm = np.asarray(mssd_errors, dtype=np.float64) / diameters
    ar_mssd = float(np.mean([recall(mssd_norm, th) for th in BOP_THRESHOLDS]))
    scale = image_width / 640.0
    ar_mspd = float(np.mean([recall(mspd_errors, th * scale) for th in BOP_MSPD_THRESHOLDS]))
    out = {"AR_MSSD": ar_mssd, "AR_MSPD": ar_mspd}
    if vsd_errors is not None:
        vsd_errors = np.asarray(vsd_errors, dtype=np.float64)
        out["AR_VSD"] = float(np.mean([recall(vsd_errors[:, i], th) for i in range(vsd_errors.shape[1])
                                       for th in BOP_THRESHOLDS]))
    out["AR"] = float(np.mean(list(out.values())))
    return out
