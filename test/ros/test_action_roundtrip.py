"""SegmentQuery round trip between two processes over loopback DDS, on an empty map."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rosutil import REPO_ROOT, ros_env, start, stop, wait_for_log

pytestmark = pytest.mark.ros

CLIENT = r"""
import json, sys, rclpy
from rclpy.action import ActionClient
from mllm3d_ros.action import SegmentQuery
rclpy.init()
node = rclpy.create_node("test_client")
client = ActionClient(node, SegmentQuery, "/mllm3d/segment_query")
assert client.wait_for_server(timeout_sec=30.0), "action server not found"
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


def test_empty_map_round_trip(tmp_path):
    domain = 101
    log = tmp_path / "node.log"
    node = start("mllm3d_ros.ros.perception_node", domain_id=domain, log_path=log,
                 ros_args=("-r", "__ns:=/mllm3d"))
    try:
        assert wait_for_log(log, "SegmentQuery action", 60), log.read_text()
        out = subprocess.run([sys.executable, "-c", CLIENT, "the mug next to the laptop", "   "],
                             env=ros_env(domain), capture_output=True, text=True, timeout=120,
                             cwd=str(REPO_ROOT.parent))
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        assert line, out.stdout + out.stderr + log.read_text()
        first, blank = json.loads(line[7:])
        assert first["accepted"] and first["code"] == 1  # MAP_EMPTY
        assert "map is empty" in first["message"] and first["objects"] == 0
        assert blank["code"] == 2 and "instruction is empty" in blank["message"]  # INVALID_INSTRUCTION
        assert node.poll() is None, "node died after answering"
    finally:
        code = stop(node)
    assert code == 0, log.read_text()
