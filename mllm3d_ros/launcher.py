"""`mllm3d launch`: the pip-only stand-in for `ros2 launch mllm3d_ros perception.launch.py`.

launch_ros is not on PyPI; this starts the same processes (launch_spec.node_specs) with the same
parameters file, forwards Ctrl-C, restarts a crashed segmentation node (with a limit) and stops
everything when the perception node or a source fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .launch_spec import NAMESPACE, NodeSpec, check_params_file, local_dds_env, node_specs, params_files


def executable_path(name: str) -> Path:
    """lib/mllm3d_ros/<name> of the installed package (what launch_ros runs)."""
    from ament_index_python.packages import get_package_prefix
    return Path(get_package_prefix("mllm3d_ros")) / "lib" / "mllm3d_ros" / name


def command_for(spec: NodeSpec, *params_file: Path) -> list[str]:
    """The node's command line; several parameters files are read in order (later ones win)."""
    cmd = [str(executable_path(spec.executable)), "--ros-args", "-r", f"__ns:=/{NAMESPACE}"]
    for path in params_file:
        cmd += ["--params-file", str(path)]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    for name, value in spec.parameters:
        cmd += ["-p", f"{name}:={value}"]
    return cmd


@dataclass(frozen=True)
class RestartPolicy:
    """How often a supervised process may be restarted: at most `max_restarts` within `window_s`,
    waiting `backoff_s`, doubled after each restart in the window, up to `max_backoff_s`."""

    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0


# The segmentation node holds no map state (and may crash on a GPU or a model): restart it. The
# perception node holds the map, so its failure ends the launch with its exit code; sources too.
RESTARTABLE = frozenset({"segmentation_node"})
BAD_PARAMETERS = 2  # run_nodes' exit code for refused parameters: restarting cannot help


class _Supervised:
    def __init__(self, spec: NodeSpec, cmd: list[str], env: dict[str, str], policy: RestartPolicy) -> None:
        self.spec, self.cmd, self.env, self.policy = spec, cmd, env, policy
        self.restarts: deque[float] = deque()
        self.proc: subprocess.Popen | None = None
        self.restart_at: float | None = None
        self.given_up = False
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env)
        self.restart_at = None
        print(f"[launch] {self.spec.executable} started (pid {self.proc.pid})", flush=True)

    def schedule_restart(self, now: float, code: int) -> bool:
        """Plan a restart after a crash; False when the restart limit is reached."""
        while self.restarts and now - self.restarts[0] > self.policy.window_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.policy.max_restarts:
            return False
        delay = min(self.policy.backoff_s * 2 ** len(self.restarts), self.policy.max_backoff_s)
        self.restarts.append(now)
        self.restart_at = now + delay
        print(f"[launch] {self.spec.executable} exited with code {code}; restarting in {delay:.1f} s "
              f"(restart {len(self.restarts)} of at most {self.policy.max_restarts} in {self.policy.window_s:.0f} s)",
              flush=True)
        return True


def launch(args: dict[str, str], params_file: str = "", extra_env: dict[str, str] | None = None,
           policy: RestartPolicy | None = None) -> int:
    """Start every process of the system and supervise them until Ctrl-C or a failure.

    A crashed segmentation node is restarted (RestartPolicy) while the perception node and its map
    keep running; past the limit it stays down and queries answer BACKEND_UNAVAILABLE. Exit code 2
    (bad parameters) of any process, or any exit of the perception node, stops the whole launch
    with that code; a parameters file that does not parse is refused (2) before anything starts.
    SIGINT / SIGTERM stop every process and return 128 + the signal number (130 / 143).
    """
    policy = policy or RestartPolicy()
    files = params_files({**args, "params_file": params_file})
    # Checked here, once: every node would otherwise fail on it with rcl's own "Couldn't parse params file".
    for path in files:
        problem = check_params_file(path)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return BAD_PARAMETERS
    specs = node_specs(args)  # bad launch arguments: ValueError before any process starts
    env = local_dds_env(dict(os.environ, **(extra_env or {})))
    stopping = False
    stopped_by: list[int] = []

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True
        stopped_by.append(signum)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    procs: list[_Supervised] = []
    for spec in specs:
        cmd = command_for(spec, *files)
        print(f"[launch] {spec.executable}: {' '.join(cmd)}", flush=True)
        procs.append(_Supervised(spec, cmd, env, policy))
    exit_code = 0
    while not stopping:
        now = time.monotonic()
        for sup in procs:
            if sup.restart_at is not None:
                if now >= sup.restart_at:
                    sup.start()
                continue
            if sup.given_up or sup.proc is None:
                continue
            code = sup.proc.poll()
            if code is None or (sup.spec.executable == "replay_node" and code == 0):
                continue
            name = sup.spec.executable
            if name in RESTARTABLE and code != BAD_PARAMETERS:
                if not sup.schedule_restart(now, code):
                    sup.given_up = True
                    print(f"[launch] {name} exited with code {code} and was restarted {policy.max_restarts} "
                          f"times within {policy.window_s:.0f} s: leaving it down (the rest keeps running; see "
                          f"README, 'Restarting one node')", flush=True)
                continue
            if code == BAD_PARAMETERS:  # its own line said why; the others are stopped quietly
                print(f"[launch] {name} refused its parameters; stopping the others", flush=True)
            else:
                print(f"[launch] {name} exited with code {code}; stopping the others", flush=True)
            # Killed by a signal (Popen says -N): exit as a shell reports it, 128 + N.
            exit_code, stopping = (128 - code if code < 0 else code or 1), True
            break
        time.sleep(0.1)
    if stopped_by:
        print(f"[launch] {signal.Signals(stopped_by[0]).name}: stopping every process", flush=True)
        exit_code = 128 + stopped_by[0]
    live = [sup.proc for sup in procs if sup.proc is not None and sup.proc.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return exit_code
