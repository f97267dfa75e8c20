"""`ros2 launch` (launch/perception.launch.py) and `mllm3d launch` start the same nodes with the same file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from mllm3d_ros import launch_spec
from mllm3d_ros.launch_spec import LAUNCH_ARGUMENTS, PRESETS, default_params_file, node_specs, params_files
from mllm3d_ros.launcher import command_for

REPO = Path(__file__).resolve().parents[1]


def test_launch_file_uses_the_shared_spec():
    tree = ast.parse((REPO / "launch" / "perception.launch.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "mllm3d_ros.launch_spec"
                for a in n.names}
    assert {"node_specs", "LAUNCH_ARGUMENTS", "params_files"} <= imported
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"node_specs", "params_files"} <= calls


def test_every_executable_is_built_by_cmake():
    cmake = (REPO / "CMakeLists.txt").read_text()
    built = set(re.findall(r'"(\w+)=mllm3d_ros\.[\w.]+:main"', cmake))
    for source in ("none", "simulator", "replay"):
        for spec in node_specs({"source": source, "replay_path": "/data"}):
            assert spec.executable in built


def test_launcher_passes_params_file_and_remaps():
    specs = node_specs({"camera": "realsense"})
    cmd = command_for(specs[0], default_params_file())
    assert cmd[cmd.index("--params-file") + 1] == str(default_params_file())
    assert "camera/depth/image_raw:=/camera/camera/aligned_depth_to_color/image_raw" in cmd
    assert default_params_file().resolve() == (REPO / "config" / "perception.yaml").resolve() or \
        default_params_file().read_text() == (REPO / "config" / "perception.yaml").read_text()


def test_topic_overrides_win_over_preset_and_bad_arguments_are_refused():
    spec = node_specs({"camera": "zed", "depth_topic": "/my/depth"})[0]
    assert dict(spec.remappings)["camera/depth/image_raw"] == "/my/depth"
    assert dict(spec.remappings)["camera/color/image_raw"] == launch_spec.CAMERA_PRESETS["zed"]["color"]
    with pytest.raises(ValueError, match="camera must be one of"):
        node_specs({"camera": "kinect9000"})
    with pytest.raises(ValueError, match="unknown launch argument"):
        node_specs({"camra": "zed"})
    with pytest.raises(ValueError, match="replay_path"):
        node_specs({"source": "replay"})
    assert [s.executable for s in node_specs({"with_segmentation": "false"})] == ["perception_node"]
    assert len(LAUNCH_ARGUMENTS) == len({a[0] for a in LAUNCH_ARGUMENTS})


def test_params_file_has_only_declared_parameters():
    from mllm3d_ros.node_params import NODES, node_specs
    from mllm3d_ros.ros.params import check_value

    declared = {node: node_specs(node) for node in NODES}  # the simulator and replay blocks too
    data = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    assert {k.split("/")[-1] for k in data} == set(declared)
    presets = [yaml.safe_load((REPO / "config" / name).read_text()) for name in PRESETS.values()]
    for key, block in [*data.items(), *(item for preset in presets for item in preset.items())]:
        specs = {s.name: s for s in declared[key.split("/")[-1]]}
        values = block["ros__parameters"]
        # A typo in the YAML would be silently ignored by ROS: every key must be a declared parameter.
        assert set(values) <= set(specs), set(values) - set(specs)
        for name, value in values.items():
            check_value(specs[name], value)


def test_a_preset_is_an_overlay_read_after_the_params_file(tmp_path):
    assert params_files({}) == (default_params_file(),)
    own = tmp_path / "mine.yaml"
    assert params_files({"params_file": str(own), "preset": "gpu"}) == (own, default_params_file("perception_gpu.yaml"))
    assert default_params_file("perception_gpu.yaml").is_file()
    cmd = command_for(node_specs({"preset": "gpu"})[1], *params_files({"preset": "gpu"}))
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--params-file"] == [
        str(default_params_file()), str(default_params_file("perception_gpu.yaml"))]
    with pytest.raises(ValueError, match="preset must be '' or one of \\['gpu'\\]"):
        node_specs({"preset": "tpu"})
    with pytest.raises(ValueError, match="preset must be"):
        params_files({"preset": "tpu"})


def test_the_gpu_preset_puts_a_7b_model_on_the_gpu_in_bfloat16_and_the_default_never_in_float32_on_cpu():
    import torch

    from mllm3d_ros.backends.mllm.backend import resolve_dtype

    base = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())["/**/segmentation"]["ros__parameters"]
    gpu = yaml.safe_load((REPO / "config" / "perception_gpu.yaml").read_text())["/**/segmentation"]["ros__parameters"]
    merged = {**base, **gpu}
    assert (merged["backend"], merged["device"], merged["dtype"]) == ("transformers", "cuda", "bfloat16")
    assert merged["max_pixels"] <= 640 * 480 and merged["max_new_tokens"] >= 256
    # The default file with backend: transformers on a machine without CUDA: never float32 (~33 GB for 7B).
    assert base["device"] == "auto" and resolve_dtype(base["dtype"], "cpu") != torch.float32
