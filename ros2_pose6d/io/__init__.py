"""Dataset and message I/O: BOP datasets, ROS 2 message types for rosbags, conversions."""
