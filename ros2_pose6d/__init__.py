"""ros2_pose6d: multi-object 6D pose estimation (SMOPE-style detector, DeepIM / NeMo refiners).

The core is ROS-agnostic; only ``ros2_pose6d.nodes`` imports rclpy.
"""

__version__ = "0.1.0"
