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
    ("mllm3d_ros.ros.perception_node", "voxel_size_m:=5.0", "parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 5.0"),
    ("mllm3d_ros.ros.perception_node", "pose_source:=gps", "'pose_source'"),
    ("mllm3d_ros.ros.perception_node", "second_goal_policy:=queue", "'second_goal_policy'"),
    ("mllm3d_ros.ros.perception_node", "queue_size:=0", "'queue_size'"),
    ("mllm3d_ros.ros.perception_node", "queue_size:=four", "parameter 'queue_size': expected int in [1, 1000], got 'four'"),
    ("mllm3d_ros.ros.perception_node", "queue_size:=4.5", "parameter 'queue_size': expected int in [1, 1000], got 4.5"),
    ("mllm3d_ros.ros.perception_node", "depth_max:=4.0", "unknown parameter 'depth_max' for node mapping; "
                                                         "did you mean 'depth_max_m'?"),
    ("mllm3d_ros.ros.segmentation_node", "backend:=gpt", "'backend'"),
    ("mllm3d_ros.ros.segmentation_node", "batch_size:=2.0", "parameter 'batch_size': expected int in [1, 64], got 2.0"),
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


def test_nodes_of_one_map_with_different_map_frames_are_refused(tmp_path):
    # map_frame is declared once (core.config.SHARED_PARAMS) but each node's block can set it: the query and
    # memory nodes check it against the mapping node's (same process) before anything runs.
    params = tmp_path / "params.yaml"
    text = PARAMS.read_text()
    query_block = text.index("/**/query:")
    params.write_text(text[:query_block] + text[query_block:].replace("map_frame: map", "map_frame: world", 1))
    out = _run("mllm3d_ros.ros.perception_node", params=params)
    assert out.returncode == 2, out.stdout + out.stderr
    assert ("refusing to start: parameter 'map_frame': node query has 'world' but node mapping has 'map'; nodes "
            "that share one map must agree") in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
