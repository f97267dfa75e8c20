"""Mapping node: RGB-D + pose in, incremental TSDF map and keyframes out.

Callbacks only convert messages and hand frames to the core's bounded queue; a worker thread fuses
(newest wins when it falls behind: the oldest queued frame is dropped and counted).

Subscribed (sensor-data QoS; remap these to your driver's names):
  camera/color/image_raw            sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)
  camera/color/image_raw/compressed sensor_msgs/CompressedImage (when color_transport=compressed)
  camera/depth/image_raw            sensor_msgs/Image (16UC1 mm or 32FC1 m), registered to colour
  camera/color/camera_info          sensor_msgs/CameraInfo (latest one is used)
  camera/pose                       geometry_msgs/PoseStamped (pose_source=pose), or
  odom                              nav_msgs/Odometry (pose_source=odometry), or TF (pose_source=tf)
Published:
  ~/map_cloud   sensor_msgs/PointCloud2 (latched; throttled by map_publish_period_s), in map_frame
  ~/keyframes   geometry_msgs/PoseArray (latched), keyframe camera poses in map_frame
Parameters: see MAPPING_PARAMS and config/perception.yaml (block `mapping`).
"""

from __future__ import annotations

import collections
import threading

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..core.geometry import BODY_T_OPTICAL, rigid_transform
from ..core.frame_checks import FrameGateConfig, FrameRejected, RejectReason
from ..core.ingest import IngestConfig
from ..core.keyframes import KeyframeConfig
from ..core.mapper import Mapper
from ..core.sync import ApproximateTimeSync, SyncConfig
from ..core.tsdf_map import TsdfMapConfig
from ..core.types import InputError, MapSnapshot, RgbdFrame
from .conversions import (camera_info_to_intrinsics, image_to_depth_m, image_to_rgb, make_header, matrix_to_pose,
                          points_to_cloud, pose_to_matrix, stamp_to_ns)
from .params import ParamSpec, ParameterError, declare_and_read
from .qos import LATCHED_QOS, SENSOR_QOS

try:  # the standard ROS synchroniser where installed; the core's own otherwise (pip-only set-ups)
    import message_filters
except ImportError:
    message_filters = None


MAPPING_PARAMS = (
    ParamSpec("map_frame", "map", "Fixed frame of the map (REP-105)."),
    ParamSpec("pose_source", "pose", "Where camera poses come from.", choices=("pose", "odometry", "tf")),
    ParamSpec("pose_convention", "optical", "Which camera frame the pose describes: 'optical' (z forward) or "
              "'body' (camera_link, x forward).", choices=("optical", "body")),
    ParamSpec("camera_frame", "", "TF only: camera optical frame id; '' = the colour image's frame_id."),
    ParamSpec("color_transport", "raw", "Colour as Image ('raw') or CompressedImage ('compressed').",
              choices=("raw", "compressed")),
    ParamSpec("sync_slop_s", 0.02, "Colour, depth and pose stamps must agree within this.", 0.0, 1.0),
    ParamSpec("sync_queue_size", 10, "Messages kept per input while matching stamps.", 1, 1000),
    ParamSpec("queue_size", 4, "Frames waiting for fusion; when full the oldest is dropped.", 1, 1000),
    ParamSpec("voxel_size_m", 0.03, "TSDF voxel size.", 0.005, 0.5),
    ParamSpec("block_budget", 20000, "Max voxel blocks kept; the farthest from the camera are evicted.", 16, 2000000),
    ParamSpec("depth_min_m", 0.2, "Depth below this is ignored.", 0.0, 10.0),
    ParamSpec("depth_max_m", 4.0, "Depth beyond this is ignored.", 0.1, 60.0),
    ParamSpec("depth_stride", 1, "Integrate every n-th depth pixel (speed vs detail).", 1, 8),
    ParamSpec("device", "cpu", "Where the TSDF lives.", choices=("cpu", "cuda", "auto")),
    ParamSpec("keyframe_min_translation_m", 0.1, "Camera motion that makes a new keyframe candidate.", 0.0, 10.0),
    ParamSpec("keyframe_min_rotation_deg", 8.0, "Camera rotation that makes a new keyframe candidate.", 0.0, 180.0),
    ParamSpec("keyframe_image_scale", 0.5, "Keyframe images are stored at this scale.", 0.05, 1.0),
    ParamSpec("max_keyframes", 100, "Keyframes kept (coverage-preserving eviction beyond).", 1, 100000),
    ParamSpec("max_stamp_skew_s", 0.1, "Reject a frame whose colour/depth/pose stamps differ by more.", 0.0, 10.0),
    ParamSpec("max_jump_translation_m", 1.0, "Reject a pose that jumps further than this in one frame.", 0.01, 100.0),
    ParamSpec("max_jump_rotation_deg", 60.0, "Reject a pose that turns more than this in one frame.", 1.0, 180.0),
    ParamSpec("map_publish_period_s", 2.0, "Map cloud publishing period (0 = never).", 0.0, 3600.0),
    ParamSpec("stats_period_s", 10.0, "Period of the ingestion statistics log line (0 = never).", 0.0, 3600.0),
)


