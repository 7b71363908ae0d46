"""ros2 launch ros2_pose6d pipeline.launch.py [image:=...] [camera_info:=...] [method:=nemo+deepim]

Starts the detector and the refiner on one camera, with their parameters from config/pipeline.yaml
(override the file with params_file:=...), and optionally rviz with config/rviz/pose6d.rviz."""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("ros2_pose6d")
    args = [
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw",
                              description="sensor_msgs/Image topic of the RGB camera"),
        DeclareLaunchArgument("camera_info", default_value="/camera/color/camera_info",
                              description="sensor_msgs/CameraInfo topic of that camera"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "pipeline.yaml"]),
                              description="ros__parameters of both nodes"),
        DeclareLaunchArgument("objects", default_value="",
                              description="objects.yaml of the object set (empty: the shipped demo objects)"),
        DeclareLaunchArgument("method", default_value="nemo+deepim",
                              description="refiner: deepim | nemo | none | a cascade such as nemo+deepim:1"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("tracking", default_value="false",
                              description="refine from the last poses between detections"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz with config/rviz/pose6d.rviz"),
        DeclareLaunchArgument("namespace", default_value="pose6d", description="namespace of both nodes"),
    ]
    remap = [("image", LaunchConfiguration("image")), ("camera_info", LaunchConfiguration("camera_info"))]
    # Typed values: an untyped substitution is parsed as YAML by launch_ros, and the empty default of
    # `objects` parses to None, which it refuses ("Allowed value types are ...").
    text = lambda name: ParameterValue(LaunchConfiguration(name), value_type=str)  # noqa: E731
    common = {"objects": text("objects"), "device": text("device")}
    detector = Node(package="ros2_pose6d", executable="detector_node", name="pose6d_detector",
                    namespace=LaunchConfiguration("namespace"), output="screen", remappings=remap,
                    parameters=[LaunchConfiguration("params_file"), common])
    refiner = Node(package="ros2_pose6d", executable="refiner_node", name="pose6d_refiner",
                   namespace=LaunchConfiguration("namespace"), output="screen", remappings=remap,
                   parameters=[LaunchConfiguration("params_file"), common,
                               {"method": text("method"),
                                "tracking": ParameterValue(LaunchConfiguration("tracking"), value_type=bool)}])
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                arguments=["-d", PathJoinSubstitution([share, "config", "rviz", "pose6d.rviz"])],
                condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription([*args, detector, refiner, rviz])
