"""Class-agnostic objects from hand-built clouds: what stands on a support, split by colour and concave
creases, kept whole otherwise; rendered into ray-cast views with a depth test; bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cloud_scene import box_cloud, merge, plane_cloud, snapshot, table, wall_cloud
from mllm3d_ros.core.memory.map_objects import (MapObjectConfig, MapObjectProposer, chain_proposers, lab_colours,
                                                render_masks, segment_map_objects, split_row)
from mllm3d_ros.core.memory.supports import find_supports
from mllm3d_ros.core.types import UNLABELLED, InputError, Keyframe, Prediction2D, SupportKind, ViewPredictions, keyframe_view
from test_voting import BOX_A, BOX_B, FLOOR, INTRINSICS, look_at, render

RED, WHITE, GREY = (200, 30, 30), (235, 235, 235), (128, 128, 128)


def _segment(cloud, floor=0.0):
    pts, col, nrm = cloud
    det = find_supports(pts, nrm, floor_height_m=floor)
    return pts, segment_map_objects(pts, col, nrm, det), det


def _on(pts, seg, lo, hi):
    """The objects holding points inside [lo, hi] (indices into seg.objects)."""
    inside = np.all((pts >= np.asarray(lo) - 1e-6) & (pts <= np.asarray(hi) + 1e-6), axis=1)
    return [k for k, o in enumerate(seg.objects) if inside[o.indices].any()]


def _scene(*objects):
    return merge(plane_cloud((-1.0, -1.0), (2.2, 1.8), 0.0), table(0.0, 0.0, 1.2, 0.8, 0.75), *objects)


def test_two_touching_objects_of_different_colour_are_two_and_the_table_is_a_third():
    red = box_cloud((0.30, 0.30, 0.75), (0.45, 0.45, 0.85), RED, faces="xyYZ")   # its +x face touches the white box
    white = box_cloud((0.45, 0.30, 0.75), (0.65, 0.50, 0.90), WHITE, faces="XyYZ")
    pts, seg, det = _segment(_scene(red, white))
    table_index = next(i for i, s in enumerate(det.surfaces) if abs(s.height_m - 0.75) < 0.01)
    on_table = [o for o in seg.objects if o.support_index == table_index]
    assert len(on_table) == 2
    red_obj, = _on(pts, seg, (0.3, 0.3, 0.78), (0.44, 0.45, 0.85))
    white_obj, = _on(pts, seg, (0.46, 0.3, 0.78), (0.65, 0.5, 0.9))
    assert red_obj != white_obj
    # Each holds its own points only, from 2 cm above the table top up.
    for k, (lo, hi) in ((red_obj, ((0.3, 0.3, 0.77), (0.45, 0.45, 0.85))), (white_obj, ((0.45, 0.3, 0.77), (0.65, 0.5, 0.9)))):
        p = pts[seg.objects[k].indices]
        assert np.all((p >= np.asarray(lo) - 1e-3) & (p <= np.asarray(hi) + 1e-3))
    # The table (top and legs) stands on the floor, one object apart from what is on it.
    table_obj, = [o for o in seg.objects if o.support_index == -1]
    assert pts[table_obj.indices, 2].max() == pytest.approx(0.75, abs=0.011)
    assert pts[table_obj.indices, 2].min() < 0.1
    assert seg.surface[table_obj.indices].any()  # its top is the surface the boxes stand on


def test_one_object_stays_one_whatever_its_parts_colours():
    # A grey box with a red lid: the lid does not reach down to the table, so it joins the box.
    body = box_cloud((0.3, 0.3, 0.75), (0.5, 0.5, 0.85), GREY, faces="xXyY")
    lid = box_cloud((0.3, 0.3, 0.85), (0.5, 0.5, 0.87), RED, faces="xXyYZ")
    pts, seg, _ = _segment(_scene(body, lid))
    assert len(_on(pts, seg, (0.3, 0.3, 0.77), (0.5, 0.5, 0.87))) == 1
    # A uniformly coloured box is one object too.
    pts, seg, _ = _segment(_scene(box_cloud((0.3, 0.3, 0.75), (0.5, 0.5, 0.9), WHITE, faces="xXyYZ")))
    assert len(_on(pts, seg, (0.3, 0.3, 0.77), (0.5, 0.5, 0.9))) == 1


def test_same_coloured_objects_side_by_side_are_split_at_their_concave_crease():
    a = box_cloud((0.30, 0.30, 0.75), (0.44, 0.50, 0.90), WHITE, faces="xXyYZ")
    b = box_cloud((0.46, 0.30, 0.75), (0.60, 0.50, 0.90), WHITE, faces="xXyYZ")  # faces 2 cm apart, facing
    pts, seg, _ = _segment(_scene(a, b))
    assert len(_on(pts, seg, (0.3, 0.3, 0.77), (0.6, 0.5, 0.9))) == 2
    # Without the normal cue the voxels (2 cm) join them.
    no_normals = segment_map_objects(pts, merge(_scene(a, b))[1], None, find_supports(pts, merge(_scene(a, b))[2],
                                                                                     floor_height_m=0.0))
    assert len(_on(pts, no_normals, (0.3, 0.3, 0.77), (0.6, 0.5, 0.9))) == 1


def test_a_chair_back_over_its_seat_is_part_of_the_chair():
    seat = box_cloud((1.5, -0.7, 0.42), (1.9, -0.3, 0.46), (110, 80, 60), faces="xXyYZ")
    back = box_cloud((1.86, -0.7, 0.46), (1.9, -0.3, 0.9), (110, 80, 60), faces="xXyYZ")
    legs = [box_cloud((x, y, 0.0), (x + 0.04, y + 0.04, 0.42), (110, 80, 60), faces="xXyY")
            for x in (1.5, 1.86) for y in (-0.7, -0.34)]
    pts, seg, det = _segment(merge(plane_cloud((-1.0, -1.0), (2.2, 1.8), 0.0), seat, back, legs))
    assert any(abs(s.height_m - 0.46) < 0.01 for s in det.surfaces)  # the seat is a surface things could stand on
    chair, = _on(pts, seg, (1.5, -0.7, 0.0), (1.9, -0.3, 0.9))
    assert seg.objects[chair].support_index == -1 and pts[seg.objects[chair].indices, 2].max() > 0.85


def test_a_table_top_seen_only_from_above_rests_on_its_legs():
    # Legs inset 10 cm and a 4 cm top whose underside no camera saw: top and legs share no voxel.
    top = box_cloud((0.0, 0.0, 0.71), (1.2, 0.8, 0.75), (150, 110, 70), faces="xXyYZ")
    legs = [box_cloud((x, y, 0.0), (x + 0.05, y + 0.05, 0.66), (150, 110, 70), faces="xXyY")
            for x in (0.1, 1.05) for y in (0.1, 0.65)]
    pts, seg, _ = _segment(merge(plane_cloud((-1.0, -1.0), (2.2, 1.8), 0.0), top, legs))
    table_obj, = _on(pts, seg, (0.0, 0.0, 0.0), (1.2, 0.8, 0.75))
    held = pts[seg.objects[table_obj].indices]
    assert held[:, 2].max() == pytest.approx(0.75, abs=0.011) and held[:, 2].min() < 0.1


def test_no_horizontal_support_gives_no_object():
    ceiling = plane_cloud((-1.0, -1.0), (1.0, 1.0), 2.5)
    ceiling = (ceiling[0], ceiling[1], -ceiling[2])  # facing down
    lamp = box_cloud((0.0, 0.0, 2.2), (0.2, 0.2, 2.5), WHITE, faces="xXyYz")  # hanging: no top face seen
    for cloud in (wall_cloud(1.0, -1.0, 1.0, 2.5), merge(wall_cloud(1.0, -1.0, 1.0, 2.5), ceiling, lamp)):
        pts, seg, det = _segment(cloud, floor=None)
        assert det.surfaces == () and seg.objects == ()
    # A floor with only a wall on it: the wall is structure, not an object.
    pts, seg, _ = _segment(merge(plane_cloud((-1.0, -1.0), (1.0, 1.0), 0.0), wall_cloud(0.9, -1.0, 1.0, 2.5)))
    assert seg.objects == () and seg.wall.sum() > 1000


def _box_views(eyes):
    """Ray-cast views of test_voting's two cubes on the floor, and the map cloud of that scene."""
    cloud = merge(box_cloud(FLOOR[0], FLOOR[1], GREY, faces="Z"), box_cloud(*BOX_A, RED, faces="xXyYZ"),
                  box_cloud(*BOX_B, WHITE, faces="xXyYZ"))
    views = []
    for k, eye in enumerate(eyes):
        pose = look_at(eye, (1.0, 0.0, 0.2))
        depth, box_id = render(pose, (FLOOR, BOX_A, BOX_B))
        views.append((Keyframe(k, k, pose, INTRINSICS, np.zeros(depth.shape + (3,), np.uint8), depth), box_id - 1))
    return cloud, views


