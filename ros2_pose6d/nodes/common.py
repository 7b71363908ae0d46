"""rclpy helpers shared by both nodes: parameters from our specs, frame conversion with logged skips,
diagnostics. Everything that is not an rclpy call lives in ros2_pose6d.runtime and is tested there."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node

from ros2_pose6d.estimation.types import FrameError
from ros2_pose6d.io.ros_convert import ConversionError
from ros2_pose6d.runtime.diagnostics import NodeStats
from ros2_pose6d.runtime.params import ParamSpec, accept_changes, validate
from ros2_pose6d.runtime.sync_monitor import SyncMonitor


def declare_params(node: Node, specs: tuple[ParamSpec, ...], apply=None) -> dict:
    """Declare every spec with its type, default, description and range; refuse invalid values at start
    (ValueError, logged by the caller) and on later changes (SetParametersResult with the reason); valid
    changes of our parameters go to ``apply(dict)`` (see runtime.params.accept_changes)."""
    for s in specs:
        desc = ParameterDescriptor(description=s.description, read_only=s.read_only)
        if s.range is not None and s.type is float:
            desc.floating_point_range = [FloatingPointRange(from_value=float(s.range[0]), to_value=float(s.range[1]),
                                                            step=0.0)]
        elif s.range is not None and s.type is int:
            desc.integer_range = [IntegerRange(from_value=int(s.range[0]), to_value=int(s.range[1]), step=1)]
        if s.choices:
            desc.additional_constraints = f"one of: {', '.join(s.choices)}"
        node.declare_parameter(s.name, s.default, desc)
    values = {s.name: node.get_parameter(s.name).value for s in specs}
    problems = validate(specs, values)
    if problems:
        raise ValueError("; ".join(problems))

    def on_set(params) -> SetParametersResult:
        current = {s.name: node.get_parameter(s.name).value for s in specs}
        reason = accept_changes(specs, {p.name: p.value for p in params}, apply, current)
        if reason:
            node.get_logger().warning(f"rejected parameter change: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)
    node.add_on_set_parameters_callback(on_set)
    return values


def skip(node: Node, stats: NodeStats, exc: Exception) -> None:
    """Log a throttled warning, count the skipped frame, carry on."""
    reason = str(exc)
    stats.skip(reason)
    node.get_logger().warning(f"skipping frame: {reason}", throttle_duration_sec=5.0)


def publish_diagnostics(node: Node, pub, stats: NodeStats, name: str) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    status = DiagnosticStatus(level=bytes([stats.level()]), name=f"{node.get_name()}: {name}",
                              message="frames skipped" if stats.level() else "OK", hardware_id="",
                              values=[KeyValue(key=k, value=v) for k, v in stats.values().items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)


CONVERSION_ERRORS = (ConversionError, FrameError)


def run_node(factory, name: str, args=None) -> None:
    """rclpy.init, build the node (a failure at start is one fatal log line and exit code 1), spin until
    Ctrl-C or shutdown, then stop its worker and clean up."""
    import rclpy
    rclpy.init(args=args)
    try:
        node = factory()
    except Exception as exc:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        raise SystemExit(1) from None
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.worker.stop()
        node.destroy_node()
        rclpy.try_shutdown()


def subscribe_camera(node: Node, params: dict, callback):
    """image + camera_info (sensor-data QoS, overridable by parameters) through an approximate-time
    synchroniser calling ``callback(image, camera_info)``; returns the synchroniser (keep a reference)."""
    from message_filters import ApproximateTimeSynchronizer, Subscriber
    from rclpy.qos import QoSOverridingOptions, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    opts = QoSOverridingOptions.with_default_policies()
    subs = [Subscriber(node, Image, "image", qos_profile=qos_profile_sensor_data, qos_overriding_options=opts),
            Subscriber(node, CameraInfo, "camera_info", qos_profile=qos_profile_sensor_data,
                       qos_overriding_options=opts)]
    sync = ApproximateTimeSynchronizer(subs, params["queue_size"], params["sync_slop"])
    monitor = SyncMonitor(params["queue_size"])
    subs[0].registerCallback(monitor.image)  # a second listener on the same subscription: no extra copy

    def paired(image, info) -> None:
        monitor.paired()
        callback(image, info)
    sync.registerCallback(paired)

    def check() -> None:
        lost = monitor.check()
        if lost:
            for _ in range(lost):
                node.stats.skip("no camera_info with a matching stamp")
            node.get_logger().warning(f"{lost} image(s) found no camera_info within sync_slop="
                                      f"{params['sync_slop']} s: is camera_info published?",
                                      throttle_duration_sec=5.0)
    node.create_timer(1.0, check)
    node._pose6d_camera_subs = subs  # message_filters subscribers must outlive this call
    return sync


def start_worker(node: Node, params: dict, stats: NodeStats, label: str):
    """The drop-oldest worker over node.run_model / on_result / on_error, and the diagnostics timer."""
    from diagnostic_msgs.msg import DiagnosticArray

    from ros2_pose6d.runtime.worker import DropOldestWorker
    diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    worker = DropOldestWorker(node.run_model, node.on_result, node.on_error, f"pose6d-{label}")
    node.create_timer(params["diagnostics_period"], lambda: publish_diagnostics(node, diag_pub, stats, label))
    return worker


def submit(node: Node, stats: NodeStats, item) -> None:
    """Hand an item to the node's worker, counting a pending one it replaces as dropped."""
    before = node.worker.dropped
    node.worker.submit(item)
    stats.dropped += node.worker.dropped - before
