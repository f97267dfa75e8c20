"""Relations decided on gravity-aligned boxes, with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.query.instruction import Relation, Superlative
from mllm3d_ros.core.query.relations import relation_score, superlative_order, viewer_axes
from mllm3d_ros.core.types import OrientedBox3D

TABLE = OrientedBox3D(np.array([0.0, 0.0, 0.375]), np.eye(3), np.array([1.2, 0.8, 0.75]))


def box(x, y, z, size=0.1):
    return OrientedBox3D(np.array([x, y, z]), np.eye(3), np.full(3, size))


def test_on_under_above_inside():
    mug_on = box(0.2, 0.1, 0.80)  # bottom at 0.75: on the table
    mug_floor = box(1.5, 0.0, 0.05)
    cat_under = box(0.0, 0.0, 0.2)
    assert np.isfinite(relation_score(mug_on, [TABLE], Relation.ON))
    assert not np.isfinite(relation_score(mug_floor, [TABLE], Relation.ON))
    assert np.isfinite(relation_score(cat_under, [TABLE], Relation.UNDER))
    assert not np.isfinite(relation_score(mug_on, [TABLE], Relation.UNDER))
    assert np.isfinite(relation_score(box(0.0, 0.0, 1.2), [TABLE], Relation.ABOVE))
    assert np.isfinite(relation_score(cat_under, [TABLE], Relation.INSIDE))


def test_left_right_front_behind_follow_the_viewer():
    # A camera at y = -3 looking along +y: its right is +x, its forward +y (optical x right, z forward).
    world_T_camera = np.eye(4)
    world_T_camera[:3, :3] = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    world_T_camera[:3, 3] = (0.0, -3.0, 1.0)
    right, forward = viewer_axes(world_T_camera)
    np.testing.assert_allclose(right, [1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(forward, [0, 1, 0], atol=1e-9)
    anchor = [box(0.0, 0.0, 0.5)]
    assert np.isfinite(relation_score(box(-1.0, 0.0, 0.5), anchor, Relation.LEFT_OF, world_T_camera))
    assert not np.isfinite(relation_score(box(-1.0, 0.0, 0.5), anchor, Relation.RIGHT_OF, world_T_camera))
    assert np.isfinite(relation_score(box(0.0, -1.0, 0.5), anchor, Relation.IN_FRONT_OF, world_T_camera))
    assert np.isfinite(relation_score(box(0.0, 1.0, 0.5), anchor, Relation.BEHIND, world_T_camera))


def test_near_ranks_by_gap_and_between_needs_the_segment():
    anchor = [box(0.0, 0.0, 0.0)]
    assert relation_score(box(0.3, 0, 0), anchor, Relation.NEAR) > relation_score(box(1.0, 0, 0), anchor, Relation.NEAR)
    assert relation_score(box(1.0, 0, 0), anchor, Relation.FARTHEST_FROM) > 0.8
    ends = [box(-1.0, 0.0, 0.0), box(1.0, 0.0, 0.0)]
    assert relation_score(box(0.0, 0.1, 0.0), ends, Relation.BETWEEN) == pytest.approx(-0.1)
    assert not np.isfinite(relation_score(box(2.0, 0.0, 0.0), ends, Relation.BETWEEN))


def test_superlatives():
    boxes = [box(0.0, 0, 0, 0.1), box(-1.0, 0, 0, 0.3), box(1.0, 0, 0, 0.2)]
    assert superlative_order(boxes, Superlative.BIGGEST) == [1, 2, 0]
    assert superlative_order(boxes, Superlative.LEFTMOST) == [1, 0, 2]
    assert superlative_order(boxes, Superlative.RIGHTMOST)[0] == 2


def test_a_big_box_is_under_the_small_mug_on_it():
    # The relation is judged on the smaller footprint: the mug covers a tenth of the box's, all of its own.
    crate = OrientedBox3D(np.array([0.0, 0.0, 0.2]), np.eye(3), np.array([0.5, 0.5, 0.4]))
    mug = box(0.1, 0.05, 0.45)
    assert np.isfinite(relation_score(crate, [mug], Relation.UNDER))
    assert np.isfinite(relation_score(mug, [crate], Relation.ON))
    assert not np.isfinite(relation_score(crate, [box(1.0, 0.0, 0.45)], Relation.UNDER))


def test_between_means_between_the_anchors_facing_sides_not_on_an_anchor():
    bottle, crate = box(-1.0, 0.0, 0.5), OrientedBox3D(np.array([1.0, 0.0, 0.2]), np.eye(3), np.array([0.6, 0.6, 0.4]))
    on_crate = box(0.85, 0.0, 0.45)  # over the crate: its centre projects inside the centre-to-centre segment
    assert not np.isfinite(relation_score(on_crate, [bottle, crate], Relation.BETWEEN))
    assert relation_score(box(0.2, 0.05, 0.5), [bottle, crate], Relation.BETWEEN) == pytest.approx(-0.05)
    # anchors overlapping along the segment: centre to centre
    assert np.isfinite(relation_score(box(0.1, 0.0, 0.0), [box(0.0, 0, 0, 0.5), box(0.2, 0, 0, 0.5)], Relation.BETWEEN))


def test_at_the_end_of_an_elongated_anchor():
    # TABLE is 1.2 m long in x, 0.8 m wide in y (yaw 0); rotated by 90 degrees its long axis is y.
    mug_at_end = box(0.5, 0.1, 0.80)  # on the table, 0.5 of its 0.6 m half-length out
    mug_middle = box(0.1, 0.1, 0.80)
    chair_at_head = box(-0.85, 0.0, 0.45, 0.45)  # a seat's depth beyond the short side
    chair_along_side = box(0.45, 0.7, 0.45, 0.45)  # along a long side near the corner
    chair_far = box(-2.0, 0.0, 0.45, 0.45)  # past the end but across the room
    scores = {name: relation_score(b, [TABLE], Relation.AT_END_OF) for name, b in
              dict(mug_at_end=mug_at_end, mug_middle=mug_middle, chair_at_head=chair_at_head,
                   chair_along_side=chair_along_side, chair_far=chair_far).items()}
    assert np.isfinite(scores["mug_at_end"]) and np.isfinite(scores["chair_at_head"])
    assert scores["mug_middle"] == scores["chair_along_side"] == scores["chair_far"] == -np.inf
    yaw90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turned = OrientedBox3D(TABLE.center_world_m, yaw90, TABLE.size_m)  # long axis along world y now
    assert relation_score(box(0.0, 0.5, 0.80), [turned], Relation.AT_END_OF) > -np.inf
    assert relation_score(mug_at_end, [turned], Relation.AT_END_OF) == -np.inf  # now beside its long side


def test_at_the_end_of_ranks_by_the_ground_gap_not_by_height():
    # Two mugs at the table's end, one standing a centimetre lower in the map (its bottom inside the top): neither is
    # more "at the end" than the other; the candidates' own ranking orders them (the 30 Hz kitchen put a sliver of a
    # mug first by 1.5 cm of height).
    high, low = box(0.5, 0.1, 0.81), box(0.5, 0.1, 0.79)
    assert relation_score(high, [TABLE], Relation.AT_END_OF) == relation_score(low, [TABLE], Relation.AT_END_OF) == 0.0
    # Beside the end on the ground plane: ranked by that gap.
    assert relation_score(box(0.68, 0.1, 0.8), [TABLE], Relation.AT_END_OF) == pytest.approx(-0.03)
