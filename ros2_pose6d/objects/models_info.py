"""BOP ``models_info.json``: read/write, and symmetries turned into a finite set of transforms.

In the file everything is in millimetres (BOP); in memory, metres.
Symmetry transforms S = (R, t) map the object onto itself: the pose (R_p R, R_p t + t_p) looks the same
as (R_p, t_p). Continuous symmetries are discretised into ``continuous_steps`` rotations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class ModelsInfoError(ValueError):
    """A models_info.json that cannot be used; the message names the file and object."""


@dataclass(frozen=True)
class ContinuousSymmetry:
    axis: np.ndarray  # (3,) unit
    offset: np.ndarray  # (3,) [m], a point on the axis


@dataclass(frozen=True)
class ModelInfo:
    """One object's entry: diameter [m], 3D box min/size [m] and symmetries."""

    obj_id: int
    diameter: float
    bbox_min: np.ndarray
    bbox_size: np.ndarray
    symmetries_discrete: list[np.ndarray] = field(default_factory=list)  # (4, 4), t in metres
    symmetries_continuous: list[ContinuousSymmetry] = field(default_factory=list)

    @property
    def is_symmetric(self) -> bool:
        return bool(self.symmetries_discrete or self.symmetries_continuous)

    def symmetry_transforms(self, continuous_steps: int = 36) -> np.ndarray:
        """(S, 4, 4) symmetry transforms including the identity (first), t in metres."""
        return symmetry_transforms(self, continuous_steps)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def symmetry_transforms(info: ModelInfo, continuous_steps: int = 36) -> np.ndarray:
    """All products of {identity + discrete} x {continuous rotations}, as in the BOP toolkit."""
    discrete = [np.eye(4)] + [np.asarray(s, dtype=np.float64) for s in info.symmetries_discrete]
    continuous = [np.eye(4)]
    for sym in info.symmetries_continuous:
        for k in range(1, continuous_steps):
            R = _rotation(sym.axis, 2 * np.pi * k / continuous_steps)
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = sym.offset - R @ sym.offset
            continuous.append(T)
    out = [c @ d for d in discrete for c in continuous]
    return np.stack(out).astype(np.float64)


def read_models_info(path: str | Path) -> dict[int, ModelInfo]:
    """Parse models_info.json (mm) into {obj_id: ModelInfo} in metres."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelsInfoError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise ModelsInfoError(f"{path}: not valid JSON ({exc})") from exc
    infos = {}
    for key, entry in raw.items():
        if "diameter" not in entry:
            raise ModelsInfoError(f"{path}: object {key} has no 'diameter'")
        try:
            discrete = [np.asarray(s, dtype=np.float64).reshape(4, 4) for s in entry.get("symmetries_discrete", [])]
            for s in discrete:
                s[:3, 3] *= 0.001
            continuous = [
                ContinuousSymmetry(np.asarray(s["axis"], dtype=np.float64) / np.linalg.norm(s["axis"]),
                                   np.asarray(s.get("offset", [0, 0, 0]), dtype=np.float64) * 0.001)
                for s in entry.get("symmetries_continuous", [])
            ]
            bbox_min = np.array([entry.get("min_x", 0.0), entry.get("min_y", 0.0), entry.get("min_z", 0.0)]) * 0.001
            bbox_size = np.array([entry.get("size_x", 0.0), entry.get("size_y", 0.0), entry.get("size_z", 0.0)]) * 0.001
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelsInfoError(f"{path}: object {key} has a malformed entry ({exc})") from exc
        infos[int(key)] = ModelInfo(int(key), float(entry["diameter"]) * 0.001, bbox_min, bbox_size,
                                    discrete, continuous)
    return infos


def write_models_info(path: str | Path, infos: dict[int, ModelInfo]) -> None:
    """Write {obj_id: ModelInfo} (metres) as BOP models_info.json (millimetres)."""
    out = {}
    for obj_id in sorted(infos):
        info = infos[obj_id]
        entry = {"diameter": round(info.diameter * 1000, 6)}
        for i, axis in enumerate("xyz"):
            entry[f"min_{axis}"] = round(float(info.bbox_min[i]) * 1000, 6)
            entry[f"size_{axis}"] = round(float(info.bbox_size[i]) * 1000, 6)
        if info.symmetries_discrete:
            syms = []
            for s in info.symmetries_discrete:
                mm = np.array(s, dtype=np.float64)
                mm[:3, 3] *= 1000
                syms.append([round(float(x), 9) for x in mm.flatten()])
            entry["symmetries_discrete"] = syms
        if info.symmetries_continuous:
            entry["symmetries_continuous"] = [
                {"axis": [float(x) for x in s.axis], "offset": [round(float(x) * 1000, 6) for x in s.offset]}
                for s in info.symmetries_continuous
            ]
        out[str(obj_id)] = entry
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
