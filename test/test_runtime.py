"""ROS-free logic of the nodes: parameter validation, frame cache, drop-oldest worker, tracking decisions,
published messages (against rosbags' classes), overlay pixels, diagnostics."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from conftest import REPO

from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.io.ros_convert import header, rosbags_factory
from ros2_pose6d.io.ros_types import typestore
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.runtime.diagnostics import NodeStats
from ros2_pose6d.runtime.frame_cache import FrameCache
from ros2_pose6d.runtime.outputs import instance_frame, refiner_messages, vision_info
from ros2_pose6d.runtime.params import DETECTOR, DETECTOR_LIVE, REFINER, REFINER_LIVE, accept_changes, validate
from ros2_pose6d.runtime.tracking import TrackingPolicy
from ros2_pose6d.runtime.worker import DropOldestWorker
from ros2_pose6d.viz.overlay import OverlayDrawer, object_colour


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


def test_parameter_validation():
    assert validate(REFINER, {"method": "nemo", "iterations": 8, "device": "cuda:1", "sync_slop": 0}) == []
    problems = validate(REFINER, {"method": "icp", "iterations": -1, "device": "gpu", "tracking": "yes",
                                  "redetect_every": 2.5, "nope": 1})
    text = " | ".join(problems)
    for expected in ("method: refiner 'icp': unknown method", "iterations must lie in [0, 1000]",
                     "device must be auto, cpu or cuda[:N]", "tracking must be a bool",
                     "redetect_every must be a int", "unknown parameter 'nope'"):
        assert expected in text, text
    assert validate(DETECTOR, {"score_threshold": 1.5}) == ["score_threshold must lie in [0.0, 1.0], got 1.5"]
    assert all(s.description for s in DETECTOR + REFINER)


def test_parameter_changes_are_applied_or_refused_never_ignored():
    """A writable parameter is one the node applies while running; others' parameters pass untouched."""
    for specs, live in ((DETECTOR, DETECTOR_LIVE), (REFINER, REFINER_LIVE)):
        assert {s.name for s in specs if not s.read_only} == set(live)
    applied = []
    qos = "qos_overrides./pose6d/image.subscription.depth"  # declared by rclpy for a subscription
    assert accept_changes(DETECTOR, {"use_sim_time": True, qos: 5}, applied.append) == ""
    assert applied == []
    assert accept_changes(DETECTOR, {"score_threshold": 0.3, "use_sim_time": True}, applied.append) == ""
    assert applied == [{"score_threshold": 0.3}]
    reason = accept_changes(DETECTOR, {"score_threshold": 0.3, "nms_iou": 2.0}, applied.append)
    assert reason == "nms_iou must lie in [0.0, 1.0], got 2.0" and len(applied) == 1  # nothing half-applied


def test_shipped_parameter_file_matches_the_declared_parameters():
    """config/pipeline.yaml (the launch file's default params_file) lists every declared parameter of each
    node with its default, and nothing else: a parameter added in code and missing there, or a typo there,
    fails here instead of being refused by the node at launch."""
    import yaml

    from ros2_pose6d.estimation.pipeline import VISIBILITY_SOURCES

    shipped = yaml.safe_load((REPO / "config" / "pipeline.yaml").read_text())
    for node, specs in (("/**/pose6d_detector", DETECTOR), ("/**/pose6d_refiner", REFINER)):
        values = shipped[node]["ros__parameters"]
        assert validate(specs, values) == []
        assert values == {s.name: s.default for s in specs}
    assert next(s for s in REFINER if s.name == "visibility").choices == VISIBILITY_SOURCES
    # the launch file's method argument overrides the file's: the same default, or `ros2 launch` alone changes it
    launch = (REPO / "launch" / "pipeline.launch.py").read_text()
    declared = re.search(r'DeclareLaunchArgument\("method", default_value="([^"]*)"', launch)
    assert declared and declared.group(1) == values["method"]


def test_frame_cache_matches_by_stamp_and_evicts():
    cache: FrameCache = FrameCache(3)
    for k in range(5):
        assert cache.add(k * 0.1, f"f{k}")
    assert len(cache) == 3 and cache.match(0.1, 0.01) is None  # evicted
    assert cache.match(0.305, 0.01) == "f3" and cache.match(0.25, 0.01) is None
    assert not cache.add(0.2, "late") and cache.out_of_order == 1


def test_slow_model_never_builds_a_queue():
    """While the model is busy, newer frames replace the waiting one: after a busy spell only the newest is
    processed. The model blocks on a gate instead of sleeping, so the test does not depend on timing."""
    results, started, gate = [], threading.Event(), threading.Event()

    def slow(x):
        started.set()
        assert gate.wait(5.0)
        return x * 10
    w = DropOldestWorker(slow, lambda i, r: results.append(r), lambda i, e: None)
    w.submit(0)
    assert started.wait(5.0)  # frame 0 is being processed
    for k in range(1, 30):
        w.submit(k)  # each replaces the waiting one: 1..28 are dropped
    gate.set()
    assert w.wait_idle(5.0)
    w.stop()
    assert results == [0, 290]  # the newest frame is the one finally processed
    assert w.processed == 2 and w.dropped == 28


