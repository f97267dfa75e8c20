"""Query node: serves the SegmentQuery action over the shared map.

Runs in the same process as the mapping node (see perception_node) because a query needs the map
snapshot and keyframe images at memory speed; the 2D model is reached through the
`segment_views` service, so it can run on a GPU host.

Action server:   segment_query (mllm3d_ros/action/SegmentQuery)
Subscribed:      ~/instruction (std_msgs/String, reliable) -- e.g. from a speech-to-text node
                 segmentation/heartbeat (std_msgs/String) -- liveness and state of the segmentation node
                 /tf, /tf_static (through TfLookup) -- for goals whose target_frame is not the map frame
Published:       ~/segmented_cloud (sensor_msgs/PointCloud2, latched): best object, x y z rgb confidence
                 ~/markers (visualization_msgs/MarkerArray, latched): boxes + labels per object, and an
                 arrow at the approach pose (where the robot can stand, facing objects[0])
                 (both always in the map frame, whatever the goal's target_frame: RViz's fixed frame)
                 ~/result (std_msgs/String, reliable): JSON summary of each result; an instruction that
                 arrives while a query runs is answered there with status BUSY
Service client:  segmentation/segment_views (mllm3d_ros/srv/SegmentViews), through segment_views_client
Parameters:      see QUERY_PARAMS below and config/perception.yaml (block `query`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
import numpy as np
from geometry_msgs.msg import Point
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from ..action import SegmentQuery
from ..core.query.approach import (ApproachConfig, ApproachPose, approach_summary, camera_height_above_floor,
                             plan_approach)
from ..core.geometry import transform_box, transform_points
from ..core.query.memory_query import MemoryResolver
from ..core.mapping.occupancy import OccupancyGridSource
from ..core.query.pipeline import MapSource, QueryConfig, QueryPipeline
from ..core.mapping.tf_buffer import TransformUnavailable, check_frame_id
from ..core.types import InputError, QueryResult, QueryStatus
from ..core.query.view_selection import ViewSelectionConfig
from ..core.query.voting import VotingConfig
from ..msg import SegmentedObject
from .conversions import approach_to_msg, box_to_msg, make_header, points_to_cloud
from ..node_params import configs_from_values, node_specs
from .params import ParameterError, check_agreement, declare_and_read
from .qos import LATCHED_QOS, RELIABLE_QOS
from .segment_views_client import SegmentViewsClient
from .tf import TfLookup

QUERY_PARAMS = node_specs("query")  # generated from the core configs' declarations (node_params)


RESULT_TIMEOUT_S = 10


def _marker_color(rank: int) -> ColorRGBA:
    palette = [(0.1, 0.9, 0.2), (1.0, 0.6, 0.0), (0.2, 0.5, 1.0), (0.9, 0.2, 0.8), (0.9, 0.9, 0.1)]
    r, g, b = palette[rank % len(palette)]
    return ColorRGBA(r=r, g=g, b=b, a=0.8)


def object_description(obj, box=None) -> str:
    """`box`: the object's box in the frame the description is for (default: its map-frame box). An object
    whose label is unconfirmed says so first; what the memory checked (colours, shape) follows."""
    box = obj.box if box is None else box
    c, s = box.center_world_m, box.size_m
    text = (f"{obj.label or 'object'} at ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) m, "
            f"{s[0]:.2f} x {s[1]:.2f} x {s[2]:.2f} m")
    detail = getattr(obj, "detail", "")
    if getattr(obj, "unconfirmed", False) and "unconfirmed" not in detail:
        detail = "label unconfirmed" + (f"; {detail}" if detail else "")
    return f"{text}; {detail}" if detail else text


def result_to_msg(result: QueryResult, frame_id: str, stamp_ns: int, frame_T_map: np.ndarray | None = None):
    """Core QueryResult -> SegmentQuery.Result (object points taken from the snapshot the query used).

    `frame_T_map` (4x4): the geometry (points, box, description) is moved from the map frame into
    `frame_id` with it; None when `frame_id` is the map frame.
    """
    snapshot = result.snapshot
    msg = SegmentQuery.Result(error_code=int(result.status), error_message=result.message,
                              target_phrase=result.target_phrase, views_used=int(result.views_used),
                              elapsed_s=float(result.elapsed_s))
    header = make_header(frame_id, stamp_ns)
    for rank, obj in enumerate(result.objects):
        pts = snapshot.points_world_m[obj.point_indices]
        cols = snapshot.colors_rgb[obj.point_indices]
        box = obj.box
        if frame_T_map is not None:
            pts, box = transform_points(frame_T_map, pts), transform_box(frame_T_map, box)
        cloud = points_to_cloud(pts, header, cols, obj.point_confidence)
        pose, size = box_to_msg(box)
        msg.objects.append(SegmentedObject(
            header=header, label=obj.label, description=object_description(obj, box),
            confidence=float(obj.confidence),
            box_center=pose, box_size=size, points=cloud,
            supporting_views=int(obj.supporting_views), visible_views=int(obj.visible_views)))
        if rank == 0:
            msg.points = cloud
    if not result.objects:
        msg.points = points_to_cloud(np.zeros((0, 3), np.float32), header)
    (msg.approach_pose, msg.approach_status, msg.approach_message,
     msg.approach_reachability_checked) = approach_to_msg(result.approach, header, frame_T_map)
    return msg


def markers_for(result_msg, frame_id: str) -> MarkerArray:
    """Boxes and text labels for each object (a DELETEALL first so old results disappear)."""
    out = MarkerArray(markers=[Marker(action=Marker.DELETEALL, ns="mllm3d")])
    for rank, obj in enumerate(result_msg.objects):
        box = Marker(header=obj.header, ns="mllm3d/boxes", id=rank, type=Marker.CUBE, action=Marker.ADD,
                     pose=obj.box_center, scale=obj.box_size, color=_marker_color(rank))
        box.color.a = 0.35
        text = Marker(header=obj.header, ns="mllm3d/labels", id=rank, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, color=_marker_color(rank), text=f"{obj.label} {obj.confidence:.2f}")
        text.pose.position = Point(x=obj.box_center.position.x, y=obj.box_center.position.y,
                                   z=obj.box_center.position.z + obj.box_size.z / 2 + 0.1)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.12
        out.markers.extend([box, text])
    if result_msg.approach_pose.header.frame_id:
        # Where the robot can stand, facing the best object: an arrow on the floor.
        arrow = Marker(header=result_msg.approach_pose.header, ns="mllm3d/approach", id=0, type=Marker.ARROW,
                       action=Marker.ADD, pose=result_msg.approach_pose.pose,
                       color=ColorRGBA(r=0.1, g=0.6, b=1.0, a=0.9))
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.4, 0.06, 0.06
        out.markers.append(arrow)
    return out


class QueryNode(Node):
    """Thin adapter: goals -> QueryPipeline -> results, feedback and RViz topics."""

    def __init__(self, map_source: MapSource, resolver: MemoryResolver | None = None,
                 occupancy: OccupancyGridSource | None = None, mapping_params: dict | None = None, **kwargs) -> None:
        """`mapping_params`: the mapping node's parameters (same process); map_frame and the other shared
        parameters must agree with them."""
        super().__init__("query", **kwargs)
        p = declare_and_read(self, QUERY_PARAMS)
        check_agreement("query", p, "mapping", mapping_params)
        self._frame = p["map_frame"]
        self._robot_frame = p["robot_frame"]
        try:
            c = configs_from_values("query", p)
        except ValueError as exc:  # a cross-field bound (standoff below the radius, max views): names both
            raise ParameterError(str(exc)) from None
        self._approach_config = c[ApproachConfig]
        # The floor grid the approach poses are planned on: the mapping node's (same process), else our own.
        self._occupancy = occupancy or OccupancyGridSource(map_source)
        self._tf_timeout_s = p["tf_timeout_s"]
        # Created up front so /tf_static (latched) and /tf are already buffered when a goal asks.
        self._tf = TfLookup(self)
        self._policy = p["second_goal_policy"]
        self._model_parsing = p["model_parsing"]
        self._map_source = map_source
        self._action_group = ReentrantCallbackGroup()
        self._segmenter = SegmentViewsClient(self, p["segment_service"], p["heartbeat_topic"],
                                             backend_timeout_s=p["backend_timeout_s"],
                                             service_wait_s=p["service_wait_s"], callback_group=ReentrantCallbackGroup())
        self.pipeline = QueryPipeline(map_source, self._segmenter, c[QueryConfig], c[VotingConfig],
                                      c[ViewSelectionConfig], resolver)
        # Single-goal pattern (ros2/examples action_server single_goal): `_busy` counts the queries
        # accepted and not finished (goals and instructions); it is claimed in the goal callback under
        # `_goal_lock`, so two goals arriving together cannot both pass `reject`. `_run_lock` lets one
        # pipeline run at a time; a preempted or cancelled goal waiting for it ends without running.
        self._goal_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._busy = 0
        self._latest: _Query | None = None
        self._queries: dict[bytes, _Query] = {}
        self._cloud_pub = self.create_publisher(PointCloud2, "~/segmented_cloud", LATCHED_QOS)
        self._marker_pub = self.create_publisher(MarkerArray, "~/markers", LATCHED_QOS)
        self._result_pub = self.create_publisher(String, "~/result", RELIABLE_QOS)
        # A finished goal's result (clouds included, ~0.2 MB) is kept for late result requests for
        # result_timeout: Humble's default of 900 s holds every answer of the last quarter hour in memory.
        # Clients ask for the result as soon as the goal is accepted, so 10 s (Jazzy's default) is plenty.
        self._action = ActionServer(self, SegmentQuery, "segment_query", execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=self._on_cancel,
                                    handle_accepted_callback=self._on_accepted,
                                    callback_group=self._action_group, result_timeout=RESULT_TIMEOUT_S)
        self._instruction_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(String, "~/instruction", self._on_instruction, RELIABLE_QOS,
                                 callback_group=self._instruction_group)
        self.get_logger().info(f"SegmentQuery action on '{self.resolve_topic_name('segment_query')}', "
                               f"second goals: {self._policy}")

    # --- goal handling -------------------------------------------------------------------------
    def _on_goal(self, goal_request) -> GoalResponse:
        with self._goal_lock:
            if self._busy and self._policy == "reject":
                self.get_logger().warning(f"rejected goal '{goal_request.instruction[:60]}': a query is running "
                                          "(second_goal_policy=reject)")
                return GoalResponse.REJECT
            self._busy += 1
        return GoalResponse.ACCEPT

    def _on_accepted(self, goal_handle) -> None:
        query = _Query()
        with self._goal_lock:
            if self._latest is not None and self._policy == "preempt":
                self.get_logger().info("preempting the running query for a new goal")
                self._latest.preempt()
            self._latest = query
            self._queries[_goal_key(goal_handle)] = query
        goal_handle.execute()

    def _on_cancel(self, goal_handle) -> CancelResponse:
        with self._goal_lock:
            query = self._queries.get(_goal_key(goal_handle))
        if query is None:
            return CancelResponse.REJECT
        query.cancel.set()  # this goal's event only: a waiting goal's cancel leaves the running one alone
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle):
        with self._goal_lock:
            query = self._queries[_goal_key(goal_handle)]
        goal = goal_handle.request
        target_frame = goal.target_frame or self._frame
        try:
            # Checked before the query, so an unknown frame costs no 2D model call; looked up again when
            # the result is converted, so a moving frame is taken at the result's time.
            problem = self._target_frame_problem(target_frame)
            if problem is not None:
                result = QueryResult(QueryStatus.INVALID_GOAL, problem)
            else:
                def progress(stage: str, frac: float) -> None:
                    goal_handle.publish_feedback(SegmentQuery.Feedback(stage=stage, progress=float(frac)))

                result = self._run_query(query, goal.instruction, int(goal.max_views), float(goal.min_confidence),
                                         progress)
            msg = self._publish(result, goal.instruction, target_frame)
            if msg.error_code == QueryStatus.SUCCESS:
                goal_handle.succeed()
            elif result.status is QueryStatus.CANCELED and goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
            self.get_logger().info(f"query '{goal.instruction[:60]}': {result.status.name} -- {result.message} "
                                   f"({result.elapsed_s:.2f} s)")
            return msg
        finally:
            self._release(goal_handle, query)

    def _release(self, goal_handle, query: "_Query") -> None:
        with self._goal_lock:
            self._busy -= 1
            if goal_handle is not None:
                self._queries.pop(_goal_key(goal_handle), None)
            if self._latest is query:
                self._latest = None

    def _run_query(self, query: "_Query", instruction: str, max_views: int = 0, min_confidence: float = 0.0,
                   progress=None) -> QueryResult:
        """Run the pipeline for one query once the previous one is done; never raises."""
        while not self._run_lock.acquire(timeout=0.05):
            if query.cancel.is_set():  # cancelled or preempted while waiting its turn
                return QueryResult(QueryStatus.CANCELED, query.stop_reason("before it started"))
        try:
            deadline = time.monotonic() + self.pipeline.config.timeout_s
            segment_fn = functools.partial(self._segmenter, cancel=query.cancel, deadline=deadline)
            parse_fn = (functools.partial(self._segmenter.parse, cancel=query.cancel, deadline=deadline)
                        if self._model_parsing else None)
            recognise_fn = functools.partial(self._segmenter.recognise, cancel=query.cancel, deadline=deadline)
            result = self.pipeline.run(instruction, max_views, min_confidence, progress, query.cancel.is_set,
                                       segment_fn=segment_fn, parse_fn=parse_fn, recognise_fn=recognise_fn)
            if result.status is QueryStatus.SUCCESS:
                result = dataclasses.replace(result, approach=self._approach(result))
        except Exception as exc:  # noqa: BLE001 -- e.g. a bug in voting: answer it, never a default result
            self.get_logger().error(f"query '{instruction[:60]}' failed: {type(exc).__name__}: {exc}")
            result = QueryResult(QueryStatus.BACKEND_ERROR, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._run_lock.release()
        if result.status is QueryStatus.CANCELED and query.preempted:
            result = dataclasses.replace(result, message=query.stop_reason(result.message))
        return result

    def _approach(self, result: QueryResult) -> ApproachPose:
        """The approach pose for the result's best object on the floor grid of the result's map snapshot."""
        t0 = time.monotonic()
        grid = self._occupancy.grid(result.snapshot)
        keyframes = self.pipeline.map_source.keyframes()
        cams = np.array([kf.world_T_camera[:3, 3] for kf in keyframes]).reshape(-1, 3)
        robot_xy, note = None, ""
        try:
            map_T_robot = self._tf.lookup(self._frame, self._robot_frame, 0, self._tf_timeout_s)
            robot_xy = (float(map_T_robot[0, 3]), float(map_T_robot[1, 3]))
        except TransformUnavailable as exc:
            note = (f"robot pose unknown (no transform {self._frame} <- {self._robot_frame} within "
                    f"{self._tf_timeout_s:.2f} s: {exc}): reachability not checked")
        approach = plan_approach(result.objects[0].box, grid, result.snapshot,
                                 camera_height_above_floor(cams, grid.floor_z_m), robot_xy, self._approach_config, note,
                                 self._occupancy.config.min_height_m, keyframes)
        result.timings_ms["approach_ms"] = (time.monotonic() - t0) * 1e3
        return approach

    def _target_frame_problem(self, target_frame: str) -> str | None:
        """Why results cannot be given in `target_frame` (bad name, no transform), or None."""
        if target_frame == self._frame:
            return None
        try:
            check_frame_id("target_frame", target_frame)
            self._frame_T_map(target_frame)
        except (InputError, TransformUnavailable) as exc:
            return str(exc)
        return None

    def _frame_T_map(self, target_frame: str) -> np.ndarray:
        """target_frame <- map (newest available), waiting up to tf_timeout_s; TransformUnavailable names
        the missing link."""
        try:
            return self._tf.lookup(target_frame, self._frame, 0, self._tf_timeout_s)
        except TransformUnavailable as exc:
            raise TransformUnavailable(f"target_frame '{target_frame}': no transform from '{self._frame}' within "
                                       f"{self._tf_timeout_s:.2f} s: {exc}") from None

    def _publish(self, result: QueryResult, instruction: str, target_frame: str | None = None):
        """Result message (in `target_frame`, default the map frame), RViz topics (map frame) and the
        ~/result JSON (map frame); a failure clears the previous answer in RViz."""
        target_frame = target_frame or self._frame
        stamp_ns = self.get_clock().now().nanoseconds
        try:
            map_msg = result_to_msg(result, self._frame, stamp_ns)
        except Exception as exc:  # noqa: BLE001 -- a malformed result must still be answered
            self.get_logger().error(f"cannot convert the result: {type(exc).__name__}: {exc}")
            result = QueryResult(QueryStatus.BACKEND_ERROR, f"internal error: {type(exc).__name__}: {exc}",
                                 elapsed_s=result.elapsed_s)
            map_msg = result_to_msg(result, self._frame, stamp_ns)
        msg = map_msg
        if target_frame != self._frame and result.objects:
            try:
                msg = result_to_msg(result, target_frame, stamp_ns, self._frame_T_map(target_frame))
            except TransformUnavailable as exc:  # the transform went away while the query ran
                result = QueryResult(QueryStatus.INVALID_GOAL, str(exc), elapsed_s=result.elapsed_s)
                msg = map_msg = result_to_msg(result, self._frame, stamp_ns)
        elif target_frame != self._frame:
            msg = result_to_msg(result, target_frame, stamp_ns)  # no geometry: only the header's frame changes
        # Latched topics keep the last message: publishing the empty cloud and a DELETEALL-only marker
        # array after a failure is what removes the previous answer from RViz.
        self._cloud_pub.publish(map_msg.points)
        self._marker_pub.publish(markers_for(map_msg, self._frame))
        self._result_pub.publish(String(data=json.dumps(result_summary(result, instruction))))
        return msg

    # --- instruction topic ---------------------------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        """Start a query for a plain-text instruction (speech-to-text) on a worker; result on ~/result."""
        query = _Query()
        with self._goal_lock:
            busy = bool(self._busy)
            if not busy:
                self._busy += 1
                self._latest = query
        if busy:
            self.get_logger().warning(f"instruction '{msg.data[:60]}' not started: a query is running")
            reply = QueryResult(QueryStatus.BUSY, "a query is running; send the instruction again when it is done")
            self._result_pub.publish(String(data=json.dumps(result_summary(reply, msg.data))))
            return
        threading.Thread(target=self._run_instruction, args=(msg.data, query), daemon=True).start()

    def _run_instruction(self, text: str, query: "_Query") -> None:
        try:
            result = self._run_query(query, text)
            self._publish(result, text)
            self.get_logger().info(f"instruction '{text[:60]}': {result.status.name} -- {result.message}")
        finally:
            self._release(None, query)


class _Query:
    """One accepted query: its own cancel event, set by its cancel request or by a preempting goal."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.preempted = False

    def preempt(self) -> None:
        self.preempted = True
        self.cancel.set()

    def stop_reason(self, detail: str) -> str:
        return f"preempted by a newer goal ({detail})" if self.preempted else f"canceled ({detail})"


def _goal_key(goal_handle) -> bytes:
    return bytes(goal_handle.goal_id.uuid)


def result_summary(result: QueryResult, instruction: str) -> dict:
    """The JSON summary published on ~/result."""
    return {"instruction": instruction, "status": result.status.name, "message": result.message,
            "target_phrase": result.target_phrase, "views_used": result.views_used,
            "elapsed_s": round(result.elapsed_s, 3),
            "objects": [{"label": o.label, "confidence": round(o.confidence, 3), "unconfirmed": o.unconfirmed,
                         "description": object_description(o),
                         "center_m": [round(float(x), 3) for x in o.box.center_world_m],
                         "size_m": [round(float(x), 3) for x in o.box.size_m],
                         "num_points": int(o.point_indices.size),
                         "supporting_views": o.supporting_views, "visible_views": o.visible_views}
                        for o in result.objects],
            "approach": approach_summary(result.approach)}
