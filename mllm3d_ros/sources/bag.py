"""ROS 2 bags of RGB-D frames, read and written with the pure-Python `rosbags` package (no ROS install).

Written topics: colour `sensor_msgs/Image` (rgb8/bgr8) or `sensor_msgs/CompressedImage` (jpeg/png,
on `<colour topic>/compressed` as image_transport names it), depth `sensor_msgs/Image` (16UC1
millimetres or 32FC1 metres), `sensor_msgs/CameraInfo`, and the pose world_T_camera as
`geometry_msgs/PoseStamped` or `nav_msgs/Odometry` in frame "map".

Reading matches colour, depth and pose by header stamp (nearest within `max_dt_s`), streaming in
bag order with buffers bounded by that window; the intrinsics come from the latest CameraInfo.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..core.mapping import frame_checks
from ..core.config import check_choice, check_range
from ..core.geometry import BODY_T_OPTICAL, matrix_to_quaternion, rigid_transform
from ..core.types import CameraIntrinsics, InputError, RgbdFrame

# Newest distribution the installed rosbags knows among those this project targets.
_STORE = next(getattr(Stores, name) for name in ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE") if hasattr(Stores, name))
_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_INFO = "sensor_msgs/msg/CameraInfo"
_POSE = "geometry_msgs/msg/PoseStamped"
_ODOM = "nav_msgs/msg/Odometry"
_STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}



@dataclass(frozen=True)
class BagTopics:
    """Topic names of one RGB-D camera and its pose."""

    color: str = "/camera/color/image_raw"
    depth: str = "/camera/aligned_depth_to_color/image_raw"
    camera_info: str = "/camera/color/camera_info"
    pose: str = "/camera/pose"


def typestore():
    """The rosbags typestore used for every message here."""
    return get_typestore(_STORE)


def write_bag(path: str | Path, frames: Iterable[RgbdFrame], *, topics: BagTopics = BagTopics(),
              storage: str = "sqlite3", color_encoding: str = "rgb8", color_format: str = "raw",
              depth_encoding: str = "16UC1", pose_type: str = "pose") -> Path:
    """Write frames to a new ROS 2 bag folder; returns its path.

    color_encoding rgb8|bgr8 (raw images); color_format raw|jpeg|png (jpeg/png write a
    CompressedImage on `<color>/compressed`); depth_encoding 16UC1 (mm, 0 invalid) | 32FC1 (m);
    pose_type pose (PoseStamped) | odometry (nav_msgs/Odometry). Bag time = frame stamp.
    """
    check_choice("storage", storage, _STORAGES)
    check_choice("color_encoding", color_encoding, ("rgb8", "bgr8"))
    check_choice("color_format", color_format, ("raw", "jpeg", "png"))
    check_choice("depth_encoding", depth_encoding, ("16UC1", "32FC1"))
    check_choice("pose_type", pose_type, ("pose", "odometry"))
    path = Path(path)
    if path.exists():
        raise InputError(f"bag path already exists (rosbags never overwrites): {path}")
    store = typestore()
    types = store.types
    color_topic = topics.color if color_format == "raw" else f"{topics.color}/compressed"
    with Writer(path, version=8, storage_plugin=_STORAGES[storage]) as writer:
        conn_color = writer.add_connection(color_topic, _IMAGE if color_format == "raw" else _COMPRESSED, typestore=store)
        conn_depth = writer.add_connection(topics.depth, _IMAGE, typestore=store)
        conn_info = writer.add_connection(topics.camera_info, _INFO, typestore=store)
        conn_pose = writer.add_connection(topics.pose, _POSE if pose_type == "pose" else _ODOM, typestore=store)
        for frame in frames:
            stamp = types["builtin_interfaces/msg/Time"](sec=frame.stamp_ns // 1_000_000_000,
                                                         nanosec=frame.stamp_ns % 1_000_000_000)
            header = types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame.frame_id)
            color_msg = _color_message(types, header, frame.color_rgb, color_encoding, color_format)
            depth_msg = _depth_message(types, header, frame.depth_m, depth_encoding)
            info_msg = _info_message(types, header, frame.intrinsics)
            map_header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="map")
            pose_msg = _pose_message(types, map_header, frame.world_T_camera, pose_type, frame.frame_id)
            for conn, msg, typename in ((conn_color, color_msg, conn_color.msgtype), (conn_depth, depth_msg, _IMAGE),
                                        (conn_info, info_msg, _INFO), (conn_pose, pose_msg, conn_pose.msgtype)):
                writer.write(conn, frame.stamp_ns, store.serialize_cdr(msg, typename))
    return path


class BagReplay:
    """Frames of a bag as an iterable; opening checks the topics, iterating decodes and matches.

    num_frames / num_unmatched count the colour images matched or dropped by the last iteration.
    """

    def __init__(self, path: str | Path, topics: BagTopics = BagTopics(), max_dt_s: float = 0.02,
                 intrinsics: CameraIntrinsics | None = None, pose_is_optical: bool = True) -> None:
        check_range("max_dt_s", max_dt_s, 0.0, 10.0, low_inclusive=False)
        self.path = Path(path)
        self.topics = topics
        self.max_dt_ns = int(max_dt_s * 1e9)
        self.intrinsics = intrinsics
        # a pose of camera_link (x forward) rather than the optical frame is converted on read
        self.pose_is_optical = pose_is_optical
        self.num_frames = 0
        self.num_unmatched = 0
        if not self.path.exists():
            raise InputError(f"bag does not exist: {self.path}")
        with Reader(self.path) as reader:
            available = {c.topic: c.msgtype for c in reader.connections}
        self.color_topic = topics.color
        if available.get(topics.color) is None and available.get(f"{topics.color}/compressed") == _COMPRESSED:
            self.color_topic = f"{topics.color}/compressed"
        wanted = {self.color_topic: (_IMAGE, _COMPRESSED), topics.depth: (_IMAGE,), topics.pose: (_POSE, _ODOM)}
        if intrinsics is None:
            wanted[topics.camera_info] = (_INFO,)
        for topic, msgtypes in wanted.items():
            if topic not in available:
                raise InputError(f"{self.path}: topic {topic} is not in the bag; it has {sorted(available)}")
            if available[topic] not in msgtypes:
                raise InputError(f"{self.path}: topic {topic} has type {available[topic]}, expected one of {list(msgtypes)}")
        self._wanted = tuple(wanted)

    def __iter__(self) -> Iterator[RgbdFrame]:
        store = typestore()
        self.num_frames = self.num_unmatched = 0
        colors: deque = deque()
        depths: deque = deque()
        poses: deque = deque()
        info = self.intrinsics
        buffers = {self.color_topic: colors, self.topics.depth: depths, self.topics.pose: poses}
        with Reader(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in self._wanted]
            for conn, _, raw in reader.messages(connections=connections):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if conn.topic == self.topics.camera_info and conn.topic not in buffers:
                    if self.intrinsics is None:
                        info = frame_checks.intrinsics_from_k(msg.width, msg.height, msg.k)
                    continue
                buffers[conn.topic].append((stamp_ns, conn.msgtype, msg))
                if info is not None:
                    yield from self._emit(colors, depths, poses, info, final=False)
        if colors and info is None:
            raise InputError(f"{self.path}: no CameraInfo on {self.topics.camera_info}; pass intrinsics=")
        yield from self._emit(colors, depths, poses, info, final=True)

    def _emit(self, colors: deque, depths: deque, poses: deque, info: CameraIntrinsics, final: bool) -> Iterator[RgbdFrame]:
        """Match the oldest colour images once depth and pose have moved past their window (or at the end)."""
        while colors:
            stamp_ns = colors[0][0]
            if not final and not all(buf and buf[-1][0] > stamp_ns + self.max_dt_ns for buf in (depths, poses)):
                return
            _, color_type, color_msg = colors.popleft()
            # older entries can match no later colour image (per-topic stamps increase)
            for buf in (depths, poses):
                while len(buf) > 1 and buf[0][0] < stamp_ns - self.max_dt_ns:
                    buf.popleft()
            depth = _nearest(depths, stamp_ns, self.max_dt_ns)
            pose = _nearest(poses, stamp_ns, self.max_dt_ns)
            if depth is None or pose is None:
                self.num_unmatched += 1
                continue
            color_rgb = decode_color(color_msg, color_type)
            depth_m = decode_depth(depth[2])
            if color_rgb.shape[:2] != depth_m.shape or depth_m.shape != (info.height, info.width):
                raise InputError(f"{self.path}: at stamp {stamp_ns} ns colour {color_rgb.shape[1]}x{color_rgb.shape[0]}, "
                                 f"depth {depth_m.shape[1]}x{depth_m.shape[0]} and CameraInfo "
                                 f"{info.width}x{info.height} differ")
            world_T_camera = pose_to_matrix(pose[2].pose.pose if pose[1] == _ODOM else pose[2].pose)
            if not self.pose_is_optical:
                world_T_camera = world_T_camera @ BODY_T_OPTICAL
            self.num_frames += 1
            yield RgbdFrame(stamp_ns=stamp_ns, color_rgb=color_rgb, depth_m=depth_m, intrinsics=info,
                            world_T_camera=world_T_camera, frame_id=color_msg.header.frame_id or "camera_color_optical_frame")


def read_bag(path: str | Path, *, topics: BagTopics = BagTopics(), max_dt_s: float = 0.02,
             intrinsics: CameraIntrinsics | None = None, pose_is_optical: bool = True) -> BagReplay:
    """Open a bag for replay: iterate it for matched `RgbdFrame`s (see `BagReplay`)."""
    return BagReplay(path, topics, max_dt_s, intrinsics, pose_is_optical)


def _nearest(buf: deque, stamp_ns: int, max_dt_ns: int):
    best = min(buf, key=lambda entry: abs(entry[0] - stamp_ns), default=None)
    if best is None or abs(best[0] - stamp_ns) > max_dt_ns:
        return None
    return best


# --- message conversion ----------------------------------------------------------------------

def decode_color(msg, msgtype: str) -> np.ndarray:
    """sensor_msgs Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage -> (H, W, 3) uint8 RGB."""
    if msgtype == _COMPRESSED:
        return frame_checks.decode_compressed_color(bytes(msg.data))
    return frame_checks.decode_color(bytes(msg.data), msg.width, msg.height, msg.step, msg.encoding)


def decode_depth(msg) -> np.ndarray:
    """Depth Image 16UC1 (mm) or 32FC1 (m) -> (H, W) float32 metres; no return (0, NaN, inf) becomes 0."""
    return frame_checks.decode_depth(bytes(msg.data), msg.width, msg.height, msg.step, msg.encoding,
                                     bool(msg.is_bigendian))


def pose_to_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 float64 (quaternion normalised)."""
    p, o = pose.position, pose.orientation
    return rigid_transform((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))


