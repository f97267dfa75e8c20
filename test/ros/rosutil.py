"""Helpers for tests that start ROS processes: loopback-only DDS, a test-only domain, clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS = REPO_ROOT / "config" / "perception.yaml"


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment that keeps discovery on this machine (LOCALHOST) on a test-only domain."""
    from mllm3d_ros.launch_spec import local_dds_env
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
    return local_dds_env(env)


def start(module: str, *args: str, domain_id: int, log_path: Path, ros_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start `python -m module args --ros-args ...` in its own process group, logging to a file."""
    cmd = [sys.executable, "-m", module, *args, "--ros-args", "--params-file", str(PARAMS), *ros_args]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, env=ros_env(domain_id), stdout=log, stderr=subprocess.STDOUT,
                            cwd=str(REPO_ROOT.parent), start_new_session=True)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> int | None:
    """SIGINT, then SIGKILL after `timeout_s`; returns the exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def wait_for_log(log_path: Path, text: str, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if log_path.exists() and text in log_path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False
