"""Everything the refiner node publishes for one frame, built as messages through a factory (rclpy's in
the node, rosbags' in tests): ObjectPoseArray, Detection3DArray, PoseArray, TF transforms, MarkerArray
of mesh markers, the overlay image, and the object-set description."""

from __future__ import annotations

import numpy as np

from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.io.ros_convert import (
    MessageFactory,
    array_to_image,
    estimate_to_detection3d,
    estimate_to_transform,
    estimates_to_array,
    pose_msg,
)
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.viz.overlay import object_colour


def instance_frame(prefix: str, registry: ObjectRegistry, e: PoseEstimate) -> str:
    return f"{prefix}{registry[e.object_id].name}_{e.instance}"


def markers(f: MessageFactory, hdr, poses: list[PoseEstimate], registry: ObjectRegistry, lifetime: float = 0.5):
    """visualization_msgs/MarkerArray: one MESH_RESOURCE marker per pose (the model's PLY, in mm), coloured
    by object; a DELETEALL first so vanished objects disappear."""
    Marker = f.types("visualization_msgs/msg/Marker")
    dur = f.new("builtin_interfaces/msg/Duration", sec=int(lifetime), nanosec=int((lifetime % 1) * 1e9))
    zero = f.new("builtin_interfaces/msg/Duration", sec=0, nanosec=0)

    def marker(**kw):
        base = dict(header=hdr, ns="", id=0, type=Marker.MESH_RESOURCE, action=Marker.ADD,
                    pose=pose_msg(f, np.eye(3), np.zeros(3)),
                    scale=f.new("geometry_msgs/msg/Vector3", x=1.0, y=1.0, z=1.0),
                    color=f.new("std_msgs/msg/ColorRGBA", r=0.0, g=0.0, b=0.0, a=0.0), lifetime=zero,
                    frame_locked=False, points=[], colors=[], texture_resource="",
                    texture=f.new("sensor_msgs/msg/CompressedImage", header=hdr, format="", data=f.byte_array(b"")),
                    uv_coordinates=[], text="", mesh_resource="",
                    mesh_file=f.new("visualization_msgs/msg/MeshFile", filename="", data=f.byte_array(b"")),
                    mesh_use_embedded_materials=False)
        base.update(kw)
        fields = getattr(Marker, "__dataclass_fields__", None) or getattr(Marker, "_fields_and_field_types", {})
        return f.new("visualization_msgs/msg/Marker", **{k: v for k, v in base.items() if k in fields})

    out = [marker(action=Marker.DELETEALL)]
    for k, e in enumerate(poses):
        obj = registry[e.object_id]
        r, g, b = (c / 255 for c in object_colour(e.object_id))
        out.append(marker(ns=obj.name, id=k, pose=pose_msg(f, e.R, e.t), lifetime=dur,
                          scale=f.new("geometry_msgs/msg/Vector3", x=0.001, y=0.001, z=0.001),
                          color=f.new("std_msgs/msg/ColorRGBA", r=float(r), g=float(g), b=float(b), a=0.8),
                          mesh_resource=f"file://{obj.mesh_path.resolve()}"))
    return f.new("visualization_msgs/msg/MarkerArray", markers=out)


def refiner_messages(f: MessageFactory, hdr, poses: list[PoseEstimate], registry: ObjectRegistry, tf_prefix: str,
                     overlay_rgb: np.ndarray | None = None) -> dict[str, object]:
    """Messages by output name: poses, detections_3d, pose_array, tf (list), markers, overlay (if given)."""
    sizes = {o.obj_id: o.info.bbox_size for o in registry}
    out = {
        "poses": estimates_to_array(f, hdr, poses),
        "detections_3d": f.new("vision_msgs/msg/Detection3DArray", header=hdr, detections=[
            estimate_to_detection3d(f, hdr, e, sizes[e.object_id], registry[e.object_id].name) for e in poses]),
        "pose_array": f.new("geometry_msgs/msg/PoseArray", header=hdr, poses=[pose_msg(f, e.R, e.t) for e in poses]),
        "tf": [estimate_to_transform(f, hdr, instance_frame(tf_prefix, registry, e), e) for e in poses],
        "markers": markers(f, hdr, poses, registry),
    }
    if overlay_rgb is not None:
        out["overlay"] = array_to_image(f, overlay_rgb, "rgb8", hdr)
    return out


def vision_info(f: MessageFactory, hdr, method: str, objects_yaml: str):
    """vision_msgs/VisionInfo naming the method and where the object set (ids, names, meshes) is described."""
    return f.new("vision_msgs/msg/VisionInfo", header=hdr, method=method, database_location=objects_yaml,
                 database_version=1)
