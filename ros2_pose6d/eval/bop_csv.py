"""BOP results CSV: ``scene_id,im_id,obj_id,score,R,t,time`` with R row-major (9 numbers) and t in mm,
space-separated, time in seconds (-1 if unknown). In memory t is in metres."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = ["scene_id", "im_id", "obj_id", "score", "R", "t", "time"]


@dataclass(frozen=True)
class BopResult:
    scene_id: int
    im_id: int
    obj_id: int
    score: float
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,) [m]
    time: float = -1.0


def write_bop_csv(path: str | Path, results: list[BopResult]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for r in results:
            w.writerow([r.scene_id, r.im_id, r.obj_id, f"{r.score:.6f}",
                        " ".join(f"{x:.9f}" for x in np.asarray(r.R).reshape(9)),
                        " ".join(f"{x * 1000:.6f}" for x in np.asarray(r.t).reshape(3)), f"{r.time:.6f}"])


def read_bop_csv(path: str | Path) -> list[BopResult]:
    """Parse a results CSV; a malformed row raises ValueError naming the file and line."""
    out = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != HEADER:
            raise ValueError(f"{path}: expected header {','.join(HEADER)}, got {header}")
        for line, row in enumerate(reader, start=2):
            try:
                R = np.array([float(x) for x in row[4].split()]).reshape(3, 3)
                t = np.array([float(x) for x in row[5].split()]).reshape(3) / 1000
                out.append(BopResult(int(row[0]), int(row[1]), int(row[2]), float(row[3]), R, t, float(row[6])))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{line}: malformed row ({exc})") from exc
    return out
