"""`mllm3d launch` supervises (issue 11 item 3): kill -9 of the segmentation node does not stop the graph.

The default launch (perception + segmentation) plus the simulator runs in a subprocess on loopback.
The segmentation node is killed with SIGKILL; while it is down a query answers BACKEND_UNAVAILABLE,
the launcher restarts it, the next query works, and the perception node (holding the map) is the
same process throughout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import rclpy

from mllm3d_ros.ros.client import QueryClient
from rosutil import PARAMS, REPO_ROOT, ros_env, wait_for_log

pytestmark = pytest.mark.ros

DOMAIN = int(os.environ.get("ROS_DOMAIN_ID", "107"))
BACKEND_UNAVAILABLE = 4
DOWN_S = 8.0  # restart backoff of this test: long enough to query while the node is down


def _pids(log_text: str, executable: str) -> list[int]:
    return [int(p) for p in re.findall(rf"\[launch\] {executable} started \(pid (\d+)\)", log_text)]


def test_killed_segmentation_node_is_restarted_while_perception_keeps_its_map(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text() + "\n/**/simulator:\n  ros__parameters:\n    seed: 3\n    num_frames: 60\n"
                      "    rate_hz: 8.0\n    loop: false\n")
    log = tmp_path / "launch.log"
    code = ("import sys\nfrom mllm3d_ros.launcher import RestartPolicy, launch\n"
            f"sys.exit(launch({{'source': 'simulator'}}, {str(params)!r}, policy=RestartPolicy(backoff_s={DOWN_S})))")
    env = ros_env(DOMAIN)
    os.environ.update(env)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(REPO_ROOT.parent), start_new_session=True)
    rclpy.init()
    client = QueryClient(node_name="supervision_client")
    try:
        assert wait_for_log(log, "loaded in", 120), log.read_text()
        assert client.wait_for_server(60.0), log.read_text()
        from mllm3d_ros.demo import wait_for_map
        wait_for_map(client, min_wait_s=60 / 8.0, timeout_s=120.0)
        text = log.read_text()
        (perception_pid,), (segmentation_pid,) = _pids(text, "perception_node"), _pids(text, "segmentation_node")

        os.kill(segmentation_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        accepted, result = client.send("the chair")
        assert accepted and result.error_code == BACKEND_UNAVAILABLE, result.error_message
        # answered within backend_timeout_s (3 s in config/perception.yaml, + slack), while still down
        assert time.monotonic() - killed_at <= 3.0 + 2.0 < DOWN_S

        assert _wait(lambda: len(_pids(log.read_text(), "segmentation_node")) == 2, 30), log.read_text()
        assert _wait(lambda: log.read_text().count("loaded in") >= 2, 120), log.read_text()
        time.sleep(1.0)  # a heartbeat or two
        accepted, result = client.send("the chair")
        assert accepted and result.error_code != BACKEND_UNAVAILABLE, result.error_message
        assert result.error_code == 0, result.error_message

        text = log.read_text()
        assert _pids(text, "perception_node") == [perception_pid] and proc.poll() is None
        os.kill(perception_pid, 0)  # still the same, living process
        assert "exited with code -9; restarting in" in text
    finally:
        client.close()
        rclpy.shutdown()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _wait(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False
