"""BOP dataset reading: a scene the test writes, error cases, and the real LM-O frames when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LMO

from ros2_pose6d.io.bop import BopError, BopScene, GtInstance, bop_target_mask, read_bop_split, read_bop_targets


def make_scene(root: Path, n_images=2, mismatch=False) -> Path:
    scene = root / "test" / "000001"
    for d in ("rgb", "depth", "mask_visib"):
        (scene / d).mkdir(parents=True)
    cam, gt, info = {}, {}, {}
    for im in range(n_images):
        cam[str(im)] = {"cam_K": [500, 0, 32, 0, 500, 24, 0, 0, 1], "depth_scale": 0.1}
        gt[str(im)] = [{"cam_R_m2c": [1, 0, 0, 0, 1, 0, 0, 0, 1], "cam_t_m2c": [10, -20, 800], "obj_id": 3},
                       {"cam_R_m2c": [0, -1, 0, 1, 0, 0, 0, 0, 1], "cam_t_m2c": [0, 0, 1000], "obj_id": 5}]
        info[str(im)] = [{"bbox_obj": [1, 2, 3, 4], "bbox_visib": [1, 2, 3, 4], "visib_fract": 1.0},
                         {"bbox_obj": [5, 6, 7, 8], "bbox_visib": [5, 6, 2, 2], "visib_fract": 0.25}]
        if mismatch and im == 1:
            info[str(im)] = info[str(im)][:1]
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[..., 0] = 255  # red in RGB
        cv2.imwrite(str(scene / "rgb" / f"{im:06d}.png"), rgb[..., ::-1])
        cv2.imwrite(str(scene / "depth" / f"{im:06d}.png"), np.full((48, 64), 8000, np.uint16))
        mask = np.zeros((48, 64), np.uint8)
        mask[10:20, 10:20] = 255
        cv2.imwrite(str(scene / "mask_visib" / f"{im:06d}_000000.png"), mask)
    (scene / "scene_camera.json").write_text(json.dumps(cam))
    (scene / "scene_gt.json").write_text(json.dumps(gt))
    (scene / "scene_gt_info.json").write_text(json.dumps(info))
    return root / "test"


def test_reads_frames_with_units_converted(tmp_path):
    split = make_scene(tmp_path)
    (scene,) = read_bop_split(split, load_masks=True)
    frames = list(scene)
    assert len(frames) == 2
    f = frames[0]
    assert f.rgb.shape == (48, 64, 3) and f.rgb[0, 0].tolist() == [255, 0, 0]
    assert f.depth[0, 0] == pytest.approx(0.8)  # 8000 * 0.1 mm
    assert np.allclose(f.gt[0].t, [0.01, -0.02, 0.8]) and f.gt[1].obj_id == 5
    assert f.gt[1].visib_fract == 0.25 and f.gt[0].mask_visib.sum() == 100
    assert f.K[0, 0] == 500


def test_gt_and_info_of_different_length_is_an_error_naming_the_file(tmp_path):
    split = make_scene(tmp_path, mismatch=True)
    with pytest.raises(BopError, match=r"scene_gt_info.json: image 1 has 1 info entries but .*scene_gt.json lists 2"):
        read_bop_split(split)


def test_missing_folder_and_missing_image(tmp_path):
    with pytest.raises(BopError, match="split folder not found"):
        read_bop_split(tmp_path / "nope")
    split = make_scene(tmp_path)
    os.remove(split / "000001" / "rgb" / "000001.png")
    with pytest.raises(BopError, match="no rgb/ or gray/ image for image 1"):
        BopScene(split / "000001").frame(1)


@pytest.mark.skipif(not os.path.isdir(LMO), reason=f"LM-O data not found at {LMO}")
def test_real_lmo_frames():
    (scene,) = read_bop_split(os.path.join(LMO, "test"), load_depth=False)
    frames = list(scene)
    assert len(frames) == 50
    raw_gt = json.loads(Path(LMO, "test", "000002", "scene_gt.json").read_text())
    targets = json.loads(Path(LMO, "test_targets_bop19.json").read_text())
    assert sum(len(f.gt) for f in frames) == sum(len(v) for v in raw_gt.values())
    for f in frames:
        assert f.rgb.shape == (480, 640, 3)
        assert [g.obj_id for g in f.gt] == [e["obj_id"] for e in raw_gt[str(f.im_id)]]
        # BOP'19 targets (instances visible enough to be evaluated) are among the annotations
        assert {t["obj_id"] for t in targets if t["im_id"] == f.im_id} <= {g.obj_id for g in f.gt}
        for g in f.gt:
            assert 0.3 < g.t[2] < 2.0  # metres
            assert np.allclose(g.R @ g.R.T, np.eye(3), atol=1e-9)  # projected onto SO(3)


def test_bop_targets_file_and_the_most_visible_instances(tmp_path):
    """A targets file as {(scene, image): {object: count}} (repeated rows add up); per object the inst_count most
    visible instances are the targets; a bad file is one readable error naming it."""
    path = tmp_path / "test_targets_bop19.json"
    path.write_text(json.dumps([{"im_id": 3, "inst_count": 1, "obj_id": 1, "scene_id": 2},
                                {"im_id": 3, "inst_count": 2, "obj_id": 5, "scene_id": 2},
                                {"im_id": 4, "inst_count": 1, "obj_id": 5, "scene_id": 2},
                                {"im_id": 4, "inst_count": 1, "obj_id": 5, "scene_id": 2}]))
    assert read_bop_targets(path) == {(2, 3): {1: 1, 5: 2}, (2, 4): {5: 2}}
    gts = [GtInstance(obj, np.eye(3), np.zeros(3), visib_fract=v)
           for obj, v in ((5, 0.3), (5, 0.9), (5, 0.05), (1, 0.02), (7, 1.0))]
    assert bop_target_mask(gts, {1: 1, 5: 2}) == [True, True, False, True, False]
    assert bop_target_mask(gts, {5: 1}) == [False, True, False, False, False]
    unknown = [GtInstance(5, np.eye(3), np.zeros(3), visib_fract=0.5), GtInstance(5, np.eye(3), np.zeros(3))]
    assert bop_target_mask(unknown, {5: 1}) == [False, True]  # an unknown visible fraction counts as full view
    for text, message in (("[", "not a JSON targets file"), ("{}", "expected a list of targets"), ("[]", "no targets"),
                          ('[{"im_id": 3}]', "target 0 is not"),
                          ('[{"im_id": 3, "inst_count": 0, "obj_id": 1, "scene_id": 2}]', "inst_count 0")):
        path.write_text(text)
        with pytest.raises(BopError, match=message):
            read_bop_targets(path)
    with pytest.raises(BopError, match="targets file not found"):
        read_bop_targets(tmp_path / "missing.json")
