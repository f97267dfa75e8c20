"""Rigid transforms of points and oriented boxes (what a goal's target_frame applies to a result)."""

from __future__ import annotations

import math

import numpy as np

from mllm3d_ros.core.geometry import (NEIGHBOUR_KEY_OFFSETS, invert_transform, rigid_transform, transform_box,
                                      transform_points, voxel_centers, voxel_keys)
from mllm3d_ros.core.memory.object_geometry import oriented_box
from mllm3d_ros.core.types import OrientedBox3D


def _yaw_quat(deg: float) -> tuple[float, float, float, float]:
    h = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(h), math.cos(h))


def _corners(box: OrientedBox3D) -> np.ndarray:
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    return box.center_world_m + (signs * box.size_m / 2) @ np.asarray(box.world_R_box).T


def test_transform_points_values_and_dtype():
    # base_link sits at (1, 2, 0) in the map, turned 90 deg left: map (1, 3, 0.5) is 1 m ahead of it.
    map_T_base = rigid_transform((1.0, 2.0, 0.0), _yaw_quat(90))
    base_T_map = invert_transform(map_T_base)
    pts_map = np.array([[1.0, 3.0, 0.5], [0.0, 2.0, 0.0]], np.float32)
    pts_base = transform_points(base_T_map, pts_map)
    np.testing.assert_allclose(pts_base, [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], atol=1e-6)
    assert pts_base.dtype == np.float32


def test_transform_box_moves_centre_and_rotation_and_keeps_the_size():
    box_map = OrientedBox3D(center_world_m=np.array([1.0, 3.0, 0.5]), world_R_box=np.eye(3),
                            size_m=np.array([0.4, 0.2, 0.1]))
    base_T_map = invert_transform(rigid_transform((1.0, 2.0, 0.0), _yaw_quat(90)))
    box_base = transform_box(base_T_map, box_map)
    np.testing.assert_allclose(box_base.center_world_m, [1.0, 0.0, 0.5], atol=1e-12)
    # The map's x axis is the base's -y: the box's long side now lies along base y.
    np.testing.assert_allclose(box_base.world_R_box, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(box_base.size_m, [0.4, 0.2, 0.1])
    # The same box, not an axis-aligned hull: its corners are the map corners transformed.
    np.testing.assert_allclose(np.sort(_corners(box_base), axis=0),
                               np.sort(transform_points(base_T_map, _corners(box_map)), axis=0), atol=1e-12)
    assert box_map.center_world_m.tolist() == [1.0, 3.0, 0.5]  # the input is untouched


def test_transform_box_agrees_with_the_box_of_the_transformed_points_for_a_yaw():
    rng = np.random.default_rng(3)
    pts_map = rng.uniform(-1, 1, (200, 3)) * [0.6, 0.2, 0.3] @ rigid_transform((0, 0, 0), _yaw_quat(30))[:3, :3].T
    b_T_map = rigid_transform((0.5, -2.0, 0.3), _yaw_quat(-70))
    moved = transform_box(b_T_map, oriented_box(pts_map))
    direct = oriented_box(transform_points(b_T_map, pts_map))
    np.testing.assert_allclose(moved.center_world_m, direct.center_world_m, atol=1e-9)
    np.testing.assert_allclose(np.sort(_corners(moved), axis=0), np.sort(_corners(direct), axis=0), atol=1e-9)


def test_voxel_keys_name_cells_and_their_neighbours():
    pts = np.array([[0.01, 0.02, 0.02], [0.029, 0.0, 0.0], [-0.01, 5.0, -3.0], [0.031, 0.0, 0.0]])
    keys = voxel_keys(pts, 0.03)
    assert keys.dtype == np.int64
    assert keys[0] == keys[1] and keys[1] != keys[3]  # same 3 cm cell, then the next one along x
    np.testing.assert_allclose(voxel_centers(keys, 0.03), np.floor(pts / 0.03) * 0.03 + 0.015, atol=1e-6)
    # The 27 offsets reach exactly the cells one step away in each axis (the centre included).
    around = voxel_centers(keys[0] + NEIGHBOUR_KEY_OFFSETS, 0.03)
    steps = np.round((around - voxel_centers(keys[:1], 0.03)) / 0.03).astype(int)
    assert sorted(map(tuple, steps)) == [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
