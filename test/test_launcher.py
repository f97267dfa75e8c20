"""Supervision rules of `mllm3d launch`, with stand-in processes (no ROS; the real graph is in test/ros)."""

from __future__ import annotations

import sys

import pytest

from mllm3d_ros import launcher
from mllm3d_ros.launcher import RestartPolicy, launch

# A window far longer than the crash loop takes, even where each Python start takes seconds (a loaded machine).
FAST = RestartPolicy(max_restarts=3, window_s=600.0, backoff_s=0.05, max_backoff_s=0.2)


def _fake(monkeypatch, tmp_path, scripts: dict[str, str]) -> None:
    """Run `scripts[executable]` (Python source) instead of each node; each start appends to a file."""

    def command_for(spec, _params):
        body = f"open({str(tmp_path / spec.executable)!r}, 'a').write('x')\n" + scripts[spec.executable]
        return [sys.executable, "-c", body]

    monkeypatch.setattr(launcher, "command_for", command_for)


def _starts(tmp_path, name: str) -> int:
    path = tmp_path / name
    return len(path.read_text()) if path.exists() else 0


def test_crashed_segmentation_is_restarted_up_to_the_limit_while_perception_runs(monkeypatch, tmp_path, capsys):
    pids = tmp_path / "segmentation_pids"
    last = 1 + FAST.max_restarts
    _fake(monkeypatch, tmp_path, {
        "segmentation_node": f"import os, signal; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); "
                             "os.kill(os.getpid(), signal.SIGKILL)",
        # perception outlives the crash loop, then fails: that ends the launch with its code. "Outlives" is an
        # event, not a duration: it exits once the launcher has reaped the last segmentation start (its pid is
        # gone), which is where the launcher decides to leave it down. Its own deadline only ends a broken loop.
        "perception_node": (
            "import os, sys, time\n"
            "def reaped(pid):\n"
            "    try:\n"
            "        os.kill(pid, 0)\n"
            "    except ProcessLookupError:\n"
            "        return True\n"
            "    return False\n"
            "end = time.monotonic() + 300\n"
            f"while time.monotonic() < end:\n"
            f"    seen = open({str(pids)!r}).read().split() if os.path.exists({str(pids)!r}) else []\n"
            f"    if len(seen) >= {last} and reaped(int(seen[{last - 1}])):\n"
            "        break\n"
            "    time.sleep(0.05)\n"
            "sys.exit(7)\n"),
    })
    assert launch({}, policy=FAST) == 7
    out = capsys.readouterr().out
    assert _starts(tmp_path, "perception_node") == 1  # never restarted
    assert _starts(tmp_path, "segmentation_node") == 1 + FAST.max_restarts
    assert out.count("restarting in") == FAST.max_restarts and "leaving it down" in out
    assert "perception_node exited with code 7; stopping the others" in out


def test_a_killed_perception_node_stops_the_launch_with_the_shell_code(monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path, {"segmentation_node": "import time; time.sleep(30)",
                                  "perception_node": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"})
    assert launch({}, policy=FAST) == 128 + 9
    assert _starts(tmp_path, "perception_node") == 1


def test_bad_parameters_are_not_restarted_and_stop_the_launch(monkeypatch, tmp_path, capsys):
    _fake(monkeypatch, tmp_path, {"segmentation_node": "import sys; sys.exit(2)",
                                  "perception_node": "import time; time.sleep(30)"})
    assert launch({}, policy=FAST) == 2
    assert _starts(tmp_path, "segmentation_node") == 1
    assert "restarting" not in capsys.readouterr().out


def test_restart_backoff_doubles_and_the_window_forgets_old_crashes():
    sup = launcher._Supervised.__new__(launcher._Supervised)
    sup.spec, sup.policy = launcher.NodeSpec("segmentation_node", "segmentation"), RestartPolicy(
        max_restarts=2, window_s=10.0, backoff_s=1.0, max_backoff_s=8.0)
    sup.restarts = launcher.deque()
    assert sup.schedule_restart(0.0, -9) and sup.restart_at == pytest.approx(1.0)
    assert sup.schedule_restart(1.0, -9) and sup.restart_at == pytest.approx(3.0)
    assert not sup.schedule_restart(2.0, -9)  # two restarts within 10 s: the limit
    assert sup.schedule_restart(10.5, -9) and sup.restart_at == pytest.approx(12.5)  # the first one aged out