def test_proposer_renders_each_object_where_the_view_sees_it():
    cloud, views = _box_views([(-0.6, 0.0, 1.3), (1.0, -2.6, 0.25)])
    proposer = MapObjectProposer(lambda: snapshot(cloud))
    (kf, box_id), (kf_low, box_id_low) = views
    out, = proposer.propose([keyframe_view(kf)])
    assert out.keyframe_id == 0 and len(out.predictions) == 2
    assert all(p.label == UNLABELLED and p.geometric and p.embedding.shape == (0,) for p in out.predictions)
    # The floor, and the two cubes' tops (something could stand on them).
    assert [(s.kind, round(s.height_m, 2)) for s in out.supports] == [(SupportKind.FLOOR, 0.0),
                                                                       (SupportKind.ELEVATED, 0.4), (SupportKind.ELEVATED, 0.4)]
    for k in (0, 1):
        truth = box_id == k
        iou = max((p.mask & truth).sum() / (p.mask | truth).sum() for p in out.predictions)
        assert iou > 0.75
    # Low, behind the first cube: the second is hidden and claims no pixel (the depth test).
    assert (box_id_low == 1).sum() == 0 and (box_id_low == 0).sum() > 200
    out, = proposer.propose([keyframe_view(kf_low)])
    assert len(out.predictions) == 1 and (out.predictions[0].mask & (box_id_low == 0)).sum() > 0.8 * out.predictions[0].mask.sum()
    assert proposer.stats.views == 2 and proposer.stats.objects_proposed == 3


