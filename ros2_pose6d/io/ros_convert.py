"""ROS message <-> core conversion, without importing rclpy: messages are built through a factory that
maps 'pkg/msg/Type' to a class — rosbags' typestore here and in bag replay, rclpy's generated classes in
the nodes (same field names, every field passed explicitly, so both accept the same calls).

Images: rgb8, bgr8, rgba8, bgra8, mono8 -> RGB uint8; 16UC1 (mm) and 32FC1 (m) -> depth in metres.
Anything else is refused with the reason (ConversionError), as are image/step/size mismatches.
"""

from __future__ import annotations

import array
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ros2_pose6d.estimation.types import STAGES, Frame, FrameError, PoseEstimate
from ros2_pose6d.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix

COLOUR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
DEPTH_ENCODINGS = {"16UC1": np.dtype("uint16"), "32FC1": np.dtype("float32")}


class ConversionError(ValueError):
    """A message that cannot be turned into core data; the message says why (nodes log and skip)."""


@dataclass
class MessageFactory:
    """``types(name)`` gives the class of 'pkg/msg/Type'; ``byte_array`` turns bytes into what that
    message library wants for uint8[] fields; ``float_array`` likewise for float64[] fields."""

    types: Callable[[str], type]
    byte_array: Callable[[bytes], object]
    float_array: Callable[[np.ndarray], object]

    def new(self, name: str, **fields):
        return self.types(name)(**fields)


def rosbags_factory(store) -> MessageFactory:
    return MessageFactory(lambda n: store.types[n], lambda b: np.frombuffer(b, np.uint8).copy(),
                          lambda a: np.asarray(a, np.float64))


def rclpy_factory() -> MessageFactory:
    """Factory over the rclpy message packages (only callable where ROS 2 is installed)."""
    import importlib

    def cls(name: str) -> type:
        pkg, _, typ = name.split("/")
        return getattr(importlib.import_module(f"{pkg}.msg"), typ)
    return MessageFactory(cls, lambda b: array.array("B", b), lambda a: [float(x) for x in np.asarray(a).ravel()])


# ---- time and headers ----

