"""The ROS-free layers (core, sources, backends, eval) never import rclpy or message packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mllm3d_ros"
ROS_FREE = ("core", "sources", "backends", "eval")
FORBIDDEN_ROOTS = ("rclpy", "rcl_interfaces", "std_msgs", "sensor_msgs", "geometry_msgs", "nav_msgs",
                   "visualization_msgs", "action_msgs", "builtin_interfaces", "message_filters", "tf2_ros")
FORBIDDEN_OWN = ("mllm3d_ros.msg", "mllm3d_ros.srv", "mllm3d_ros.action", "mllm3d_ros.ros")


def _ros_free_modules() -> list[str]:
    mods = []
    for sub in ROS_FREE:
        for path in sorted((PKG / sub).rglob("*.py")):
            rel = path.relative_to(PKG.parent).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods.append(".".join(parts))
    return mods


def test_no_ros_import_statements():
    offenders = []
    for sub in ROS_FREE:
        for path in (PKG / sub).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:  # relative imports are covered by the runtime test below
                    continue
                offenders += [f"{path.relative_to(PKG)}: {n}" for n in names
                              if n.split(".")[0] in FORBIDDEN_ROOTS or n.startswith(FORBIDDEN_OWN)]
    assert not offenders, offenders


def test_importing_ros_free_layers_loads_no_ros_module():
    mods = _ros_free_modules()
    assert len(mods) > 10, mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_ROOTS!r} "
        f"or m.startswith({FORBIDDEN_OWN!r}))\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout, out.stdout


def test_core_never_imports_a_backend():
    """The core sees the segmentation interface (core/segmentation.py), never a backend package."""
    offenders = []
    for path in (PKG / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                if "backends" in module.split("."):
                    offenders.append(f"{path.relative_to(PKG)}: from {module}")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(PKG)}: {a.name}" for a in node.names if ".backends" in a.name]
    assert not offenders, offenders
