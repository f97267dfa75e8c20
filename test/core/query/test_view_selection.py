"""View selection on a hand-built corridor: a front wall seen by three cameras, a back wall by one."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.types import CameraIntrinsics, Keyframe
from mllm3d_ros.core.query.view_selection import ViewSelectionConfig, select_views

INTRINSICS = CameraIntrinsics(96, 72, 80.0, 80.0, 47.5, 35.5)
FRONT_X_M, BACK_X_M = 2.0, -2.0  # walls spanning y in [-3, 3], z in [0, 2]


def pose_looking(eye, direction) -> np.ndarray:
    """world_T_camera (optical frame) at `eye` looking horizontally along `direction`."""
    z = np.asarray(direction, float) / np.linalg.norm(direction)
    x = np.cross(z, [0.0, 0.0, 1.0])
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = eye
    return pose


def render_walls(world_T_camera) -> np.ndarray:
    """Analytic depth (H, W) float32 of the two walls x = FRONT_X_M and x = BACK_X_M (0 = no hit)."""
    rows, cols = np.mgrid[0:INTRINSICS.height, 0:INTRINSICS.width]
    dirs_cam = np.stack([(cols - INTRINSICS.cx) / INTRINSICS.fx, (rows - INTRINSICS.cy) / INTRINSICS.fy,
                         np.ones(rows.shape)], axis=-1)
    dirs = dirs_cam @ world_T_camera[:3, :3].T
    eye = world_T_camera[:3, 3]
    depth = np.zeros(rows.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for wall_x in (FRONT_X_M, BACK_X_M):
            t = (wall_x - eye[0]) / dirs[..., 0]  # optical depth, since dirs_cam has z = 1
            hit_y, hit_z = eye[1] + t * dirs[..., 1], eye[2] + t * dirs[..., 2]
            ok = (t > 0) & (np.abs(hit_y) <= 3.0) & (hit_z >= 0) & (hit_z <= 2.0) & ((depth == 0) | (t < depth))
            depth[ok] = t[ok]
    return depth.astype(np.float32)


def wall_points(wall_x, y_range=(-3.0, 3.0), step=0.05) -> np.ndarray:
    gy, gz = np.meshgrid(np.arange(y_range[0], y_range[1] + 1e-9, step), np.arange(0.0, 2.0 + 1e-9, step))
    return np.stack([np.full(gy.size, wall_x), gy.ravel(), gz.ravel()], axis=1).astype(np.float32)


def keyframe(kf_id, eye, direction, sharpness=0.0) -> Keyframe:
    pose = pose_looking(eye, direction)
    depth = render_walls(pose)
    return Keyframe(kf_id, kf_id, pose, INTRINSICS, np.zeros(depth.shape + (3,), np.uint8), depth, sharpness)


CENTRE = keyframe(10, (0.0, 0.0, 1.0), (1, 0, 0))
LEFT = keyframe(11, (0.0, -2.0, 1.0), (1, 0, 0))
RIGHT = keyframe(12, (0.0, 2.0, 1.0), (1, 0, 0), sharpness=1.0)
CENTRE_TWIN = keyframe(13, (0.05, 0.05, 1.0), (1, 0.05, 0))  # near-duplicate of CENTRE
BACK = keyframe(14, (0.0, 0.0, 1.0), (-1, 0, 0))  # sees only the back wall
ALL = [LEFT, CENTRE_TWIN, CENTRE, RIGHT, BACK]


@pytest.mark.parametrize("field,value", [("max_views", 0), ("max_views", 65), ("observations_per_point", 0),
                                         ("duplicate_penalty", 1.5), ("depth_tolerance_m", 0.0),
                                         ("min_gain_frac", -0.1), ("max_points", 10)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ViewSelectionConfig(**{field: value})


def test_covers_the_front_wall_and_skips_near_duplicates_and_blind_views():
    chosen = select_views(ALL, wall_points(FRONT_X_M), ViewSelectionConfig(max_views=3))
    assert chosen[0] == CENTRE.keyframe_id or chosen[0] == CENTRE_TWIN.keyframe_id  # widest coverage first
    assert set(chosen[1:]) == {LEFT.keyframe_id, RIGHT.keyframe_id}
    assert chosen[1] == RIGHT.keyframe_id  # equal gains: the sharper image wins


def test_default_is_four_views_and_never_more_than_keyframes():
    assert len(select_views(ALL, wall_points(FRONT_X_M))) == 4
    assert len(select_views([LEFT, RIGHT], wall_points(FRONT_X_M), ViewSelectionConfig(max_views=8))) == 2


def test_near_duplicate_comes_after_the_distinct_views():
    chosen = select_views(ALL, wall_points(FRONT_X_M), ViewSelectionConfig(max_views=4))
    twins = {CENTRE.keyframe_id, CENTRE_TWIN.keyframe_id}
    assert chosen[0] in twins and chosen[3] in twins and BACK.keyframe_id not in chosen


def test_region_of_interest_selects_only_the_views_that_see_it():
    region = wall_points(FRONT_X_M, y_range=(1.6, 2.4))
    assert select_views(ALL, region) == (RIGHT.keyframe_id,)


def test_without_a_region_the_keyframes_own_surfaces_are_covered():
    chosen = select_views(ALL, None, ViewSelectionConfig(max_views=4))
    assert BACK.keyframe_id in chosen  # the only view of the back wall


def test_no_keyframes_or_nothing_visible_gives_no_views():
    assert select_views([], wall_points(FRONT_X_M)) == ()
    assert select_views(ALL, wall_points(FRONT_X_M) + [0.0, 0.0, 10.0]) == ()  # region far above every view
