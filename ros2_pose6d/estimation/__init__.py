"""Detector / Refiner stages and the Pipeline: frames in, PoseEstimates out. No ROS."""

from ros2_pose6d.estimation.types import STAGES, Frame, FrameError, PoseEstimate, validate_frame

__all__ = ["STAGES", "Frame", "FrameError", "PoseEstimate", "validate_frame"]
