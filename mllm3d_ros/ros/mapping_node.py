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
  /tf, /tf_static                   TF (pose_source=tf; odometry without base_T_camera): tf2_ros where
                                    installed, else the package's own listener (ros/tf.py)
Published:
  ~/map_cloud   sensor_msgs/PointCloud2 (latched; throttled by map_publish_period_s), in map_frame
  ~/keyframes   geometry_msgs/PoseArray (latched), keyframe camera poses in map_frame
  ~/occupancy_grid  nav_msgs/OccupancyGrid (latched, with the map cloud): the floor grid for Nav2:
                unknown -1, free 0 (floor observed), occupied 100 (a surface in the height band)
Services:
  ~/reset       std_srvs/Trigger: empty the map and keyframes (and state bound to them)
  ~/save_map    mllm3d_ros/srv/MapFile: write map + keyframes to the folder `path` (and the object memory: the
                memory node of the same process saves it beside them, memory.json + memory.npz)
  ~/load_map    mllm3d_ros/srv/MapFile: replace them by a saved folder (left untouched on failure); the memory
                node restores the memory saved with it, or proposes every keyframe again when it does not fit
  ~/save_grid   mllm3d_ros/srv/MapFile: write the grid as map_server's `path`.yaml + `path`.pgm (Nav2's map)
