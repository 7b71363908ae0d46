"""ROS 2 message types for bag I/O without a ROS install: rosbags' Humble/Jazzy typestores plus
vision_msgs (not shipped by rosbags) and our ros2_pose6d_msgs, registered from .msg text.

The vision_msgs definitions below are those of vision_msgs 4.x (Humble and Jazzy), fields only.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection3D":
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n",
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
    "vision_msgs/msg/VisionInfo":
        "std_msgs/Header header\nstring method\nstring database_location\nint32 database_version\n",
}

OUR_MSGS = ("ObjectPose", "ObjectPoseArray")
DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}


class MessageDefinitionError(ValueError):
    """A .msg file that does not parse; the message names the file."""


def msg_definition_path(name: str) -> Path:
    """Path of one of our .msg files as installed with the Python package."""
    return Path(str(resources.files("ros2_pose6d.io").joinpath("msg", f"{name}.msg")))


# type (optionally bounded string, array or bounded array), name, then a constant or default value
_FIELD = re.compile(r"^[A-Za-z][\w/]*(<=\d+)?(\[(<=)?\d*\])?\s+[A-Za-z]\w*"
                    r"(\s*=\s*\S.*|\s+(\[[^\]]*\]|\"[^\"]*\"|'[^']*'|\S+))?$")


def _check_lines(text: str, path: Path) -> None:
    """rosbags skips some malformed lines silently; we refuse them, naming the line."""
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0].strip() if not re.search(r"^\s*string\w*", line) else line.strip()
        if code and not _FIELD.match(code):
            raise MessageDefinitionError(f"{path}:{number}: not a valid ROS 2 message field: {line.strip()!r}")


def parse_msg_file(path: str | Path, typename: str) -> dict:
    """Parse a .msg file into rosbags type definitions, with one clear error naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MessageDefinitionError(f"{path}: cannot be read ({exc})") from exc
    _check_lines(text, path)
    try:
        return get_types_from_msg(text, typename)
    except Exception as exc:  # rosbags raises its own parse errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MessageDefinitionError(f"{path}: not a valid ROS 2 message definition ({first})") from exc


@cache
def typestore(distro: str = "humble") -> Typestore:
    """A typestore for ``distro`` (humble | jazzy) that knows vision_msgs and ros2_pose6d_msgs."""
    if distro not in DISTROS:
        raise ValueError(f"unknown ROS 2 distro {distro!r}; expected one of {sorted(DISTROS)}")
    store = get_typestore(DISTROS[distro])
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    for name in OUR_MSGS:
        types.update(parse_msg_file(msg_definition_path(name), f"ros2_pose6d_msgs/msg/{name}"))
    store.register(types)
    return store
