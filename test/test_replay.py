"""Bag replay, bop2bag and the demo sequence: outputs, frame accounting, metrics, bad input, interruption."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from ros2_pose6d.training.synth import SynthConfig, generate_dataset
from rosbags.rosbag2 import Reader

from ros2_pose6d.cli.bop2bag import TOPICS, bop_to_bag
from ros2_pose6d.cli.replay import OUT_TOPICS, replay
from ros2_pose6d.estimation.deepim_refiner import DeepimRefiner
from ros2_pose6d.estimation.detector import Detector
from ros2_pose6d.estimation.pipeline import Pipeline
from ros2_pose6d.io.bag import CAMERA_INFO, IMAGE, BagError, BagReader, BagWriter
from ros2_pose6d.io.ros_convert import K_to_camera_info, array_to_image, header, rosbags_factory
from ros2_pose6d.nets.backbone import BackboneConfig
from ros2_pose6d.nets.checkpoint import save_weights
from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.nets.deformable_transformer import TransformerConfig
from ros2_pose6d.nets.point_encoder import PointEncoderConfig
from ros2_pose6d.nets.smope import SmopeConfig, SmopeNet
from ros2_pose6d.objects.registry import ObjectRegistry

DET = SmopeConfig(BackboneConfig(18, 8), TransformerConfig(d_model=32, n_heads=4, n_points=2, enc_layers=1,
                                                          dec_layers=1, ffn_dim=64, dropout=0.0, num_queries=5),
                  PointEncoderConfig(64, 32, 32), image_size=(48, 64))
DIM = DeepimConfig(input_size=(32, 40), width=0.125, fc_dim=16, iterations=1)


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.fixture(scope="module")
def pipeline(registry):
    torch.manual_seed(0)
    return Pipeline(registry, Detector(SmopeNet(DET), registry, score_threshold=0.0, max_detections=3),
                    DeepimRefiner(DeepimNet(DIM), registry))


@pytest.fixture(scope="module")
def scene_bag(registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("bop")
    cfg = SynthConfig(height=96, width=128, focal=(110.0, 110.0), objects_per_image=(2, 2), distractors=(0, 0),
                      images_per_scene=10)
    split = generate_dataset(registry, root / "test", 4, cfg, seed=2, progress=False)
    bag = root / "bag"
    assert bop_to_bag(split / "000000", bag, progress=False) == 4
    return bag


def _messages(path, topic):
    with Reader(path) as r:
        conns = [c for c in r.connections if c.topic == topic]
        return list(r.messages(connections=conns))


def test_replay_writes_one_poses_message_per_frame_and_metrics(registry, pipeline, scene_bag, tmp_path):
    res = replay(scene_bag, tmp_path / "out", pipeline, registry, progress=False)
    assert res.accounting() == {"total": 4, "processed": 4, "skipped": 0, "skipped_reasons": {}}
    for topic in OUT_TOPICS.values():
        assert len(_messages(tmp_path / "out" / "bag", topic)) == 4, topic
    assert res.has_gt and res.report.summary("refined")["n"] == 8
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["accounting"]["processed"] == 4 and len(report["frames"]) == 4
    assert set(report["timing_mean_s"]) == {"conversion", "detection", "refinement", "writing"}
    for name in ("overlay.mp4", "metrics.txt", "recall_curves.png", "per_object.png", "exact_parts.png",
                 "latency.png"):
        assert (tmp_path / "out" / name).is_file(), name


def test_pipeline_reports_the_chosen_visibility(registry):
    """visibility='detector' keeps a detection's own visibility through refinement; a pose refined from an
    earlier pose (tracking) takes the refiner's, since the detector's would be stale; 'refiner' always takes
    the refiner's. An unknown source is refused."""
    from dataclasses import replace

    from ros2_pose6d.estimation.types import Frame, PoseEstimate

    class OcclusionRefiner:  # reports visibility 0.3 for everything, as NeMo's occlusion map would
        def refine(self, frame, estimates, iterations):
            return [replace(e, stage="refined", visibility=0.3) for e in estimates]

    frame = Frame(np.zeros((48, 64, 3), np.uint8), np.diag([50.0, 50.0, 1.0]))
    pose = dict(R=np.eye(3), t=np.array([0.0, 0.0, 0.5]))
    starts = [PoseEstimate(1, **pose, visibility=0.9, stage="detected"),
              PoseEstimate(2, **pose, visibility=0.8, stage="tracked")]
    by_source = {src: [e.visibility for e in Pipeline(registry, None, OcclusionRefiner(), visibility=src)
                       .refine(frame, starts)] for src in ("refiner", "detector")}
    assert by_source == {"refiner": [0.3, 0.3], "detector": [0.9, 0.3]}
    with pytest.raises(ValueError, match="visibility must be one of"):
        Pipeline(registry, None, OcclusionRefiner(), visibility="nemo")


