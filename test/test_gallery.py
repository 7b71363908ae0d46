"""The evaluation gallery: stage-by-stage pictures over the ground truth's outlines, for the frames with the most
misses."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import REPO

from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.viz.gallery import TRUTH_COLOUR, WorstFrames, compare_panel, outline
from ros2_pose6d.viz.overlay import OverlayDrawer, object_colour

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def drawer():
    return OverlayDrawer(ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml"))


def _boundary(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    for shift in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        inner &= np.roll(mask, shift, (0, 1))
    return mask & ~inner


def test_outline_traces_the_truth_silhouette(drawer):
    truth = PoseEstimate(4, np.eye(3), np.array([0.0, 0.0, 0.8]))
    img = outline(drawer, np.zeros((240, 320, 3), np.uint8), K, [truth])
    white = np.all(img == np.array(TRUTH_COLOUR), axis=-1)
    sil = drawer.silhouettes([truth], K, (240, 320))[0]
    assert white[_boundary(sil)].mean() > 0.5  # along the silhouette's edge
    far = np.ones_like(sil)
    far[sil.any(1).nonzero()[0].min() - 3: sil.any(1).nonzero()[0].max() + 4,
        sil.any(0).nonzero()[0].min() - 3: sil.any(0).nonzero()[0].max() + 4] = False
    assert not white[far].any()  # nothing far from it
    behind = PoseEstimate(4, np.eye(3), np.array([0.0, 0.0, -1.0]))
    assert not outline(drawer, np.zeros((240, 320, 3), np.uint8), K, [behind]).any()


def test_compare_panel_puts_stages_side_by_side_enlarged(drawer):
    """A 320-wide frame is doubled (min_width 640) with its camera: the truth's outline in the doubled panel is where
    the outline of the doubled image would be; each stage's estimate is drawn in its own panel only."""
    truth = [PoseEstimate(4, np.eye(3), np.array([0.0, 0.0, 0.8]))]
    moved = [PoseEstimate(4, np.eye(3), np.array([0.05, 0.0, 0.8]))]
    panel = compare_panel(drawer, np.zeros((240, 320, 3), np.uint8), K, truth,
                          {"initial": moved, "refined": truth}, {"initial": "0 of 1", "refined": "1 of 1"})
    assert panel.shape == (480, 1280, 3)
    left, right = panel[:, :640], panel[:, 640:]
    K2 = np.diag([2.0, 2.0, 1.0]) @ K
    K2[:2, 2] += 0.5
    sil = drawer.silhouettes(truth, K2, (480, 640))[0]
    edge = _boundary(sil)
    edge[:30] = False  # under the caption
    white = np.all(left == np.array(TRUTH_COLOUR), axis=-1)
    assert white[edge].mean() > 0.4  # the moved estimate covers little of the truth's outline on the left
    colour = np.all(left == np.array(object_colour(4)), axis=-1)
    moved_edge = _boundary(drawer.silhouettes(moved, K2, (480, 640))[0])
    moved_edge[:30] = False
    assert colour[moved_edge].mean() > 0.5
    on_right = np.all(right == np.array(object_colour(4)), axis=-1)
    assert on_right[edge].mean() > 0.5  # on the right the estimate lies on the truth
    assert not on_right[moved_edge & ~sil & ~np.roll(sil, 2, 1) & ~np.roll(sil, -2, 1)].any()


def test_worst_frames_keeps_the_most_misses_and_writes_them_ranked(drawer, tmp_path):
    worst = WorstFrames(2)
    img = np.zeros((60, 80, 3), np.uint8)
    K_small = np.array([[80.0, 0, 39.5], [0, 80.0, 29.5], [0, 0, 1]])
    for name, misses in (("a", 1), ("b", 0), ("c", 3), ("d", 1), ("e", 2)):
        worst.offer(name, misses, img, K_small, [], {"initial": []}, {"initial": f"{misses} missed"})
    (tmp_path / "09_stale.png").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    paths = worst.write(tmp_path, drawer)
    assert [p.name for p in paths] == ["01_c.png", "02_e.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_c.png", "02_e.png", "notes.txt"]
    assert cv2.imread(str(paths[0])).shape == (480, 640, 3)  # enlarged 8x to 640 wide
    ties = WorstFrames(1)  # equal misses: the earlier frame stays
    for name in ("first", "second"):
        ties.offer(name, 2, img, K_small, [], {"initial": []}, {})
    assert [p.name for p in ties.write(tmp_path / "ties", drawer)] == ["01_first.png"]
    assert WorstFrames(3).write(tmp_path / "none", drawer) == [] and not (tmp_path / "none").exists()
    off = WorstFrames(0)
    off.offer("a", 5, img, K_small, [], {"initial": []}, {})
    assert off.write(tmp_path / "off", drawer) == []
