"""A small SegmentQuery client used by `mllm3d query`, the demo and the end-to-end tests.

Every wait takes an optional `stop` event (the CLI sets it on SIGINT / SIGTERM): a stopped or timed-out
wait for a goal's result cancels that goal, so the server does not work on for nobody.
"""

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
    def _wait(future, timeout_s: float, stop: threading.Event | None = None):
        """The future's result; TimeoutError after `timeout_s`, Interrupted as soon as `stop` is set."""
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        end = time.monotonic() + timeout_s
        # Short waits: a Python signal handler (the CLI's) runs between them and sets `stop`.
        while not done.wait(max(0.0, min(0.1, end - time.monotonic()))):
            if stop is not None and stop.is_set():
                raise Interrupted("interrupted")
            if time.monotonic() >= end:
                raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        return future.result()

    def send(self, instruction: str, max_views: int = 0, min_confidence: float = 0.0,
             feedback: Callable[[str, float], None] | None = None, timeout_s: float = 120.0,
             cancel_after_s: float | None = None, target_frame: str = "", stop: threading.Event | None = None,
             cancel_when: threading.Event | None = None):
        """Send a goal and wait for its result. Returns (accepted, result or None).

        `target_frame`: frame of the returned geometry ("" = the map frame). When `stop` is set or
        `timeout_s` passes, the goal is cancelled before Interrupted / TimeoutError is raised (the
        exception's `goal_canceled` says whether the server accepted the cancel). `cancel_when`: the goal is
        cancelled once this event is set, e.g. by `feedback` at a stage (an event, where `cancel_after_s`
        guesses how far the server got)."""
        goal = SegmentQuery.Goal(instruction=instruction, max_views=max_views, min_confidence=min_confidence,
                                 target_frame=target_frame)
        fb = (lambda m: feedback(m.feedback.stage, m.feedback.progress)) if feedback else None
        goal_future = self._action.send_goal_async(goal, feedback_callback=fb)
        try:
            handle = self._wait(goal_future, 30.0, stop)
        except Interrupted:
            # Sent but not yet accepted: give the server a moment to answer, so an accepted goal is cancelled.
            handle = goal_future.result() if _wait_quietly(goal_future, 2.0) else None
            if handle is None or not handle.accepted:
                raise Interrupted("interrupted before a goal was accepted") from None
            raise Interrupted("interrupted", self._cancel(handle)) from None
        if not handle.accepted:
            return False, None
        result_future = handle.get_result_async()
        if cancel_after_s is not None:
            time.sleep(cancel_after_s)
            self._wait(handle.cancel_goal_async(), 10.0)
        if cancel_when is not None:
            end = time.monotonic() + timeout_s
            while not cancel_when.wait(0.05) and not result_future.done() and time.monotonic() < end \
                    and not (stop is not None and stop.is_set()):
                pass
            if cancel_when.is_set() and not result_future.done():
                self._wait(handle.cancel_goal_async(), 10.0)
        try:
            return True, self._wait(result_future, timeout_s, stop).result
        except (Interrupted, TimeoutError) as exc:
            canceled = self._cancel(handle)
            exc.goal_canceled = canceled
            raise

    def _cancel(self, handle) -> bool:
        """Cancel an accepted goal; True when the server accepted the cancel within 5 s."""
        try:
            response = self._wait(handle.cancel_goal_async(), 5.0)
        except (TimeoutError, RuntimeError):
            return False
        return bool(response is not None and response.goals_canceling)

    def describe(self, max_objects: int = 0, timeout_s: float = 10.0, stop: threading.Event | None = None):
        """The memory's objects with captions (DescribeScene); None when the service is not there."""
        client = self.node.create_client(DescribeScene, f"/{self._namespace}/memory/describe_scene")
        try:
            end = time.monotonic() + timeout_s
            while not client.wait_for_service(timeout_sec=min(0.1, max(0.0, end - time.monotonic()))):
                if stop is not None and stop.is_set():
                    raise Interrupted("interrupted while waiting for the service")
                if time.monotonic() >= end:
                    return None
            future = client.call_async(DescribeScene.Request(max_objects=max_objects))
            try:
                return self._wait(future, timeout_s, stop)
            except (Interrupted, TimeoutError):
                client.remove_pending_request(future)
                raise
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


class Interrupted(Exception):
    """A wait was ended by the caller's `stop` event; `goal_canceled`: True / False whether the server accepted
    the cancel of the goal, None when there was no goal to cancel."""

    def __init__(self, message: str, goal_canceled: bool | None = None) -> None:
        super().__init__(message)
        self.goal_canceled = goal_canceled


def _wait_quietly(future, timeout_s: float) -> bool:
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    return done.wait(timeout_s)


def with_ros(fn: Callable[[], int], handle_signals: bool = True) -> int:
    """Run `fn` inside an rclpy context (for the CLI); try/finally, as `rclpy.init()` returns None before Kilted.

    No ROS arguments are read from the command line (the CLI has none, and argv may hold bytes that are not
    UTF-8). `handle_signals=False` keeps rclpy's SIGINT/SIGTERM handler out: it would shut the context down
    before the caller could cancel its goal; the caller's own handlers decide instead.
    """
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=["mllm3d"], signal_handler_options=None if handle_signals else SignalHandlerOptions.NO)
    try:
        return fn()
    finally:
        rclpy.try_shutdown()
