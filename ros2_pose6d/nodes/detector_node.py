"""pose6d_detector: image + camera_info (approximately synchronised) -> ObjectPoseArray on `detections`.
The model runs off the callback thread through a drop-oldest queue of one."""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from message_filters import ApproximateTimeSynchronizer, Subscriber
from rclpy.node import Node
from rclpy.qos import QoSOverridingOptions, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from ros2_pose6d.nodes.common import (
    CONVERSION_ERRORS,
    declare_params,
    frame_from_msgs,
    publish_diagnostics,
    run_node,
    skip,
)
from ros2_pose6d.runtime.diagnostics import NodeStats
from ros2_pose6d.runtime.params import DETECTOR
from ros2_pose6d.runtime.worker import DropOldestWorker


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

        p = declare_params(self, DETECTOR)
        self.registry = ObjectRegistry.from_yaml(p["objects"] or default_objects_yaml())
        weights = p["detector_weights"] or str(weights_dir() / "detector_demo.safetensors")
        self.detector = Detector.from_weights(weights, self.registry, resolve_device(p["device"]),
                                              score_threshold=p["score_threshold"], max_detections=p["max_detections"])
        self.factory = rclpy_factory()
        self.stats = NodeStats()
        qos_opts = QoSOverridingOptions.with_default_policies()
        self.image_sub = Subscriber(self, Image, "image", qos_profile=qos_profile_sensor_data,
                                    qos_overriding_options=qos_opts)
        self.info_sub = Subscriber(self, CameraInfo, "camera_info", qos_profile=qos_profile_sensor_data,
                                   qos_overriding_options=qos_opts)
        self.sync = ApproximateTimeSynchronizer([self.image_sub, self.info_sub], p["queue_size"], p["sync_slop"])
        self.sync.registerCallback(self.on_frame)
        self.pub = self.create_publisher(ObjectPoseArray, "detections", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.worker = DropOldestWorker(self.run_model, self.on_result, self.on_error, "pose6d-detector")
        self.create_timer(p["diagnostics_period"],
                          lambda: publish_diagnostics(self, self.diag_pub, self.stats, "detection"))
        self.get_logger().info(f"detector ready: {len(self.registry)} objects, weights {weights}")

    def on_frame(self, image: Image, info: CameraInfo) -> None:
        try:
            frame = frame_from_msgs(image, info)
        except CONVERSION_ERRORS as exc:
            skip(self, self.stats, exc)
            return
        dropped = self.worker.dropped
        self.worker.submit((frame, image.header, time.perf_counter()))
        self.stats.dropped += self.worker.dropped - dropped

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
