"""ros/runner.py: log records of the ROS-free core reach the ROS logger (a former bug: lines that bypassed it)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from rosutil import REPO_ROOT, ros_env

pytestmark = pytest.mark.ros

CODE = """
import logging, rclpy
from mllm3d_ros.ros.runner import bridge_python_logging
rclpy.init()
bridge_python_logging()
logging.getLogger("mllm3d_ros.core.memory.proposal_worker").warning("proposals wait for the backend: %s", "loading")
logging.getLogger("mllm3d_ros.core.mapping.frame_checks").info("frame gate re-anchored")
rclpy.shutdown()
"""


def test_core_log_records_go_through_the_ros_logger():
    out = subprocess.run([sys.executable, "-c", CODE], env=ros_env(110), capture_output=True, text=True, timeout=180,
                         cwd=str(REPO_ROOT.parent))
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 0, lines
    assert re.fullmatch(r"\[WARN\] \[\d+\.\d+\] \[mllm3d_ros\]: proposal_worker: proposals wait for the backend: "
                        r"loading", lines[0]), lines
    assert re.fullmatch(r"\[INFO\] \[\d+\.\d+\] \[mllm3d_ros\]: frame_checks: frame gate re-anchored", lines[1]), lines
    assert len(lines) == 2, lines  # not printed a second time by Python's own handler