class MappingNode(Node):
    """Thin adapter: synchronised messages -> RgbdFrame -> Mapper.submit."""

    def __init__(self, **kwargs) -> None:
        super().__init__("mapping", **kwargs)
        p = declare_and_read(self, MAPPING_PARAMS)
        self._p = p
        self.mapper = Mapper(
            TsdfMapConfig(voxel_size_m=p["voxel_size_m"], block_budget=p["block_budget"],
                          depth_min_m=p["depth_min_m"], depth_max_m=p["depth_max_m"],
                          depth_stride=p["depth_stride"], device=p["device"]),
            KeyframeConfig(min_translation_m=p["keyframe_min_translation_m"],
                           min_rotation_deg=p["keyframe_min_rotation_deg"], image_scale=p["keyframe_image_scale"],
                           max_keyframes=p["max_keyframes"]),
            FrameGateConfig(max_stamp_skew_ns=int(p["max_stamp_skew_s"] * 1e9),
                            max_jump_translation_m=p["max_jump_translation_m"],
                            max_jump_rotation_deg=p["max_jump_rotation_deg"]),
            IngestConfig(queue_size=p["queue_size"]),
            on_reject=self._on_reject)
        self._info_lock = threading.Lock()
        self._camera_info: CameraInfo | None = None
        self._tf_buffer = None
        sensors = MutuallyExclusiveCallbackGroup()
        self._conversion_rejects: collections.Counter[str] = collections.Counter()
        color_type, color_topic = ((CompressedImage, "camera/color/image_raw/compressed")
                                   if p["color_transport"] == "compressed" else (Image, "camera/color/image_raw"))
        inputs = [(color_type, color_topic), (Image, "camera/depth/image_raw")]
        if p["pose_source"] == "pose":
            inputs.append((PoseStamped, "camera/pose"))
        elif p["pose_source"] == "odometry":
            inputs.append((Odometry, "odom"))
        else:
            self._setup_tf()
        self.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, SENSOR_QOS,
                                 callback_group=sensors)
        self._sync = None
        if message_filters is not None:
            subs = [message_filters.Subscriber(self, t, n, qos_profile=SENSOR_QOS, callback_group=sensors)
                    for t, n in inputs]
            self._mf_sync = message_filters.ApproximateTimeSynchronizer(subs, p["sync_queue_size"], p["sync_slop_s"])
            self._mf_sync.registerCallback(lambda *msgs: self._on_messages(msgs))
        else:
            self._sync = ApproximateTimeSync(
                SyncConfig(num_inputs=len(inputs), slop_ns=int(p["sync_slop_s"] * 1e9),
                           queue_size=p["sync_queue_size"]), lambda matched: self._on_messages(matched.messages))
            for index, (msg_type, topic) in enumerate(inputs):
                self.create_subscription(msg_type, topic, lambda m, i=index: self._add(i, m), SENSOR_QOS,
                                         callback_group=sensors)
        self._map_pub = self.create_publisher(PointCloud2, "~/map_cloud", LATCHED_QOS)
        self._kf_pub = self.create_publisher(PoseArray, "~/keyframes", LATCHED_QOS)
        timers = MutuallyExclusiveCallbackGroup()
        if p["map_publish_period_s"] > 0:
            self.create_timer(p["map_publish_period_s"], self._publish_map, callback_group=timers)
        if p["stats_period_s"] > 0:
            self.create_timer(p["stats_period_s"], self._log_stats, callback_group=timers)
        self._published_key = None
        self.mapper.start()
        self.get_logger().info(f"mapping at {p['voxel_size_m'] * 100:.1f} cm voxels, poses from {p['pose_source']}")

    def _setup_tf(self) -> None:
        try:
            from tf2_ros import Buffer, TransformListener  # on ROS distributions only
        except ImportError:
            raise ParameterError("parameter 'pose_source': 'tf' needs tf2_ros, which is not installed (pip-only "
                                 "set-ups have no TF): use pose_source 'pose' or 'odometry'") from None
        self._tf_buffer = Buffer()
        self._tf_listener = TransformListener(self._tf_buffer, self)

    # --- callbacks: convert and hand off -------------------------------------------------------
    def _on_info(self, msg: CameraInfo) -> None:
        with self._info_lock:
            self._camera_info = msg

    def _add(self, index: int, msg) -> None:
        self._sync.add(index, stamp_to_ns(msg.header.stamp), msg)

    def _on_messages(self, msgs) -> None:
        with self._info_lock:
            info = self._camera_info
        color_msg, depth_msg = msgs[0], msgs[1]
        stamps = [stamp_to_ns(m.header.stamp) for m in msgs]
        stamp_ns = max(stamps)
        try:
            if info is None:
                raise FrameRejected(RejectReason.BAD_INTRINSICS, "no CameraInfo received yet on "
                                    f"'{self.resolve_topic_name('camera/color/camera_info')}'")
            intrinsics = camera_info_to_intrinsics(info)
            color = image_to_rgb(color_msg)
            depth = image_to_depth_m(depth_msg)
            world_T_camera = self._pose_of(msgs, color_msg)
        except (InputError, ValueError) as exc:
            self._conversion_rejects[exc.reason.name if isinstance(exc, FrameRejected) else "BAD_MESSAGE"] += 1
            self._on_reject(None, exc)
            return
        frame = RgbdFrame(stamp_ns=stamp_ns, color_rgb=color, depth_m=depth, intrinsics=intrinsics,
                          world_T_camera=world_T_camera, frame_id=color_msg.header.frame_id)
        self.mapper.submit(frame, color_stamp_ns=stamps[0], depth_stamp_ns=stamps[1],
                           pose_stamp_ns=stamps[2] if len(stamps) > 2 else stamps[0])

    def _pose_of(self, msgs, color_msg) -> np.ndarray:
        if self._tf_buffer is not None:
            from rclpy.time import Time
            frame = self._p["camera_frame"] or color_msg.header.frame_id
            tf = self._tf_buffer.lookup_transform(self._p["map_frame"], frame, Time.from_msg(color_msg.header.stamp))
            t, q = tf.transform.translation, tf.transform.rotation
            world_T = rigid_transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        else:
            msg = msgs[2]
            if msg.header.frame_id and msg.header.frame_id != self._p["map_frame"]:
                raise InputError(f"pose is in frame '{msg.header.frame_id}', expected map_frame "
                                 f"'{self._p['map_frame']}'")
            world_T = pose_to_matrix(msg.pose.pose if isinstance(msg, Odometry) else msg.pose)
        if self._p["pose_convention"] == "body":
            world_T = world_T @ BODY_T_OPTICAL
        return world_T

    def _on_reject(self, _frame, exc: Exception) -> None:
        reason = exc.reason.name if isinstance(exc, FrameRejected) else type(exc).__name__
        self.get_logger().warning(f"frame rejected ({reason}): {exc}", throttle_duration_sec=2.0)

    # --- timers --------------------------------------------------------------------------------
    def _publish_map(self) -> None:
        key = self.mapper.map.frames_integrated
        if key == self._published_key or key == 0:
            return
        self._published_key = key
        snapshot: MapSnapshot = self.mapper.snapshot()
        header = make_header(self._p["map_frame"], self.get_clock().now().nanoseconds)
        self._map_pub.publish(points_to_cloud(snapshot.points_world_m, header, snapshot.colors_rgb))
        poses = PoseArray(header=header, poses=[matrix_to_pose(kf.world_T_camera) for kf in self.mapper.keyframes()])
        self._kf_pub.publish(poses)

    def _log_stats(self) -> None:
        s = self.mapper.worker.stats
        sync = self._sync.stats if self._sync is not None else "message_filters"
        rejected = {r.name: n for r, n in s.rejected.items() if n}
        rejected.update({f"{k}_at_conversion": n for k, n in self._conversion_rejects.items()})
        self.get_logger().info(f"frames received={s.received} fused={s.fused} dropped_queue_full="
                               f"{s.dropped_queue_full} rejected={rejected or 0} keyframes={len(self.mapper.keyframes())} "
                               f"blocks={self.mapper.map.num_blocks} last_update={s.last_update_ms:.1f} ms "
                               f"sync={sync}")

    def shutdown_core(self) -> None:
        self.mapper.stop()