Parameters: see MAPPING_PARAMS and config/perception.yaml (block `mapping`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from std_srvs.srv import Trigger

from ..core.geometry import BODY_T_OPTICAL
from ..core.mapping.frame_checks import FrameGateConfig, FrameRejected, RejectReason
from ..core.mapping.ingest import IngestConfig
from ..core.mapping.keyframes import KeyframeConfig
from ..core.mapping.mapper import Mapper
from ..core.mapping.occupancy import OccupancyConfig, OccupancyGridSource, save_map_server
from ..core.mapping.sync import ApproximateTimeSync, SyncConfig
from ..core.mapping.tf_buffer import TransformUnavailable
from ..core.mapping.tsdf_map import MapFileError, TsdfMapConfig
from ..core.types import InputError, MapSnapshot, RgbdFrame
from ..srv import MapFile
from .conversions import (camera_info_to_intrinsics, grid_to_msg, image_to_depth_m, image_to_rgb, make_header,
                          matrix_to_pose, points_to_cloud, pose_to_matrix, stamp_to_ns)
from ..node_params import configs_from_values, node_specs
from .params import ParameterError, declare_and_read
from .qos import LATCHED_QOS, SENSOR_QOS
from .tf import TfLookup

try:  # the standard ROS synchroniser where installed; the core's own otherwise (pip-only set-ups)
    import message_filters
except ImportError:
    message_filters = None
try:  # Iron and later; Humble has the same class in qos_event (deprecated from Iron on)
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:
    from rclpy.qos_event import SubscriptionEventCallbacks

# Rejections that come from the set-up, not from one bad frame: said once with the likely cause (the
# statistics line keeps counting them), instead of a throttled line for as long as the camera runs.
_ONCE_REASONS = frozenset({RejectReason.NO_DEPTH_IN_RANGE})


MAPPING_PARAMS = node_specs("mapping")  # generated from the core configs' declarations (node_params)


class MappingNode(Node):
    """Thin adapter: synchronised messages -> RgbdFrame -> Mapper.submit."""

    def __init__(self, **kwargs) -> None:
        super().__init__("mapping", **kwargs)
        p = declare_and_read(self, MAPPING_PARAMS)
        self._p = p
        self.parameters = dict(p)  # read by the nodes that share this map (their shared parameters must agree)
        self._base_T_camera = _parse_base_T_camera(p["base_T_camera"])
        sim_time = bool(self.get_parameter("use_sim_time").value)
        try:
            c = configs_from_values("mapping", p)
        except ValueError as exc:  # a cross-field bound (depth_min_m < depth_max_m, the grid's band): names both
            raise ParameterError(str(exc)) from None
        self.mapper = Mapper(c[TsdfMapConfig], c[KeyframeConfig], c[FrameGateConfig], c[IngestConfig],
                             on_reject=self._on_reject, now_ns=None if sim_time else self._now_ns)
        grid_config = c[OccupancyConfig]
        # The floor grid (Nav2's map), from the same cached snapshot as the map cloud; the query node
        # plans approach poses on it.
        self.occupancy = OccupancyGridSource(self.mapper, grid_config)
        self._info_lock = threading.Lock()
        self._camera_info: CameraInfo | None = None
        self._tf = None
        sensors = MutuallyExclusiveCallbackGroup()
        self._conversion_rejects: collections.Counter[str] = collections.Counter()
        self._warned_once: set[RejectReason] = set()
        self._last_warned: dict[str, float] = {}
        # Messages received per input, and messages DDS reports lost on the way (best effort): with the
        # sender's own count (replay logs it) they account for every frame that never reached fusion.
        self._received: collections.Counter[str] = collections.Counter()
        self._lost: collections.Counter[str] = collections.Counter()
        color_type, color_topic = ((CompressedImage, "camera/color/image_raw/compressed")
                                   if p["color_transport"] == "compressed" else (Image, "camera/color/image_raw"))
        inputs = [(color_type, color_topic), (Image, "camera/depth/image_raw")]
        if p["pose_source"] == "pose":
            inputs.append((PoseStamped, "camera/pose"))
        elif p["pose_source"] == "odometry":
            inputs.append((Odometry, "odom"))
        if p["pose_source"] == "tf" or (p["pose_source"] == "odometry" and self._base_T_camera is None):
            self._tf = TfLookup(self, p["tf_cache_s"])
        names = ["color", "depth", "pose"][:len(inputs)]
        self.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, SENSOR_QOS,
                                 callback_group=sensors, event_callbacks=self._lost_counter("camera_info"))
        self._sync = None
        if message_filters is not None:
            subs = [message_filters.Subscriber(self, t, n, qos_profile=SENSOR_QOS, callback_group=sensors,
                                               event_callbacks=self._lost_counter(name))
                    for (t, n), name in zip(inputs, names)]
            for sub, name in zip(subs, names):
                sub.registerCallback(lambda _m, name=name: self._received.update((name,)))
            self._mf_sync = message_filters.ApproximateTimeSynchronizer(subs, p["sync_queue_size"], p["sync_slop_s"])
            self._mf_sync.registerCallback(lambda *msgs: self._on_messages(msgs))
        else:
            self._sync = ApproximateTimeSync(
                dataclasses.replace(c[SyncConfig], num_inputs=len(inputs),
                                    max_stamp_jump_ns=max(c[SyncConfig].max_stamp_jump_ns, c[SyncConfig].slop_ns)),
                lambda matched: self._on_messages(matched.messages), now_ns=None if sim_time else self._now_ns,
                on_off_clock=self._on_off_clock)
            for index, ((msg_type, topic), name) in enumerate(zip(inputs, names)):
                self.create_subscription(msg_type, topic, lambda m, i=index, name=name: self._add(i, name, m),
                                         SENSOR_QOS, callback_group=sensors, event_callbacks=self._lost_counter(name))
        self._map_pub = self.create_publisher(PointCloud2, "~/map_cloud", LATCHED_QOS)
        self._kf_pub = self.create_publisher(PoseArray, "~/keyframes", LATCHED_QOS)
        self._grid_pub = self.create_publisher(OccupancyGrid, "~/occupancy_grid", LATCHED_QOS)
        # Before any frame: an empty grid (0 x 0), so a late subscriber learns the frame and resolution.
        self._grid_pub.publish(grid_to_msg(self.occupancy.grid(), make_header(p["map_frame"], self._now_ns())))
        timers = MutuallyExclusiveCallbackGroup()
        if p["map_publish_period_s"] > 0:
            self.create_timer(p["map_publish_period_s"], self._publish_map, callback_group=timers)
        if p["stats_period_s"] > 0:
            self.create_timer(p["stats_period_s"], self._log_stats, callback_group=timers)
        self._published_key = None
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services)
        self.create_service(MapFile, "~/save_map", self._on_save, callback_group=services)
        self.create_service(MapFile, "~/load_map", self._on_load, callback_group=services)
        self.create_service(MapFile, "~/save_grid", self._on_save_grid, callback_group=services)
        self.mapper.start()
        tf_note = f", TF from {self._tf.backend}" if self._tf is not None else ""
        self.get_logger().info(f"mapping at {p['voxel_size_m'] * 100:.1f} cm voxels, poses from "
                               f"{p['pose_source']}{tf_note}")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # --- services --------------------------------------------------------------------------------
    def _on_reset(self, _request, response):
        self.mapper.reset()
        response.success, response.message = True, "map and keyframes cleared"
        self.get_logger().info("map reset by service call")
        return response

    def _on_save(self, request, response):
        try:
            path = self.mapper.save(request.path)
        except (MapFileError, OSError, ValueError) as exc:
            response.success, response.message = False, f"save failed: {exc}"
        else:
            response.success = True
            response.message = (f"saved {self.mapper.map.num_blocks} blocks and {len(self.mapper.keyframes())} "
                                f"keyframes to {path}")
        self._log_outcome(response)
        return response

    def _on_save_grid(self, request, response):
        try:
            if not request.path.strip():
                raise ValueError("path is empty: give the map's file name without extension, e.g. /tmp/kitchen")
            grid = self.occupancy.grid()
            yaml_path, pgm_path = save_map_server(grid, request.path)
        except (OSError, ValueError) as exc:
            response.success, response.message = False, f"save_grid failed: {exc}"
        else:
            h, w = grid.shape
            empty = " (the map is empty: one unknown cell)" if grid.is_empty else ""
            floor = "" if grid.floor_z_m is not None or grid.is_empty else " (no floor seen yet: all unknown)"
            response.success = True
            response.message = f"saved a {w} x {h} grid at {grid.resolution_m} m{empty}{floor} to {yaml_path} and {pgm_path}"
        self._log_outcome(response)
        return response

    def _log_outcome(self, response) -> None:
        # rclpy refuses two severities from one call site, so the two outcomes log from two lines.
        if response.success:
            self.get_logger().info(response.message)
        else:
            self.get_logger().error(response.message)

    def _on_load(self, request, response):
        try:
            self.mapper.load(request.path)
        except (MapFileError, OSError, ValueError) as exc:
            response.success, response.message = False, f"load failed, map unchanged: {exc}"
        else:
            response.success = True
            response.message = (f"loaded {self.mapper.map.num_blocks} blocks and {len(self.mapper.keyframes())} "
                                f"keyframes from {request.path}")
        self._log_outcome(response)
        return response

    # --- callbacks: convert and hand off -------------------------------------------------------
    def _on_info(self, msg: CameraInfo) -> None:
        self._received["camera_info"] += 1
        with self._info_lock:
            self._camera_info = msg

    def _lost_counter(self, name: str) -> SubscriptionEventCallbacks:
        def lost(info) -> None:
            self._lost[name] += int(info.total_count_change)
        return SubscriptionEventCallbacks(message_lost=lost)

    def _add(self, index: int, name: str, msg) -> None:
        self._received[name] += 1
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
            try:
                world_T_camera = self._pose_of(msgs, color_msg, stamp_ns)
            except TransformUnavailable:
                raise
            except InputError as exc:  # a zero or NaN quaternion, a pose in another frame: counted as a pose fault
                raise FrameRejected(RejectReason.BAD_POSE, str(exc)) from None
        except TransformUnavailable as exc:
            # Not yet in the buffer (or never published): reject and count, never raise out of here.
            self.mapper.gate.count(RejectReason.NO_TRANSFORM)
            self._on_reject(None, FrameRejected(RejectReason.NO_TRANSFORM, str(exc)))
            return
        except (InputError, ValueError) as exc:
            self._conversion_rejects[exc.reason.name if isinstance(exc, FrameRejected) else "BAD_MESSAGE"] += 1
            self._on_reject(None, exc)
            return
        frame = RgbdFrame(stamp_ns=stamp_ns, color_rgb=color, depth_m=depth, intrinsics=intrinsics,
                          world_T_camera=world_T_camera, frame_id=color_msg.header.frame_id)
        self.mapper.submit(frame, color_stamp_ns=stamps[0], depth_stamp_ns=stamps[1],
                           pose_stamp_ns=stamps[2] if len(stamps) > 2 else stamps[0])

    def _pose_of(self, msgs, color_msg, stamp_ns: int) -> np.ndarray:
        camera_frame = self._p["camera_frame"] or color_msg.header.frame_id
        if self._p["pose_source"] == "tf":
            world_T = self._tf.lookup(self._p["map_frame"], camera_frame, stamp_ns, self._p["tf_timeout_s"])
        else:
            msg = msgs[2]
            if msg.header.frame_id and msg.header.frame_id != self._p["map_frame"]:
                raise InputError(f"pose is in frame '{msg.header.frame_id}', expected map_frame "
                                 f"'{self._p['map_frame']}'")
            world_T = pose_to_matrix(msg.pose.pose if isinstance(msg, Odometry) else msg.pose)
            if isinstance(msg, Odometry):
                # Odometry is the pose of the robot base (child_frame_id), not of the camera on it.
                base_T_camera = self._base_T_camera
                if base_T_camera is None:
                    base_T_camera = self._tf.lookup(msg.child_frame_id or "base_link", camera_frame, 0,
                                                    self._p["tf_timeout_s"])
                world_T = world_T @ base_T_camera
        if self._p["pose_convention"] == "body":
            world_T = world_T @ BODY_T_OPTICAL
        return world_T

    def _on_off_clock(self, index: int, stamp_ns: int, now_ns: int) -> None:
        self.mapper.gate.count(RejectReason.STAMP_OFF_CLOCK)
        self._on_reject(None, FrameRejected(
            RejectReason.STAMP_OFF_CLOCK, f"input {index} stamped {(stamp_ns - now_ns) / 1e9:+.3f} s from the clock "
            f"(limit {self._p['max_clock_offset_s']} s); refused before synchronisation"))

    def _on_reject(self, _frame, exc: Exception) -> None:
        # Throttled: a stream of bad frames (a future stamp, a missing transform) is one line per 2 s.
        if isinstance(exc, FrameRejected) and exc.reason in _ONCE_REASONS:
            if exc.reason not in self._warned_once:
                self._warned_once.add(exc.reason)
                self.get_logger().warning(f"frame rejected ({exc.reason.name}): {exc} (said once; the statistics "
                                          "line counts the others)")
            return
        # Throttled per reason (rclpy's throttle is per call site, so one reason would hide the others).
        reason = exc.reason.name if isinstance(exc, FrameRejected) else type(exc).__name__
        now = time.monotonic()
        with self._info_lock:
            if now - self._last_warned.get(reason, -math.inf) < 2.0:
                return
            self._last_warned[reason] = now
        self.get_logger().warning(f"frame rejected ({reason}): {exc}")

    # --- timers --------------------------------------------------------------------------------
    def _publish_map(self) -> None:
        # After a reset or load the generation changes, so an emptied map is published too.
        key = (self.mapper.generation, self.mapper.map.frames_integrated)
        if key == self._published_key or key == (0, 0):
            return
        self._published_key = key
        snapshot: MapSnapshot = self.mapper.snapshot()
        header = make_header(self._p["map_frame"], self.get_clock().now().nanoseconds)
        self._map_pub.publish(points_to_cloud(snapshot.points_world_m, header, snapshot.colors_rgb))
        poses = PoseArray(header=header, poses=[matrix_to_pose(kf.world_T_camera) for kf in self.mapper.keyframes()])
        self._kf_pub.publish(poses)
        self._grid_pub.publish(grid_to_msg(self.occupancy.grid(snapshot), header))

    def _log_stats(self) -> None:
        s = self.mapper.worker.stats
        sync = self._sync.stats if self._sync is not None else "message_filters"
        rejected = {r.name: n for r, n in s.rejected.items() if n}
        rejected.update({f"{k}_at_conversion": n for k, n in self._conversion_rejects.items()})
        self.get_logger().info(f"frames received={s.received} fused={s.fused} dropped_queue_full="
                               f"{s.dropped_queue_full} rejected={rejected or 0} keyframes={len(self.mapper.keyframes())} "
                               f"blocks={self.mapper.map.num_blocks} last_update={s.last_update_ms:.1f} ms "
                               f"messages={dict(self._received)} lost_in_transport={dict(self._lost) or 0} "
                               f"sync={sync}")

    def shutdown_core(self) -> None:
        self.mapper.stop()


def _parse_base_T_camera(text: str) -> np.ndarray | None:
    """'x y z roll pitch yaw' (m, rad; fixed-axis roll-pitch-yaw as in URDF) -> 4x4, '' -> None."""
    if not text.strip():
        return None
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        vals = []
    if len(vals) != 6 or not all(math.isfinite(v) for v in vals):
        raise ParameterError(f"parameter 'base_T_camera' must be '' or six numbers 'x y z roll pitch yaw' "
                             f"(m, rad), got {text!r}")
    x, y, z, roll, pitch, yaw = vals
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw),
                              math.sin(yaw))
    out = np.eye(4)
    out[:3, :3] = [[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                   [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                   [-sp, cp * sr, cp * cr]]
    out[:3, 3] = (x, y, z)
    return out
