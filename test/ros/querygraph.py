"""An in-process graph for query-node tests: the QueryNode over a hand-built map, a scripted
SegmentViews service with a heartbeat, and an action client, spun by one multi-threaded executor.

Every graph gets its own namespace, so tests of several worktrees on one domain do not meet.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "core" / stage) for stage in ("mapping", "memory", "query")]
from test_voting import EYES, Q, make_scene, make_views  # noqa: E402  (the hand-built two-cube scene)

from mllm3d_ros.action import SegmentQuery  # noqa: E402
from mllm3d_ros.msg import Prediction2D  # noqa: E402
from mllm3d_ros.ros.conversions import mask_to_image  # noqa: E402
from mllm3d_ros.ros.qos import LATCHED_QOS, RELIABLE_QOS  # noqa: E402
from mllm3d_ros.ros.query_node import QueryNode  # noqa: E402
from mllm3d_ros.srv import SegmentViews  # noqa: E402

_COUNTER = itertools.count()


class SceneMap:
    """MapSource over the two-cube scene of test_voting."""

    def __init__(self) -> None:
        self._snapshot = make_scene()
        self.keyframe_list, self.box_ids = make_views(EYES)

    def snapshot(self):
        return self._snapshot

    def keyframes(self):
        return tuple(self.keyframe_list)


class ScriptedSegmentation(Node):
    """SegmentViews + heartbeat. `mode`: 'cube' (box A masked), 'empty' (nothing found), 'block' (wait for
    `release` or `block_s`, then answer as 'empty'), 'bad_mask' (masks of the wrong size and encoding).
    Mode PARSE requests are counted apart (`parse_calls`) and answered by `parse_answer`: None UNSUPPORTED
    (a backend without parsing), 'error' BACKEND_ERROR, else that string as `parsed_json`. Mode RECOGNISE
    requests are counted apart (`recognise_calls`) and answered by `recognise_answer`: None UNSUPPORTED (a
    backend without an open-set gate), else that string as `recognition_json`.
    `instance`: the heartbeat's instance token ('' = the old two-word heartbeat); `load_s`: the service
    appears only after this long, the heartbeat saying `loading` meanwhile (a restarted node's start-up)."""

    def __init__(self, box_ids, instance: str = "", load_s: float = 0.0, **kwargs) -> None:
        super().__init__("segmentation", **kwargs)
        self.box_ids = box_ids
        self.mode = "cube"
        self.block_s = 30.0
        self.release = threading.Event()
        self.calls = 0
        self.parse_calls = 0
        self.parse_answer: str | None = None
        self.recognise_calls = 0
        self.recognise_answer: str | None = None
        self.on_request = None  # called with the mode of every request, as it arrives
        self._group = ReentrantCallbackGroup()
        self._state = "loading"
        beat = self.create_publisher(String, "~/heartbeat", RELIABLE_QOS)
        self.create_timer(0.2, lambda: beat.publish(String(data=f"scripted {self._state} {instance}".strip())),
                          callback_group=self._group)
        if load_s > 0:
            self._load_timer = self.create_timer(load_s, self._loaded, callback_group=self._group)
        else:
            self._loaded()

    def _loaded(self) -> None:
        if getattr(self, "_load_timer", None) is not None:
            self._load_timer.cancel()
        self.create_service(SegmentViews, "~/segment_views", self._serve, callback_group=self._group)
        self._state = "active"

    def _serve(self, request, response):
        if self.on_request is not None:
            self.on_request(request.mode)
        if request.mode == SegmentViews.Request.RECOGNISE:
            self.recognise_calls += 1
            if self.recognise_answer is None:
                response.status, response.message = SegmentViews.Response.UNSUPPORTED, "no open-set gate"
            else:
                response.status, response.recognition_json = SegmentViews.Response.OK, self.recognise_answer
            return response
        if request.mode == SegmentViews.Request.PARSE:
            self.parse_calls += 1
            if self.parse_answer is None:
                response.status, response.message = SegmentViews.Response.UNSUPPORTED, "no parsing mode"
            elif self.parse_answer == "error":
                response.status, response.message = SegmentViews.Response.BACKEND_ERROR, "CUDA out of memory"
            else:
                response.status, response.parsed_json = SegmentViews.Response.OK, self.parse_answer
            return response
        self.calls += 1
        mode = self.mode
        if mode == "block":
            self.release.wait(self.block_s)
            mode = "empty"
        response.status = SegmentViews.Response.OK
        response.target_phrase = "cube"
        response.query_embedding = Q.tolist()
        if mode in ("cube", "bad_mask"):
            for kf_id in request.keyframe_ids:
                mask = self.box_ids[int(kf_id)] == 0
                if mode == "bad_mask":
                    mask = mask[::2, ::3]
                response.predictions.append(Prediction2D(
                    keyframe_id=int(kf_id), mask=mask_to_image(mask, Header(frame_id="camera")), confidence=0.9,
                    embedding=Q.tolist(), label="cube", has_box=False))
        return response


class Graph:
    """Start with `Graph(policy=...)`; `close()` tears everything down in the safe order."""

    def __init__(self, with_segmentation: bool = True, namespace: str | None = None, **params) -> None:
        """`with_segmentation=False`: no backend here (a test starts one as a process of its own);
        `namespace`: e.g. '/mllm3d' for the CLI (default: one of its own)."""
        self.namespace = namespace or f"/qtest_{os.getpid()}_{next(_COUNTER)}"
        self.context = Context()
        rclpy.init(context=self.context)
        self.map = SceneMap()
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        self.query = QueryNode(self.map, namespace=self.namespace, context=self.context,
                               parameter_overrides=overrides)
        self.segmentation = (ScriptedSegmentation(self.map.box_ids, namespace=self.namespace, context=self.context)
                             if with_segmentation else None)
        self.client_node = Node("client", namespace=self.namespace, context=self.context)
        self.action = ActionClient(self.client_node, SegmentQuery, f"{self.namespace}/segment_query")
        self.results: list[dict] = []
        self.heartbeats: list[str] = []
        self.markers: list[MarkerArray] = []
        self.clouds: list[PointCloud2] = []
        self._instruction = self.client_node.create_publisher(String, f"{self.namespace}/query/instruction",
                                                              RELIABLE_QOS)
        self.client_node.create_subscription(String, f"{self.namespace}/query/result",
                                             lambda m: self.results.append(json.loads(m.data)), RELIABLE_QOS)
        self.client_node.create_subscription(MarkerArray, f"{self.namespace}/query/markers", self.markers.append,
                                             LATCHED_QOS)
        self.client_node.create_subscription(PointCloud2, f"{self.namespace}/query/segmented_cloud",
                                             self.clouds.append, LATCHED_QOS)
        self.client_node.create_subscription(String, f"{self.namespace}/segmentation/heartbeat",
                                             lambda m: self.heartbeats.append(m.data), RELIABLE_QOS)
        self.executor = MultiThreadedExecutor(num_threads=16, context=self.context)
        for node in (self.query, self.segmentation, self.client_node):
            if node is not None:
                self.executor.add_node(node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        assert self.action.wait_for_server(timeout_sec=20.0), "action server not found"
        wait_until(lambda: self._instruction.get_subscription_count() > 0, 10.0)

    def send(self, instruction: str = "the cube"):
        """A goal-handle future."""
        return self.action.send_goal_async(SegmentQuery.Goal(instruction=instruction))

    def instruct(self, text: str) -> None:
        self._instruction.publish(String(data=text))

    def close(self) -> None:
        if self.segmentation is not None:
            self.segmentation.release.set()
        self.executor.shutdown()
        self._thread.join(timeout=10.0)
        for node in (self.client_node, self.segmentation, self.query):
            if node is not None:
                node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def wait_until(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def wait_future(future, timeout_s: float = 30.0):
    assert wait_until(future.done, timeout_s), f"no answer within {timeout_s} s"
    return future.result()


def result_of(goal_handle, timeout_s: float = 30.0):
    """(GoalStatus code, SegmentQuery.Result) of an accepted goal."""
    wrapped = wait_future(goal_handle.get_result_async(), timeout_s)
    return wrapped.status, wrapped.result