def stamp_to_seconds(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def header(f: MessageFactory, stamp: float, frame_id: str):
    sec = math.floor(stamp)
    nanosec = min(999_999_999, round((stamp - sec) * 1e9))
    return f.new("std_msgs/msg/Header", stamp=f.new("builtin_interfaces/msg/Time", sec=int(sec), nanosec=int(nanosec)),
                 frame_id=frame_id)


# ---- images ----

def _pixels(msg, channels: int, dtype: np.dtype) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ConversionError(f"image is empty ({w}x{h})")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ConversionError(f"image step {step} is shorter than a row ({row} bytes for {w} px of {msg.encoding})")
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    if data.size < step * h:
        raise ConversionError(f"image data has {data.size} bytes, expected {step * h} ({h} rows of {step})")
    rows = data[: step * h].reshape(h, step)[:, :row]
    out = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    return out.reshape(h, w, channels).astype(dtype.newbyteorder("="))


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image of a colour or mono encoding -> (H, W, 3) uint8 RGB."""
    enc = str(msg.encoding)
    if enc not in COLOUR_ENCODINGS:
        raise ConversionError(f"unsupported image encoding '{enc}' (supported: "
                              f"{', '.join(COLOUR_ENCODINGS)}; depth: {', '.join(DEPTH_ENCODINGS)})")
    px = _pixels(msg, COLOUR_ENCODINGS[enc], np.dtype("uint8"))
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    if enc.startswith("bgr"):
        px = px[..., [2, 1, 0]]
    return np.ascontiguousarray(px[..., :3])


def image_to_depth(msg) -> np.ndarray:
    """sensor_msgs/Image 16UC1 [mm] or 32FC1 [m] -> (H, W) float32 [m], 0 where unknown (NaN/inf too)."""
    enc = str(msg.encoding)
    if enc not in DEPTH_ENCODINGS:
        raise ConversionError(f"unsupported depth encoding '{enc}' (supported: {', '.join(DEPTH_ENCODINGS)})")
    d = _pixels(msg, 1, DEPTH_ENCODINGS[enc])[..., 0].astype(np.float32)
    if enc == "16UC1":
        d *= 0.001
    d[~np.isfinite(d)] = 0
    return d


def array_to_image(f: MessageFactory, array_: np.ndarray, encoding: str, hdr):
    """(H, W, 3) uint8 RGB (any colour encoding is produced from RGB), or (H, W) depth in metres for
    16UC1/32FC1 -> sensor_msgs/Image."""
    if encoding in COLOUR_ENCODINGS:
        rgb = np.asarray(array_, np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ConversionError(f"expected an (H, W, 3) RGB array, got {rgb.shape}")
        px = {"rgb8": rgb, "bgr8": rgb[..., ::-1],
              "rgba8": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2),
              "bgra8": np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2),
              "mono8": rgb.mean(2, keepdims=True).round().astype(np.uint8)}[encoding]
    elif encoding in DEPTH_ENCODINGS:
        depth = np.asarray(array_, np.float32)
        px = (np.round(depth * 1000).clip(0, 65535).astype("<u2") if encoding == "16UC1" else depth.astype("<f4"))
        px = px[..., None]
    else:
        raise ConversionError(f"unsupported image encoding '{encoding}'")
    px = np.ascontiguousarray(px)
    h, w = px.shape[:2]
    return f.new("sensor_msgs/msg/Image", header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0,
                 step=w * px.shape[2] * px.dtype.itemsize, data=f.byte_array(px.tobytes()))


# ---- camera info ----

def camera_info_to_K(msg) -> tuple[np.ndarray, tuple[int, int]]:
    """sensor_msgs/CameraInfo -> K (3, 3) and (height, width); refuses zero/NaN intrinsics."""
    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    if not np.isfinite(K).all():
        raise ConversionError("camera_info K contains NaN or inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"camera_info K has non-positive focal lengths (fx={K[0, 0]}, fy={K[1, 1]}): "
                              "uncalibrated camera?")
    return K, (int(msg.height), int(msg.width))


def K_to_camera_info(f: MessageFactory, K: np.ndarray, hw: tuple[int, int], hdr):
    K = np.asarray(K, np.float64)
    P = np.concatenate([K, np.zeros((3, 1))], 1)
    roi = f.new("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return f.new("sensor_msgs/msg/CameraInfo", header=hdr, height=int(hw[0]), width=int(hw[1]),
                 distortion_model="plumb_bob", d=f.float_array(np.zeros(5)), k=f.float_array(K.ravel()),
                 r=f.float_array(np.eye(3).ravel()), p=f.float_array(P.ravel()), binning_x=0, binning_y=0, roi=roi)


def frame_from_msgs(image, camera_info, stamp: float | None = None) -> Frame:
    """sensor_msgs Image + CameraInfo -> Frame; ConversionError / FrameError say why not (the nodes and the
    bag replay skip the frame with that reason)."""
    if camera_info is None:
        raise FrameError("no camera_info with a matching stamp")
    rgb = image_to_rgb(image)
    K, hw = camera_info_to_K(camera_info)
    if hw != rgb.shape[:2] and hw != (0, 0):
        raise FrameError(f"image {rgb.shape[1]}x{rgb.shape[0]} does not match camera_info {hw[1]}x{hw[0]}")
    return Frame(rgb, K, stamp_to_seconds(image.header.stamp) if stamp is None else stamp, str(image.header.frame_id))


# ---- poses ----

def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(3, 3) -> (x, y, z, w), w >= 0 (the core's conversion, in float64)."""
    return matrix_to_quaternion(torch.as_tensor(np.asarray(R, np.float64))).numpy()


def quaternion_to_rotation(q) -> np.ndarray:
    """(x, y, z, w), any norm > 0 -> (3, 3)."""
    return quaternion_to_matrix(torch.as_tensor(np.asarray(q, np.float64))).numpy()


def pose_msg(f: MessageFactory, R: np.ndarray, t: np.ndarray):
    x, y, z, w = rotation_to_quaternion(R)
    return f.new("geometry_msgs/msg/Pose", position=f.new("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]),
                                                          z=float(t[2])),
                 orientation=f.new("geometry_msgs/msg/Quaternion", x=float(x), y=float(y), z=float(z), w=float(w)))


def pose_from_msg(msg) -> tuple[np.ndarray, np.ndarray]:
    o, p = msg.orientation, msg.position
    q = np.array([o.x, o.y, o.z, o.w], np.float64)
    if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
        raise ConversionError("pose orientation is not a valid quaternion")
    return quaternion_to_rotation(q), np.array([p.x, p.y, p.z], np.float64)


def estimate_to_object_pose(f: MessageFactory, e: PoseEstimate):
    x0, y0, x1, y1 = (float(v) for v in np.asarray(e.bbox_xyxy, np.float64))
    bbox = f.new("vision_msgs/msg/BoundingBox2D",
                 center=f.new("vision_msgs/msg/Pose2D", position=f.new("vision_msgs/msg/Point2D", x=(x0 + x1) / 2,
                                                                        y=(y0 + y1) / 2), theta=0.0),
                 size_x=max(0.0, x1 - x0), size_y=max(0.0, y1 - y0))
    return f.new("ros2_pose6d_msgs/msg/ObjectPose", object_id=str(e.object_id), instance=int(e.instance),
                 score=float(e.score), pose=pose_msg(f, e.R, e.t), visibility=float(e.visibility), bbox=bbox,
                 stage=STAGES.index(e.stage), iterations=int(e.iterations), fit_error=float(e.fit_error))


def object_pose_to_estimate(msg) -> PoseEstimate:
    R, t = pose_from_msg(msg.pose)
    c, sx, sy = msg.bbox.center.position, msg.bbox.size_x, msg.bbox.size_y
    stage = int(msg.stage)
    if not 0 <= stage < len(STAGES):
        raise ConversionError(f"unknown stage {stage}")
    try:
        obj_id = int(msg.object_id)
    except ValueError:
        raise ConversionError(f"object_id '{msg.object_id}' is not a BOP object id") from None
    return PoseEstimate(obj_id, R, t, float(msg.score), int(msg.instance),
                        np.array([c.x - sx / 2, c.y - sy / 2, c.x + sx / 2, c.y + sy / 2]), float(msg.visibility),
                        STAGES[stage], int(msg.iterations), float(msg.fit_error))


def estimates_to_array(f: MessageFactory, hdr, estimates: list[PoseEstimate]):
    return f.new("ros2_pose6d_msgs/msg/ObjectPoseArray", header=hdr,
                 objects=[estimate_to_object_pose(f, e) for e in estimates])


def estimate_to_detection3d(f: MessageFactory, hdr, e: PoseEstimate, bbox_size: np.ndarray, name: str = ""):
    """vision_msgs/Detection3D: the object hypothesis (class_id = object id) with the pose and score; the box
    is the object's 3D box (size [m]) at the pose; id = '<name or id>_<instance>'."""
    cov = f.float_array(np.zeros(36))
    hyp = f.new("vision_msgs/msg/ObjectHypothesisWithPose",
                hypothesis=f.new("vision_msgs/msg/ObjectHypothesis", class_id=str(e.object_id), score=float(e.score)),
                pose=f.new("geometry_msgs/msg/PoseWithCovariance", pose=pose_msg(f, e.R, e.t), covariance=cov))
    size = f.new("geometry_msgs/msg/Vector3", x=float(bbox_size[0]), y=float(bbox_size[1]), z=float(bbox_size[2]))
    return f.new("vision_msgs/msg/Detection3D", header=hdr, results=[hyp],
                 bbox=f.new("vision_msgs/msg/BoundingBox3D", center=pose_msg(f, e.R, e.t), size=size),
                 id=f"{name or e.object_id}_{e.instance}")


def estimate_to_transform(f: MessageFactory, hdr, child_frame: str, e: PoseEstimate):
    x, y, z, w = rotation_to_quaternion(e.R)
    tr = f.new("geometry_msgs/msg/Transform",
               translation=f.new("geometry_msgs/msg/Vector3", x=float(e.t[0]), y=float(e.t[1]), z=float(e.t[2])),
               rotation=f.new("geometry_msgs/msg/Quaternion", x=float(x), y=float(y), z=float(z), w=float(w)))
    return f.new("geometry_msgs/msg/TransformStamped", header=hdr, child_frame_id=child_frame, transform=tr)


def transform_to_pose(msg) -> tuple[np.ndarray, np.ndarray]:
    r, t = msg.transform.rotation, msg.transform.translation
    return quaternion_to_rotation([r.x, r.y, r.z, r.w]), np.array([t.x, t.y, t.z])
