"""The floor grid on hand-built maps: free / occupied / unknown kept apart, the floor found, map_server files."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.mapping.occupancy import (FREE, FREE_THRESH, OCCUPIED, UNKNOWN, OccupancyConfig, OccupancyGrid2D,
                                       OccupancyGridSource, build_occupancy_grid, clearance_m, estimate_floor_z,
                                       floor_holes, read_map_server, save_map_server)
from mllm3d_ros.core.types import MapSnapshot

UP, SIDE = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)


def plane(x0, x1, y0, y1, z, step=0.02, normal=UP):
    xs, ys = np.meshgrid(np.arange(x0, x1, step) + step / 2, np.arange(y0, y1, step) + step / 2)
    pts = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, z)], axis=1)
    return pts, np.tile(normal, (len(pts), 1))


def column(x, y, z0, z1, step=0.02):
    zs = np.arange(z0, z1, step)
    return np.stack([np.full(zs.size, x), np.full(zs.size, y), zs], axis=1), np.tile(SIDE, (zs.size, 1))


def snapshot(*parts):
    pts = np.concatenate([p for p, _ in parts]).astype(np.float32)
    normals = np.concatenate([n for _, n in parts]).astype(np.float32)
    return MapSnapshot(pts, np.zeros(pts.shape, np.uint8), normals, 7)


def kitchen_like():
    """Floor at z = 0.3 over x, y in [0, 3) except a hole x in [2, 3), y in [2, 3) never seen; a table top at
    1.05 (0.75 above the floor) over [1, 1.6) x [1, 1.6); a 2 cm leg at (0.51, 2.51); a 1 cm rug edge."""
    floor_a = plane(0.0, 3.0, 0.0, 2.0, 0.3)
    floor_b = plane(0.0, 2.0, 2.0, 3.0, 0.3)
    top = plane(1.0, 1.6, 1.0, 1.6, 1.05)
    leg = column(0.51, 2.51, 0.3, 1.0)
    rug = plane(0.0, 0.5, 0.0, 0.5, 0.31)
    return snapshot(floor_a, floor_b, top, leg, rug)


def value_at(grid, x, y):
    r, c = grid.cell_of(np.array([[x, y]]))[0]
    return int(grid.data[r, c])


def test_free_occupied_and_unknown_are_kept_apart():
    grid = build_occupancy_grid(kitchen_like())
    assert grid.floor_z_m == pytest.approx(0.3, abs=0.01)
    assert grid.resolution_m == 0.05 and grid.stamp_ns == 7
    assert value_at(grid, 0.5, 1.0) == FREE  # floor seen, nothing in the band
    assert value_at(grid, 0.2, 0.2) == FREE  # a 1 cm rug is below the band: driven over
    assert value_at(grid, 1.3, 1.3) == OCCUPIED  # under the table top (the floor there is seen too)
    assert value_at(grid, 0.51, 2.51) == OCCUPIED  # a 2 cm leg occupies its cell
    assert value_at(grid, 0.6, 2.6) == FREE  # the cell next to the leg
    assert value_at(grid, 2.5, 2.5) == UNKNOWN  # floor never seen: unknown, not free
    # Cell boundaries on multiples of the resolution; the map is inside the grid with a margin.
    assert np.allclose(np.round(np.array(grid.origin_xy_m) / 0.05) * 0.05, grid.origin_xy_m, atol=1e-9)
    assert value_at(grid, -0.02, 1.0) == UNKNOWN
    counts = grid.counts()
    assert counts["free"] + counts["occupied"] + counts["unknown"] == grid.data.size


def test_the_band_of_heights_decides_what_is_an_obstacle():
    snap = kitchen_like()
    low = build_occupancy_grid(snap, OccupancyConfig(max_height_m=0.5))  # a robot 0.5 m tall passes under the table
    assert value_at(low, 1.3, 1.3) == FREE
    assert value_at(low, 0.51, 2.51) == OCCUPIED
    rug = build_occupancy_grid(snap, OccupancyConfig(floor_tolerance_m=0.005, min_height_m=0.008))
    assert value_at(rug, 0.2, 0.2) == OCCUPIED  # with the band starting at 8 mm the rug is an obstacle


def test_empty_map_gives_an_empty_grid_and_no_floor_gives_all_unknown():
    empty = MapSnapshot(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), None, 0)
    grid = build_occupancy_grid(empty)
    assert grid.is_empty and grid.shape == (0, 0) and grid.floor_z_m is None
    assert clearance_m(grid).shape == (0, 0)
    wall = snapshot((plane(0.0, 2.0, 0.0, 2.0, 0.0, normal=SIDE)[0][:, [2, 0, 1]], np.tile(SIDE, (10000, 1))))
    grid = build_occupancy_grid(wall)
    assert grid.floor_z_m is None and np.all(grid.data == UNKNOWN) and grid.data.size > 0


def test_floor_is_the_lowest_large_horizontal_surface():
    pts, normals = kitchen_like().points_world_m, kitchen_like().normals_world
    assert estimate_floor_z(pts, normals) == pytest.approx(0.3, abs=0.01)
    # A small patch below the floor (a stray reflection, 0.04 m^2) is not the floor; a 0.6 m^2 one is.
    small = snapshot((pts, normals), plane(0.0, 0.2, 0.0, 0.2, -0.5))
    assert estimate_floor_z(small.points_world_m, small.normals_world) == pytest.approx(0.3, abs=0.01)
    large = snapshot((pts, normals), plane(0.0, 1.0, 0.0, 0.6, -0.5))
    assert estimate_floor_z(large.points_world_m, large.normals_world) == pytest.approx(-0.5, abs=0.01)
    # Only the table top seen, smaller than min_floor_area_m2: no floor yet.
    top = snapshot(plane(1.0, 1.6, 1.0, 1.6, 1.05))
    assert estimate_floor_z(top.points_world_m, top.normals_world) is None


def test_map_server_files_load_back_with_map_servers_rule(tmp_path):
    grid = build_occupancy_grid(kitchen_like())
    yaml_path, pgm_path = save_map_server(grid, tmp_path / "maps" / "kitchen")
    assert yaml_path.name == "kitchen.yaml" and pgm_path.name == "kitchen.pgm"
    text = yaml_path.read_text()
    for line in ("image: kitchen.pgm", "mode: trinary", "resolution: 0.05", "negate: 0", "occupied_thresh: 0.65",
                 f"free_thresh: {FREE_THRESH}"):
        assert line in text
    raw = pgm_path.read_bytes()
    assert raw.startswith(f"P5\n{grid.shape[1]} {grid.shape[0]}\n255\n".encode())
    pixels = np.frombuffer(raw[-grid.data.size:], np.uint8).reshape(grid.shape)
    assert set(np.unique(pixels)) == {0, 205, 254}
    # The image's first row is the grid's top row (largest y).
    np.testing.assert_array_equal(pixels[0] == 254, grid.data[-1] == FREE)
    back = read_map_server(yaml_path)
    np.testing.assert_array_equal(back.data, grid.data)
    assert back.origin_xy_m == pytest.approx(grid.origin_xy_m) and back.resolution_m == grid.resolution_m
    # With nav2 map_saver's free_thresh 0.25 the unknown grey (205: occ 0.196) would load as free.
    assert 1 - 205 / 255 < 0.25 and 1 - 205 / 255 > FREE_THRESH


def test_saving_an_empty_grid_writes_one_unknown_cell(tmp_path):
    yaml_path, _ = save_map_server(OccupancyGrid2D.empty(0.05), tmp_path / "empty.yaml")
    back = read_map_server(yaml_path)
    assert back.shape == (1, 1) and back.data[0, 0] == UNKNOWN


def test_clearance_counts_unknown_and_the_grid_border_as_not_free():
    data = np.full((9, 9), FREE, np.int8)
    data[4, 8] = OCCUPIED
    grid = OccupancyGrid2D(data, 0.1, (0.0, 0.0), 0.0)
    clear = clearance_m(grid)
    assert clear[4, 8] == 0.0
    # A lower bound within 1.2 cm of the exact distance from the centre to the nearest non-free square: 0.35 m
    # to the occupied cell (3.5 cells), 0.05 m from a corner cell to the unknown outside the grid.
    assert 0.35 - 0.012 <= clear[4, 4] <= 0.35
    assert 0.05 - 0.012 <= clear[0, 0] <= 0.05


def test_clearance_is_measured_to_the_obstacle_points_not_to_the_edges_of_their_cells():
    # Floor over [0, 2) x [0, 1), a 2 cm post at x = 1.44, y = 0.51 (deep in the cell [1.40, 1.45)).
    grid = build_occupancy_grid(snapshot(plane(0.0, 2.0, 0.0, 1.0, 0.0), column(1.44, 0.51, 0.0, 0.8)))
    post_cell = tuple(grid.cell_of(np.array([[1.44, 0.51]]))[0])
    assert grid.data[post_cell] == OCCUPIED
    np.testing.assert_allclose(grid.obstacle_xy_m, np.tile((1.44, 0.51), (len(grid.obstacle_xy_m), 1)), atol=1e-6)
    r, c = grid.cell_of(np.array([[1.025, 0.525]]))[0]
    # From the cell centre (1.025, 0.525) to the post: 0.415 m; to the post's cell edge it would be 0.375 m.
    exact = np.hypot(1.44 - 1.025, 0.51 - 0.525)
    assert exact - 0.015 <= clearance_m(grid)[r, c] <= exact and clearance_m(grid)[r, c] > 0.375 + 0.02
    # A grid without obstacle points (read from a map_server file) keeps the whole cell as the obstacle.
    cells_only = OccupancyGrid2D(grid.data, grid.resolution_m, grid.origin_xy_m, grid.floor_z_m)
    assert 0.375 - 0.012 <= clearance_m(cells_only)[r, c] <= 0.375


def test_an_unknown_patch_enclosed_by_seen_floor_is_a_floor_hole_but_a_shadow_or_the_edge_is_not():
    data = np.full((20, 20), FREE, np.int8)
    data[8:11, 8:12] = UNKNOWN            # enclosed by free floor: a hole
    data[2:4, 14:17] = UNKNOWN            # next to an obstacle: its shadow
    data[4, 15] = OCCUPIED
    data[15:20, 0:3] = UNKNOWN            # open to the unseen outside of the grid
    data[14, 14] = UNKNOWN                # one cell, diagonal to an obstacle
    data[15, 15] = OCCUPIED
    grid = OccupancyGrid2D(data, 0.1, (0.0, 0.0), 0.0)
    holes = floor_holes(grid)
    expected = np.zeros_like(holes)
    expected[8:11, 8:12] = True
    np.testing.assert_array_equal(holes, expected)
    clear = clearance_m(grid)
    # The hole neither stops the clearance of the floor around it nor has none itself; the shadow does.
    assert clear[9, 9] > 0.45 and clear[9, 13] > 0.4  # (an obstacle 0.47 m away, the hole 0.05 m)
    assert clear[3, 13] <= 0.05
    assert floor_holes(OccupancyGrid2D.empty(0.05)).shape == (0, 0)


def test_grid_source_rebuilds_only_when_the_snapshot_changes():
    class Source:
        def __init__(self):
            self.snap = kitchen_like()

        def snapshot(self):
            return self.snap

    source = Source()
    grids = OccupancyGridSource(source)
    first = grids.grid()
    assert grids.grid() is first
    source.snap = kitchen_like()
    assert grids.grid() is not first


@pytest.mark.parametrize("field,value", [("resolution_m", 0.0), ("min_height_m", 0.02), ("max_height_m", 0.01),
                                         ("min_floor_area_m2", 0.0), ("min_occupied_points", 0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        OccupancyConfig(**{field: value})