def test_render_masks_skips_tiny_masks():
    cloud, views = _box_views([(-0.6, 0.0, 1.3)])
    pts, col, nrm = cloud
    seg = segment_map_objects(pts, col, nrm, find_supports(pts, nrm, floor_height_m=0.0))
    view = keyframe_view(views[0][0])
    assert len(render_masks(view, pts, seg)) == 2
    assert render_masks(view, pts, seg, MapObjectConfig(min_mask_pixels=100_000)) == []


def test_a_tilting_floor_is_logged_once_and_gives_no_object(caplog):
    cloud = merge(plane_cloud((-0.5, -1.5), (2.5, 1.5), 0.0, tilt_deg=10.0), box_cloud(*BOX_A, RED, faces="xXyYZ"))
    _, views = _box_views([(-0.6, 0.0, 1.3), (0.0, -1.6, 1.2)])
    proposer = MapObjectProposer(lambda: snapshot(cloud))
    with caplog.at_level(logging.WARNING, logger="mllm3d_ros.core.memory.map_objects"):
        for kf, _ in views:
            out, = proposer.propose([keyframe_view(kf)])
            # Nothing stands on the tilting floor; the cube's level top is the only surface.
            assert out.predictions == () and [round(s.height_m, 2) for s in out.supports] == [0.4]
    warnings = [r for r in caplog.records if "tilts" in r.getMessage()]
    assert len(warnings) == 1 and "gravity" in warnings[0].getMessage()
    assert proposer.stats.tilted_views == 2


def test_an_empty_map_or_a_view_without_depth_gives_nothing():
    _, views = _box_views([(-0.6, 0.0, 1.3)])
    empty = MapObjectProposer(lambda: snapshot((np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                                                np.zeros((0, 3), np.float32))))
    assert empty.propose([keyframe_view(views[0][0])])[0].predictions == ()


