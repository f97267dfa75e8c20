"""Replay node: publishes a recorded dataset folder (7-Scenes/3DMatch or TUM layout) or a ROS 2 bag
on the topics a camera driver would, at real time (rate_scale 1), faster, or as fast as possible (0).

Published (sensor-data QoS): camera/color/image_raw, camera/depth/image_raw (16UC1),
  camera/color/camera_info, camera/pose (geometry_msgs/PoseStamped in map_frame).
Parameters: path (str, required), rate_scale (float, 1.0; 0 = as fast as possible), stride (int, 1),
  max_frames (int, 0 = all), loop (bool, false), camera_frame, map_frame,
  shutdown_when_done (bool, true), wait_for_subscribers_s (float, 10.0).
Frames go out only once every camera topic has a subscriber (or after wait_for_subscribers_s): frames
published before DDS has matched the mapping node's subscriptions would be lost to it, uncounted.
A frame that cannot be decoded (truncated image, unreadable depth) is logged and skipped; when no
frame of the recording can be read the node logs it and exits with status 1.
"""

from __future__ import annotations

import threading
import time

import rclpy
from rclpy.node import Node

from ..core.types import InputError
from ..sources.recording import ReadCounts, nothing_readable, open_recording, readable_frames
from .camera_publisher import CameraPublisher
from ..node_params import node_specs
from .params import ParameterError, declare_and_read

REPLAY_PARAMS = node_specs("replay")  # generated from the declarations in node_params


class ReplayNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("replay", **kwargs)
        p = declare_and_read(self, REPLAY_PARAMS)
        if not p["path"]:
            raise ParameterError("parameter 'path' is required: a dataset folder or a ROS 2 bag")
        try:
            self._frames = open_recording(p["path"], p["stride"], p["max_frames"] or None)
        except InputError as exc:
            raise ParameterError(f"parameter 'path': {exc}") from None
        self._p = p
        self._camera = CameraPublisher(self, p["camera_frame"], p["map_frame"])
        self.done = threading.Event()
        self.exit_code = 0  # read by run_nodes when the process ends
        # Replay paces itself in its own thread: publishing must not wait on the executor's timers.
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.get_logger().info(f"replaying {len(self._frames)} frames from {p['path']}")

    def _wait_for_subscribers(self) -> None:
        wait_s = self._p["wait_for_subscribers_s"]
        if wait_s <= 0:
            return
        try:
            if self._camera.subscriber_count() == 0:
                self.get_logger().info(f"waiting up to {wait_s:.1f} s for a subscriber on every camera topic")
            end = time.monotonic() + wait_s
            while self._camera.subscriber_count() == 0 and time.monotonic() < end and not self.done.is_set():
                self.done.wait(0.05)
            if self._camera.subscriber_count() == 0 and not self.done.is_set():
                self.get_logger().warning(f"no subscriber on every camera topic after {wait_s:.1f} s: "
                                          "publishing anyway")
        except Exception:  # noqa: BLE001 -- only while shutting down (Ctrl-C while waiting): the node is gone
            if not (self.done.is_set() or not rclpy.ok()):
                raise

    def _run(self) -> None:
        count = 0
        reads = ReadCounts()
        self._wait_for_subscribers()
        while True:
            t_wall0, t_rec0 = time.monotonic(), None
            for index, frame in readable_frames(self._frames, reads, self._skipped):
                if self.done.is_set():
                    return
                if self._p["rate_scale"] > 0:
                    t_rec0 = frame.stamp_ns if t_rec0 is None else t_rec0
                    due = t_wall0 + (frame.stamp_ns - t_rec0) * 1e-9 / self._p["rate_scale"]
                    delay = due - time.monotonic()
                    if delay > 0:
                        self.done.wait(delay)
                else:
                    time.sleep(0.001)  # yield to subscribers on this machine
                if not self._publish(frame):
                    return
                count += 1
            if not self._p["loop"] or count == 0:
                break
        if count == 0:
            self.get_logger().error(str(nothing_readable(self._p["path"], reads)))
            self.exit_code = 1
        else:
            self.get_logger().info(f"replay finished: {count} frames published"
                                   + (f", {reads.unreadable} unreadable frames skipped" if reads.unreadable else ""))
        self.done.set()
        if self._p["shutdown_when_done"] or self.exit_code:
            time.sleep(1.0)  # let the last frames leave before the context goes down
            rclpy.try_shutdown()

    def _skipped(self, index: int, exc: InputError) -> None:
        self.get_logger().warning(f"skipping frame {index}: {exc}")

    def _publish(self, frame) -> bool:
        """Publish one frame; False once the process is shutting down (Ctrl-C) so the thread ends quietly."""
        try:
            self._camera.publish(frame, self.get_clock().now().nanoseconds)
        except Exception:  # noqa: BLE001 -- only while shutting down: the context or the node is gone
            if self.done.is_set() or not rclpy.ok():
                return False
            raise
        return True

    def shutdown_core(self) -> None:
        self.done.set()
        self._thread.join(timeout=5.0)  # before the node is destroyed under the publishing thread


def main(args: list[str] | None = None, signal_exit_codes: bool = False) -> int:
    from .runner import run_nodes
    return run_nodes([ReplayNode], args, num_threads=2, signal_exit_codes=signal_exit_codes)


if __name__ == "__main__":
    import sys
    sys.exit(main())
