"""Support surfaces of hand-built clouds: floor, table top and shelf found at their heights; a wall or a
tilting plane gives none; the SupportMap merges views and names what a box stands on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cloud_scene import box_cloud, merge, plane_cloud, table, wall_cloud
from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.memory.supports import SupportConfig, SupportMap, cell_keys, find_supports
from mllm3d_ros.core.types import OrientedBox3D, SupportKind


def _room():
    floor = plane_cloud((-1.0, -1.0), (2.0, 2.0), 0.0)
    shelf = box_cloud((1.5, -0.8, 1.18), (1.9, 0.2, 1.2), (90, 90, 90), faces="xXyYZ")  # a board on the wall
    return merge(floor, table(0.0, 0.0, 1.2, 0.8, 0.75), shelf, wall_cloud(1.95, -1.0, 2.0, 2.4))


def test_floor_table_top_and_shelf_are_found_at_their_heights():
    pts, _, nrm = _room()
    det = find_supports(pts, nrm, floor_height_m=0.0)
    heights = [round(s.height_m, 3) for s in det.surfaces]
    assert heights == pytest.approx([0.0, 0.75, 1.2], abs=0.005)
    assert [s.kind for s in det.surfaces] == [SupportKind.FLOOR, SupportKind.ELEVATED, SupportKind.ELEVATED]
    top = det.surfaces[1]
    assert top.area_m2 == pytest.approx(1.2 * 0.8, rel=0.15)
    (x0, y0), (x1, y1) = top.bounds_xy_m
    assert (x0, y0) == pytest.approx((0.0, 0.0), abs=0.06) and (x1, y1) == pytest.approx((1.2, 0.8), abs=0.06)
    assert top.contains_xy(np.array([[0.6, 0.4], [1.6, 0.4]])).tolist() == [True, False]
    assert det.tilted == ()
    # Without a known floor every surface is ELEVATED; the wall is none of them.
    assert all(s.kind is SupportKind.ELEVATED for s in find_supports(pts, nrm).surfaces)


def test_a_wall_or_a_ceiling_alone_gives_no_support():
    pts, _, nrm = wall_cloud(1.0, -1.0, 1.0, 2.5)
    assert find_supports(pts, nrm).surfaces == ()
    pts, _, nrm = plane_cloud((-1.0, -1.0), (1.0, 1.0), 2.5)
    assert find_supports(pts, -nrm).surfaces == ()  # facing down
    assert find_supports(pts, None).surfaces == ()  # no normals: nothing to tell up from down
    assert find_supports(np.zeros((0, 3)), np.zeros((0, 3))).surfaces == ()


def test_a_tilting_plane_is_reported_and_not_a_support():
    pts, _, nrm = plane_cloud((-1.0, -1.0), (1.0, 1.0), 0.0, tilt_deg=12.0)
    det = find_supports(pts, nrm)
    assert det.surfaces == ()
    (tilt, area), = det.tilted
    assert tilt == pytest.approx(12.0, abs=0.1) and area == pytest.approx(4.0, rel=0.1)
    # A small slanted patch (a book rest) is not reported: only a large one says the gravity is off.
    pts, _, nrm = plane_cloud((0.0, 0.0), (0.3, 0.3), 0.8, tilt_deg=12.0)
    assert find_supports(pts, nrm).tilted == ()


def test_a_slightly_uneven_table_top_is_one_plane_with_its_slope():
    pts, _, nrm = plane_cloud((0.0, 0.0), (2.0, 1.0), 0.75, tilt_deg=1.0)
    surface, = find_supports(pts, nrm).surfaces
    assert surface.slope_xy[1] == pytest.approx(np.tan(np.radians(1.0)), abs=1e-3)
    np.testing.assert_allclose(surface.height_at(np.array([[1.0, 0.0], [1.0, 1.0]])),
                               [0.75 - 0.5 * np.tan(np.radians(1.0)), 0.75 + 0.5 * np.tan(np.radians(1.0))], atol=2e-3)


def test_the_footprint_covers_what_stands_on_the_surface():
    # A table top with a 30 x 30 cm hole where a box stands (the map sees the box's top, not the table there).
    top = plane_cloud((0.0, 0.0), (1.2, 0.8), 0.75)
    hole = np.all((top[0][:, :2] > [0.45, 0.25]) & (top[0][:, :2] < [0.75, 0.55]), axis=1)
    pts, nrm = top[0][~hole], top[2][~hole]
    surface, = find_supports(pts, nrm).surfaces
    assert surface.contains_xy(np.array([[0.6, 0.4]]))[0]


def test_support_map_merges_views_and_names_the_support_of_a_box():
    pts, _, nrm = _room()
    supports = SupportMap()
    det = find_supports(pts, nrm)
    supports.update(det.surfaces)
    # The same table top seen again, 1 cm lower, in another view: the same id.
    ids = [s.support_id for s in supports.surfaces()]
    supports.update([dataclasses.replace(det.surfaces[1], height_m=det.surfaces[1].height_m - 0.01)])
    assert [s.support_id for s in supports.surfaces()] == ids and len(supports) == 3
    assert supports.floor_height_m() == pytest.approx(0.0, abs=0.005)
    floor, top, shelf = supports.surfaces()
    assert (floor.kind, top.kind, shelf.kind) == (SupportKind.FLOOR, SupportKind.ELEVATED, SupportKind.ELEVATED)
    mug = OrientedBox3D(np.array([0.6, 0.4, 0.8]), np.eye(3), np.array([0.08, 0.08, 0.1]))
    ref = supports.support_of(mug)
    assert (ref.support_id, ref.kind) == (top.support_id, SupportKind.ELEVATED)
    assert ref.height_m == pytest.approx(0.745, abs=0.006)
    chair = OrientedBox3D(np.array([-0.5, 1.5, 0.45]), np.eye(3), np.array([0.4, 0.4, 0.9]))
    assert supports.support_of(chair).kind is SupportKind.FLOOR
    floating = OrientedBox3D(np.array([0.6, 0.4, 1.7]), np.eye(3), np.array([0.1, 0.1, 0.1]))
    assert supports.support_of(floating) is None
    # The table seen from above only (its instance holds the top): its top is not what it stands on.
    table_top = OrientedBox3D(np.array([0.6, 0.4, 0.74]), np.eye(3), np.array([1.2, 0.8, 0.03]))
    assert supports.support_of(table_top) is None
    supports.reset()
    assert supports.surfaces() == () and supports.floor_height_m() is None


def test_support_map_is_bounded():
    supports = SupportMap(SupportConfig(max_supports=3))
    for k in range(6):
        pts, _, nrm = plane_cloud((3.0 * k, 0.0), (3.0 * k + 0.5, 0.5), 0.5 + 0.1 * k)
        supports.update(find_supports(pts, nrm).surfaces)
    assert len(supports) == 3
    assert sorted(round(s.height_m, 2) for s in supports.surfaces()) == [0.8, 0.9, 1.0]  # the newest kept


def test_cell_keys_round_trip_and_config_errors_name_the_field():
    keys = cell_keys(np.array([[0.01, -0.01], [-3.2, 4.4], [0.04, -0.04]]), 0.05)
    assert keys[0] == keys[2] and keys[0] != keys[1]
    with pytest.raises(ConfigError, match="max_tilt_deg"):
        SupportConfig(max_tilt_deg=0.0)
    with pytest.raises(ConfigError, match="cell_m"):
        SupportConfig(cell_m=2.0)
