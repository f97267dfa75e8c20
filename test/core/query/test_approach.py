"""Approach poses on hand-built floor grids and maps: in the band, clear, facing, reachable, or why not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mllm3d_ros.core.query.approach import (ApproachConfig, ApproachStatus, approach_summary, camera_height_above_floor,
                                      footprint_distance_m, plan_approach)
from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.mapping.occupancy import FREE, OCCUPIED, UNKNOWN, OccupancyGrid2D, build_occupancy_grid
from mllm3d_ros.core.types import Keyframe, MapSnapshot, OrientedBox3D

RES = 0.05


def box(center, size, yaw=0.0):
    c, s = math.cos(yaw), math.sin(yaw)
    return OrientedBox3D(np.asarray(center, float), np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]),
                         np.asarray(size, float))


def grid_with(obstacles=(), unknown=(), size_m=(6.0, 6.0), floor_z=0.0):
    """A free floor of size_m from the origin with occupied / unknown axis-aligned rectangles (x0, x1, y0, y1)."""
    h, w = int(round(size_m[1] / RES)), int(round(size_m[0] / RES))
    data = np.full((h, w), FREE, np.int8)
    for value, rects in ((OCCUPIED, obstacles), (UNKNOWN, unknown)):
        for x0, x1, y0, y1 in rects:
            data[int(round(y0 / RES)):int(round(y1 / RES)), int(round(x0 / RES)):int(round(x1 / RES))] = value
    return OccupancyGrid2D(data, RES, (0.0, 0.0), floor_z)


CHAIR = box((3.0, 3.0, 0.45), (0.5, 0.5, 0.9))
CHAIR_CELLS = (2.75, 3.25, 2.75, 3.25)


def check_pose(pose, obj, cfg=ApproachConfig()):
    assert pose.status is ApproachStatus.OK, pose.message
    x, y, z = pose.position_world_m
    d = float(footprint_distance_m(obj, np.array([[x, y]]))[0])
    assert cfg.standoff_m <= d <= cfg.max_distance_m and d == pytest.approx(pose.distance_m)
    bearing = math.atan2(obj.center_world_m[1] - y, obj.center_world_m[0] - x)
    assert abs(math.remainder(bearing - pose.yaw_rad, 2 * math.pi)) < 1e-9
    assert pose.clearance_m >= cfg.robot_radius_m
    return x, y, z


def test_pose_on_free_floor_is_in_the_band_clear_and_facing_the_object():
    grid = grid_with(obstacles=[CHAIR_CELLS], floor_z=0.12)
    pose = plan_approach(CHAIR, grid, robot_xy_m=(0.5, 3.0))
    x, y, z = check_pose(pose, CHAIR)
    assert z == 0.12  # on the floor
    assert pose.reachability_checked and "reachable from the robot" in pose.message
    assert x < 3.0 and pose.distance_m < ApproachConfig().standoff_m + 0.1  # the side the robot comes from, near
    summary = approach_summary(pose)
    assert summary["status"] == "OK" and summary["position_m"][2] == 0.12


def test_a_wall_between_robot_and_the_near_side_sends_the_robot_around():
    # A wall at x in [2.0, 2.1] from y = 0 to 5.6 blocks the chair's west side from a robot in the west, but
    # leaves a gap at the north end: the pose is still found, on a reachable side.
    wall = (2.0, 2.1, 0.0, 5.2)
    grid = grid_with(obstacles=[CHAIR_CELLS, wall])
    pose = plan_approach(CHAIR, grid, robot_xy_m=(1.0, 1.0))
    x, y, _ = check_pose(pose, CHAIR)
    assert x > 2.1 + 0.25  # east of the wall, with clearance from it
    assert pose.reachability_checked
    # Close the gap: the robot cannot get to the chair at all.
    closed = grid_with(obstacles=[CHAIR_CELLS, (2.0, 2.1, 0.0, 6.0)])
    blocked = plan_approach(CHAIR, closed, robot_xy_m=(1.0, 1.0))
    assert blocked.status is ApproachStatus.UNREACHABLE and blocked.position_world_m is None
    assert "none reachable from the robot" in blocked.message


def test_the_robot_passes_over_a_floor_hole_but_not_through_unseen_space_next_to_a_wall():
    # A wall at x in [1.0, 1.1] (beyond 1.5 m of the chair) with a 1 m gap (y 2.5 - 3.5) between the robot (west)
    # and the chair (east).
    walls = [CHAIR_CELLS, (1.0, 1.1, 0.0, 2.5), (1.0, 1.1, 3.5, 6.0)]
    # Floor the depth missed in the middle of the gap, seen floor all round it: 0.4 m either side, so a
    # robot of radius 0.25 passes only over it.
    hole = (0.9, 1.2, 2.9, 3.1)
    pose = plan_approach(CHAIR, grid_with(obstacles=walls, unknown=[hole]), robot_xy_m=(0.5, 3.0))
    check_pose(pose, CHAIR)
    assert pose.reachability_checked
    # The same unseen floor reaching the wall: the wall's shadow, which may hide anything: no way through.
    shadow = (0.9, 1.2, 2.5, 3.1)
    blocked = plan_approach(CHAIR, grid_with(obstacles=walls, unknown=[shadow]), robot_xy_m=(0.5, 3.0))
    assert blocked.status is ApproachStatus.UNREACHABLE
    # A pose never stands on the hole itself: a hole where the only pose would be gives no pose.
    ring = grid_with(obstacles=[CHAIR_CELLS], unknown=[(1.25, 4.75, 1.25, 2.75), (1.25, 4.75, 3.25, 4.75),
                                                       (1.25, 2.75, 2.75, 3.25), (3.25, 4.75, 2.75, 3.25)])
    assert plan_approach(CHAIR, ring, robot_xy_m=(0.5, 0.5)).status is ApproachStatus.NO_FREE_FLOOR


def test_a_missing_robot_pose_gives_a_pose_without_the_reachability_check():
    grid = grid_with(obstacles=[CHAIR_CELLS, (2.0, 2.1, 0.0, 6.0)])
    pose = plan_approach(CHAIR, grid, robot_xy_m=None,
                         robot_note="robot pose unknown (no transform map <- base_link): reachability not checked")
    check_pose(pose, CHAIR)
    assert not pose.reachability_checked and "reachability not checked" in pose.message
    # A robot standing on never-observed floor: a pose, unchecked, and the message says why.
    unseen = grid_with(obstacles=[CHAIR_CELLS], unknown=[(0.0, 1.5, 0.0, 1.5)])
    pose = plan_approach(CHAIR, unseen, robot_xy_m=(0.5, 0.5))
    check_pose(pose, CHAIR)
    assert not pose.reachability_checked and "not on observed free floor" in pose.message


def test_no_floor_no_free_floor_and_no_object():
    no_floor = OccupancyGrid2D(np.full((10, 10), UNKNOWN, np.int8), RES, (0.0, 0.0), None)
    pose = plan_approach(CHAIR, no_floor)
    assert pose.status is ApproachStatus.NO_FLOOR and "no floor seen yet" in pose.message
    assert plan_approach(CHAIR, OccupancyGrid2D.empty(RES)).status is ApproachStatus.NO_FLOOR
    # Unknown floor all around the chair (only its own cells and a ring beyond 1.5 m observed).
    walled = grid_with(obstacles=[CHAIR_CELLS], unknown=[(1.0, 5.0, 1.0, 2.75), (1.0, 5.0, 3.25, 5.0),
                                                         (1.0, 2.75, 2.75, 3.25), (3.25, 5.0, 2.75, 3.25)])
    pose = plan_approach(CHAIR, walled, robot_xy_m=(0.5, 0.5))
    assert pose.status is ApproachStatus.NO_FREE_FLOOR and "no free floor within 1.5 m" in pose.message
    assert plan_approach(None, walled).status is ApproachStatus.NO_OBJECT


def test_a_narrow_gap_is_not_a_pose_for_a_wide_robot():
    # Free floor around the chair only in a 0.3 m corridor on its west side.
    corridor = grid_with(obstacles=[CHAIR_CELLS, (0.0, 6.0, 0.0, 2.85), (0.0, 6.0, 3.15, 6.0), (3.25, 6.0, 2.85, 3.15)])
    narrow = plan_approach(CHAIR, corridor, config=ApproachConfig(robot_radius_m=0.25, standoff_m=0.45))
    assert narrow.status is ApproachStatus.NO_FREE_FLOOR
    thin = plan_approach(CHAIR, corridor, config=ApproachConfig(robot_radius_m=0.08, standoff_m=0.3))
    check_pose(thin, CHAIR, ApproachConfig(robot_radius_m=0.08, standoff_m=0.3))


def _floor_and(*parts):
    xs, ys = np.meshgrid(np.arange(0.0, 4.0, 0.02), np.arange(0.0, 4.0, 0.02))
    floor = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
    pts = [floor] + [p for p, _ in parts]
    normals = [np.tile((0.0, 0.0, 1.0), (len(floor), 1))] + [n for _, n in parts]
    pts = np.concatenate(pts).astype(np.float32)
    return MapSnapshot(pts, np.zeros(pts.shape, np.uint8), np.concatenate(normals).astype(np.float32), 0)


def _wall_at_x(x, y0, y1, z0, z1):
    ys, zs = np.meshgrid(np.arange(y0, y1, 0.02), np.arange(z0, z1, 0.02))
    pts = np.stack([np.full(ys.size, x), ys.ravel(), zs.ravel()], axis=1)
    return pts, np.tile((-1.0, 0.0, 0.0), (len(pts), 1))


def _top(x0, x1, y0, y1, z):
    xs, ys = np.meshgrid(np.arange(x0, x1, 0.02), np.arange(y0, y1, 0.02))
    pts = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, z)], axis=1)
    return pts, np.tile((0.0, 0.0, 1.0), (len(pts), 1))


def _keyframes(*boxes):
    """Two keyframes ray-cast (test_voting's renderer) over the floor and the given axis-aligned boxes."""
    from test_voting import INTRINSICS, look_at, render

    floor = (np.array([0.0, 0.0, -0.02]), np.array([4.0, 4.0, 0.0]))
    out = []
    for k, eye in enumerate([(1.0, 2.0, 1.4), (1.4, 1.0, 1.0)]):
        pose = look_at(eye, (3.3, 2.0, 1.0))
        depth, _ = render(pose, (floor,) + boxes)
        out.append(Keyframe(k, k, pose, INTRINSICS, np.zeros(depth.shape + (3,), np.uint8), depth))
    return out


WALL = (np.array([3.5, 0.5, 0.0]), np.array([3.6, 3.5, 2.4]))
CABINET = (np.array([3.19, 1.7, 1.2]), np.array([3.49, 2.3, 1.6]))


def test_an_object_hanging_from_a_wall_gets_no_pose():
    # A wall at x = 3.5 from the floor up; a cabinet 0.3 deep on it at 1.2 - 1.6 m, the space under it seen empty.
    snap = _floor_and(_wall_at_x(3.5, 0.5, 3.5, 0.0, 2.4))
    grid = build_occupancy_grid(snap)
    cabinet = box((3.34, 2.0, 1.4), (0.3, 0.6, 0.4))
    pose = plan_approach(cabinet, grid, snap, camera_height_m=1.5, keyframes=_keyframes(WALL, CABINET))
    assert pose.status is ApproachStatus.HANGING and "hangs from a wall" in pose.message
    # Without views of the space under it, nothing proves it hangs: a pose.
    assert plan_approach(cabinet, grid, snap, camera_height_m=1.5).status is ApproachStatus.OK
    # On a desk top the map missed (in the keyframes' depth, not in the map): not refused.
    desk = (np.array([3.0, 1.5, 1.15]), np.array([3.5, 2.5, 1.2]))
    pose = plan_approach(cabinet, grid, snap, camera_height_m=1.5, keyframes=_keyframes(WALL, CABINET, desk))
    assert pose.status is ApproachStatus.OK, pose.message
    # Standing on a shelf board the map holds (a horizontal surface under it): approachable.
    board = _top(3.18, 3.5, 1.6, 2.4, 1.18)
    snap2 = _floor_and(_wall_at_x(3.5, 0.5, 3.5, 0.0, 2.4), board)
    pose = plan_approach(cabinet, build_occupancy_grid(snap2), snap2, camera_height_m=1.5,
                         keyframes=_keyframes(WALL, CABINET))
    assert pose.status is ApproachStatus.OK, pose.message


def test_a_mug_on_a_table_is_approachable_and_an_object_taller_than_the_camera_is_not():
    table_top = _top(1.5, 2.5, 1.5, 2.5, 0.75)
    snap = _floor_and(table_top)
    grid = build_occupancy_grid(snap)
    mug = box((2.0, 2.0, 0.8), (0.08, 0.08, 0.1))
    pose = plan_approach(mug, grid, snap, camera_height_m=1.4)
    check_pose(pose, mug)
    assert pose.distance_m >= 0.45 and grid.floor_z_m == pytest.approx(0.0, abs=0.01)
    tall = box((2.0, 2.0, 1.0), (1.0, 1.0, 2.0))
    pose = plan_approach(tall, grid, snap, camera_height_m=1.4)
    assert pose.status is ApproachStatus.TOO_TALL and "taller than the camera (1.40 m" in pose.message
    assert camera_height_above_floor(np.array([[0, 0, 1.2], [1, 1, 1.6]]), 0.2) == pytest.approx(1.4)
    assert camera_height_above_floor(np.zeros((0, 3)), 0.0) is None


@pytest.mark.parametrize("kw", [dict(robot_radius_m=0.5, standoff_m=0.4), dict(max_distance_m=0.3),
                                dict(robot_radius_m=0.0)])
def test_config_errors_name_the_field(kw):
    with pytest.raises(ConfigError, match="standoff_m|max_distance_m|robot_radius_m"):
        ApproachConfig(**kw)
