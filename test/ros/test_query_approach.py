"""The approach pose in SegmentQuery results: on the floor, facing the object, in the goal's frame,
an arrow in RViz and in the ~/result JSON; without the robot's pose in TF it comes unchecked, and says so."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from mllm3d_ros.action import SegmentQuery
from mllm3d_ros.core.query.approach import footprint_distance_m
from mllm3d_ros.core.geometry import invert_transform, rigid_transform
from mllm3d_ros.core.types import OrientedBox3D, QueryStatus
from mllm3d_ros.ros.conversions import pose_to_matrix
from mllm3d_ros.ros.tf import TfPublisher, transform_msg
from querygraph import EVENT_S, Graph, result_of, wait_future, wait_until

pytestmark = pytest.mark.ros

# /tf is not namespaced: a frame name of this process's own keeps other test runs on the domain apart.
ROBOT = f"robot_base_{os.getpid()}"
MAP_T_ROBOT = rigid_transform((-0.3, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))  # on the floor, west of the cubes


@pytest.fixture
def graph():
    g = Graph(robot_frame=ROBOT)
    yield g
    g.close()


def _send(graph, target_frame: str = ""):
    handle = wait_future(graph.action.send_goal_async(SegmentQuery.Goal(instruction="the cube",
                                                                        target_frame=target_frame)))
    assert handle.accepted
    return result_of(handle)[1]


def _box(obj) -> OrientedBox3D:
    m = pose_to_matrix(obj.box_center)
    return OrientedBox3D(m[:3, 3], m[:3, :3], np.array([obj.box_size.x, obj.box_size.y, obj.box_size.z]))


def test_approach_pose_with_and_without_the_robot_in_tf(graph):
    result = _send(graph)
    assert result.error_code == QueryStatus.SUCCESS, result.error_message
    assert result.approach_status == SegmentQuery.Result.APPROACH_OK, result.approach_message
    assert not result.approach_reachability_checked and "reachability not checked" in result.approach_message
    assert ROBOT in result.approach_message  # names the missing transform
    pose = result.approach_pose
    assert pose.header.frame_id == "map"
    map_T_pose = pose_to_matrix(pose.pose)
    assert abs(map_T_pose[2, 3]) < 0.03  # on the floor of the two-cube scene (z = 0)
    box = _box(result.objects[0])
    assert footprint_distance_m(box, map_T_pose[None, :2, 3])[0] >= 0.45 - 1e-6
    heading = math.atan2(map_T_pose[1, 0], map_T_pose[0, 0])
    bearing = math.atan2(box.center_world_m[1] - map_T_pose[1, 3], box.center_world_m[0] - map_T_pose[0, 3])
    assert abs(math.remainder(heading - bearing, 2 * math.pi)) < 1e-3
    assert wait_until(lambda: graph.results, EVENT_S)
    summary = graph.results[-1]["approach"]
    assert summary["status"] == "OK" and summary["position_m"][:2] == pytest.approx(map_T_pose[:2, 3], abs=1e-3)
    assert wait_until(lambda: any(m.ns == "mllm3d/approach" for a in graph.markers for m in a.markers), EVENT_S)

    # The robot's pose arrives in TF: the pose is checked reachable from it, and comes in the goal's frame.
    TfPublisher(graph.client_node).send([transform_msg("map", ROBOT, 0, MAP_T_ROBOT)], static=True)

    def tf_ready() -> bool:
        try:
            graph.query._tf.lookup("map", ROBOT, 0, 0.0)
        except LookupError:
            return False
        return True

    assert wait_until(tf_ready, EVENT_S), "static transform not received"
    checked = _send(graph)
    assert checked.approach_status == SegmentQuery.Result.APPROACH_OK, checked.approach_message
    assert checked.approach_reachability_checked and "reachable from the robot" in checked.approach_message
    in_robot = _send(graph, ROBOT)
    assert in_robot.approach_pose.header.frame_id == ROBOT
    np.testing.assert_allclose(pose_to_matrix(in_robot.approach_pose.pose),
                               invert_transform(MAP_T_ROBOT) @ pose_to_matrix(checked.approach_pose.pose), atol=1e-6)


def test_a_failed_query_carries_no_approach_pose(graph):
    graph.segmentation.mode = "empty"
    result = _send(graph)
    assert result.error_code == QueryStatus.NOT_FOUND, result.error_message
    assert result.approach_status == SegmentQuery.Result.APPROACH_NO_OBJECT
    assert result.approach_pose.header.frame_id == ""
