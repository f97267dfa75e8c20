"""Bad parameters and parameters files under `mllm3d launch`: one refusal line and exit 2;
the other node is stopped quietly (no traceback, no rcl error, no restart of the segmentation node).
A parameters file that does not parse is refused before anything starts, and a node started by hand with
it refuses it in one line too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rosutil import PARAMS, REPO_ROOT, ros_env

pytestmark = pytest.mark.ros
DOMAIN = 109
NOISE = ("Traceback", "RCLError", "Error:", "Failed to create", "_sigint_gc", "Couldn't parse", "restarting")


def _launch(params) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mllm3d_ros.cli", "launch", f"params_file:={params}"],
                          env=ros_env(DOMAIN), capture_output=True, text=True, timeout=180, cwd=str(REPO_ROOT.parent))


@pytest.mark.parametrize("old, new, expected", [
    ("voxel_size_m: 0.02 ", "voxel_size_m: 5.0 ", "refusing to start: parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 5.0"),
    ("backend: offline ", "backend: gpt ", "refusing to start: parameter 'backend': expected one of ['offline', 'transformers'], got 'gpt'"),
    ("depth_min_m: 0.2", "depth_min_m: 5.0", "refusing to start: depth_min_m must be below depth_max_m (4.0)"),
])
def test_a_refused_parameter_stops_the_launch_with_one_line(tmp_path, old, new, expected):
    text = PARAMS.read_text()
    assert old in text
    params = tmp_path / "params.yaml"
    params.write_text(text.replace(old, new, 1))
    out = _launch(params)
    both = out.stdout + out.stderr
    assert out.returncode == 2, both
    assert [line for line in out.stderr.splitlines() if "refusing to start" in line] == \
        [next(line for line in out.stderr.splitlines() if expected in line)], both
    assert not [n for n in NOISE if n in both], both
    assert both.count("segmentation_node started") == 1, both  # never restarted


@pytest.mark.parametrize("body, expected", [
    ("/**/mapping:\n  ros__parameters:\n    voxel_size_m: [0.02\n", "YAML syntax error at line 4"),
    ("/**/mapping:\n  - voxel_size_m\n", "'/**/mapping' must be a mapping"),
    ("just a string\n", "expected 'node_name: {ros__parameters: {...}}' blocks"),
])
def test_a_parameters_file_that_does_not_parse_is_refused_before_anything_starts(tmp_path, body, expected):
    params = tmp_path / "broken.yaml"
    params.write_text(body)
    out = _launch(params)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [f"error: parameters file {params}: " + out.stderr.split(": ", 2)[2]
                                               .strip()] and expected in out.stderr, out.stderr
    assert "started" not in out.stdout, out.stdout


def test_a_node_given_a_broken_parameters_file_refuses_it_in_one_line(tmp_path):
    params = tmp_path / "broken.yaml"
    params.write_text("/**/mapping:\n  ros__parameters:\n    voxel_size_m: [0.02\n")
    out = subprocess.run([sys.executable, "-m", "mllm3d_ros.ros.segmentation_node", "--ros-args", "--params-file",
                          str(params)], env=dict(ros_env(DOMAIN), ROS_DOMAIN_ID=str(DOMAIN)), capture_output=True,
                         text=True, timeout=120, cwd=str(REPO_ROOT.parent))
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refusing to start: parameters file" in lines[0] and "YAML syntax error at line 4" \
        in lines[0], out.stderr
    assert os.path.exists(params)


def test_a_launch_argument_that_sets_a_parameter_is_refused_in_the_same_words():
    # `mllm3d launch backend:=gpt` reaches the segmentation node as its `backend` parameter: the same line as
    # the YAML's `backend: gpt` above (and `--ros-args -p backend:=gpt`).
    out = subprocess.run([sys.executable, "-m", "mllm3d_ros.cli", "launch", "backend:=gpt"], env=ros_env(DOMAIN),
                         capture_output=True, text=True, timeout=180, cwd=str(REPO_ROOT.parent))
    both = out.stdout + out.stderr
    assert out.returncode == 2, both
    assert "refusing to start: parameter 'backend': expected one of ['offline', 'transformers'], got 'gpt'" \
        in out.stderr, both
    assert not [n for n in NOISE if n in both], both