def test_chain_proposers_joins_every_source_per_view():
    cloud, views = _box_views([(-0.6, 0.0, 1.3)])
    kf, box_id = views[0]
    detector = lambda vs: tuple(ViewPredictions(v.keyframe_id, (Prediction2D(box_id == 0, 0.9, np.ones(4, np.float32) / 2,
                                                                               "cube"),)) for v in vs)
    out, = chain_proposers(detector, MapObjectProposer(lambda: snapshot(cloud)).propose)([keyframe_view(kf)])
    assert [p.label for p in out.predictions] == ["cube", UNLABELLED, UNLABELLED]
    assert out.supports[0].kind is SupportKind.FLOOR and len(out.supports) == 3
    with pytest.raises(RuntimeError, match="answered 0 views"):
        chain_proposers(lambda vs: ())([keyframe_view(kf)])


def test_config_errors_name_the_field():
    with pytest.raises(Exception, match="gap_m"):
        MapObjectConfig(gap_m=0.0)
    with pytest.raises(InputError, match="support"):
        MapObjectConfig(support="x")


# Rows of things side by side on a table top (z 0.75), along x from x = 0.19, their backs at y = 0.50 (a shelf's
# back). Their points lie on even centimetres, on the planes of the map's 2 cm voxel grid, as a fused map's do.
_ROW_COLOURS = ((170, 30, 30), (30, 60, 140), (30, 110, 60), (220, 180, 40), (110, 50, 120))


def _row(widths, heights, depths, colours, gap=0.0):
    parts, x = [], 0.19
    for k, (w, h, d, c) in enumerate(zip(widths, heights, depths, colours)):
        faces = "yZ" + ("x" if k == 0 else "") + ("X" if k == len(widths) - 1 else "")
        parts.append(box_cloud((x, 0.50 - d, 0.75), (x + w, 0.50, 0.75 + h), c, faces=faces))
        x += w + gap
    return parts


def _on_table(seg, det):
    table_index = next(i for i, s in enumerate(det.surfaces) if abs(s.height_m - 0.75) < 0.01)
    return [o for o in seg.objects if o.support_index == table_index]


def _pieces_per_member(pts, seg, det, widths, gap=0.0):
    """For each member of the row (by its x range, 1 cm in from each side), the table's objects holding its points."""
    on_table = _on_table(seg, det)
    out, x = [], 0.19
    for w in widths:
        inside = np.all((pts >= np.array([x + 0.01, 0.2, 0.77])) & (pts <= np.array([x + w - 0.01, 0.5, 1.2])), axis=1)
        out.append([k for k, o in enumerate(on_table) if inside[o.indices].any()])
        x += w + gap
    return out


def test_a_row_of_touching_boxes_of_different_colours_and_heights_is_one_object_each():
    widths, heights = (0.06, 0.08, 0.05, 0.07, 0.06), (0.20, 0.28, 0.16, 0.24, 0.19)
    pts, seg, det = _segment(_scene(*_row(widths, heights, (0.18,) * 5, _ROW_COLOURS)))
    assert len(_on_table(seg, det)) == 5
    members = _pieces_per_member(pts, seg, det, widths)
    assert all(len(m) == 1 for m in members) and len({m[0] for m in members}) == 5
    # The row split alone finds them too (the voxel rule cuts these colours already), by colour or by height.
    widths = (0.06, 0.08, 0.04, 0.06, 0.06)
    for colours, heights in ((_ROW_COLOURS, (0.20,) * 5), ([GREY] * 5, heights)):
        p, c, n = merge(*_row(widths, heights, (0.18,) * 5, colours))
        pieces = split_row(p, lab_colours(c), n, p[:, 2] - 0.73, MapObjectConfig())
        assert len(pieces) == 5
        # each member mostly in a piece of its own (a boundary column may go to the neighbour)
        starts = 0.19 + np.concatenate([[0.0], np.cumsum(widths)])
        member = np.clip(np.searchsorted(starts, p[:, 0], side="right") - 1, 0, 4)
        main = [np.bincount(member[k], minlength=5).argmax() for k in pieces]
        assert sorted(main) == [0, 1, 2, 3, 4]


