"""ROS-free logic of the live nodes: parameter specs and validation, frame cache and stamp matching,
the drop-oldest worker, tracking decisions, diagnostics counters. Tested without rclpy."""
