"""Replay and simulator processes under faults: a corrupt frame is skipped, an unreadable recording
exits with a clear error, Ctrl-C ends without a traceback."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mllm3d_ros.core.types import CameraIntrinsics, RgbdFrame
from mllm3d_ros.sources.dataset import write_7scenes
from rosutil import start, stop, wait_for_log

pytestmark = pytest.mark.ros
DOMAIN = 104


def _folder(tmp_path, n=4):
    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    frames = [RgbdFrame(i * 100_000_000, np.full((48, 64, 3), (40 * i) % 256, np.uint8), np.full((48, 64), 1.5, np.float32),
                        k, np.eye(4)) for i in range(n)]
    return write_7scenes(frames, tmp_path / "rec")


def _wait_exit(proc, timeout_s):
    try:
        return proc.wait(timeout_s)
    except Exception:  # noqa: BLE001 -- reported by the caller's assertion
        return None


def test_replay_skips_a_corrupt_frame_and_exits(tmp_path):
    root = _folder(tmp_path)
    color = root / "frame-000001.color.png"
    color.write_bytes(color.read_bytes()[:60])  # truncated PNG
    log = tmp_path / "replay.log"
    proc = start("mllm3d_ros.ros.replay_node", domain_id=DOMAIN, log_path=log,
                 ros_args=("-r", "__ns:=/replay_faults", "-p", f"path:={root}", "-p", "rate_scale:=0.0",
                           "-p", "wait_for_subscribers_s:=0.0"))
    try:
        code = _wait_exit(proc, 120)
    finally:
        stop(proc)
    text = log.read_text()
    assert code == 0, text
    assert "skipping frame 1" in text and "frame-000001.color.png" in text, text
    assert "3 frames published, 1 unreadable frames skipped" in text, text
    assert "Traceback" not in text, text


def test_replay_with_nothing_readable_exits_with_an_error(tmp_path):
    root = _folder(tmp_path, n=2)
    for path in root.glob("*.color.png"):
        path.write_bytes(b"not an image")
    log = tmp_path / "replay.log"
    proc = start("mllm3d_ros.ros.replay_node", domain_id=DOMAIN, log_path=log,
                 ros_args=("-r", "__ns:=/replay_faults", "-p", f"path:={root}", "-p", "rate_scale:=0.0",
                           "-p", "wait_for_subscribers_s:=0.0"))
    try:
        code = _wait_exit(proc, 120)
    finally:
        stop(proc)
    text = log.read_text()
    assert code == 1, text
    assert "no frame of" in text and "(2 unreadable)" in text and "Traceback" not in text, text


@pytest.mark.parametrize("module, ready, args", [
    ("mllm3d_ros.ros.simulator_node", "simulating room", ("-p", "rate_hz:=30.0")),
    ("mllm3d_ros.ros.replay_node", "replaying", ("-p", "rate_scale:=0.2", "-p", "loop:=true")),
])
def test_ctrl_c_ends_without_a_traceback(tmp_path, module, ready, args):
    extra = ("-p", f"path:={_folder(tmp_path, n=20)}") if "replay" in module else ()
    log = tmp_path / "node.log"
    proc = start(module, domain_id=DOMAIN, log_path=log, ros_args=("-r", "__ns:=/replay_faults", *extra, *args))
    try:
        assert wait_for_log(log, ready, 120), log.read_text()
        time.sleep(1.5)  # publishing (Ctrl-C at any point must end cleanly: no ordering is asserted)
    finally:
        code = stop(proc)
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text


def test_replay_waits_for_its_subscribers_before_the_first_frame(tmp_path):
    # A former bug: frames published before DDS matched the mapping node's subscriptions were lost, uncounted.
    import threading

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image

    from mllm3d_ros.ros.qos import SENSOR_QOS

    root = _folder(tmp_path, n=5)
    log = tmp_path / "replay.log"
    # It waits for its subscribers (an event) up to wait_for_subscribers_s: long, so that a slow discovery on a
    # loaded machine is waited for; a replay that does not wait publishes before them and the frames are lost.
    proc = start("mllm3d_ros.ros.replay_node", domain_id=DOMAIN, log_path=log,
                 ros_args=("-r", "__ns:=/replay_wait", "-p", f"path:={root}", "-p", "rate_scale:=0.0",
                           "-p", "wait_for_subscribers_s:=300.0"))
    context = Context()  # its own context on the replay's domain: this process's environment is left alone
    rclpy.init(context=context, domain_id=DOMAIN)
    node = rclpy.create_node("replay_listener", namespace="/replay_wait", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received: list[int] = []
    try:
        assert wait_for_log(log, "waiting up to", 120), log.read_text()  # nobody listens yet: it waits
        node.create_subscription(Image, "camera/color/image_raw", lambda m: received.append(m.header.stamp.nanosec),
                                 SENSOR_QOS)
        for msg_type, topic in ((Image, "camera/depth/image_raw"), (CameraInfo, "camera/color/camera_info"),
                                (PoseStamped, "camera/pose")):
            node.create_subscription(msg_type, topic, lambda _m: None, SENSOR_QOS)
        threading.Thread(target=executor.spin, daemon=True).start()
        code = _wait_exit(proc, 120)
        assert code == 0, log.read_text()
        assert wait_for_log(log, "5 frames published", 30)
        deadline = time.monotonic() + 30  # the last frames in flight: until all five are here
        while len(received) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(received) == 5, (received, log.read_text())
    finally:
        stop(proc)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
