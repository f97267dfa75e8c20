"""The one visibility test: in front, inside the image, on a pixel with depth, within the tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.types import CameraIntrinsics, InputError
from mllm3d_ros.core.visibility import project_visible, visible_mask

K = CameraIntrinsics(width=8, height=6, fx=4.0, fy=4.0, cx=3.5, cy=2.5)


def test_seen_occluded_seen_through_behind_and_outside():
    depth = np.full((6, 8), 2.0, dtype=np.float32)
    depth[0, 0] = 0.0  # no return at that pixel
    pts = np.array([
        [0.0, 0.0, 2.02],   # on the observed surface: seen
        [0.0, 0.0, 3.0],    # behind it: occluded
        [0.0, 0.0, 1.0],    # in front of it: seen through
        [0.0, 0.0, -2.0],   # behind the camera
        [10.0, 0.0, 2.0],   # outside the image
        [-1.75, -1.25, 2.0],  # lands on pixel (0, 0), which has no depth
    ])
    proj = project_visible(pts, np.eye(4), K, depth, view_id=7)
    assert proj.keyframe_id == 7 and proj.image_shape == (6, 8)
    assert proj.visible_indices.tolist() == [0]
    assert proj.pixel_index.tolist() == [int(round(2.5)) * 8 + int(round(3.5))]
    assert proj.through_indices.tolist() == [2]
    assert visible_mask(pts, np.eye(4), K, depth).tolist() == [True, False, False, False, False, False]


def test_tolerance_grows_with_depth_and_pose_moves_the_camera():
    depth = np.full((6, 8), 4.0, dtype=np.float32)
    near = np.array([[0.0, 0.0, 4.1]])  # 10 cm off: outside 5 cm, inside 3 % of 4 m = 12 cm
    assert project_visible(near, np.eye(4), K, depth, 0.05, 0.0).visible_indices.size == 0
    assert project_visible(near, np.eye(4), K, depth, 0.05, 0.03).visible_indices.tolist() == [0]
    world_T_camera = np.eye(4)
    world_T_camera[2, 3] = 1.0  # the camera 1 m further along z: the point is now 3.1 m away
    assert project_visible(near, world_T_camera, K, depth, 0.05, 0.03).visible_indices.size == 0


def test_bad_shapes_are_input_errors():
    with pytest.raises(InputError, match="points_world_m must be"):
        project_visible(np.zeros((3, 2)), np.eye(4), K, np.ones((6, 8), np.float32))
    with pytest.raises(InputError, match="intrinsics say"):
        project_visible(np.zeros((3, 3)), np.eye(4), K, np.ones((5, 8), np.float32))
    with pytest.raises(InputError, match="needs both intrinsics and depth_m"):
        visible_mask(np.zeros((3, 3)), np.eye(4))