def test_bop2bag_ground_truth_reads_back(registry, scene_bag):
    with BagReader(scene_bag) as r:
        frames = list(r)
    assert r.gt_topic == TOPICS["gt"] and len(frames) == 4
    assert all(f.camera_info is not None and len(f.ground_truth.objects) == 2 for f in frames)


def _bag_with(tmp_path, frames):
    """A bag of (stamp, encoding, with camera_info?) frames."""
    from ros2_pose6d.io.bag import BagWriter
    path = tmp_path / "in"
    with BagWriter(path) as w:
        f = rosbags_factory(w.store)
        for stamp, enc, info in frames:
            hdr = header(f, stamp, "cam")
            img = array_to_image(f, np.zeros((48, 64, 3), np.uint8), "rgb8", hdr)
            img.encoding = enc
            w.write("/cam/image", IMAGE, stamp, img)
            if info:
                w.write("/cam/info", CAMERA_INFO, stamp, K_to_camera_info(f, np.array(
                    [[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]), (48, 64) if info == "ok" else (10, 10), hdr))
    return path


def test_bad_frames_are_skipped_and_counted(registry, pipeline, tmp_path):
    bag = _bag_with(tmp_path, [(0.0, "rgb8", "ok"), (0.1, "rgb8", None), (0.2, "yuv422", "ok"),
                               (0.3, "rgb8", "size"), (0.4, "rgb8", "ok")])
    res = replay(bag, tmp_path / "out", pipeline, registry, progress=False)
    acc = res.accounting()
    assert acc["total"] == 5 and acc["processed"] == 2 and acc["skipped"] == 3
    reasons = " ".join(acc["skipped_reasons"])
    assert "camera_info" in reasons and "yuv422" in reasons and "does not match" in reasons
    assert len(_messages(tmp_path / "out" / "bag", OUT_TOPICS["poses"])) == 2


def test_missing_topics_list_what_exists(tmp_path):
    path = tmp_path / "noinfo"
    with BagWriter(path) as w:
        f = rosbags_factory(w.store)
        w.write("/only/image", IMAGE, 0.0, array_to_image(f, np.zeros((4, 4, 3), np.uint8), "rgb8", header(f, 0, "c")))
    listing = r"no sensor_msgs/CameraInfo topic; topics: /only/image \[sensor_msgs/msg/Image\]"
    with pytest.raises(BagError, match=listing):
        BagReader(path)
    with pytest.raises(BagError, match="not found"):
        BagReader(tmp_path / "nothing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8, storage_identifier")
    with pytest.raises(BagError, match="cannot open"):
        BagReader(tmp_path / "broken")


def test_interrupted_replay_leaves_a_readable_bag(registry, pipeline, scene_bag, tmp_path):
    class Interrupting(Pipeline):
        calls = 0

        def process(self, frame):
            Interrupting.calls += 1
            if Interrupting.calls == 3:
                raise KeyboardInterrupt
            return super().process(frame)
    pipe = Interrupting(registry, pipeline.detector, pipeline.refiner)
    res = replay(scene_bag, tmp_path / "out", pipe, registry, progress=False)
    assert res.interrupted and res.processed == 2
    assert len(_messages(tmp_path / "out" / "bag", OUT_TOPICS["poses"])) == 2
    assert json.loads((tmp_path / "out" / "report.json").read_text())["interrupted"] is True


def test_replay_cli_errors_are_one_line(tmp_path, registry):
    for name, net, cfg in (("detector_demo", SmopeNet(DET), DET), ("deepim_demo", DeepimNet(DIM), DIM)):
        from ros2_pose6d.config import to_dict
        save_weights(tmp_path / f"{name}.safetensors", net, name.split("_")[0].replace("detector", "smope"),
                     {"model": to_dict(cfg)})
    r = subprocess.run([sys.executable, "-m", "ros2_pose6d.cli.replay", str(tmp_path / "missing_bag"), "--detector",
                        str(tmp_path / "detector_demo.safetensors"), "--deepim",
                        str(tmp_path / "deepim_demo.safetensors"), "--refiner", "deepim", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'missing_bag'}: bag not found"


def test_demo_sequence_bag_has_moving_camera_and_occlusion(registry, tmp_path):
    from ros2_pose6d.cli.demo import make_sequence_bag
    bag = make_sequence_bag(registry, tmp_path / "seq", frames=3, hw=(120, 160), progress=False)
    with BagReader(bag) as r:
        frames = list(r)
    assert len(frames) == 3
    t0 = [o.pose.position for o in frames[0].ground_truth.objects]
    t2 = [o.pose.position for o in frames[2].ground_truth.objects]
    assert len(t0) == 5 and abs(t0[1].x - t2[1].x) + abs(t0[1].z - t2[1].z) > 0.05  # the camera moved
    vis = [o.visibility for fr in frames for o in fr.ground_truth.objects]
    assert min(vis) < 0.95  # somebody is occluded somewhere


def test_demo_runs_end_to_end_with_the_shipped_weights(tmp_path):
    """The README's main command, shortened: renders, replays, prints the metrics table; the output bag
    holds one poses message per input frame."""
    r = subprocess.run([sys.executable, "-m", "ros2_pose6d.cli.demo", "--frames", "3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ADD(-S) 0.1d" in r.stdout and "ALL" in r.stdout and "3 processed" in r.stdout
    # AP50 ranks what the node publishes
    assert "box AP50 (detector, detections scoring >= 0.5, class-wise NMS at IoU 0.7)" in r.stdout
    assert len(_messages(tmp_path / "replay" / "bag", OUT_TOPICS["poses"])) == 3
    assert (tmp_path / "replay" / "overlay.mp4").stat().st_size > 0


LMO = REPO.parent / "shared" / "data" / "lmo"


@pytest.mark.skipif(not (LMO / "test" / "000002").is_dir(), reason=f"LM-O data not found at {LMO}")
def test_bop2bag_then_replay_matches_evaluate_on_lmo(tmp_path):
    """The same real frames through replay (via a bag) and through evaluate (BOP files), with the shipped
    LM-O weights (detector + NeMo), give the same metrics."""
    from ros2_pose6d.resources import weights_dir
    assert bop_to_bag(LMO / "test" / "000002", tmp_path / "bag", max_frames=3, progress=False) == 3
    common = ["--detector", str(weights_dir() / "detector_lmo.safetensors"), "--nemo",
              str(weights_dir() / "nemo_lmo.safetensors"), "--score-threshold", "0.0", "--refiner", "nemo"]
    r1 = subprocess.run([sys.executable, "-m", "ros2_pose6d.cli.replay", str(tmp_path / "bag"), "--out",
                         str(tmp_path / "replay"), "--models-dir", str(LMO / "models"), "--no-video", *common],
                        capture_output=True, text=True, timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]
    split = tmp_path / "split"
    split.mkdir()
    (split / "000002").symlink_to(LMO / "test" / "000002")
    r2 = subprocess.run([sys.executable, "-m", "ros2_pose6d.training.cli_evaluate", str(split), "--models-dir",
                         str(LMO / "models"), "--max-frames", "3", "--out", str(tmp_path / "eval"),
                         *common],
                        capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]
    replayed = json.loads((tmp_path / "replay" / "report.json").read_text())["metrics"]
    evaluated = json.loads((tmp_path / "eval" / "summary.json").read_text())
    for stage in ("detected", "refined"):
        for key in ("n", "ADD(-S) 0.1d", "5cm5deg", "proj 5px", "AR_MSSD", "AR_MSPD", "vis MAE"):
            tol = 1e-6 if key == "vis MAE" else 1e-9  # visibility travels as a float32 message field
            assert replayed[stage][key] == pytest.approx(evaluated[stage][key], abs=tol, nan_ok=True), (stage, key)