def test_worker_survives_errors():
    errors, results = [], []

    def fn(x):
        if x == 1:
            raise RuntimeError("NaN from the model")
        return x
    w = DropOldestWorker(fn, lambda i, r: results.append(r), lambda i, e: errors.append(str(e)))
    for k in range(3):
        w.submit(k)
        assert w.wait_idle(5.0)
    w.stop()
    assert results == [0, 2] and errors == ["NaN from the model"]


def _pose(obj=1, inst=0, fit=0.1, stage="refined", t=(0.0, 0.0, 0.6)):
    return PoseEstimate(obj, np.eye(3), np.array(t), 0.9, inst, np.array([280.0, 200.0, 360.0, 280.0]), 0.8, stage,
                        4, fit)


def test_tracking_decisions():
    policy = TrackingPolicy(redetect_every=3, fit_error_threshold=0.2)
    assert policy.needs_detection() == (True, "no poses to track")
    policy.update([_pose()], detected=True)
    assert policy.needs_detection()[0] is False
    policy.update([_pose(stage="tracked")], detected=False)
    policy.update([_pose(stage="tracked")], detected=False)
    assert policy.needs_detection()[0] is False
    policy.update([_pose(stage="tracked")], detected=False)
    need, why = policy.needs_detection()
    assert need and "3 frames" in why
    policy.update([_pose(fit=0.5)], detected=True)
    need, why = policy.needs_detection()
    assert need and "fit error" in why
    policy.update([_pose(stage="detected")], detected=True)  # nothing refined: nothing to track
    assert policy.needs_detection() == (True, "no poses to track")


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_refiner_messages_serialise(registry, distro):
    store = typestore(distro)
    f = rosbags_factory(store)
    hdr = header(f, 1.25, "cam")
    poses = [_pose(1, 0), _pose(3, 0, t=(0.1, 0.0, 0.7)), _pose(3, 1, t=(-0.1, 0.0, 0.7))]
    msgs = refiner_messages(f, hdr, poses, registry, "pose6d/", np.zeros((4, 4, 3), np.uint8))
    types = {"poses": "ros2_pose6d_msgs/msg/ObjectPoseArray", "detections_3d": "vision_msgs/msg/Detection3DArray",
             "pose_array": "geometry_msgs/msg/PoseArray", "markers": "visualization_msgs/msg/MarkerArray",
             "overlay": "sensor_msgs/msg/Image"}
    for name, typ in types.items():
        back = store.deserialize_cdr(store.serialize_cdr(msgs[name], typ), typ)
        assert back.header.frame_id == "cam" if hasattr(back, "header") else True
    assert [t.child_frame_id for t in msgs["tf"]] == ["pose6d/mug_0", "pose6d/duck_0", "pose6d/duck_1"]
    markers = msgs["markers"].markers
    assert markers[0].action == 3 and len(markers) == 4 and markers[1].mesh_resource.endswith("obj_000001.ply")
    assert instance_frame("", registry, poses[2]) == "duck_1"
    info = vision_info(f, hdr, "ros2_pose6d/deepim", "/x/objects.yaml")
    store.serialize_cdr(info, "vision_msgs/msg/VisionInfo")


def test_overlay_draws_the_silhouette_contour_and_axes(registry):
    drawer = OverlayDrawer(registry)
    K = np.array([[500.0, 0, 159.5], [0, 500.0, 119.5], [0, 0, 1]])
    img = np.zeros((240, 320, 3), np.uint8)
    e = _pose(4, t=(0.0, 0.0, 0.8))
    out = drawer.draw(img, K, [e])
    sil = drawer.silhouettes([e], K, (240, 320))[0]
    inner = sil.copy()
    for shift in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        inner &= np.roll(sil, shift, (0, 1))
    boundary = sil & ~inner
    on_colour = np.all(out == np.array(object_colour(4)), axis=-1)
    assert on_colour[boundary].mean() > 0.5  # the contour runs along the silhouette's boundary
    assert not on_colour[inner & np.roll(inner, 3, 0) & np.roll(inner, -3, 0) & np.roll(inner, 3, 1)
                         & np.roll(inner, -3, 1)].any()  # and the inside stays unfilled
    r, g, b = (int(c) for c in out[120, 180])  # x axis (red) to the right of the projected origin
    assert r > 200 and g < 80 and b < 80
    r, g, b = (int(c) for c in out[140, 160])  # y axis (green) below it
    assert g > 200 and r < 80 and b < 80
    assert not out[:5, :5].any()  # far background untouched
    assert not drawer.draw(img, K, [_pose(4, t=(0, 0, -1.0))]).any()  # behind the camera: nothing drawn


def test_diagnostics_values():
    s = NodeStats()
    for k in range(5):
        s.frame_done(0.1, now=k * 0.5)
    s.skip("unsupported image encoding 'yuv422'")
    v = s.values()
    assert v["frame rate [Hz]"] == "2.00" and v["latency mean [ms]"] == "100.0" and v["frames skipped"] == "1"
    assert s.level() == 1


def test_sync_monitor_counts_images_that_never_pair():
    from ros2_pose6d.runtime.sync_monitor import SyncMonitor
    m = SyncMonitor(pending=2)
    for _ in range(3):
        m.image()
        m.paired()
    assert m.check() == 0
    for _ in range(5):  # camera_info stopped: five images, no pairs
        m.image()
    assert m.check() == 3 and m.check() == 0  # two may still pair; each lost image counted once
    m.image()
    assert m.check() == 1
