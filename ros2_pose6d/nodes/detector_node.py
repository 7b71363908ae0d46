"""pose6d_detector: image + camera_info (approximately synchronised) -> ObjectPoseArray on `detections`.
The model runs off the callback thread through a drop-oldest queue of one."""

from __future__ import annotations

import time

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from ros2_pose6d.io.ros_convert import frame_from_msgs
from ros2_pose6d.nodes.common import (
    CONVERSION_ERRORS,
    declare_params,
    run_node,
    skip,
    start_worker,
    submit,
    subscribe_camera,
)
from ros2_pose6d.runtime.diagnostics import NodeStats
from ros2_pose6d.runtime.frame_cache import FrameCache
from ros2_pose6d.runtime.params import DETECTOR, DETECTOR_LIVE


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class DetectorNode(Node):
    def __init__(self) -> None:
        super().__init__("pose6d_detector")
        from ros2_pose6d.estimation.detector import Detector
        from ros2_pose6d.io.ros_convert import rclpy_factory
        from ros2_pose6d.objects.registry import ObjectRegistry
        from ros2_pose6d.resources import default_objects_yaml, weights_dir
        from ros2_pose6d_msgs.msg import ObjectPoseArray

        p = declare_params(self, DETECTOR, self.apply_params)
        self.registry = ObjectRegistry.from_yaml(p["objects"] or default_objects_yaml())
        weights = p["detector_weights"] or str(weights_dir() / "detector_demo.safetensors")
        self.detector = Detector.from_weights(weights, self.registry, resolve_device(p["device"]),
                                              score_threshold=p["score_threshold"], max_detections=p["max_detections"],
                                              nms_iou=p["nms_iou"])
        self.factory = rclpy_factory()
        self.stats = NodeStats()
        self.order: FrameCache = FrameCache(1)  # only its stamp-order check is used
        self.pub = self.create_publisher(ObjectPoseArray, "detections", 10)
        self.worker = start_worker(self, p, self.stats, "detection")
        self.sync = subscribe_camera(self, p, self.on_frame)
        self.get_logger().info(f"detector ready: {len(self.registry)} objects, weights {weights}")

    def apply_params(self, changed: dict) -> None:
        """`ros2 param set` of a detection parameter takes effect from the next frame (the callback runs
        only for changes after start: our parameters are declared before it is registered)."""
        for name in DETECTOR_LIVE:
            if name in changed:
                setattr(self.detector, name, changed[name])

    def on_frame(self, image: Image, info: CameraInfo) -> None:
        try:
            frame = frame_from_msgs(image, info)
        except CONVERSION_ERRORS as exc:
            skip(self, self.stats, exc)
            return
        if not self.order.add(frame.stamp, None):
            skip(self, self.stats, ValueError("image stamp older than the previous one (out of order)"))
            return
        submit(self, self.stats, (frame, image.header, time.perf_counter()))

    def run_model(self, item):
        frame, _, _ = item
        return self.detector.detect(frame)

    def on_result(self, item, detections) -> None:
        from ros2_pose6d.io.ros_convert import estimates_to_array
        _, hdr, t0 = item
        self.pub.publish(estimates_to_array(self.factory, hdr, detections))
        self.stats.frame_done(time.perf_counter() - t0)

    def on_error(self, item, exc: BaseException) -> None:
        skip(self, self.stats, exc)


def main(args=None) -> None:
    run_node(DetectorNode, "pose6d_detector", args)


if __name__ == "__main__":
    main()
