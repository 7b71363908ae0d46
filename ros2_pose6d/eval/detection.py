"""2D detection accuracy: average precision at IoU 0.5 per object class (VOC-style all-point
interpolation), averaged over the classes present. Ground truth too occluded to be required (see
``Report.min_visib``) is passed as ``ignore``: a detection of it is neither a hit nor a false positive, as
COCO treats its ignore regions.

Where detections and ground truth carry a visible fraction, each hit also records the error of the
detection's visibility (``vis_mae``): the detector's own visibility accuracy, paired as its boxes are, so it
does not depend on how good the detector's poses are (the pose report pairs estimates by ADD(-S))."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(4,) box vs (M, 4) boxes, xyxy."""
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def _visibility(row: tuple, index: int) -> float | None:
    """The optional visible fraction at ``index`` of a detection or ground-truth tuple."""
    return None if len(row) <= index or row[index] is None else float(row[index])


class DetectionAP:
    """Accumulate frames with ``add``; ``ap50()`` -> (mAP, {class: AP})."""

    def __init__(self, iou: float = 0.5) -> None:
        self.iou = iou
        self.dets: dict[int, list[tuple[float, bool]]] = defaultdict(list)
        self.num_gt: dict[int, int] = defaultdict(int)
        self.vis_errors: list[float] = []  # |detected - true visible fraction| of each hit where both are known

    def add(self, detections: list[tuple], ground_truth: list[tuple],
            ignore: list[tuple[int, np.ndarray]] = ()) -> None:
        """detections: (class, score, xyxy[, visibility]); ground_truth: (class, xyxy[, visible fraction]), one
        frame; ignore: (class, xyxy) of instances a detection may find but need not (matched only by detections
        no required one took). A visibility left out or None is not scored."""
        for cls in {g[0] for g in ground_truth} | {d[0] for d in detections}:
            truth = [g for g in ground_truth if g[0] == cls]
            gts = np.array([g[1] for g in truth], float).reshape(-1, 4)
            ign = np.array([b for c, b in ignore if c == cls], float).reshape(-1, 4)
            self.num_gt[cls] += len(gts)
            used = np.zeros(len(gts), bool)
            for det in sorted([d for d in detections if d[0] == cls], key=lambda d: -d[1]):
                score, box, hit = det[1], det[2], False
                if len(gts):
                    ious = _iou(np.asarray(box, float), gts)
                    ious[used] = -1
                    k = int(ious.argmax())
                    if ious[k] >= self.iou:
                        used[k] = hit = True
                        vis, true_vis = _visibility(det, 3), _visibility(truth[k], 2)
                        if vis is not None and true_vis is not None:
                            self.vis_errors.append(abs(vis - true_vis))
                if not hit and len(ign) and _iou(np.asarray(box, float), ign).max() >= self.iou:
                    continue  # found an ignored instance: not counted either way
                self.dets[cls].append((score, hit))

    def vis_mae(self) -> tuple[float, int]:
        """(mean |detected - true visible fraction| over the hits, number of hits scored); NaN when none."""
        n = len(self.vis_errors)
        return (float(np.mean(self.vis_errors)) if n else float("nan")), n

    def ap50(self) -> tuple[float, dict[int, float]]:
        aps = {}
        for cls, n in self.num_gt.items():
            if n == 0:
                continue
            d = sorted(self.dets.get(cls, []), key=lambda x: -x[0])
            tp = np.cumsum([h for _, h in d]) if d else np.zeros(0)
            fp = np.cumsum([not h for _, h in d]) if d else np.zeros(0)
            recall = tp / n if d else np.zeros(0)
            precision = tp / np.maximum(tp + fp, 1e-12) if d else np.zeros(0)
            mrec = np.concatenate([[0.0], recall, [1.0]])
            mpre = np.concatenate([[0.0], precision, [0.0]])
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = max(mpre[i], mpre[i + 1])
            idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
            aps[cls] = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
        return (float(np.mean(list(aps.values()))) if aps else 0.0), aps