def test_a_row_of_like_books_is_split_where_their_fronts_step():
    # Same colour, same height, touching: only the fronts (backs aligned, depths 15 / 22 cm) tell them apart.
    widths, depths = (0.06,) * 6, (0.15, 0.22, 0.15, 0.22, 0.15, 0.22)
    pts, seg, det = _segment(_scene(*_row(widths, (0.22,) * 6, depths, [RED] * 6)))
    members = _pieces_per_member(pts, seg, det, widths)
    assert all(len(m) == 1 for m in members) and len({m[0] for m in members}) == 6
    p, c, n = merge(*_row(widths, (0.22,) * 6, depths, [RED] * 6))
    assert len(split_row(p, lab_colours(c), n, p[:, 2] - 0.73, MapObjectConfig())) == 6  # the row split's front cue
    # Without normals there is no front to measure: one piece (nothing else steps).
    assert len(split_row(p, lab_colours(c), None, p[:, 2] - 0.73, MapObjectConfig())) == 1


def test_a_back_panel_behind_a_row_is_a_piece_of_its_own():
    widths = (0.06, 0.08, 0.04, 0.06, 0.06)
    panel = box_cloud((0.17, 0.50, 0.75), (0.53, 0.51, 1.21), (150, 110, 70), faces="y")  # looks to the front
    p, c, n = merge(*_row(widths, (0.20,) * 5, (0.18,) * 5, _ROW_COLOURS), panel)
    pieces = split_row(p, lab_colours(c), n, p[:, 2] - 0.73, MapObjectConfig())
    assert len(pieces) == 6
    on_panel = p[:, 1] > 0.495
    assert sum(bool(on_panel[k].all()) for k in pieces) == 1 and all(on_panel[k].all() or not on_panel[k].any()
                                                                     for k in pieces)


def test_one_long_uniform_object_is_not_cut():
    # A slab as long as a keyboard and as tall as a closed laptop, and a long box: nothing steps along them.
    for hi in ((0.65, 0.45, 0.80), (0.80, 0.50, 0.95)):
        pts, seg, det = _segment(_scene(box_cloud((0.20, 0.30, 0.75), hi, GREY, faces="xXyYZ")))
        assert len(_on_table(seg, det)) == 1


def test_a_compact_object_is_not_a_row():
    # Three boxes of different colours side by side, 24 cm long and 18 cm deep: not half again as long as deep, so
    # the row split leaves it to the other rules (a box, a bottle or a mug with a fringe of stray points is no row).
    p, c, n = merge(*_row((0.08,) * 3, (0.20, 0.28, 0.16), (0.18,) * 3, _ROW_COLOURS[:3]))
    assert len(split_row(p, lab_colours(c), n, p[:, 2] - 0.73, MapObjectConfig())) == 1


def test_colour_noise_does_not_split_a_row():
    # Five like books, touching, fronts flush, one colour with sensor noise (sd 6 per channel): nothing tells
    # them apart, and the noise must not invent a boundary. The row split alone (the voxel rule compares
    # single voxels and is not the one under test); with distinct colours it does cut.
    p, c, n = merge(*_row((0.06,) * 5, (0.22,) * 5, (0.18,) * 5, [(120, 90, 60)] * 5))
    noisy = np.clip(c + np.random.default_rng(3).normal(0.0, 6.0, c.shape), 0, 255).astype(np.uint8)
    rel = p[:, 2] - 0.75 + 0.02
    assert len(split_row(p, lab_colours(noisy), n, rel, MapObjectConfig())) == 1
    p, c, n = merge(*_row((0.06,) * 5, (0.22,) * 5, (0.18,) * 5, _ROW_COLOURS))
    noisy = np.clip(c + np.random.default_rng(3).normal(0.0, 6.0, c.shape), 0, 255).astype(np.uint8)
    assert len(split_row(p, lab_colours(noisy), n, rel, MapObjectConfig())) == 5
