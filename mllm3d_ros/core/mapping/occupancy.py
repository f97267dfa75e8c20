"""A 2D occupancy grid of the floor from the TSDF map's surface: what Nav2 plans on.

The map frame is z up (REP-103/105). The floor is the lowest horizontal surface of the map that covers
`min_floor_area_m2` (`estimate_floor_z`). A cell of `resolution_m` is
- OCCUPIED (100) when the map has an observed surface (a TSDF zero crossing with weight >=
  `TsdfMapConfig.weight_threshold`, i.e. a point of the extracted surface) at a height above the floor in
  [`min_height_m`, `max_height_m`] (the band a robot of that height collides with; furniture legs, table
  tops, walls);
- FREE (0) when the floor itself was observed in the cell (an up-facing surface point within
  `floor_tolerance_m` of the floor height) and nothing occupies the band;
- UNKNOWN (-1) otherwise: never observed, or observed only from where the floor was hidden.
Free is observed free, never merely "no surface seen": a floor zero crossing means depth rays ended on
the floor in that cell, so the voxels just above it were traversed (positive sdf, weight > 0), and an
obstacle standing there would have stopped them; an overhang (a table top) is a surface in the band seen
from the views that see it, and occupied wins over free. The one blind spot is an overhang no view ever
saw, over floor that was seen: rare indoors, where tops are what a camera sees first.

`save_map_server` writes the map_server pair (YAML + 8-bit PGM, mode trinary) that `nav2_map_server`
loads (`read_map_server` implements its loading rule, for checks).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ..config import ConfigError, check_int, check_range, param, validate_fields
from ..types import MapSnapshot

FREE, OCCUPIED, UNKNOWN = 0, 100, -1
_POINT_SQUARE_M = 0.01  # the grid keeps one obstacle point per square of this edge

# map_server's trinary pixels (as nav2's map_saver writes them): free 254, occupied 0, unknown 205.
# free_thresh 0.196 (ROS 1 map_saver's value), not nav2's 0.25: map_server computes occ = 1 - value / 255,
# and 205 gives 0.196, which is below 0.25, so nav2's own default would load unknown cells as free.
_PGM_FREE, _PGM_OCCUPIED, _PGM_UNKNOWN = 254, 0, 205
OCCUPIED_THRESH, FREE_THRESH = 0.65, 0.196


@dataclass(frozen=True)
class OccupancyConfig:
    """resolution_m: cell edge, [0.01, 1]. min_height_m / max_height_m: the band above the floor in which a
    surface is an obstacle, [0, 5] (a robot drives over what is lower and under what is higher).
    floor_tolerance_m: surface points this close to the floor height are floor, [0.005, 0.2].
    min_floor_area_m2: a horizontal surface must cover this much to be the floor, [0.01, 100].
    min_occupied_points: surface points in the band that make a cell occupied, [1, 1000] (2: one stray
    point of a noisy depth edge does not block a cell)."""

    resolution_m: float = param(0.05, range=(0.01, 1.0), unit="m", doc="Occupancy grid cell size.")
    min_height_m: float = param(0.05, range=(0.0, 5.0), unit="m", doc="Occupancy grid: surfaces from this height above "
                                "the floor are obstacles (lower ones are driven over).")
    max_height_m: float = param(1.8, range=(0.1, 5.0), unit="m", doc="Occupancy grid: surfaces up to this height above "
                                "the floor are obstacles (the robot's height; higher ones are passed under).")
    floor_tolerance_m: float = 0.03
    min_floor_area_m2: float = 0.5
    min_occupied_points: int = 2

    def __post_init__(self) -> None:
        validate_fields(self)
        check_range("max_height_m", self.max_height_m, self.min_height_m, 5.0, low_inclusive=False)
        check_range("floor_tolerance_m", self.floor_tolerance_m, 0.005, 0.2)
        check_range("min_floor_area_m2", self.min_floor_area_m2, 0.01, 100.0)
        check_int("min_occupied_points", self.min_occupied_points, 1, 1000)
        if self.floor_tolerance_m >= self.min_height_m:
            # A floor point must never count as an obstacle: blame the band's lower edge.
            raise ConfigError(f"min_height_m must be above floor_tolerance_m ({self.floor_tolerance_m}), "
                              f"got {self.min_height_m}")


@dataclass(frozen=True, eq=False)
class OccupancyGrid2D:
    """A floor grid in the map frame: `data` (H, W) int8 of FREE / OCCUPIED / UNKNOWN, row r and column c
    covering x in origin_x + [c, c + 1) * resolution, y in origin_y + [r, r + 1) * resolution (row 0 at the
    smallest y: nav_msgs/OccupancyGrid's order). floor_z_m: the floor height, None when no floor was seen
    (then every cell is unknown). An empty map gives a 0 x 0 grid. obstacle_xy_m: (N, 2) float32, where in the
    occupied cells the obstacles are (their surface points in the band), so that clearance is measured to the
    obstacle and not to the edge of its cell; None when unknown (a grid read from a map_server file), then an
    occupied cell is an obstacle over its whole square."""

    data: np.ndarray
    resolution_m: float
    origin_xy_m: tuple[float, float]
    floor_z_m: float | None
    stamp_ns: int = 0
    obstacle_xy_m: np.ndarray | None = None

    @classmethod
    def empty(cls, resolution_m: float, stamp_ns: int = 0) -> "OccupancyGrid2D":
        return cls(np.zeros((0, 0), np.int8), resolution_m, (0.0, 0.0), None, stamp_ns)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])

    @property
    def is_empty(self) -> bool:
        return self.data.size == 0

    def cell_of(self, xy_m: np.ndarray) -> np.ndarray:
        """(N, 2) int (row, col) of world points (N, 2); may be outside the grid."""
        xy = np.asarray(xy_m, dtype=np.float64).reshape(-1, 2)
        col = np.floor((xy[:, 0] - self.origin_xy_m[0]) / self.resolution_m).astype(np.int64)
        row = np.floor((xy[:, 1] - self.origin_xy_m[1]) / self.resolution_m).astype(np.int64)
        return np.stack([row, col], axis=1)

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) x and y of every cell centre, metres."""
        h, w = self.shape
        xs = self.origin_xy_m[0] + (np.arange(w) + 0.5) * self.resolution_m
        ys = self.origin_xy_m[1] + (np.arange(h) + 0.5) * self.resolution_m
        return np.meshgrid(xs, ys)

    def counts(self) -> dict[str, int]:
        return {"free": int(np.count_nonzero(self.data == FREE)),
                "occupied": int(np.count_nonzero(self.data == OCCUPIED)),
                "unknown": int(np.count_nonzero(self.data == UNKNOWN))}


def _cells(xy: np.ndarray, origin: np.ndarray, res: float, width: int) -> np.ndarray:
    idx = np.floor((xy - origin) / res).astype(np.int64)
    return idx[:, 1] * width + idx[:, 0]


def estimate_floor_z(points_world_m: np.ndarray, normals_world: np.ndarray | None,
                     config: OccupancyConfig | None = None) -> float | None:
    """Height of the lowest horizontal surface covering min_floor_area_m2 (its up-facing points counted in
    cells of resolution_m, in 4 cm height windows stepped by 2 cm), the median height of its points; None
    when the map has none (no floor seen yet). Without normals every point counts as up-facing."""
    cfg = config or OccupancyConfig()
    pts = np.asarray(points_world_m, dtype=np.float64)
    if pts.shape[0] == 0:
        return None
    up = pts if normals_world is None else pts[np.asarray(normals_world)[:, 2] >= 0.9]
    if up.shape[0] == 0:
        return None
    step = 0.02
    res = cfg.resolution_m
    lo = up.min(axis=0)
    cell = np.floor((up[:, :2] - lo[:2]) / res).astype(np.int64)
    n_cells = int(cell[:, 0].max() + 1) * int(cell[:, 1].max() + 1)
    cell_id = cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]
    b = np.floor((up[:, 2] - lo[2]) / step).astype(np.int64)
    # A point in height bin b belongs to the windows starting at b and b - 1 (each window two bins);
    # (window, cell) packed into one key so one 1D unique counts the cells of every window.
    keys = np.unique(np.concatenate([(b + 1) * n_cells + cell_id, b * n_cells + cell_id]))
    windows, area_cells = np.unique(keys // n_cells - 1, return_counts=True)
    ok = windows[(area_cells * res * res >= cfg.min_floor_area_m2) & (windows >= 0)]
    if ok.shape[0] == 0:
        return None
    first = int(ok.min())
    in_window = (b == first) | (b == first + 1)
    return float(np.median(up[in_window, 2]))


def build_occupancy_grid(snapshot: MapSnapshot, config: OccupancyConfig | None = None) -> OccupancyGrid2D:
    """The grid of a map snapshot (see the module doc); 0 x 0 for an empty map, all unknown without a floor."""
    cfg = config or OccupancyConfig()
    pts = np.asarray(snapshot.points_world_m, dtype=np.float64)
    res = cfg.resolution_m
    if pts.shape[0] == 0:
        return OccupancyGrid2D.empty(res, snapshot.stamp_ns)
    # Cell boundaries on multiples of the resolution: the grid of a growing map keeps its cells.
    origin = np.floor(pts[:, :2].min(axis=0) / res - 1.0) * res
    top = np.floor(pts[:, :2].max(axis=0) / res + 2.0) * res
    width, height = (int(round(v)) for v in (top - origin) / res)
    data = np.full(height * width, UNKNOWN, dtype=np.int8)
    floor_z = estimate_floor_z(pts, snapshot.normals_world, cfg)
    if floor_z is not None:
        h = pts[:, 2] - floor_z
        normals = snapshot.normals_world
        up = np.ones(pts.shape[0], bool) if normals is None else np.asarray(normals)[:, 2] >= 0.9
        floor_pts = (np.abs(h) <= cfg.floor_tolerance_m) & up
        data[np.unique(_cells(pts[floor_pts, :2], origin, res, width))] = FREE
        band = (h >= cfg.min_height_m) & (h <= cfg.max_height_m)
        band_cells = _cells(pts[band, :2], origin, res, width)
        counts = np.bincount(band_cells, minlength=height * width)
        data[counts >= cfg.min_occupied_points] = OCCUPIED
        obstacle_xy = pts[band, :2][data[band_cells] == OCCUPIED]
        # One point per 1 cm square (a wall's height of points stands on one spot): fewer to search, same spots.
        squares_across = int(math.ceil(width * res / _POINT_SQUARE_M)) + 2
        _, first = np.unique(_cells(obstacle_xy, origin, _POINT_SQUARE_M, squares_across), return_index=True)
        obstacle_xy = obstacle_xy[np.sort(first)].astype(np.float32)
    else:
        obstacle_xy = np.zeros((0, 2), np.float32)
    return OccupancyGrid2D(data.reshape(height, width), res, (float(origin[0]), float(origin[1])), floor_z,
                           snapshot.stamp_ns, obstacle_xy)


class OccupancyGridSource:
    """The grid of a map source's current snapshot, rebuilt only when the snapshot changes (thread-safe).

    `map_source` is anything with `snapshot() -> MapSnapshot` (the Mapper caches its snapshot until the
    map changes, so the identity of the snapshot is the map's version)."""

    def __init__(self, map_source, config: OccupancyConfig | None = None) -> None:
        self.map_source = map_source
        self.config = config or OccupancyConfig()
        self._lock = threading.Lock()
        self._cached: tuple[MapSnapshot, OccupancyGrid2D] | None = None
        self.last_build_ms = 0.0

    def grid(self, snapshot: MapSnapshot | None = None) -> OccupancyGrid2D:
        """The grid of `snapshot` (default: the source's current one)."""
        snapshot = snapshot if snapshot is not None else self.map_source.snapshot()
        with self._lock:
            if self._cached is not None and self._cached[0] is snapshot:
                return self._cached[1]
        t0 = time.perf_counter()
        grid = build_occupancy_grid(snapshot, self.config)
        with self._lock:
            self._cached = (snapshot, grid)  # the snapshot is kept so its identity stays its own
            self.last_build_ms = (time.perf_counter() - t0) * 1e3
        return grid


def save_map_server(grid: OccupancyGrid2D, path: str | Path) -> tuple[Path, Path]:
    """Write `path`.yaml and `path`.pgm as nav2_map_server loads them (mode trinary, negate 0); returns both.

    An empty grid (no frame fused yet) is written as one unknown cell, which map_server can load. The
    PGM's first row is the grid's last (images run top-down, the grid's rows bottom-up).
    """
    path = Path(path)
    if path.suffix in (".yaml", ".pgm"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = grid.data if not grid.is_empty else np.full((1, 1), UNKNOWN, np.int8)
    pixels = np.full(data.shape, _PGM_UNKNOWN, np.uint8)
    pixels[data == FREE] = _PGM_FREE
    pixels[data == OCCUPIED] = _PGM_OCCUPIED
    pgm, yaml = path.with_suffix(".pgm"), path.with_suffix(".yaml")
    h, w = pixels.shape
    pgm.write_bytes(f"P5\n{w} {h}\n255\n".encode("ascii") + np.ascontiguousarray(pixels[::-1]).tobytes())
    ox, oy = grid.origin_xy_m
    yaml.write_text(f"image: {pgm.name}\nmode: trinary\nresolution: {grid.resolution_m:g}\n"
                    f"origin: [{ox:.6g}, {oy:.6g}, 0.0]\nnegate: 0\noccupied_thresh: {OCCUPIED_THRESH}\n"
                    f"free_thresh: {FREE_THRESH}\n")
    return yaml, pgm


def read_map_server(yaml_path: str | Path) -> OccupancyGrid2D:
    """Load a map_server pair with map_server's trinary rule (occ = 1 - value / 255, or value / 255 with
    negate; occupied above occupied_thresh, free below free_thresh, unknown between). Only the 8-bit
    binary PGM (P5) this module writes; ValueError for anything else."""
    import yaml as yaml_lib

    yaml_path = Path(yaml_path)
    meta = yaml_lib.safe_load(yaml_path.read_text())
    if meta.get("mode", "trinary") != "trinary":
        raise ValueError(f"{yaml_path}: only mode trinary is read, got {meta.get('mode')!r}")
    raw = (yaml_path.parent / meta["image"]).read_bytes()
    header = raw.split(maxsplit=4)
    if header[0] != b"P5" or int(header[3]) != 255:
        raise ValueError(f"{meta['image']}: not an 8-bit binary PGM")
    w, h = int(header[1]), int(header[2])
    pixels = np.frombuffer(header[4], np.uint8)[: w * h].reshape(h, w)[::-1].astype(np.float64)
    occ = pixels / 255.0 if int(meta.get("negate", 0)) else 1.0 - pixels / 255.0
    data = np.full((h, w), UNKNOWN, np.int8)
    data[occ > float(meta["occupied_thresh"])] = OCCUPIED
    data[occ < float(meta["free_thresh"])] = FREE
    origin = meta["origin"]
    return OccupancyGrid2D(data, float(meta["resolution"]), (float(origin[0]), float(origin[1])), None)


def floor_holes(grid: OccupancyGrid2D) -> np.ndarray:
    """(H, W) bool: unknown cells enclosed by observed free floor: 8-connected unknown patches that touch no
    occupied cell and not the grid's border. Floor the depth missed (a dark rug, a specular tile, a depth
    dropout) rather than space an obstacle could hide in: an obstacle standing there, in the band, would cast
    a depth shadow on the floor behind it from every view, and the floor all round was seen; the shadows of
    furniture touch the furniture and stay unknown."""
    if grid.is_empty:
        return np.zeros(grid.shape, bool)
    unknown = np.pad(grid.data == UNKNOWN, 1, constant_values=True)  # the ring joins every patch at the border
    _, labels = cv2.connectedComponents(unknown.astype(np.uint8), connectivity=8)
    occupied = np.pad(grid.data == OCCUPIED, 1).astype(np.uint8)
    touching = cv2.dilate(occupied, np.ones((3, 3), np.uint8)) > 0
    open_labels = np.union1d(labels[touching & unknown], [labels[0, 0]])
    holes = unknown & ~np.isin(labels, open_labels)
    return holes[1:-1, 1:-1]


def clearance_m(grid: OccupancyGrid2D) -> np.ndarray:
    """(H, W) float32: for each cell of free floor or of a floor hole (`floor_holes`), how far a disc around its
    centre can grow before it touches an obstacle or unknown space; 0 for the other cells. Obstacles are the
    grid's obstacle points (a lower bound of the distance to the nearest, within 1.4 cm; whole occupied cells
    when the grid has none); unknown space is the unknown cells, whole, less the floor holes, and outside the
    grid. Distances to whole cells are computed on the grid split 3 x 3 (the centre sub-cell's centre is the
    cell's): the distance between sub-cell centres less half a sub-cell diagonal, a lower bound within 1.2 cm
    of the exact value at 5 cm cells."""
    if grid.is_empty:
        return np.zeros(grid.shape, np.float32)
    holes = floor_holes(grid)
    free = (grid.data == FREE) | holes
    blocks = (grid.data == UNKNOWN) & ~holes
    points = grid.obstacle_xy_m
    if points is None:
        blocks |= grid.data == OCCUPIED
    k = 3
    open_cells = np.pad((~blocks).astype(np.uint8), 1)  # outside the grid is unknown
    fine = np.repeat(np.repeat(open_cells, k, axis=0), k, axis=1)
    dist = cv2.distanceTransform(fine, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[k + 1::k, k + 1::k][:grid.shape[0], :grid.shape[1]]
    out = np.maximum((dist - math.sqrt(0.5)) * grid.resolution_m / k, 0.0)
    if points is not None and len(points) and free.any():
        xs, ys = grid.cell_centers()
        d, _ = cKDTree(points).query(np.stack([xs[free], ys[free]], axis=1))
        # The grid keeps one point per 1 cm square: less its diagonal, a lower bound for every point of the square.
        out[free] = np.minimum(out[free], np.maximum(d - _POINT_SQUARE_M * math.sqrt(2.0), 0.0))
    return np.where(free, out, 0.0).astype(np.float32)


__all__ = ["FREE", "FREE_THRESH", "OCCUPIED", "OCCUPIED_THRESH", "UNKNOWN", "OccupancyConfig", "OccupancyGrid2D",
           "OccupancyGridSource", "build_occupancy_grid", "clearance_m", "estimate_floor_z", "floor_holes", "read_map_server",
           "save_map_server"]
