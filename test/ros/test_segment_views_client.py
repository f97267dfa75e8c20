"""The SegmentViews client (ros/segment_views_client.py) when the segmentation node is killed and restarted:
the backend is a process of its own (scripted_backend.py) on loopback, the query node
runs here. After 2D-model queries, `kill -9` of the backend and a restarted one that is still loading: the
next query answers BACKEND_UNAVAILABLE at once (it used to hang until the query's timeout); a request
pending when the backend is killed is sent again to the restarted one. Latencies are the node's own
`elapsed_s`, checked against the configured timeouts; everything else is ordered by events (heartbeats
seen, requests received)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mllm3d_ros.core.types import QueryStatus
from querygraph import Graph, result_of, wait_future, wait_until
from rosutil import ros_env

pytestmark = pytest.mark.ros

SCRIPT = Path(__file__).resolve().parent / "scripted_backend.py"
# Long enough that a loaded CI machine never mistakes a slow process start (10-20 s there) for a dead backend;
# the query timeout is what a lost request used to run into.
PARAMS = {"timeout_s": 120.0, "backend_timeout_s": 60.0, "service_wait_s": 2.0}


def _domain() -> int:
    """This process's domain when the test runs (the query node runs here; earlier tests may have changed it)."""
    return int(os.environ.get("ROS_DOMAIN_ID", "0"))


class Backend:
    """scripted_backend.py in its own process group, its stdout in a file."""

    def __init__(self, tmp_path: Path, namespace: str, instance: str, *args: str) -> None:
        self.log = tmp_path / f"backend_{instance}.log"
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), namespace, instance, *args],
                                     env=ros_env(_domain()), stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def requests(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("request")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def graph():
    g = Graph(with_segmentation=False, **PARAMS)
    backends: list[Backend] = []
    g.backends = backends
    yield g
    for b in backends:
        b.kill()
    g.close()


def _start(graph, tmp_path, instance: str, *args: str) -> Backend:
    backend = Backend(tmp_path, graph.namespace, instance, *args)
    graph.backends.append(backend)
    return backend


def _beats(graph, text: str, n: int = 1) -> bool:
    return wait_until(lambda: graph.heartbeats.count(text) >= n, 120.0)  # a process start on a loaded machine


def test_query_after_the_backend_is_killed_and_restarted_fails_fast_while_it_loads(graph, tmp_path):
    first = _start(graph, tmp_path, "one")
    assert _beats(graph, "scripted active one", 3), graph.heartbeats[-3:]
    for _ in range(2):  # 2D-model queries: the client has talked to this backend
        status, result = result_of(wait_future(graph.send()), 60.0)
        assert result.error_code == QueryStatus.SUCCESS and result.views_used > 0, result.error_message

    first.kill()
    _start(graph, tmp_path, "two", "--load-s", "600")  # restarted, loading its model for a long time
    assert _beats(graph, "scripted loading two"), graph.heartbeats[-3:]
    status, result = result_of(wait_future(graph.send()), PARAMS["timeout_s"] + 20.0)
    # Before: the request went to the killed process, the new heartbeats kept the watchdog quiet, and the
    # query ended TIMEOUT after timeout_s.
    assert result.error_code == QueryStatus.BACKEND_UNAVAILABLE, result.error_message
    assert "loading its model" in result.error_message, result.error_message
    assert result.elapsed_s < PARAMS["backend_timeout_s"], result.elapsed_s


def test_a_request_pending_when_the_backend_dies_is_sent_to_the_restarted_one(graph, tmp_path):
    blocked = _start(graph, tmp_path, "three", "--mode", "block")  # takes requests, never answers SEGMENT
    assert _beats(graph, "scripted active three", 3), graph.heartbeats[-3:]
    goal = wait_future(graph.send())
    assert wait_until(lambda: "request 0" in blocked.requests(), 60.0), blocked.log.read_text()  # 0 = SEGMENT
    blocked.kill()
    restarted = _start(graph, tmp_path, "four")
    status, result = result_of(goal, PARAMS["timeout_s"] + 20.0)
    # Before: the request was lost with the killed process and the query ended TIMEOUT after timeout_s.
    assert result.error_code == QueryStatus.SUCCESS, result.error_message
    assert result.elapsed_s < PARAMS["timeout_s"] and "request 0" in restarted.requests()
