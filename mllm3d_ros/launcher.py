"""`mllm3d launch`: the pip-only stand-in for `ros2 launch mllm3d_ros perception.launch.py`.

launch_ros is not on PyPI; this starts the same processes (launch_spec.node_specs) with the same
parameters file, forwards Ctrl-C, and stops everything when one process fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .launch_spec import NAMESPACE, NodeSpec, default_params_file, local_dds_env, node_specs


def executable_path(name: str) -> Path:
    """lib/mllm3d_ros/<name> of the installed package (what launch_ros runs)."""
    from ament_index_python.packages import get_package_prefix
    return Path(get_package_prefix("mllm3d_ros")) / "lib" / "mllm3d_ros" / name


def command_for(spec: NodeSpec, params_file: Path) -> list[str]:
    cmd = [str(executable_path(spec.executable)), "--ros-args", "-r", f"__ns:=/{NAMESPACE}",
           "--params-file", str(params_file)]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    for name, value in spec.parameters:
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def launch(args: dict[str, str], params_file: str = "", extra_env: dict[str, str] | None = None) -> int:
    """Start every process of the system and supervise them until Ctrl-C or a failure."""
    params = Path(params_file) if params_file else default_params_file()
    if not params.exists():
        print(f"error: parameters file not found: {params}", file=sys.stderr)
        return 2
    env = local_dds_env(dict(os.environ, **(extra_env or {})))
    procs: list[tuple[NodeSpec, subprocess.Popen]] = []
    for spec in node_specs(args):
        cmd = command_for(spec, params)
        print(f"[launch] {spec.executable}: {' '.join(cmd)}", flush=True)
        procs.append((spec, subprocess.Popen(cmd, env=env)))
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exit_code = 0
    while not stopping:
        for spec, proc in procs:
            code = proc.poll()
            if code is not None and not (spec.executable == "replay_node" and code == 0):
                print(f"[launch] {spec.executable} exited with code {code}; stopping the others", flush=True)
                exit_code, stopping = code or 1, True
        time.sleep(0.2)
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for _, proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return exit_code
