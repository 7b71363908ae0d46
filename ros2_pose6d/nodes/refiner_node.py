"""pose6d_refiner: image + camera_info go into a short frame cache; each `detections` message is matched
to its image by stamp and refined (DeepIM | NeMo | none | a cascade, parameter `method`); publishes `poses`,
`detections_3d`, `pose_array`, TF per instance, `overlay`, `markers`, and a latched `vision_info`.
In tracking mode frames are refined from the last refined poses, with a fresh detection every K frames
or when a fit error passes the threshold."""

from __future__ import annotations

import time

from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from tf2_ros import TransformBroadcaster
from vision_msgs.msg import Detection3DArray, VisionInfo
from visualization_msgs.msg import MarkerArray

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
from ros2_pose6d.nodes.detector_node import resolve_device
from ros2_pose6d.runtime.diagnostics import NodeStats
from ros2_pose6d.runtime.frame_cache import FrameCache
from ros2_pose6d.runtime.params import REFINER
from ros2_pose6d.runtime.tracking import TrackingPolicy


class RefinerNode(Node):
    def __init__(self) -> None:
        super().__init__("pose6d_refiner")
        from ros2_pose6d.estimation.cascade import METHODS
        from ros2_pose6d.estimation.pipeline import Pipeline, build_refiner
        from ros2_pose6d.io.ros_convert import header, rclpy_factory
        from ros2_pose6d.objects.registry import ObjectRegistry
        from ros2_pose6d.resources import default_objects_yaml, weights_dir
        from ros2_pose6d.runtime.outputs import vision_info
        from ros2_pose6d.viz.overlay import OverlayDrawer
        from ros2_pose6d_msgs.msg import ObjectPoseArray

        p = self.p = declare_params(self, REFINER, self.apply_params)
        objects_yaml = p["objects"] or str(default_objects_yaml())
        self.registry = ObjectRegistry.from_yaml(objects_yaml)
        device = resolve_device(p["device"])
        weights = {m: p[f"{m}_weights"] or weights_dir() / f"{m}_demo.safetensors" for m in METHODS}
        self.pipeline = Pipeline(self.registry, None, build_refiner(p["method"], weights, self.registry, device),
                                 p["iterations"] or None, p["visibility"], p["duplicate_distance"], p["seen_power"])
        self.factory = rclpy_factory()
        self.drawer = OverlayDrawer(self.registry)
        self.cache: FrameCache = FrameCache(p["frame_cache"])
        self.tracking = TrackingPolicy(p["redetect_every"], p["redetect_fit_error"]) if p["tracking"] else None
        self.latest_detections = None
        self.stats = NodeStats()
        self.create_subscription(ObjectPoseArray, "detections", self.on_detections, 10)
        self.pubs = {"poses": self.create_publisher(ObjectPoseArray, "poses", 10),
                     "detections_3d": self.create_publisher(Detection3DArray, "detections_3d", 10),
                     "pose_array": self.create_publisher(PoseArray, "pose_array", 10),
                     "overlay": self.create_publisher(Image, "overlay", 2),
                     "markers": self.create_publisher(MarkerArray, "markers", 2)}
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.info_pub = self.create_publisher(VisionInfo, "vision_info", latched)
        self.info_pub.publish(vision_info(self.factory, header(self.factory, 0.0, ""), f"ros2_pose6d/{p['method']}",
                                          objects_yaml))
        self.tf = TransformBroadcaster(self) if p["publish_tf"] else None
        self.worker = start_worker(self, p, self.stats, "refinement")
        self.sync = subscribe_camera(self, p, self.on_frame)
        self.get_logger().info(f"refiner ready: method {p['method']}, tracking {bool(p['tracking'])}")

    def apply_params(self, changed: dict) -> None:
        """`ros2 param set` of iterations, visibility, duplicate_distance, seen_power, tf_prefix or the re-detection
        rule takes effect from the next frame (runtime.params.REFINER_LIVE; the other parameters are read-only).
        Runs only for changes after start."""
        self.p.update(changed)
        if "iterations" in changed:
            self.pipeline.iterations = changed["iterations"] or None
        if "visibility" in changed:
            self.pipeline.visibility = changed["visibility"]
        if "duplicate_distance" in changed:
            self.pipeline.duplicate_distance = changed["duplicate_distance"]
        if "seen_power" in changed:
            self.pipeline.seen_power = changed["seen_power"]
        if self.tracking is not None:
            self.tracking.redetect_every = self.p["redetect_every"]
            self.tracking.fit_error_threshold = self.p["redetect_fit_error"]

    # ---- inputs ----
    def on_frame(self, image: Image, info: CameraInfo) -> None:
        try:
            frame = frame_from_msgs(image, info)
        except CONVERSION_ERRORS as exc:
            skip(self, self.stats, exc)
            return
        if not self.cache.add(frame.stamp, (frame, image.header)):
            skip(self, self.stats, ValueError("image stamp older than the previous one (out of order)"))
            return
        if self.tracking is not None:
            need, _ = self.tracking.needs_detection()
            if not need:
                self._submit(frame, image.header, self.tracking.last, detected=False)

    def on_detections(self, msg) -> None:
        from ros2_pose6d.io.ros_convert import object_pose_to_estimate, stamp_to_seconds
        stamp = stamp_to_seconds(msg.header.stamp)
        hit = self.cache.match(stamp, self.p["sync_slop"])
        if hit is None:
            skip(self, self.stats, ValueError(f"no cached image for detections at {stamp:.3f} s"))
            return
        frame, hdr = hit
        try:
            estimates = [object_pose_to_estimate(o) for o in msg.objects]
        except CONVERSION_ERRORS as exc:
            skip(self, self.stats, exc)
            return
        if self.tracking is None or self.tracking.needs_detection()[0]:
            self._submit(frame, hdr, estimates, detected=True)

    def _submit(self, frame, hdr, estimates, detected: bool) -> None:
        submit(self, self.stats, (frame, hdr, estimates, detected, time.perf_counter()))

    # ---- worker ----
    def run_model(self, item):
        from dataclasses import replace
        frame, _, estimates, detected, _ = item
        poses = self.pipeline.refine_detections(frame, estimates)
        if self.tracking is not None and not detected:
            poses = [replace(p, stage="tracked") if p.stage == "refined" else p for p in poses]
        return poses

    def on_result(self, item, poses) -> None:
        from ros2_pose6d.runtime.outputs import refiner_messages
        frame, hdr, _, detected, t0 = item
        if self.tracking is not None:
            self.tracking.update(poses, detected)
        wants_overlay = self.pubs["overlay"].get_subscription_count() > 0
        overlay = self.drawer.draw(frame.image, frame.K, poses) if wants_overlay else None
        msgs = refiner_messages(self.factory, hdr, poses, self.registry, self.p["tf_prefix"], overlay)
        for name, pub in self.pubs.items():
            if name in msgs:
                pub.publish(msgs[name])
        if self.tf is not None and msgs["tf"]:
            self.tf.sendTransform(msgs["tf"])
        self.stats.frame_done(time.perf_counter() - t0)

    def on_error(self, item, exc: BaseException) -> None:
        skip(self, self.stats, exc)


def main(args=None) -> None:
    run_node(RefinerNode, "pose6d_refiner", args)


if __name__ == "__main__":
    main()
