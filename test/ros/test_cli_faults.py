"""The `mllm3d` subcommands that talk to the graph, under faults. SIGINT / SIGTERM in a command that
waits: the goal is cancelled where there is one, the command ends with 130 / 143 and one line on
stderr, no traceback. The servers run here (the query node over a backend that never answers, a
DescribeScene that never answers) or are the command itself (simulate, launch); every signal is sent once
the command has reached the wait (an event). A reader that goes away (`mllm3d describe | head -1`) ends
the command quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from mllm3d_ros.msg import SegmentedObject
from mllm3d_ros.srv import DescribeScene
from querygraph import Graph, wait_until
from rosutil import REPO_ROOT, ros_env

pytestmark = pytest.mark.ros


def _domain() -> int:
    """This process's domain when the test runs (its servers run here; earlier tests may have changed it)."""
    return int(os.environ.get("ROS_DOMAIN_ID", "0"))


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", *args], env=ros_env(_domain()),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO_ROOT.parent))


def _ended(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def graph():
    g = Graph(namespace="/mllm3d")
    g.segmentation.mode = "block"  # every query waits for the 2D model, as a long MLLM call would
    yield g
    g.close()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_query_cancels_its_goal_and_exits_with_the_signal(graph, signum, code):
    calls, canceled = graph.segmentation.calls, sum(r["status"] == "CANCELED" for r in graph.results)
    proc = _cli("query", "the cube", "--wait", "30", "--timeout", "60")
    if not wait_until(lambda: graph.segmentation.calls > calls, 60.0):
        proc.kill()
        pytest.fail(f"the query did not reach the backend: {proc.communicate()}")
    proc.send_signal(signum)
    rc, out, err = _ended(proc)
    assert rc == code, (rc, out, err)
    assert err.strip().splitlines() == [f"interrupted by {signal.Signals(signum).name}: goal canceled"], err
    assert "Traceback" not in out + err
    # The server stopped working on it: the goal ended CANCELED (its ~/result says so).
    assert wait_until(lambda: sum(r["status"] == "CANCELED" for r in graph.results) > canceled, 30.0), graph.results


class _Describe(Node):
    """DescribeScene under /mllm3d/memory: `slow` never answers before `release`, else 300 objects."""

    def __init__(self, context) -> None:
        super().__init__("memory", namespace="/mllm3d", context=context)
        self.called = threading.Event()
        self.release = threading.Event()
        self.slow = True
        self.create_service(DescribeScene, "~/describe_scene", self._serve, callback_group=ReentrantCallbackGroup())

    def _serve(self, _request, response):
        self.called.set()
        if self.slow:
            self.release.wait(60.0)
        response.success, response.message = True, "300 of 300 confirmed objects"
        response.objects = [SegmentedObject(label="mug", description=f"a white mug #{i}") for i in range(300)]
        return response


@pytest.fixture(scope="module")
def describe_service():
    context = Context()
    rclpy.init(context=context)
    node = _Describe(context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    node.release.set()
    executor.shutdown()
    thread.join(10.0)
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_describe_exits_with_the_signal_while_the_service_works(describe_service):
    describe_service.slow, describe_service.release = True, threading.Event()
    describe_service.called.clear()
    proc = _cli("describe", "--wait", "30")
    assert describe_service.called.wait(60.0), "describe did not call the service"
    proc.send_signal(signal.SIGTERM)
    rc, out, err = _ended(proc)
    assert rc == 143 and err.strip().splitlines() == ["interrupted by SIGTERM: describe stopped"], (rc, out, err)


def test_describe_into_a_reader_that_went_away_ends_quietly(describe_service):
    # `mllm3d describe | head -1`: head exits after one line. Here the reader is gone before the first one.
    describe_service.slow = False
    proc = _cli("describe", "--wait", "30")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 141 and err == "", err  # as a tool killed by SIGPIPE; no BrokenPipeError traceback


class _Output:
    """The process's stdout, read by a thread (readline blocks) until it ends."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout_s: float) -> bool:
        return wait_until(lambda: any(text in line for line in list(self.lines)), timeout_s)

    def all(self) -> str:
        self._thread.join(30.0)
        return "".join(self.lines)


@pytest.mark.parametrize("args, ready, signum, code, line", [
    (("simulate", "--rate-hz", "20"), "simulating room", signal.SIGINT, 130, "interrupted by SIGINT: simulator stopped"),
    (("launch", "with_segmentation:=false"), "SegmentQuery action", signal.SIGTERM, 143, None),
])
def test_publishing_and_launch_commands_exit_with_the_signal(args, ready, signum, code, line):
    proc = subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", *args], env=ros_env(_domain() + 11),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(REPO_ROOT.parent),
                            start_new_session=True)
    output = _Output(proc)
    try:
        assert output.wait_for(ready, 120.0), "".join(output.lines)
        os.kill(proc.pid, signum)  # the command itself, as a supervisor or `kill` would
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rest = output.all()
    assert rc == code, rest
    assert "Traceback" not in rest, rest
    if line:
        assert line in rest, rest
