"""Cameras, rotations, rigid transforms and DeepIM's update rules (metres, REP-103 optical frame)."""

from ros2_pose6d.geometry.camera import (
    backproject,
    boxes_from_points,
    crop_resize,
    crop_resize_intrinsics,
    project,
    zoom_in_boxes,
)
from ros2_pose6d.geometry.deepim_update import apply_update, update_target
from ros2_pose6d.geometry.rotations import (
    axis_angle_to_matrix,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    random_rotation,
    rotation_6d_to_matrix,
    rotation_about_axis,
    rotation_grid,
)
from ros2_pose6d.geometry.se3 import compose, from_matrix, inverse, to_matrix, transform_points

__all__ = [
    "apply_update", "axis_angle_to_matrix", "backproject", "boxes_from_points", "compose", "crop_resize",
    "crop_resize_intrinsics", "from_matrix", "geodesic_angle", "inverse", "matrix_to_axis_angle",
    "matrix_to_quaternion", "matrix_to_rotation_6d", "project", "quaternion_to_matrix", "random_rotation",
    "rotation_6d_to_matrix", "rotation_about_axis", "rotation_grid", "to_matrix", "transform_points", "update_target",
    "zoom_in_boxes",
]
