"""`mllm3d launch` supervises: kill -9 of the segmentation node does not stop the graph.

The default launch (perception + segmentation) plus the simulator runs in a subprocess on loopback.
The segmentation node is killed with SIGKILL; while it is down a query answers BACKEND_UNAVAILABLE,
the launcher restarts it, the next query works, and the perception node (holding the map) is the
same process throughout. Ordered by events (log lines, heartbeats); the one latency is the node's own
`elapsed_s`, checked against its configured timeout.
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
import yaml

from mllm3d_ros.ros.client import QueryClient
from rosutil import PARAMS, REPO_ROOT, ros_env, start, stop, wait_backend_ready, wait_for_log

pytestmark = pytest.mark.ros

DOMAIN = int(os.environ.get("ROS_DOMAIN_ID", "107"))
BACKEND_UNAVAILABLE = 4
DOWN_S = 8.0  # restart backoff of this test: long enough to query while the node is down
TIMEOUT_S = yaml.safe_load(PARAMS.read_text())["/**/query"]["ros__parameters"]["timeout_s"]
EVENT_S = 240.0  # waits for events: generous, as a node's start-up can take 10-20 s on a loaded machine


def _pids(log_text: str, executable: str) -> list[int]:
    return [int(p) for p in re.findall(rf"\[launch\] {executable} started \(pid (\d+)\)", log_text)]


def test_killed_segmentation_node_is_restarted_while_perception_keeps_its_map(tmp_path):
    log = tmp_path / "launch.log"
    # The default launch (perception + segmentation); the simulator is started here once the mapping node is
    # up, as it publishes from its start and a slow start-up of the perception node would lose the trajectory.
    code = ("import sys\nfrom mllm3d_ros.launcher import RestartPolicy, launch\n"
            f"sys.exit(launch({{}}, policy=RestartPolicy(backoff_s={DOWN_S})))")
    env = ros_env(DOMAIN)
    os.environ.update(env)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(REPO_ROOT.parent), start_new_session=True)
    simulator = None
    rclpy.init()
    client = QueryClient(node_name="supervision_client")
    try:
        assert client.wait_for_server(EVENT_S), log.read_text()
        simulator = start("mllm3d_ros.ros.simulator_node", domain_id=DOMAIN, log_path=tmp_path / "simulator.log",
                          ros_args=("-r", "__ns:=/mllm3d", "-p", "seed:=3", "-p", "num_frames:=60", "-p", "rate_hz:=8.0",
                                    "-p", "loop:=false"))
        assert wait_for_log(log, "loaded in", EVENT_S), log.read_text()
        assert wait_for_log(tmp_path / "simulator.log", "trajectory finished", EVENT_S), \
            (tmp_path / "simulator.log").read_text()
        from mllm3d_ros.demo import wait_for_map
        wait_for_map(client, min_wait_s=0.0, timeout_s=EVENT_S)
        text = log.read_text()
        (perception_pid,), (segmentation_pid,) = _pids(text, "perception_node"), _pids(text, "segmentation_node")

        os.kill(segmentation_pid, signal.SIGKILL)
        accepted, result = client.send("the chair")
        assert accepted and result.error_code == BACKEND_UNAVAILABLE, result.error_message
        # Ended by the heartbeat's silence, not by the query's timeout (the node's own clock).
        assert result.elapsed_s < TIMEOUT_S, result.elapsed_s

        assert _wait(lambda: len(_pids(log.read_text(), "segmentation_node")) == 2, EVENT_S), log.read_text()
        assert _wait(lambda: log.read_text().count("loaded in") >= 2, EVENT_S), log.read_text()
        assert wait_backend_ready(client.node, "/mllm3d", EVENT_S), log.read_text()  # active and discovered
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
        if simulator is not None:
            stop(simulator)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
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
