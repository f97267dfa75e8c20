"""Helpers for tests that start ROS processes: loopback-only DDS, a test-only domain, clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS = REPO_ROOT / "config" / "perception.yaml"


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment that keeps discovery on this machine (LOCALHOST) on a test-only domain."""
    from mllm3d_ros.launch_spec import local_dds_env
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
    return local_dds_env(env)


def start(module: str, *args: str, domain_id: int, log_path: Path, ros_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start `python -m module args --ros-args ...` in its own process group, logging to a file."""
    cmd = [sys.executable, "-m", module, *args, "--ros-args", "--params-file", str(PARAMS), *ros_args]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, env=ros_env(domain_id), stdout=log, stderr=subprocess.STDOUT,
                            cwd=str(REPO_ROOT.parent), start_new_session=True)


def stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> int | None:
    """SIGINT, then SIGKILL after `timeout_s` (a clean shutdown on a loaded machine takes seconds); returns the
    exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def wait_for_log(log_path: Path, text: str, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if log_path.exists() and text in log_path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def wait_backend_ready(node, namespace: str, timeout_s: float, beats: int = 3) -> str | None:
    """Wait until one segmentation node instance has sent `beats` `active` heartbeats on
    `<namespace>/segmentation/heartbeat` and its SegmentViews service is discovered, as seen by `node` (spun
    by another thread); returns that instance's token, None at `timeout_s`. The event a query needs, where a
    sleep after its start-up log line would guess how long discovery takes on a loaded machine."""
    import threading

    from std_msgs.msg import String

    from mllm3d_ros.ros.qos import RELIABLE_QOS
    from mllm3d_ros.srv import SegmentViews

    counts: dict[str, int] = {}
    ready = threading.Event()

    def on_beat(msg) -> None:
        words = msg.data.split()
        if len(words) >= 2 and words[1] == "active":
            instance = words[2] if len(words) > 2 else ""
            counts[instance] = counts.get(instance, 0) + 1
            if counts[instance] >= beats:
                ready.set()

    end = time.monotonic() + timeout_s
    sub = node.create_subscription(String, f"{namespace}/segmentation/heartbeat", on_beat, RELIABLE_QOS)
    client = node.create_client(SegmentViews, f"{namespace}/segmentation/segment_views")
    try:
        if not ready.wait(timeout_s) or not client.wait_for_service(timeout_sec=max(0.0, end - time.monotonic())):
            return None
        return max(counts, key=counts.get)
    finally:
        node.destroy_client(client)
        node.destroy_subscription(sub)
