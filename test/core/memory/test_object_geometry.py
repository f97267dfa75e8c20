"""Object geometry: the yaw-only box, a mug's spill onto the table removed, unseen points that complete it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mllm3d_ros.core.memory.object_geometry import complete_object, oriented_box, strip_support_surface
from mllm3d_ros.core.types import InputError


def _grid(x0, x1, y0, y1, z0, z1, step=0.01):
    axes = [np.arange(a, b + step / 2, step) for a, b in ((x0, x1), (y0, y1), (z0, z1))]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def test_oriented_box_is_yaw_only_along_the_main_horizontal_axis():
    yaw = math.radians(30)
    rot = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    pts = _grid(-0.4, 0.4, -0.1, 0.1, 0.0, 0.3, 0.02) @ rot.T + [1.0, 2.0, 0.5]
    box = oriented_box(pts)
    np.testing.assert_allclose(box.center_world_m, [1.0, 2.0, 0.65], atol=1e-9)
    np.testing.assert_allclose(box.size_m, [0.8, 0.2, 0.3], atol=1e-9)
    np.testing.assert_allclose(box.world_R_box, rot, atol=1e-9)  # x along the long side, z up, no roll or pitch
    one = oriented_box(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(one.size_m, 0.0)
    np.testing.assert_allclose(one.world_R_box, np.eye(3))
    with pytest.raises(InputError, match="no points"):
        oriented_box(np.zeros((0, 3)))


def test_a_mug_mask_that_spilled_onto_the_table_keeps_the_mug_only():
    table = _grid(-0.5, 0.5, -0.5, 0.5, 0.0, 0.0)  # a table top at z = 0, 1 m across
    mug = _grid(-0.04, 0.04, -0.04, 0.04, 0.01, 0.10)  # a 8 x 8 x 10 cm mug standing on it
    pts = np.concatenate([table, mug])
    on_table = np.flatnonzero((np.abs(table[:, 0]) <= 0.08) & (np.abs(table[:, 1]) <= 0.08))
    mask = np.concatenate([on_table, table.shape[0] + np.arange(mug.shape[0])])  # the mask's spill + the mug
    kept = strip_support_surface(pts, mask, 0.02, ring_m=0.3, min_support_frac=0.25, min_points=10)
    assert set(kept.tolist()) == set((table.shape[0] + np.arange(mug.shape[0])).tolist())
    # No surface around (the mug alone in the map): unchanged.
    alone = strip_support_surface(mug, np.arange(mug.shape[0]), 0.02, 0.3, 0.25, 10)
    assert alone.tolist() == list(range(mug.shape[0]))


def test_unseen_points_complete_the_object_but_not_the_table_it_stands_on():
    table = _grid(-0.5, 0.5, -0.5, 0.5, 0.0, 0.0)
    seen = _grid(-0.04, 0.04, -0.04, 0.0, 0.01, 0.10)  # the half of the mug the views saw
    unseen_half = _grid(-0.04, 0.04, 0.01, 0.04, 0.01, 0.10)  # its back, in no mask
    far = np.array([[0.3, 0.3, 0.05]])  # unseen, but far from the mug
    pts = np.concatenate([table, seen, unseen_half, far])
    n_t, n_s, n_u = table.shape[0], seen.shape[0], unseen_half.shape[0]
    obj_idx = n_t + np.arange(n_s)
    unseen_idx = np.concatenate([np.arange(n_t), n_t + n_s + np.arange(n_u + 1)])  # table, back, far point
    added = complete_object(pts, obj_idx, unseen_idx, voxel_size_m=0.02, margin_m=0.05)
    back = n_t + n_s + np.arange(n_u)
    assert set(added.tolist()) <= set(back.tolist())  # no table point, not the far point
    # The whole back above the table's slab (within a voxel of the support, unseen points are left out).
    # (the mug's bottom at 1 cm, a 2 cm voxel: rows at 1 and 2 cm go, from 4 cm up all stay; 3 cm is the boundary)
    z = unseen_half[:, 2]
    assert set(back[z > 0.035].tolist()) <= set(added.tolist()) <= set(back[z > 0.025].tolist())
    assert complete_object(pts, obj_idx, unseen_idx, 0.02, margin_m=0.0).shape == (0,)
