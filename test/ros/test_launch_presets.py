"""The GPU preset (config/perception_gpu.yaml, `preset:=gpu`) starts the segmentation node as a launch
would: the same command line (launch_spec + launcher.command_for, both parameters files in order), with
only the model paths and the device overridden to tiny random models on CPU. It must reach active."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

from mllm3d_ros.launch_spec import NAMESPACE, node_specs, params_files
from mllm3d_ros.launcher import command_for
from rosutil import REPO_ROOT, ros_env

pytestmark = pytest.mark.ros

DOMAIN = int(os.environ.get("ROS_DOMAIN_ID", "109"))


def _tiny_models() -> Path:
    spec = importlib.util.spec_from_file_location("make_tiny_models", REPO_ROOT / "test" / "fixtures" /
                                                  "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_models_dir()


def test_gpu_preset_starts_the_segmentation_node_to_active(tmp_path):
    import yaml

    files = params_files({"preset": "gpu"})
    assert [f.name for f in files] == ["perception.yaml", "perception_gpu.yaml"]
    preset = yaml.safe_load(files[1].read_text())["/**/segmentation"]["ros__parameters"]
    # What a 24 GB card needs, without editing: all node parameters (README table), none a typo.
    assert preset["backend"] == "transformers" and preset["device"] == "cuda" and preset["dtype"] == "bfloat16"
    assert {"max_pixels", "sam_kind", "coord_format", "vlm_model", "sam_model"} <= set(preset)

    (segmentation,) = [s for s in node_specs({"preset": "gpu"}) if s.executable == "segmentation_node"]
    tiny = _tiny_models()
    # The published-checkpoint lookalikes: SAM 2 as sam2_video, Qwen2-VL with its processor's chat template.
    overrides = {"device": "cpu", "dtype": "float32", "vlm_model": str(tiny / "qwen2_vl"),
                 "sam_model": str(tiny / "sam2_video"), "detector_model": str(tiny / "owlv2"),
                 "local_files_only": "true", "max_new_tokens": "16"}
    cmd = command_for(segmentation, *files)
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--params-file"] == [str(f) for f in files]
    for name, value in overrides.items():
        cmd += ["-p", f"{name}:={value}"]
    log = tmp_path / "segmentation.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=ros_env(DOMAIN), stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(REPO_ROOT.parent), start_new_session=True)
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    node = Node("preset_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    beats: list[str] = []
    node.create_subscription(String, f"/{NAMESPACE}/segmentation/heartbeat", lambda m: beats.append(m.data), 10)
    try:
        # Loading tiny models takes seconds; the bound is generous for a loaded 2-core CI machine.
        deadline = time.monotonic() + 240.0
        while time.monotonic() < deadline and not any(b.startswith("transformers active") for b in beats) \
                and proc.poll() is None:
            executor.spin_once(timeout_sec=0.2)
        assert any(b.startswith("transformers active") for b in beats), log.read_text()  # "<backend> <state> <instance>"
        assert "backend 'transformers' loaded" in log.read_text()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

