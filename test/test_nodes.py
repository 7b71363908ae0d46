"""The rclpy nodes and the launch file, where ROS 2 is installed (rclpy, launch_ros, our built messages).
Here, without ROS 2, the whole module skips with one reason; the logic they wrap is tested in
test_runtime.py, test_ros_convert.py and test_replay.py."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (no ROS 2 here): node tests run in a ROS 2 "
                                            "workspace after colcon build")
pytest.importorskip("ros2_pose6d_msgs", reason="ros2_pose6d_msgs is not built (colcon build, then source it)")

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ros2_pose6d.io.ros_convert import K_to_camera_info, array_to_image, header, rclpy_factory  # noqa: E402
from ros2_pose6d.resources import weights_dir  # noqa: E402

K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def _demo_frame():
    from ros2_pose6d.training.synth import SynthConfig, render_sample
    from ros2_pose6d.training.synth.generate import SceneContext
    from ros2_pose6d.training.synth.poses import look_at_rotation

    from ros2_pose6d.cli.demo import SCENE  # noqa: F401 - same objects as the demo
    from ros2_pose6d.objects.registry import ObjectRegistry
    from ros2_pose6d.resources import default_objects_yaml
    reg = ObjectRegistry.from_yaml(default_objects_yaml())
    R = look_at_rotation(0.4, 0.6, 0.0)[None]
    t = np.array([[0.0, 0.0, 0.6]])
    s = render_sample(SceneContext(reg), SynthConfig(distractors=(0, 0)), np.random.default_rng(0), K=K,
                      obj_indices=np.array([2]), R=R, t=t)
    return s.rgb, R[0], t[0]


def test_refiner_rejects_an_invalid_method(ros):
    """An invalid value given at start (as --ros-args -p method:=icp would) stops the node with the reason."""
    from ros2_pose6d.nodes.refiner_node import RefinerNode
    rclpy.shutdown()
    rclpy.init(args=["--ros-args", "-p", "method:=icp"])
    try:
        with pytest.raises(ValueError, match="unknown method 'icp'"):
            RefinerNode()
    finally:
        rclpy.shutdown()
        rclpy.init()


def test_detector_node_skips_bad_frames_and_keeps_running(ros):
    from ros2_pose6d.nodes.detector_node import DetectorNode
    node = DetectorNode()
    f = rclpy_factory()
    hdr = header(f, 1.0, "cam")
    img = array_to_image(f, np.zeros((480, 640, 3), np.uint8), "rgb8", hdr)
    img.encoding = "yuv422"
    node.on_frame(img, K_to_camera_info(f, K, (480, 640), hdr))
    node.on_frame(array_to_image(f, np.zeros((480, 640, 3), np.uint8), "rgb8", hdr),
                  K_to_camera_info(f, np.zeros((3, 3)), (480, 640), hdr))
    assert sum(node.stats.skipped.values()) == 2
    node.on_frame(array_to_image(f, np.zeros((480, 640, 3), np.uint8), "rgb8", hdr),
                  K_to_camera_info(f, K, (480, 640), hdr))
    assert node.worker.wait_idle(60)
    assert node.stats.processed == 1
    node.worker.stop()
    node.destroy_node()


@pytest.mark.skipif(not (weights_dir() / "detector_demo.safetensors").is_file(), reason="no shipped weights")
def test_launch_file_gives_poses_near_the_truth(ros):
    """ros2 launch pipeline.launch.py, publish a rendered frame of the duck, receive poses near the truth."""
    from ros2_pose6d_msgs.msg import ObjectPoseArray
    proc = subprocess.Popen(["ros2", "launch", "ros2_pose6d", "pipeline.launch.py", "image:=/test/image",
                             "camera_info:=/test/camera_info", "device:=cpu"], env=dict(os.environ))
    try:
        node = rclpy.create_node("pose6d_launch_test")
        got = []
        node.create_subscription(ObjectPoseArray, "/pose6d/poses", got.append, 10)
        pub_img = node.create_publisher(Image, "/test/image", rclpy.qos.qos_profile_sensor_data)
        pub_info = node.create_publisher(CameraInfo, "/test/camera_info", rclpy.qos.qos_profile_sensor_data)
        rgb, _R, t = _demo_frame()
        f = rclpy_factory()
        deadline = time.time() + 120
        k = 0
        while not got and time.time() < deadline:
            hdr = header(f, 100.0 + k * 0.1, "camera")
            pub_img.publish(array_to_image(f, rgb, "rgb8", hdr))
            pub_info.publish(K_to_camera_info(f, K, rgb.shape[:2], hdr))
            rclpy.spin_once(node, timeout_sec=0.5)
            k += 1
        assert got, "no poses within 120 s"
        duck = [o for o in got[-1].objects if o.object_id == "3"]
        assert duck
        p = duck[0].pose.position
        assert np.linalg.norm(np.array([p.x, p.y, p.z]) - t) < 0.05
    finally:
        proc.terminate()
        proc.wait(timeout=30)