def _color_message(types, header, color_rgb: np.ndarray, encoding: str, fmt: str):
    if fmt != "raw":
        ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(color_rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError(f"cannot encode colour image as {fmt}")
        return types[_COMPRESSED](header=header, format=fmt, data=buf.reshape(-1))
    pixels = color_rgb if encoding == "rgb8" else cv2.cvtColor(color_rgb, cv2.COLOR_RGB2BGR)
    h, w = pixels.shape[:2]
    return types[_IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * 3,
                         data=np.ascontiguousarray(pixels).reshape(-1))


def _depth_message(types, header, depth_m: np.ndarray, encoding: str):
    depth = np.nan_to_num(depth_m.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    h, w = depth.shape
    if encoding == "16UC1":
        data = np.clip(np.round(depth * 1000.0), 0, 65535).astype("<u2")
        step = w * 2
    else:
        data = depth.astype("<f4")
        step = w * 4
    return types[_IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
                         data=data.view(np.uint8).reshape(-1))


def _info_message(types, header, k: CameraIntrinsics):
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[_INFO](header=header, height=k.height, width=k.width, distortion_model="plumb_bob",
                        d=np.zeros(5), k=k.matrix.reshape(-1), r=np.eye(3).reshape(-1),
                        p=np.hstack([k.matrix, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0, roi=roi)


def _pose_message(types, header, world_T_camera: np.ndarray, pose_type: str, child_frame_id: str):
    x, y, z, w = matrix_to_quaternion(np.asarray(world_T_camera[:3, :3], np.float64))
    t = world_T_camera[:3, 3]
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=types["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)))
    if pose_type == "pose":
        return types[_POSE](header=header, pose=pose)
    zero = types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    return types[_ODOM](
        header=header, child_frame_id=child_frame_id,
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](
            twist=types["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)))
