"""A goal's target_frame honoured through TF (the 3D grounding output): the result's points,
boxes and descriptions come back in that frame, RViz stays in the map frame, and a frame TF does
not know fails the goal with INVALID_GOAL (no 2D model call) while the node keeps serving."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from action_msgs.msg import GoalStatus

from mllm3d_ros.action import SegmentQuery
from mllm3d_ros.core.geometry import invert_transform, rigid_transform, transform_points
from mllm3d_ros.core.types import QueryStatus
from mllm3d_ros.ros.conversions import cloud_to_arrays, pose_to_matrix
from mllm3d_ros.ros.tf import TfPublisher, transform_msg
from querygraph import EVENT_S, Graph, result_of, wait_future, wait_until

pytestmark = pytest.mark.ros

# /tf is not namespaced: a frame name of this process's own keeps other test runs on the domain apart.
BASE = f"base_link_{os.getpid()}"
MAP_T_BASE = rigid_transform((1.0, 2.0, 0.0), (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)))


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def _send(graph, target_frame: str, instruction: str = "the cube"):
    handle = wait_future(graph.action.send_goal_async(SegmentQuery.Goal(instruction=instruction,
                                                                        target_frame=target_frame)))
    assert handle.accepted
    return result_of(handle)


def _tf_ready(graph) -> bool:
    try:
        graph.query._tf.lookup(BASE, "map", 0, 0.0)
    except LookupError:
        return False
    return True


def test_result_geometry_comes_back_in_the_target_frame(graph):
    status, in_map = _send(graph, "")
    assert in_map.error_code == QueryStatus.SUCCESS, in_map.error_message
    TfPublisher(graph.client_node).send([transform_msg("map", BASE, 0, MAP_T_BASE)], static=True)
    assert wait_until(lambda: _tf_ready(graph), EVENT_S), "static transform not received"

    status, in_base = _send(graph, BASE)
    assert in_base.error_code == QueryStatus.SUCCESS and status == GoalStatus.STATUS_SUCCEEDED, in_base.error_message
    assert len(in_base.objects) == len(in_map.objects) >= 1
    base_T_map = invert_transform(MAP_T_BASE)
    for obj_map, obj_base in zip(in_map.objects, in_base.objects):
        assert obj_base.header.frame_id == BASE and obj_base.points.header.frame_id == BASE
        pts_map, _, _ = cloud_to_arrays(obj_map.points)
        pts_base, _, _ = cloud_to_arrays(obj_base.points)
        np.testing.assert_allclose(pts_base, transform_points(base_T_map, pts_map), atol=1e-5)
        # The box centre pose, rotation included: base_T_box = base_T_map @ map_T_box.
        np.testing.assert_allclose(pose_to_matrix(obj_base.box_center),
                                   base_T_map @ pose_to_matrix(obj_map.box_center), atol=1e-6)
        assert (obj_base.box_size.x, obj_base.box_size.y, obj_base.box_size.z) == \
            (obj_map.box_size.x, obj_map.box_size.y, obj_map.box_size.z)
        # Gravity-aligned in the map and, base_link being z up too, there as well: yaw-only quaternions.
        for q in (obj_map.box_center.orientation, obj_base.box_center.orientation):
            assert abs(q.x) < 1e-9 and abs(q.y) < 1e-9
        c = obj_base.box_center.position
        assert f"at ({c.x:.2f}, {c.y:.2f}, {c.z:.2f}) m" in obj_base.description
    # Hand-checked value for the best box: map (x, y, z) is base (y - 2, 1 - x, z).
    cm, cb = in_map.objects[0].box_center.position, in_base.objects[0].box_center.position
    np.testing.assert_allclose([cb.x, cb.y, cb.z], [cm.y - 2.0, 1.0 - cm.x, cm.z], atol=1e-5)
    assert in_base.points.header.frame_id == BASE
    np.testing.assert_allclose(cloud_to_arrays(in_base.points)[0], cloud_to_arrays(in_base.objects[0].points)[0])
    # RViz keeps the map frame (its fixed frame), whatever the goal asked.
    assert wait_until(lambda: len(graph.markers) >= 2 and len(graph.clouds) >= 2, EVENT_S)
    assert {m.header.frame_id for m in graph.markers[-1].markers[1:]} == {"map"}
    assert graph.clouds[-1].header.frame_id == "map"
    np.testing.assert_allclose(cloud_to_arrays(graph.clouds[-1])[0], cloud_to_arrays(in_map.points)[0])


def test_unknown_or_malformed_target_frame_is_invalid_goal_and_the_node_keeps_serving(graph):
    unknown = f"no_such_frame_{os.getpid()}"
    status, result = _send(graph, unknown)
    assert result.error_code == QueryStatus.INVALID_GOAL and status == GoalStatus.STATUS_ABORTED
    assert unknown in result.error_message and "'map'" in result.error_message, result.error_message
    assert graph.segmentation.calls == 0  # refused before any 2D model call
    status, result = _send(graph, "base link")
    assert result.error_code == QueryStatus.INVALID_GOAL and "no spaces" in result.error_message
    status, result = _send(graph, "map")  # the map frame by name is the map frame
    assert result.error_code == QueryStatus.SUCCESS and status == GoalStatus.STATUS_SUCCEEDED, result.error_message
    assert result.objects[0].header.frame_id == "map"
