"""Pose-accuracy reports: match estimates to ground truth per frame, compute every metric per target,
aggregate per object and overall (ADD(-S) 0.1d, 5cm5deg, proj 5px, AR_MSSD, AR_MSPD, AR), print the
table and draw recall curves and per-object bars. Shared by ``evaluate``, bag replay and the demo."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ros2_pose6d.eval.detection import DetectionAP
from ros2_pose6d.eval.metrics import (
    add_or_adds,
    add_with_exact_part,
    average_recall,
    cm_degree,
    mspd,
    mssd,
    pose_error_parts,
    proj2d,
    recall,
)
from ros2_pose6d.objects.registry import ObjectRegistry


@dataclass
class TargetResult:
    """Errors of the best-matching estimate for one ground-truth instance (inf when missed)."""

    obj_id: int
    diameter: float
    add: float = math.inf  # [m], ADD-S for symmetric objects
    proj: float = math.inf  # [px]
    mssd: float = math.inf  # [m]
    mspd: float = math.inf  # [px]
    cm_deg: bool = False
    vis_err: float = math.nan  # |estimated - true visible fraction| when both are known
    rot_deg: float = math.nan  # symmetry-aware rotation error [deg] (``pose_error_parts``)
    lateral_err: float = math.nan  # translation error across the line of sight [m]
    depth_err: float = math.nan  # translation error along the line of sight [m]
    # ADD(-S) [m] with the rotation, the lateral translation or the depth made exact (``add_with_exact_part``)
    add_exact: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    true_vis: float = math.nan  # the target's visible fraction, when the ground truth has one


# score bins of ``Report.score_reliability``: (label, lower bound, upper bound exclusive)
SCORE_BINS = (("<0.1", -math.inf, 0.1), ("0.1-0.3", 0.1, 0.3), ("0.3-0.5", 0.3, 0.5), ("0.5-0.7", 0.5, 0.7),
              ("0.7-0.9", 0.7, 0.9), (">=0.9", 0.9, math.inf))
# visible-fraction bins of ``Report.visibility_recalls``: (label, lower bound, upper bound exclusive)
VISIBILITY_BINS = (("<30%", 0.0, 0.3), ("30-50%", 0.3, 0.5), ("50-80%", 0.5, 0.8), ("80-95%", 0.8, 0.95),
                   (">=95%", 0.95, math.inf))


def _truth(g) -> tuple[int, float | None, np.ndarray | None]:
    """(object id, visible fraction, visible box xyxy) of a ground-truth target: a BOP GtInstance (obj_id,
    visib_fract, bbox_visib as x, y, w, h) or a PoseEstimate carried in a bag (object_id, visibility,
    bbox_xyxy)."""
    if hasattr(g, "object_id"):
        return g.object_id, g.visibility, np.asarray(g.bbox_xyxy, float)
    b = g.bbox_visib
    return g.obj_id, g.visib_fract, None if b is None else np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]], float)


def top_per_object(estimates: Sequence, counts: Mapping[int, int]) -> list:
    """Per object id, the ``counts[id]`` highest-scoring of ``estimates`` (none of an object not in ``counts``),
    in their given order; ties keep the earlier. BOP's n_top -1: a method may send any number of hypotheses, and
    the benchmark scores as many of an object as the image has instances of it."""
    order = sorted(range(len(estimates)), key=lambda i: -float(estimates[i].score))
    left = dict(counts)
    keep = set()
    for i in order:
        oid = estimates[i].object_id
        if left.get(oid, 0) > 0:
            left[oid] -= 1
            keep.add(i)
    return [e for i, e in enumerate(estimates) if i in keep]


@dataclass
class Report:
    """Targets per stage name ('detected', 'refined', ...)."""

    targets: dict[str, list[TargetResult]] = field(default_factory=dict)
    image_width: int = 640
    detection: DetectionAP = field(default_factory=DetectionAP)
    # ground truth less visible than this is no target (BOP's rule, visib_gt_min 0.1): not expected to be detected
    # (AP50) and not counted in the pose metrics, as no image shows enough of it to estimate a pose from
    min_visib: float = 0.1
    # or the instances a BOP targets file names (``add_frame``'s ``targets``; this names the file), visible or not
    targets_file: str | None = None
    left_out: dict[str, int] = field(default_factory=dict)  # per stage: instances left out as no target
    ap_min_score: float | None = None  # the score the detections ranked for AP50 were cut at, when known
    ap_nms_iou: float | None = None  # the detector's duplicate suppression IoU, when known
    # per stage: ranked estimates beyond each object's count of targets in their frame, not scored (``add_frame``)
    beyond_top: dict[str, int] = field(default_factory=dict)
    # per stage: (score, passes ADD(-S) 0.1d of a target) of every scored estimate of ranked frames (``add_frame``)
    scored: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)

    def _is_target(self, vis: float | None, targets: Sequence[bool] | None, k: int) -> bool:
        return bool(targets[k]) if targets is not None else vis is None or vis >= self.min_visib

    def _target_mask(self, gts, registry: ObjectRegistry, targets: Sequence[bool] | None) -> list[bool]:
        return [_truth(g)[0] in registry.ids and self._is_target(_truth(g)[1], targets, k) for k, g in enumerate(gts)]

    def target_counts(self, gts, registry: ObjectRegistry, targets: Sequence[bool] | None = None) -> Counter:
        """Targets per object id among a frame's ``gts`` (``add_frame``'s rule): how many of a detector's
        hypotheses of each object ``add_frame(ranked=True)`` scores."""
        return Counter(_truth(g)[0] for g, hit in zip(gts, self._target_mask(gts, registry, targets), strict=True)
                       if hit)

    def add_detections(self, estimates, gts, targets: Sequence[bool] | None = None) -> None:
        """2D boxes of the detector against the visible ground-truth boxes (x, y, w, h) for AP50; instances
        that are no target (less visible than ``min_visib``, or False in ``targets``, one per gt) are ignored
        (finding one is neither a hit nor a false positive)."""
        truth, ignore = [], []
        for k, g in enumerate(gts):
            obj_id, vis, xyxy = _truth(g)
            if xyxy is None or xyxy[2] <= xyxy[0]:
                continue
            if not self._is_target(vis, targets, k):
                ignore.append((obj_id, xyxy))
            else:
                truth.append((obj_id, xyxy, vis))
        self.detection.add([(e.object_id, e.score, np.asarray(e.bbox_xyxy, float), e.visibility) for e in estimates],
                           truth, ignore)

    def add_frame(self, stage: str, estimates, gts, K: np.ndarray, registry: ObjectRegistry,
                  points_step: int = 5, targets: Sequence[bool] | None = None, ranked: bool = False,
                  unranked: int = 0) -> None:
        """Match ``estimates`` (PoseEstimates) to ``gts`` (objects with obj_id, R, t) of one frame: per object
        id, greedily by ADD(-S), one estimate per target. Instances that are no target (known to be less visible
        than ``min_visib``, or, where ``targets`` is given, one bool per gt, False there) are counted in
        ``left_out`` instead (an estimate of one is neither right nor wrong). ``ranked``: the estimates are
        scored detections (a detector's, refined or not), of which, as in BOP (n_top -1), only each object's
        best-scoring ones count, as many as it has targets in the frame; otherwise a detector's duplicates would
        be further tries at one target. The rest are counted in ``beyond_top``, with ``unranked`` more: hypotheses
        left out before the ranking (``pose6d-evaluate`` refines only those it may score)."""
        out = self.targets.setdefault(stage, [])
        self.left_out.setdefault(stage, 0)
        is_target = self._target_mask(gts, registry, targets)
        if ranked:
            kept = top_per_object(estimates, self.target_counts(gts, registry, targets))
            self.beyond_top[stage] = self.beyond_top.get(stage, 0) + len(estimates) - len(kept) + unranked
            estimates = kept
        used: set[int] = set()
        passed: set[int] = set()  # the estimates that pass ADD(-S) 0.1d of the target they matched
        for k, g in enumerate(gts):
            gid, true_vis, _ = _truth(g)
            if gid not in registry.ids:
                continue
            if not is_target[k]:
                self.left_out[stage] += 1
                continue
            obj = registry[gid]
            pts = obj.mesh.vertices[::points_step].astype(np.float64)
            res = TargetResult(gid, obj.diameter, true_vis=math.nan if true_vis is None else float(true_vis))
            best, best_i = math.inf, -1
            for i, e in enumerate(estimates):
                if i in used or e.object_id != gid:
                    continue
                err = add_or_adds(e.R, e.t, g.R, g.t, pts, obj.info.is_symmetric)
                if err < best:
                    best, best_i = err, i
            if best_i >= 0:
                used.add(best_i)
                if best < 0.1 * obj.diameter:
                    passed.add(best_i)
                e = estimates[best_i]
                sym = obj.symmetries
                res.add = best
                res.proj = proj2d(e.R, e.t, g.R, g.t, pts, K)
                res.mssd = mssd(e.R, e.t, g.R, g.t, pts, sym)
                res.mspd = mspd(e.R, e.t, g.R, g.t, pts, sym, K)
                res.cm_deg = cm_degree(e.R, e.t, g.R, g.t)
                res.rot_deg, res.lateral_err, res.depth_err = pose_error_parts(e.R, e.t, g.R, g.t, sym)
                res.add_exact = add_with_exact_part(e.R, e.t, g.R, g.t, pts, obj.info.is_symmetric)
                if true_vis is not None:
                    res.vis_err = abs(float(e.visibility) - float(true_vis))
            out.append(res)
        if ranked:
            self.scored.setdefault(stage, []).extend((float(e.score), i in passed) for i, e in enumerate(estimates))

    def summary(self, stage: str, obj_id: int | None = None) -> dict[str, float]:
        rows = [r for r in self.targets.get(stage, []) if obj_id is None or r.obj_id == obj_id]
        if not rows:
            return {}
        diam = np.array([r.diameter for r in rows])
        add = np.array([r.add for r in rows])
        ar = average_recall(None, np.array([r.mssd for r in rows]), np.array([r.mspd for r in rows]), diam,
                            self.image_width)
        vis = np.array([r.vis_err for r in rows if np.isfinite(r.vis_err)])
        return {"n": len(rows), "ADD(-S) 0.1d": float(np.mean(add < 0.1 * diam)),
                "vis MAE": float(vis.mean()) if len(vis) else math.nan,
                "5cm5deg": float(np.mean([r.cm_deg for r in rows])),
                "proj 5px": recall(np.array([r.proj for r in rows]), 5.0 * self.image_width / 640),
                "AR_MSSD": ar["AR_MSSD"], "AR_MSPD": ar["AR_MSPD"], "AR": ar["AR"],
                **{f"median {k}": v for k, v in self.error_medians(stage, obj_id).items() if k != "matched"},
                **{f"ADD(-S) 0.1d {k}": v for k, v in self.exact_part_recalls(stage, obj_id).items() if k != "as is"}}

    def detection_summary(self) -> dict[str, float]:
        """box_AP50 and, where the detections carried a visibility, box_vis_MAE (over the targets the boxes
        found; ``DetectionAP.vis_mae``); empty without detector ground truth."""
        if not self.detection.num_gt:
            return {}
        out = {"box_AP50": self.detection.ap50()[0]}
        vis_mae, hits = self.detection.vis_mae()
        if hits:
            out["box_vis_MAE"] = vis_mae
        return out

    def object_ids(self) -> list[int]:
        """The object ids with targets in any stage, sorted."""
        return sorted({r.obj_id for rows in self.targets.values() for r in rows})

    def error_medians(self, stage: str, obj_id: int | None = None) -> dict[str, float]:
        """Median rotation [deg], lateral and depth [mm] errors (``pose_error_parts``) of the matched
        targets (NaN when none matched; empty when the stage has no target of ``obj_id``): which part of
        the pose a stage gets wrong, or a refiner fixes."""
        targets = [r for r in self.targets.get(stage, []) if obj_id is None or r.obj_id == obj_id]
        if not targets:
            return {}
        rows = [r for r in targets if math.isfinite(r.rot_deg)]
        if not rows:
            return {"matched": 0, "rot deg": math.nan, "lateral mm": math.nan, "depth mm": math.nan}
        return {"matched": len(rows), "rot deg": float(np.median([r.rot_deg for r in rows])),
                "lateral mm": float(np.median([r.lateral_err for r in rows])) * 1000,
                "depth mm": float(np.median([r.depth_err for r in rows])) * 1000}

    def exact_part_recalls(self, stage: str, obj_id: int | None = None) -> dict[str, float]:
        """ADD(-S) 0.1d as is and with the rotation, the lateral translation or the depth made exact, over all
        targets (missed ones fail in every column; empty when the stage has no target of ``obj_id``)."""
        rows = [r for r in self.targets.get(stage, []) if obj_id is None or r.obj_id == obj_id]
        if not rows:
            return {}
        diam = np.array([r.diameter for r in rows])
        exact = np.array([r.add_exact for r in rows]).reshape(-1, 3)
        out = {"as is": float(np.mean(np.array([r.add for r in rows]) < 0.1 * diam))}
        for k, name in enumerate(("exact rot", "exact lateral", "exact depth")):
            out[name] = float(np.mean(exact[:, k] < 0.1 * diam))
        return out

    def visibility_recalls(self, stage: str) -> dict[str, dict[str, float]]:
        """ADD(-S) 0.1d of the targets in each ``VISIBILITY_BINS`` bin of their true visible fraction (bins with no
        target left out; targets without a known visible fraction counted in none): how a stage copes with
        occlusion, which the overall number hides."""
        rows = [r for r in self.targets.get(stage, []) if math.isfinite(r.true_vis)]
        out = {}
        for label, lo, hi in self.visibility_bins():
            sel = [r for r in rows if lo <= r.true_vis < hi]
            if sel:
                out[label] = {"n": len(sel), "ADD(-S) 0.1d": float(np.mean([r.add < 0.1 * r.diameter for r in sel]))}
        return out

    def visibility_bins(self) -> tuple[tuple[str, float, float], ...]:
        """``VISIBILITY_BINS``, the first one named from ``min_visib`` up (the targets below are not counted)."""
        (label, lo, hi), *rest = VISIBILITY_BINS
        if self.min_visib > lo and not self.targets_file:
            label = f"{self.min_visib * 100:g}-{hi * 100:g}%"
        return ((label, lo, hi), *rest)

    def score_reliability(self, stage: str) -> dict[str, dict[str, float]]:
        """Of the scored estimates of ``stage`` (ranked frames) in each ``SCORE_BINS`` bin of their score, how many
        and which share pass ADD(-S) 0.1d of a target (bins with none left out): what a threshold on the score
        keeps, and whether the score tells right poses from wrong ones."""
        pairs = self.scored.get(stage, [])
        out = {}
        for label, lo, hi in SCORE_BINS:
            hits = [ok for score, ok in pairs if lo <= score < hi]
            if hits:
                out[label] = {"n": len(hits), "ADD(-S) 0.1d": float(np.mean(hits))}
        return out

    def reliability_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``score_reliability`` of every stage with scored estimates (for JSON reports)."""
        return {stage: bins for stage in self.scored if (bins := self.score_reliability(stage))}

    def left_out_summary(self) -> dict[str, float | dict[str, int]]:
        """For JSON reports: the rule (``min_visib`` or the targets file) and, per stage, how many instances it left
        out and how many ranked estimates went unscored (``add_frame``; empty when neither happened)."""
        if not any(self.left_out.values()) and not self.targets_file and not any(self.beyond_top.values()):
            return {}
        rule = {"targets file": self.targets_file} if self.targets_file else {"min_visib": self.min_visib}
        beyond = {"estimates beyond the targets' count": dict(self.beyond_top)} if any(self.beyond_top.values()) else {}
        return rule | {"targets not counted": dict(self.left_out)} | beyond

    def visibility_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``visibility_recalls`` of every stage that has targets with a known visible fraction (for JSON reports)."""
        return {stage: bins for stage in self.targets if (bins := self.visibility_recalls(stage))}

    def table(self, registry: ObjectRegistry) -> str:
        """Plain-text tables: the accuracy of each object and stage, then the overall rows and how many instances
        were left out as no target (``min_visib`` or the targets file), the detector's box AP50; below, the
        median error parts of the matched targets and ADD(-S) 0.1d with one part made exact, per object and
        stage, and (where the ground truth has visible fractions) ADD(-S) 0.1d per visible-fraction bin."""
        cols = ["n", "ADD(-S) 0.1d", "5cm5deg", "proj 5px", "AR_MSSD", "AR_MSPD", "AR", "vis MAE"]

        def cell(c: str, v: float) -> str:  # vis MAE has no value when no estimate matched a target: '-'
            return f"{v:>14d}" if c == "n" else f"{'-':>14}" if math.isnan(v) else f"{v:>14.3f}"
        lines = [f"{'object':<14}{'stage':<10}" + "".join(f"{c:>14}" for c in cols)]
        for obj_id in self.object_ids():
            name = registry[obj_id].name
            for stage in self.targets:
                s = self.summary(stage, obj_id)
                if s:
                    lines.append(f"{name[:13]:<14}{stage:<10}" + "".join(cell(c, s[c]) for c in cols))
        for stage in self.targets:
            s = self.summary(stage)
            if s:
                lines.append(f"{'ALL':<14}{stage:<10}" + "".join(cell(c, s[c]) for c in cols))
        if any(self.left_out.values()):
            counts = ", ".join(f"{n} {stage}" for stage, n in self.left_out.items())
            why = f"not among the targets of {self.targets_file}" if self.targets_file else \
                f"less than {self.min_visib * 100:g} % visible (BOP's targets)"
            lines.append(f"not counted, as {why}: {counts}")
        if any(self.beyond_top.values()):
            counts = ", ".join(f"{n} {stage}" for stage, n in self.beyond_top.items())
            lines.append(f"estimates not scored, beyond their object's count of targets in the frame (BOP's top-n by "
                         f"score): {counts}")
        if self.detection.num_gt:
            mean, per = self.detection.ap50()
            ranked = "" if self.ap_min_score is None else f", detections scoring >= {self.ap_min_score:g}"
            if self.ap_nms_iou is not None and self.ap_nms_iou < 1.0:
                ranked += f", class-wise NMS at IoU {self.ap_nms_iou:g}"
            lines.append(f"box AP50 (detector{ranked}): {mean:.3f}  (" + ", ".join(
                f"{registry[c].name} {v:.2f}" for c, v in sorted(per.items()) if c in registry.ids) + ")")
            vis_mae, hits = self.detection.vis_mae()
            if hits:
                lines.append(f"visibility MAE of the detections that found a target (box IoU >= "
                             f"{self.detection.iou:g}, top score first): {vis_mae:.3f} over {hits} targets")
        if not any(self.targets.values()):
            return "\n".join(lines)
        parts = ["matched", "rot deg", "lateral mm", "depth mm"]
        lines += ["", "median errors of the matched targets (rotation symmetry-aware; translation across and "
                  "along the line of sight):",
                  f"{'object':<14}{'stage':<10}" + "".join(f"{c:>14}" for c in parts)]
        keys = [(registry[i].name[:13], i) for i in self.object_ids()] + [("ALL", None)]
        for name, obj_id in keys:
            for stage in self.targets:
                m = self.error_medians(stage, obj_id)
                if m:
                    lines.append(f"{name:<14}{stage:<10}" + "".join(
                        f"{m[c]:>14d}" if c == "matched" else cell(c, m[c]) for c in parts))
        exact = ["as is", "exact rot", "exact lateral", "exact depth"]
        lines += ["", "ADD(-S) 0.1d with one part of the pose made exact (the part that holds a stage back):",
                  f"{'object':<14}{'stage':<10}" + "".join(f"{c:>14}" for c in exact)]
        for name, obj_id in keys:
            for stage in self.targets:
                m = self.exact_part_recalls(stage, obj_id)
                if m:
                    lines.append(f"{name:<14}{stage:<10}" + "".join(cell(c, m[c]) for c in exact))
        by_vis = self.visibility_summary()
        if by_vis:
            labels = [b[0] for b in self.visibility_bins()]
            lines += ["", "ADD(-S) 0.1d by the target's visible fraction (targets in brackets):",
                      f"{'':<14}{'stage':<10}" + "".join(f"{c:>14}" for c in labels)]
            lines += _binned_rows(by_vis, labels)
        by_score = self.reliability_summary()
        if by_score:
            labels = [b[0] for b in SCORE_BINS]
            lines += ["", "scored poses passing ADD(-S) 0.1d by their score (poses in brackets; what a threshold on "
                      "the score keeps):", f"{'':<14}{'stage':<10}" + "".join(f"{c:>14}" for c in labels)]
            lines += _binned_rows(by_score, labels)
        return "\n".join(lines)

    def plots(self, out_dir: str | Path, registry: ObjectRegistry) -> list[Path]:
        """recall_curves.png (ADD(-S) recall vs threshold per stage), per_object.png (bars), exact_parts.png
        (ADD(-S) 0.1d per stage as is and with the rotation, lateral translation or depth made exact) and, where
        the ground truth has visible fractions, by_visibility.png (ADD(-S) 0.1d per visible-fraction bin)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 4))
        ths = np.linspace(0, 0.5, 51)
        for stage, rows in self.targets.items():
            rel = np.array([r.add / r.diameter for r in rows])
            ax.plot(ths, [float(np.mean(rel < th)) if len(rel) else 0 for th in ths], label=stage)
        ax.axvline(0.1, color="grey", ls=":")
        ax.set(xlabel="ADD(-S) threshold [x diameter]", ylabel="recall", ylim=(0, 1), title="ADD(-S) recall")
        ax.legend()
        fig.tight_layout()
        curves = out_dir / "recall_curves.png"
        fig.savefig(curves, dpi=100)
        plt.close(fig)
        ids = self.object_ids()
        bars = _grouped_bars(out_dir / "per_object.png", [registry[i].name for i in ids],
                             {st: [self.summary(st, i).get("ADD(-S) 0.1d", 0.0) for i in ids] for st in self.targets},
                             "per object", max(6, len(ids) * 0.9), rotation=30)
        stages = [st for st in self.targets if self.targets[st]]
        parts = ["as is", "exact rot", "exact lateral", "exact depth"]
        exact = _grouped_bars(out_dir / "exact_parts.png", stages,
                              {part: [self.exact_part_recalls(st)[part] for st in stages] for part in parts},
                              "with one part of the pose made exact", max(6, len(stages) * 2.2))
        out = [curves, bars, exact]
        by_vis = self.visibility_summary()
        labels = [b[0] for b in self.visibility_bins() if any(b[0] in bins for bins in by_vis.values())]
        if labels:
            counts = [max(bins[c]["n"] for bins in by_vis.values() if c in bins) for c in labels]
            out.append(_grouped_bars(out_dir / "by_visibility.png",
                                     [f"{c}\n({n} targets)" for c, n in zip(labels, counts)],
                                     {st: [bins[c]["ADD(-S) 0.1d"] if c in bins else 0.0 for c in labels]
                                      for st, bins in by_vis.items()},
                                     "by the target's visible fraction", max(6, len(labels) * 1.4)))
        by_score = self.reliability_summary()
        labels = [b[0] for b in SCORE_BINS if any(b[0] in bins for bins in by_score.values())]
        if labels:
            names = {st: f"{st} ({sum(b['n'] for b in bins.values())} poses)" for st, bins in by_score.items()}
            out.append(_grouped_bars(out_dir / "by_score.png", labels,
                                     {names[st]: [bins[c]["ADD(-S) 0.1d"] if c in bins else 0.0 for c in labels]
                                      for st, bins in by_score.items()},
                                     "scored poses by their score (poses above each bar)", max(6, len(labels) * 1.4),
                                     counts={names[st]: [bins[c]["n"] if c in bins else 0 for c in labels]
                                             for st, bins in by_score.items()}))
        return out


