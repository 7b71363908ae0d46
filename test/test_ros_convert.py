"""Message conversion against rosbags' real ROS 2 message classes (same field names as rclpy's)."""

from __future__ import annotations

import numpy as np
import pytest

from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.geometry.rotations import random_rotation
from ros2_pose6d.io.ros_convert import (
    ConversionError,
    K_to_camera_info,
    array_to_image,
    camera_info_to_K,
    estimate_to_detection3d,
    estimate_to_object_pose,
    estimate_to_transform,
    estimates_to_array,
    header,
    image_to_depth,
    image_to_rgb,
    object_pose_to_estimate,
    pose_from_msg,
    pose_msg,
    rosbags_factory,
    rotation_to_quaternion,
    stamp_to_seconds,
    transform_to_pose,
)
from ros2_pose6d.io.ros_types import typestore


@pytest.fixture(scope="module", params=["humble", "jazzy"])
def store(request):
    return typestore(request.param)


@pytest.fixture(scope="module")
def f(store):
    return rosbags_factory(store)


def _cdr(store, msg, name):
    return store.deserialize_cdr(store.serialize_cdr(msg, name), name)


RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(store, f, encoding):
    msg = _cdr(store, array_to_image(f, RGB, encoding, header(f, 1.5, "cam")), "sensor_msgs/msg/Image")
    assert msg.encoding == encoding
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_mono8_round_trips_as_grey(store, f):
    grey = np.repeat(RGB[..., :1], 3, axis=2)
    msg = _cdr(store, array_to_image(f, grey, "mono8", header(f, 0.0, "cam")), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_to_rgb(msg), grey)


@pytest.mark.parametrize("encoding, tol", [("16UC1", 0.0005), ("32FC1", 0.0)])
def test_depth_encodings_round_trip(store, f, encoding, tol):
    depth = np.random.default_rng(1).uniform(0.2, 3.0, (4, 6)).astype(np.float32)
    msg = _cdr(store, array_to_image(f, depth, encoding, header(f, 0.0, "cam")), "sensor_msgs/msg/Image")
    np.testing.assert_allclose(image_to_depth(msg), depth, atol=tol)


def test_row_padding_and_big_endian_are_honoured(store, f):
    Image = store.types["sensor_msgs/msg/Image"]
    rows = np.concatenate([RGB.reshape(5, 21), np.zeros((5, 3), np.uint8)], 1)  # 3 bytes of padding per row
    msg = Image(header=header(f, 0, "c"), height=5, width=7, encoding="rgb8", is_bigendian=0, step=24,
                data=rows.ravel().copy())
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)
    depth = np.array([[1000, 2500]], ">u2")
    msg = Image(header=header(f, 0, "c"), height=1, width=2, encoding="16UC1", is_bigendian=1, step=4,
                data=np.frombuffer(depth.tobytes(), np.uint8).copy())
    np.testing.assert_allclose(image_to_depth(msg), [[1.0, 2.5]])


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "yuv422", "8UC3", "rgb16"])
def test_unsupported_encodings_are_refused_with_a_reason(store, f, encoding):
    Image = store.types["sensor_msgs/msg/Image"]
    msg = Image(header=header(f, 0, "c"), height=2, width=2, encoding=encoding, is_bigendian=0, step=6,
                data=np.zeros(12, np.uint8))
    with pytest.raises(ConversionError, match=f"unsupported image encoding '{encoding}'"):
        image_to_rgb(msg)


def test_truncated_image_is_refused(store, f):
    msg = array_to_image(f, RGB, "rgb8", header(f, 0, "c"))
    msg.data = msg.data[:-5]
    with pytest.raises(ConversionError, match="bytes"):
        image_to_rgb(msg)


