"""SegmentQuery goal handling of the query node, in one process over loopback DDS (see querygraph.py):
single goal under `reject`, preemption with per-goal cancel, the timeout while the backend works,
the catch-all for unexpected errors, BUSY replies to instructions, and RViz cleared after a failure."""

from __future__ import annotations

import pytest
from action_msgs.msg import GoalStatus
from rclpy.action import GoalResponse
from visualization_msgs.msg import Marker

from mllm3d_ros.action import SegmentQuery
from mllm3d_ros.core.types import QueryStatus
from querygraph import EVENT_S, Graph, result_of, wait_future, wait_until

pytestmark = pytest.mark.ros


@pytest.fixture
def graph(request):
    g = Graph(**getattr(request, "param", {}))
    yield g
    g.close()


def test_two_goals_sent_together_only_one_is_accepted_under_reject(graph):
    graph.segmentation.mode = "block"
    handles = [wait_future(f) for f in (graph.send(), graph.send())]
    assert sorted(h.accepted for h in handles) == [False, True]
    graph.segmentation.release.set()
    status, result = result_of(next(h for h in handles if h.accepted))
    assert result.error_code == QueryStatus.NOT_FOUND and status == GoalStatus.STATUS_ABORTED
    # The claim is released when the goal ends: the next goal is accepted.
    graph.segmentation.mode = "cube"
    handle = wait_future(graph.send())
    assert handle.accepted
    status, result = result_of(handle)
    assert result.error_code == QueryStatus.SUCCESS and status == GoalStatus.STATUS_SUCCEEDED, result.error_message


def test_goal_is_claimed_in_the_goal_callback(graph):
    # What the executor does with two goal requests taken in one wait: both goal callbacks run before
    # either goal executes. The first claims the node; the second must be refused there and then.
    assert graph.query._on_goal(SegmentQuery.Goal(instruction="a")) == GoalResponse.ACCEPT
    assert graph.query._on_goal(SegmentQuery.Goal(instruction="b")) == GoalResponse.REJECT


@pytest.mark.parametrize("graph", [{"second_goal_policy": "preempt"}], indirect=True)
def test_preempt_and_cancel_reach_only_their_own_goal(graph):
    graph.segmentation.mode = "block"
    first = wait_future(graph.send("first"))
    assert wait_until(lambda: graph.segmentation.calls >= 1, EVENT_S)
    second = wait_future(graph.send("second"))
    wait_future(second.cancel_goal_async())  # cancels `second` (waiting or just started) only
    third = wait_future(graph.send("third"))
    assert first.accepted and second.accepted and third.accepted
    status, result = result_of(first)
    assert result.error_code == QueryStatus.CANCELED and "preempted" in result.error_message
    assert status == GoalStatus.STATUS_ABORTED
    status, result = result_of(second)
    assert result.error_code == QueryStatus.CANCELED and status == GoalStatus.STATUS_CANCELED
    # `third` runs to its own end: neither the preemptions nor `second`'s cancel stopped it.
    assert wait_until(lambda: graph.segmentation.calls >= 2, EVENT_S)
    graph.segmentation.mode = "empty"
    graph.segmentation.release.set()
    status, result = result_of(third)
    assert result.error_code == QueryStatus.NOT_FOUND, result.error_message


TIMEOUT_S, BLOCK_S = 1.0, 120.0


@pytest.mark.parametrize("graph", [{"timeout_s": TIMEOUT_S}], indirect=True)
def test_timeout_is_enforced_while_the_backend_works(graph):
    graph.segmentation.mode, graph.segmentation.block_s = "block", BLOCK_S
    status, result = result_of(wait_future(graph.send()), BLOCK_S)
    assert result.error_code == QueryStatus.TIMEOUT, result.error_message
    assert status == GoalStatus.STATUS_ABORTED
    # The node's own clock: it gave up at its timeout, while the backend was still working (a node that waited
    # for the backend's answer would report BLOCK_S or more; one that gave up at once, well under TIMEOUT_S).
    assert 0.5 * TIMEOUT_S <= result.elapsed_s < BLOCK_S / 2, result.elapsed_s


def test_unexpected_error_is_answered_as_backend_error(graph, monkeypatch):
    def broken_vote(*args, **kwargs):
        raise RuntimeError("voting exploded")

    monkeypatch.setattr(graph.query.pipeline.voter, "vote", broken_vote)
    status, result = result_of(wait_future(graph.send()))
    assert result.error_code == QueryStatus.BACKEND_ERROR and "voting exploded" in result.error_message
    assert status == GoalStatus.STATUS_ABORTED
    # The node still answers the next goal.
    monkeypatch.undo()
    status, result = result_of(wait_future(graph.send()))
    assert result.error_code == QueryStatus.SUCCESS, result.error_message


def test_instruction_during_a_query_is_answered_busy(graph):
    graph.segmentation.mode = "block"
    handle = wait_future(graph.send("the cube"))
    assert wait_until(lambda: graph.segmentation.calls >= 1, EVENT_S)
    graph.instruct("the other cube")
    assert wait_until(lambda: any(r["status"] == "BUSY" for r in graph.results), EVENT_S), graph.results
    busy = next(r for r in graph.results if r["status"] == "BUSY")
    assert busy["instruction"] == "the other cube" and busy["objects"] == []
    graph.segmentation.release.set()
    result_of(handle)
    # Once idle, an instruction runs and its result is published.
    graph.segmentation.mode = "cube"
    graph.instruct("the cube on the left")
    assert wait_until(lambda: any(r["instruction"] == "the cube on the left" and r["status"] == "SUCCESS"
                                  for r in graph.results), EVENT_S), graph.results


def test_not_found_clears_the_previous_answer_in_rviz(graph):
    status, result = result_of(wait_future(graph.send()))
    assert result.error_code == QueryStatus.SUCCESS, result.error_message
    assert wait_until(lambda: graph.markers and len(graph.markers[-1].markers) > 1, EVENT_S)
    assert graph.clouds and graph.clouds[-1].width > 0
    graph.segmentation.mode = "empty"
    n_markers, n_clouds = len(graph.markers), len(graph.clouds)
    status, result = result_of(wait_future(graph.send()))
    assert result.error_code == QueryStatus.NOT_FOUND
    assert wait_until(lambda: len(graph.markers) > n_markers and len(graph.clouds) > n_clouds, EVENT_S)
    assert [m.action for m in graph.markers[-1].markers] == [Marker.DELETEALL]
    assert graph.clouds[-1].width == 0


def test_malformed_backend_answer_is_backend_error_and_the_node_keeps_serving(graph):
    graph.segmentation.mode = "bad_mask"  # masks that do not match the views they belong to
    status, result = result_of(wait_future(graph.send()))
    assert result.error_code == QueryStatus.BACKEND_ERROR and result.error_message, result.error_message
    graph.segmentation.mode = "cube"
    status, result = result_of(wait_future(graph.send()))
    assert result.error_code == QueryStatus.SUCCESS, result.error_message
