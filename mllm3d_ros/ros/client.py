"""A small SegmentQuery client used by `mllm3d query`, the demo and the end-to-end tests."""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from ..action import SegmentQuery
from ..srv import DescribeScene, MapFile
from ..launch_spec import NAMESPACE
from .conversions import cloud_to_arrays
from .qos import LATCHED_QOS


class QueryClient:
    """Owns a node spun in a background thread; methods block the caller, not the executor."""

    def __init__(self, namespace: str = NAMESPACE, node_name: str = "mllm3d_client") -> None:
        self.node = Node(node_name)
        self._namespace = namespace
        self._action = ActionClient(self.node, SegmentQuery, f"/{namespace}/segment_query")
        self._map_lock = threading.Lock()
        self._map_cloud: PointCloud2 | None = None
        self.node.create_subscription(PointCloud2, f"/{namespace}/mapping/map_cloud", self._on_map, LATCHED_QOS)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _on_map(self, msg: PointCloud2) -> None:
        with self._map_lock:
            self._map_cloud = msg

    def map_points(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The last map cloud as (points (N, 3) float32, colours (N, 3) uint8), or None."""
        with self._map_lock:
            msg = self._map_cloud
        if msg is None:
            return None
        points, colors, _ = cloud_to_arrays(msg)
        return points, colors

    def wait_for_server(self, timeout_s: float) -> bool:
        return self._action.wait_for_server(timeout_sec=timeout_s)

    @staticmethod
    def _wait(future, timeout_s: float):
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        return future.result()

    def send(self, instruction: str, max_views: int = 0, min_confidence: float = 0.0,
             feedback: Callable[[str, float], None] | None = None, timeout_s: float = 120.0,
             cancel_after_s: float | None = None, target_frame: str = ""):
        """Send a goal and wait for its result. Returns (accepted, result or None).

        `target_frame`: frame of the returned geometry ("" = the map frame)."""
        goal = SegmentQuery.Goal(instruction=instruction, max_views=max_views, min_confidence=min_confidence,
                                 target_frame=target_frame)
        fb = (lambda m: feedback(m.feedback.stage, m.feedback.progress)) if feedback else None
        handle = self._wait(self._action.send_goal_async(goal, feedback_callback=fb), 30.0)
        if not handle.accepted:
            return False, None
        result_future = handle.get_result_async()
        if cancel_after_s is not None:
            time.sleep(cancel_after_s)
            self._wait(handle.cancel_goal_async(), 10.0)
        return True, self._wait(result_future, timeout_s).result

    def describe(self, max_objects: int = 0, timeout_s: float = 10.0):
        """The memory's objects with captions (DescribeScene); None when the service is not there."""
        client = self.node.create_client(DescribeScene, f"/{self._namespace}/memory/describe_scene")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return None
            return self._wait(client.call_async(DescribeScene.Request(max_objects=max_objects)), timeout_s)
        finally:
            self.node.destroy_client(client)

    def save_map(self, path: str, timeout_s: float = 30.0) -> tuple[bool, str]:
        """Ask the mapping node to save its map and keyframes to the folder `path` (MapFile): (success, message)."""
        client = self.node.create_client(MapFile, f"/{self._namespace}/mapping/save_map")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return False, "no save_map service"
            response = self._wait(client.call_async(MapFile.Request(path=path)), timeout_s)
            return response.success, response.message
        finally:
            self.node.destroy_client(client)

    def send_async(self, instruction: str):
        """Send a goal without waiting; returns the goal-handle future."""
        return self._action.send_goal_async(SegmentQuery.Goal(instruction=instruction))

    def close(self) -> None:
        """Stop the spin thread before destroying the node it waits on.

        Destroying a node while another thread is still inside the executor's wait set aborts the
        process in rcl (exit code 134): shut the executor down, join its thread, then destroy.
        """
        self._executor.shutdown()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


def with_ros(fn: Callable[[], int]) -> int:
    """Run `fn` inside an rclpy context (for the CLI); try/finally, as `rclpy.init()` returns None before Kilted."""
    rclpy.init()
    try:
        return fn()
    finally:
        rclpy.try_shutdown()
