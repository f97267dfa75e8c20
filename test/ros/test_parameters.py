"""Wrong parameter values stop a node at start-up with a message naming the parameter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rosutil import PARAMS, REPO_ROOT, ros_env

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("module, override, expected", [
    ("mllm3d_ros.ros.perception_node", "voxel_size_m:=5.0", "voxel_size_m"),
    ("mllm3d_ros.ros.perception_node", "pose_source:=gps", "pose_source"),
    ("mllm3d_ros.ros.perception_node", "second_goal_policy:=queue", "second_goal_policy"),
    ("mllm3d_ros.ros.perception_node", "queue_size:=0", "queue_size"),
    ("mllm3d_ros.ros.segmentation_node", "backend:=gpt", "backend"),
])
def test_bad_parameter_refused(module, override, expected):
    out = subprocess.run([sys.executable, "-m", module, "--ros-args", "-r", "__ns:=/mllm3d_badparams",
                          "--params-file", str(PARAMS), "-p", override], env=ros_env(102), capture_output=True,
                         text=True, timeout=60, cwd=str(REPO_ROOT.parent))
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"'{expected}'" in out.stderr and "refusing to start" in out.stderr, out.stderr