def _binned_rows(by_stage: dict[str, dict[str, dict[str, float]]], labels: list[str]) -> list[str]:
    """Table rows 'ALL <stage>' of a share and its count in brackets per bin label ('-' where a bin is empty)."""
    return [f"{'ALL':<14}{stage:<10}" + "".join(
        f"{'-':>14}" if c not in bins else f"{bins[c]['ADD(-S) 0.1d']:>7.3f} ({bins[c]['n']:>4d})" for c in labels)
        for stage, bins in by_stage.items()]


def _grouped_bars(path: Path, groups: list[str], series: dict[str, list[float]], title: str, width_in: float,
                  rotation: int = 0, counts: dict[str, list[int]] | None = None) -> Path:
    """A bar chart of ADD(-S) 0.1d: one group of bars per ``groups`` entry, one bar per ``series`` entry, each
    labelled with its entry of ``counts`` where given (0: no bar there)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width_in, 4))
    width = 0.8 / max(1, len(series))
    for k, (label, vals) in enumerate(series.items()):
        bars = ax.bar(np.arange(len(groups)) + k * width, vals, width, label=label)
        if counts is not None:
            ax.bar_label(bars, [f"{n}" if n else "" for n in counts[label]], fontsize=7)
    ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups, rotation=rotation)
    ax.set(ylabel="ADD(-S) 0.1d", ylim=(0, 1), title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
