"""ROS 2 bags without ROS (rosbags): read image + camera_info pairs (and optional ground truth) by stamp,
and write pipeline outputs. sqlite3 (.db3) and mcap storage, Humble and Jazzy message definitions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from ros2_pose6d.io.ros_convert import stamp_to_seconds
from ros2_pose6d.io.ros_types import typestore

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSES = "ros2_pose6d_msgs/msg/ObjectPoseArray"


class BagError(ValueError):
    """A bag that cannot be used; the message says why (and lists the topics when one is missing)."""


@dataclass
class BagFrame:
    """One image with the camera_info of the same stamp (None when none matched) and, when the bag has a
    ground-truth topic, the ObjectPoseArray of that stamp."""

    stamp: float  # header stamp [s]
    image: object
    camera_info: object | None
    ground_truth: object | None = None


def _open(path: Path) -> Reader:
    if not path.exists():
        raise BagError(f"{path}: bag not found")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:
        raise BagError(f"{path}: cannot open as a ROS 2 bag ({exc.__class__.__name__}: {exc})") from None
    return reader


def _pick(topics: dict[str, str], msgtype: str, wanted: str | None, what: str, path: Path) -> str | None:
    listing = ", ".join(f"{t} [{m}]" for t, m in sorted(topics.items())) or "none"
    if wanted:
        if wanted not in topics:
            raise BagError(f"{path}: no topic '{wanted}' for the {what}; topics: {listing}")
        if topics[wanted] != msgtype:
            raise BagError(f"{path}: topic '{wanted}' is {topics[wanted]}, expected {msgtype}")
        return wanted
    matches = sorted(t for t, m in topics.items() if m == msgtype)
    if not matches:
        return None
    if len(matches) > 1:  # prefer colour over depth topics
        preferred = [t for t in matches if "depth" not in t]
        matches = preferred or matches
    return matches[0]


class BagReader:
    """Iterates BagFrames of one image topic in bag order; camera_info and ground truth are matched by
    header stamp within ``slop`` seconds (the closest one)."""

    def __init__(self, path: str | Path, image_topic: str | None = None, info_topic: str | None = None,
                 gt_topic: str | None = None, slop: float = 0.005, distro: str = "humble") -> None:
        self.path = Path(path)
        self.store = typestore(distro)
        self.reader = _open(self.path)
        topics = {c.topic: c.msgtype for c in self.reader.connections}
        self.image_topic = _pick(topics, IMAGE, image_topic, "images", self.path)
        self.info_topic = _pick(topics, CAMERA_INFO, info_topic, "camera info", self.path)
        listing = ", ".join(f"{t} [{m}]" for t, m in sorted(topics.items())) or "none"
        if self.image_topic is None:
            self.close()
            raise BagError(f"{self.path}: no sensor_msgs/Image topic; topics: {listing}")
        if self.info_topic is None:
            self.close()
            raise BagError(f"{self.path}: no sensor_msgs/CameraInfo topic; topics: {listing}")
        self.gt_topic = _pick(topics, POSES, gt_topic, "ground truth", self.path) if gt_topic or any(
            "gt" in t or "ground_truth" in t for t, m in topics.items() if m == POSES) else None
        self.slop = slop
        self.num_images = sum(c.msgcount for c in self.reader.connections if c.topic == self.image_topic)

    def _deserialize(self, raw: bytes, msgtype: str):
        return self.store.deserialize_cdr(raw, msgtype)

    def __iter__(self) -> Iterator[BagFrame]:
        infos: list[tuple[float, object]] = []
        gts: list[tuple[float, object]] = []
        wanted = [c for c in self.reader.connections if c.topic in {self.image_topic, self.info_topic, self.gt_topic}]
        # camera_info and ground truth are small: collect them first, then stream images in order
        for conn, _, raw in self.reader.messages(connections=[c for c in wanted if c.topic != self.image_topic]):
            msg = self._deserialize(raw, conn.msgtype)
            (infos if conn.topic == self.info_topic else gts).append((stamp_to_seconds(msg.header.stamp), msg))
        for conn, _, raw in self.reader.messages(connections=[c for c in wanted if c.topic == self.image_topic]):
            img = self._deserialize(raw, conn.msgtype)
            stamp = stamp_to_seconds(img.header.stamp)
            yield BagFrame(stamp, img, self._closest(infos, stamp), self._closest(gts, stamp))

    def _closest(self, items: list[tuple[float, object]], stamp: float):
        best, best_dt = None, self.slop
        for s, msg in items:
            dt = abs(s - stamp)
            if dt <= best_dt:
                best, best_dt = msg, dt
        return best

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BagWriter:
    """Writes messages to a new bag; ``close`` (also on errors and Ctrl-C through the context manager)
    finalises it, so whatever was written stays readable."""

    def __init__(self, path: str | Path, storage: str = "sqlite3", distro: str = "humble") -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path}: output bag exists; choose another path or remove it")
        self.store = typestore(distro)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.path, version=8 if distro == "humble" else 9, storage_plugin=plugin)
        self.writer.open()
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def write(self, topic: str, msgtype: str, stamp: float, msg) -> None:
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
        self.writer.write(self.connections[topic], round(stamp * 1e9), self.store.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
