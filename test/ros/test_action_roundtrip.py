"""SegmentQuery round trip between processes over loopback DDS, on an empty map: a raw action client
and the `mllm3d query` CLI (its exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rosutil import REPO_ROOT, ros_env, start, stop, wait_for_log

pytestmark = pytest.mark.ros
DOMAIN = 101

CLIENT = r"""
import json, sys, rclpy
from rclpy.action import ActionClient
from mllm3d_ros.action import SegmentQuery
rclpy.init()
node = rclpy.create_node("test_client")
client = ActionClient(node, SegmentQuery, "/mllm3d/segment_query")
assert client.wait_for_server(timeout_sec=60.0), "action server not found"
out = []
for text in sys.argv[1:]:
    goal = SegmentQuery.Goal(instruction=text)
    fut = client.send_goal_async(goal)
    rclpy.spin_until_future_complete(node, fut, timeout_sec=30.0)
    handle = fut.result()
    res_fut = handle.get_result_async()
    rclpy.spin_until_future_complete(node, res_fut, timeout_sec=60.0)
    r = res_fut.result().result
    out.append({"accepted": handle.accepted, "code": r.error_code, "message": r.error_message,
                "objects": len(r.objects)})
print("RESULT " + json.dumps(out), flush=True)
node.destroy_node(); rclpy.shutdown()
"""


@pytest.fixture(scope="module")
def perception(tmp_path_factory):
    log = tmp_path_factory.mktemp("roundtrip") / "node.log"
    node = start("mllm3d_ros.ros.perception_node", domain_id=DOMAIN, log_path=log, ros_args=("-r", "__ns:=/mllm3d"))
    try:
        assert wait_for_log(log, "SegmentQuery action", 180), log.read_text()
        yield node, log
    finally:
        code = stop(node)
    assert code == 0, log.read_text()


def _python(*args: str, domain: int = DOMAIN) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=ros_env(domain), capture_output=True, text=True, timeout=180,
                          cwd=str(REPO_ROOT.parent))


def test_empty_map_round_trip(perception):
    node, log = perception
    out = _python("-c", CLIENT, "the mug next to the laptop", "   ")
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, out.stdout + out.stderr + log.read_text()
    first, blank = json.loads(line[7:])
    assert first["accepted"] and first["code"] == 1  # MAP_EMPTY
    assert "map is empty" in first["message"] and first["objects"] == 0
    assert blank["code"] == 2 and "instruction is empty" in blank["message"]  # INVALID_INSTRUCTION
    assert node.poll() is None, "node died after answering"


def test_cli_query_exits_cleanly_with_the_status(perception):
    out = _python("-m", "mllm3d_ros.cli", "query", "the mug", "--wait", "30")
    # 1 = answered, not a success (MAP_EMPTY here); never 134 (an abort while shutting down).
    assert out.returncode == 1, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert "status: MAP_EMPTY (1) map is empty" in out.stdout, out.stdout
    assert out.stderr.strip() == "", out.stderr


def test_cli_query_passes_the_target_frame(perception):
    frame = f"nowhere_{os.getpid()}"
    out = _python("-m", "mllm3d_ros.cli", "query", "the mug", "--wait", "30", "--target-frame", frame)
    # The frame is checked before the (empty) map: INVALID_GOAL naming it, exit 1.
    assert out.returncode == 1, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert f"status: INVALID_GOAL (10) target_frame '{frame}': no transform from 'map'" in out.stdout, out.stdout


def test_cli_query_without_a_server_says_so():
    out = _python("-m", "mllm3d_ros.cli", "query", "the mug", "--wait", "1", domain=DOMAIN + 4)
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: no SegmentQuery server on /mllm3d/segment_query (is `mllm3d launch` running?)"], out.stderr