def test_camera_info_round_trip_and_bad_K(store, f):
    K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1]])
    msg = _cdr(store, K_to_camera_info(f, K, (480, 640), header(f, 3.25, "cam")), "sensor_msgs/msg/CameraInfo")
    K2, hw = camera_info_to_K(msg)
    np.testing.assert_array_equal(K2, K)
    assert hw == (480, 640) and stamp_to_seconds(msg.header.stamp) == 3.25
    with pytest.raises(ConversionError, match="non-positive"):
        camera_info_to_K(K_to_camera_info(f, np.zeros((3, 3)), (480, 640), header(f, 0, "c")))
    with pytest.raises(ConversionError, match="NaN"):
        camera_info_to_K(K_to_camera_info(f, np.full((3, 3), np.nan), (480, 640), header(f, 0, "c")))


def _estimate(i=0):
    R = random_rotation(1).numpy()[0].astype(np.float64)
    return PoseEstimate(3, R, np.array([0.1, -0.05, 0.8]), 0.75, i, np.array([10.0, 20.0, 50.0, 80.0]), 0.6,
                        "refined", 4, 0.125)


def test_quaternion_order_is_xyzw(f):
    c, s = np.cos(0.25), np.sin(0.25)
    Rz = np.array([[np.cos(0.5), -np.sin(0.5), 0], [np.sin(0.5), np.cos(0.5), 0], [0, 0, 1]])
    np.testing.assert_allclose(rotation_to_quaternion(Rz), [0, 0, s, c], atol=1e-12)
    msg = pose_msg(f, Rz, np.zeros(3))
    assert msg.orientation.z == pytest.approx(s) and msg.orientation.w == pytest.approx(c)


def test_pose_estimate_round_trips_through_every_message(store, f):
    e = _estimate()
    op = _cdr(store, estimate_to_object_pose(f, e), "ros2_pose6d_msgs/msg/ObjectPose")
    back = object_pose_to_estimate(op)
    np.testing.assert_allclose(back.R, e.R, atol=1e-6)
    np.testing.assert_allclose(back.t, e.t, atol=1e-12)
    np.testing.assert_allclose(back.bbox_xyxy, e.bbox_xyxy)
    assert (back.object_id, back.instance, back.stage, back.iterations) == (3, 0, "refined", 4)
    assert back.score == pytest.approx(0.75) and back.visibility == pytest.approx(0.6)
    arr = _cdr(store, estimates_to_array(f, header(f, 2.0, "cam"), [e, _estimate(1)]),
               "ros2_pose6d_msgs/msg/ObjectPoseArray")
    assert [o.instance for o in arr.objects] == [0, 1] and arr.header.frame_id == "cam"
    det = _cdr(store, estimate_to_detection3d(f, header(f, 2.0, "cam"), e, np.array([0.1, 0.2, 0.3]), "duck"),
               "vision_msgs/msg/Detection3D")
    R, t = pose_from_msg(det.results[0].pose.pose)
    np.testing.assert_allclose(R, e.R, atol=1e-6)
    assert det.results[0].hypothesis.class_id == "3" and det.id == "duck_0" and det.bbox.size.z == pytest.approx(0.3)
    tf = _cdr(store, estimate_to_transform(f, header(f, 2.0, "cam"), "duck_0", e),
              "geometry_msgs/msg/TransformStamped")
    R, t = transform_to_pose(tf)
    np.testing.assert_allclose(R, e.R, atol=1e-6)
    np.testing.assert_allclose(t, e.t)
    assert tf.child_frame_id == "duck_0" and tf.header.frame_id == "cam"


def test_scalar_fields_are_plain_python_types(f):
    """rclpy's generated setters accept only float/int/str (np.float32 is not a float): check what we pass."""
    import dataclasses
    e = _estimate()

    def walk(msg):
        for fld in dataclasses.fields(msg):
            v = getattr(msg, fld.name)
            if dataclasses.is_dataclass(v):
                walk(v)
            elif isinstance(v, list):
                for x in v:
                    if dataclasses.is_dataclass(x):
                        walk(x)
            elif not isinstance(v, np.ndarray):
                assert type(v) in (float, int, str, bool), (fld.name, type(v))
    walk(estimate_to_object_pose(f, e))
    walk(estimate_to_detection3d(f, header(f, 1.0, "c"), e, np.array([0.1, 0.2, 0.3])))
    walk(estimate_to_transform(f, header(f, 1.0, "c"), "x", e))
