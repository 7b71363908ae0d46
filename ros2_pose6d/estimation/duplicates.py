"""One object instance estimated twice. The detector suppresses duplicates by box overlap, but two boxes of one
instance can overlap less than its IoU and both pass; refined, their poses then converge on the same pose, and a
node would publish two TF frames and two markers for one object (on the demo test split, 15 such pairs among 314
refined detections). Two rigid instances of one object cannot have their centres that close, so the weaker
hypothesis is dropped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ros2_pose6d.estimation.types import PoseEstimate


def drop_duplicates(estimates: list[PoseEstimate], diameters: Mapping[int, float],
                    distance: float) -> list[PoseEstimate]:
    """``estimates`` without those whose centre lies within ``distance`` times its object's diameter of a
    higher-scoring estimate of the same object (ties: the earlier one stays); the rest in their given order, an
    object's instance numbers renumbered 0, 1, ... in their order where one of its estimates was dropped.
    ``distance`` <= 0 keeps every estimate."""
    if distance <= 0 or len(estimates) < 2:
        return list(estimates)
    order = sorted(range(len(estimates)), key=lambda i: -float(estimates[i].score))
    kept: list[int] = []
    for i in order:
        e = estimates[i]
        reach = distance * float(diameters[e.object_id])
        if not any(estimates[j].object_id == e.object_id
                   and np.linalg.norm(np.asarray(estimates[j].t) - np.asarray(e.t)) < reach for j in kept):
            kept.append(i)
    keep = set(kept)
    out = [e for i, e in enumerate(estimates) if i in keep]
    dropped = {e.object_id for i, e in enumerate(estimates) if i not in keep}
    for obj in dropped:  # the instance numbers name TF frames: close the gaps, keeping their order
        mine = sorted((k for k, e in enumerate(out) if e.object_id == obj), key=lambda k: out[k].instance)
        for n, k in enumerate(mine):
            out[k] = replace(out[k], instance=n)
    return out
