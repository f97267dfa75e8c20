"""Wrong parameter values stop a node at start-up with one line naming the parameter (exit code 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rosutil import PARAMS, REPO_ROOT, ros_env

pytestmark = pytest.mark.ros


def _run(module: str, *ros_args: str, params=PARAMS) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--ros-args", "-r", "__ns:=/mllm3d_badparams",
                           "--params-file", str(params), *ros_args], env=ros_env(102), capture_output=True,
                          text=True, timeout=180, cwd=str(REPO_ROOT.parent))


@pytest.mark.parametrize("module, override, expected", [
    ("mllm3d_ros.ros.perception_node", "voxel_size_m:=5.0", "'voxel_size_m' must be in [0.005, 0.5]"),
    ("mllm3d_ros.ros.perception_node", "pose_source:=gps", "'pose_source'"),
    ("mllm3d_ros.ros.perception_node", "second_goal_policy:=queue", "'second_goal_policy'"),
    ("mllm3d_ros.ros.perception_node", "queue_size:=0", "'queue_size'"),
    ("mllm3d_ros.ros.perception_node", "queue_size:=four", "'queue_size' must be an integer, got 'four'"),
    ("mllm3d_ros.ros.perception_node", "queue_size:=4.5", "'queue_size' must be an integer, got 4.5"),
    ("mllm3d_ros.ros.perception_node", "depth_max:=4.0", "unknown parameter 'depth_max' for node 'mapping': "
                                                         "did you mean 'depth_max_m'?"),
    ("mllm3d_ros.ros.segmentation_node", "backend:=gpt", "'backend'"),
    ("mllm3d_ros.ros.segmentation_node", "batch_size:=2.0", "'batch_size' must be an integer, got 2.0"),
])
def test_bad_parameter_refused(module, override, expected):
    out = _run(module, "-p", override)
    assert out.returncode == 2, out.stdout + out.stderr
    assert expected in out.stderr and "refusing to start" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout, out.stderr


def test_yaml_int_for_float_accepted_and_cross_field_error_names_the_field(tmp_path):
    # depth_max_m: 4 (an int) must be taken as 4.0; depth_min_m above it is depth_min_m's fault.
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text().replace("depth_max_m: 4.0", "depth_max_m: 4")
                      .replace("depth_min_m: 0.2", "depth_min_m: 5.0"))
    out = _run("mllm3d_ros.ros.perception_node", params=params)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "refusing to start: depth_min_m must be below depth_max_m (4.0), got 5.0" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
