"""Support surfaces of the gravity-aligned map: the floor, table tops, counters, shelves.

The map frame is z up (REP-103), so a surface an object can stand on is a horizontal patch whose normals
point up. `find_supports` finds them in a cloud with normals (the TSDF's surface points):
  1. the points whose normal is within `normal_max_deg` of +z are grouped into 26-connected patches
     (voxels of `connect_m`);
  2. a patch whose mean normal is more than `max_tilt_deg` from +z is not level: a large one
     (`tilt_report_m2`) is reported, because a whole floor or table top tilting means the map's gravity
     estimate is off, and no patch that tilts is used as a support;
  3. a level patch's height is the mode of its points' z; its points within `height_tol_m` of it form the
     surface (a book lying on a table top joins its patch but not its surface); its footprint is the
     x-y cells (`cell_m`) they occupy, closed by `close_m` and with holes filled, since objects standing
     on a surface hide the part under them; surfaces of less than `min_area_m2` are dropped;
  4. level patches of one height whose footprints come within `close_m` of each other are one surface
     (a table top cut in two by the box on it).
This is the plane step of the classic tabletop segmentation (the ROS perception pipeline's
tabletop_object_detector, Rusu et al., "Semantic 3D object maps for everyday manipulation in human living
environments", KI 2010), with the plane's orientation known from gravity instead of fitted by RANSAC.

`SupportMap` keeps the surfaces found view by view as one bounded set with stable ids: a surface joins a
registered one of the same height (`merge_height_m`) whose footprint it touches. The floor is the lowest
height at which registered surfaces within `floor_tol_m` cover `floor_min_area_m2`; every surface within `floor_tol_m` of its height is
FLOOR, the others ELEVATED. `support_of` names the surface an object's box stands on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..clustering import cluster_points
from ..config import check_int, check_range
from ..types import OrientedBox3D, SupportKind, SupportRef

# 2D cell keys pack two 24-bit signed indices: +-8e6 cells, i.e. +-400 km at 5 cm.
_BITS = 24
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def cell_keys(points_xy_m: np.ndarray, cell_m: float) -> np.ndarray:
    """(N,) int64 key of the x-y cell (edge cell_m) holding each point (N, >=2)."""
    cell = np.floor(np.asarray(points_xy_m, dtype=np.float64)[:, :2] / cell_m).astype(np.int64) + _OFFSET
    return (cell[:, 0] << _BITS) | cell[:, 1]


def cell_indices(keys: np.ndarray) -> np.ndarray:
    """(N, 2) int64 cell indices of the keys."""
    keys = np.asarray(keys, dtype=np.int64)
    return np.stack([(keys >> _BITS) & _MASK, keys & _MASK], axis=1) - _OFFSET


def _keys_of_cells(cells: np.ndarray) -> np.ndarray:
    cells = np.asarray(cells, dtype=np.int64) + _OFFSET
    return (cells[:, 0] << _BITS) | cells[:, 1]


def grow_cells(keys: np.ndarray, radius: int) -> np.ndarray:
    """Sorted unique keys of the cells within `radius` cells (chessboard) of `keys`."""
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    if radius <= 0 or keys.shape[0] == 0:
        return keys
    offsets = np.array([(dx << _BITS) + dy for dx in range(-radius, radius + 1) for dy in range(-radius, radius + 1)],
                       dtype=np.int64)
    return np.unique((keys[:, None] + offsets[None, :]).ravel())


def in_cells(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(Q,) bool: which query keys are in the sorted key array."""
    if sorted_keys.shape[0] == 0 or query.shape[0] == 0:
        return np.zeros(query.shape[0], dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.shape[0] - 1)
    return sorted_keys[pos] == query


@dataclass(frozen=True, eq=False)
class SupportSurface:
    """A horizontal surface objects can stand on, in the gravity-aligned map frame (z up, metres).

    support_id: the SupportMap's id (-1 for a surface found in one view, not registered yet). height_m: z of
    the surface at centre_xy_m. cell_keys: (C,) int64 sorted keys (`cell_keys`) of the x-y cells of edge
    cell_m it covers (closed: what stands on it hides part of it). tilt_deg: angle of its mean normal from
    +z. slope_xy: dz/dx, dz/dy of the plane fitted to it (a real table top is not exactly level: the
    kitchen's varies by 3.5 cm over 2 m), see `height_at`.
    """

    support_id: int
    kind: SupportKind
    height_m: float
    cell_m: float
    cell_keys: np.ndarray
    tilt_deg: float = 0.0
    centre_xy_m: tuple[float, float] = (0.0, 0.0)
    slope_xy: tuple[float, float] = (0.0, 0.0)

    def height_at(self, points_xy_m: np.ndarray) -> np.ndarray:
        """(N,) z of the surface's plane under x-y positions (N, >=2)."""
        xy = np.asarray(points_xy_m, dtype=np.float64)[:, :2]
        return (self.height_m + (xy[:, 0] - self.centre_xy_m[0]) * self.slope_xy[0]
                + (xy[:, 1] - self.centre_xy_m[1]) * self.slope_xy[1])

    @property
    def area_m2(self) -> float:
        return float(self.cell_keys.shape[0] * self.cell_m ** 2)

    @property
    def bounds_xy_m(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_min, y_min), (x_max, y_max)) of its footprint, metres."""
        cells = cell_indices(self.cell_keys)
        lo, hi = cells.min(axis=0) * self.cell_m, (cells.max(axis=0) + 1) * self.cell_m
        return (float(lo[0]), float(lo[1])), (float(hi[0]), float(hi[1]))

    def contains_xy(self, points_xy_m: np.ndarray, margin_cells: int = 0) -> np.ndarray:
        """(N,) bool: which x-y positions (N, >=2) lie over its footprint (grown by margin_cells)."""
        keys = grow_cells(self.cell_keys, margin_cells) if margin_cells else self.cell_keys
        return in_cells(keys, cell_keys(points_xy_m, self.cell_m))


@dataclass(frozen=True)
class SupportConfig:
    """normal_max_deg: points whose normal is within this of +z may be a support's, (0, 60]. max_tilt_deg: a
    patch whose mean normal is further from +z is not level, (0, 30]. tilt_report_m2: a tilting patch this
    large is reported (a bad gravity estimate), >= 0. height_tol_m: a surface's points lie within this of
    its height, (0, 0.1]. min_area_m2: smaller surfaces are dropped, (0, 100]. connect_m: patch
    connectivity voxel, (0, 0.5]. cell_m: footprint cell, (0, 0.5]. close_m: footprints are closed by this
    and patches of one height this close are one surface, [0, 2]. merge_height_m: SupportMap merges
    surfaces this close in height, (0, 0.2]. floor_min_area_m2 / floor_tol_m: the floor is the lowest
    surface at least this large; surfaces within floor_tol_m of it are floor. max_supports /
    max_cells: SupportMap bounds."""

    normal_max_deg: float = 30.0
    max_tilt_deg: float = 6.0
    tilt_report_m2: float = 0.5
    height_tol_m: float = 0.025
    min_area_m2: float = 0.02
    connect_m: float = 0.04
    cell_m: float = 0.05
    close_m: float = 0.25
    merge_height_m: float = 0.04
    floor_min_area_m2: float = 1.0
    floor_tol_m: float = 0.1
    max_supports: int = 64
    max_cells: int = 40_000

    def __post_init__(self) -> None:
        check_range("normal_max_deg", self.normal_max_deg, 0.0, 60.0, low_inclusive=False)
        check_range("max_tilt_deg", self.max_tilt_deg, 0.0, 30.0, low_inclusive=False)
        check_range("tilt_report_m2", self.tilt_report_m2, 0.0)
        check_range("height_tol_m", self.height_tol_m, 0.0, 0.1, low_inclusive=False)
        check_range("min_area_m2", self.min_area_m2, 0.0, 100.0, low_inclusive=False)
        check_range("connect_m", self.connect_m, 0.0, 0.5, low_inclusive=False)
        check_range("cell_m", self.cell_m, 0.0, 0.5, low_inclusive=False)
        check_range("close_m", self.close_m, 0.0, 2.0)
        check_range("merge_height_m", self.merge_height_m, 0.0, 0.2, low_inclusive=False)
        check_range("floor_min_area_m2", self.floor_min_area_m2, 0.0, 1000.0)
        check_range("floor_tol_m", self.floor_tol_m, 0.0, 1.0)
        check_int("max_supports", self.max_supports, 1, 10_000)
        check_int("max_cells", self.max_cells, 16, 10_000_000)


@dataclass(frozen=True)
class SupportDetection:
    """What `find_supports` found: level surfaces (support_id -1, kind by `floor_height_m`: FLOOR within
    floor_tol_m of it, else ELEVATED) and the tilt and area of every large patch that was not level."""

    surfaces: tuple[SupportSurface, ...]
    tilted: tuple[tuple[float, float], ...] = ()


def _close_cells(keys: np.ndarray, radius: int) -> np.ndarray:
    """Sorted keys of the footprint closed by `radius` cells (disk) with its holes filled."""
    cells = cell_indices(keys)
    lo = cells.min(axis=0) - radius - 1
    grid = np.zeros(tuple(cells.max(axis=0) - lo + radius + 2), dtype=bool)
    grid[cells[:, 0] - lo[0], cells[:, 1] - lo[1]] = True
    if radius > 0:
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        disk = xx ** 2 + yy ** 2 <= radius ** 2
        grid = ndimage.binary_closing(grid, structure=disk)
    grid = ndimage.binary_fill_holes(grid)
    return np.sort(_keys_of_cells(np.argwhere(grid) + lo))


def _mode_height(z: np.ndarray, tol: float) -> float:
    """The height most of the points are at: the densest window of +-tol, then the median inside it."""
    z = np.sort(np.asarray(z, dtype=np.float64))
    counts = np.searchsorted(z, z + 2 * tol, side="right") - np.arange(z.shape[0])
    start = int(np.argmax(counts))
    return float(np.median(z[start:start + counts[start]]))


def find_supports(points_world_m: np.ndarray, normals_world: np.ndarray | None, config: SupportConfig | None = None,
                  floor_height_m: float | None = None) -> SupportDetection:
    """Level support surfaces in a cloud with normals (see the module doc); none without normals."""
    cfg = config or SupportConfig()
    pts = np.asarray(points_world_m, dtype=np.float32).reshape(-1, 3)
    if normals_world is None or pts.shape[0] == 0:
        return SupportDetection(())
    normals = np.asarray(normals_world, dtype=np.float32).reshape(-1, 3)
    up = np.flatnonzero(normals[:, 2] >= np.cos(np.radians(cfg.normal_max_deg)))
    if up.shape[0] == 0:
        return SupportDetection(())
    # Points per area: the surface points of a TSDF are about one per voxel face; counting cells instead
    # of points keeps the area independent of the map's resolution.
    patches = cluster_points(pts[up], cfg.connect_m, 1)
    cell_area = cfg.cell_m ** 2
    close_cells = int(round(cfg.close_m / cfg.cell_m))
    level: list[tuple[float, np.ndarray, float, np.ndarray, np.ndarray]] = []  # (height, keys, tilt, centre, slope)
    tilted = []
    for c in range(patches.num_clusters):
        idx = up[patches.labels == c]
        raw_keys = np.unique(cell_keys(pts[idx], cfg.cell_m))
        if raw_keys.shape[0] * cell_area < cfg.min_area_m2:
            continue
        mean_n = normals[idx].mean(axis=0)
        tilt = float(np.degrees(np.arccos(np.clip(mean_n[2] / max(1e-9, float(np.linalg.norm(mean_n))), -1, 1))))
        if tilt > cfg.max_tilt_deg:
            if raw_keys.shape[0] * cell_area >= cfg.tilt_report_m2:
                tilted.append((round(tilt, 2), round(raw_keys.shape[0] * cell_area, 3)))
            continue
        height = _mode_height(pts[idx, 2], cfg.height_tol_m)
        on = idx[np.abs(pts[idx, 2] - height) <= cfg.height_tol_m]
        # A plane through the surface's points, refitted once on the points within tol of the first fit.
        centre = pts[on, :2].astype(np.float64).mean(axis=0)
        slope = np.zeros(2)
        for _ in range(2):
            if on.shape[0] < 10:
                break
            design = np.column_stack([pts[on, :2] - centre, np.ones(on.shape[0])])
            coef = np.linalg.lstsq(design, pts[on, 2].astype(np.float64), rcond=None)[0]
            slope, height = coef[:2], float(coef[2])
            plane = height + (pts[idx, :2] - centre) @ slope
            on = idx[np.abs(pts[idx, 2] - plane) <= cfg.height_tol_m]
        keys = np.unique(cell_keys(pts[on], cfg.cell_m))
        if keys.shape[0] * cell_area >= cfg.min_area_m2:
            level.append((height, keys, tilt, centre, slope))
    # One height, footprints close together: one surface (a table top cut by what stands on it).
    merged: list[list[int]] = []
    for i, (h, keys, *_) in enumerate(level):
        grown = grow_cells(keys, close_cells)
        for group in merged:
            j = group[0]
            if abs(level[j][0] - h) <= cfg.height_tol_m and any(in_cells(level[k][1], grown).any() for k in group):
                group.append(i)
                break
        else:
            merged.append([i])
    surfaces = []
    for group in merged:
        keys = np.unique(np.concatenate([level[k][1] for k in group]))
        weights = np.array([level[k][1].shape[0] for k in group], dtype=np.float64)
        height = float(np.average([level[k][0] for k in group], weights=weights))
        tilt = float(np.average([level[k][2] for k in group], weights=weights))
        centre = np.average([level[k][3] for k in group], axis=0, weights=weights)
        slope = np.average([level[k][4] for k in group], axis=0, weights=weights)
        # The pieces' heights at the common centre.
        height = float(np.average([level[k][0] + (centre - level[k][3]) @ level[k][4] for k in group], weights=weights))
        kind = (SupportKind.FLOOR if floor_height_m is not None and abs(height - floor_height_m) <= cfg.floor_tol_m
                else SupportKind.ELEVATED)
        surfaces.append(SupportSurface(-1, kind, height, cfg.cell_m, _close_cells(keys, close_cells), tilt,
                                       (float(centre[0]), float(centre[1])), (float(slope[0]), float(slope[1]))))
    return SupportDetection(tuple(sorted(surfaces, key=lambda s: s.height_m)), tuple(tilted))


def floor_height(heights_m: Sequence[float], areas_m2: Sequence[float], floor_min_area_m2: float,
                 floor_tol_m: float) -> float | None:
    """The lowest height h at which the surfaces within [h, h + floor_tol_m] cover floor_min_area_m2: the
    floor, which furniture cuts into patches a few centimetres apart in height (a real floor is not level)."""
    order = np.argsort(np.asarray(heights_m, dtype=np.float64))
    h = np.asarray(heights_m, dtype=np.float64)[order]
    a = np.asarray(areas_m2, dtype=np.float64)[order]
    for k in range(h.shape[0]):
        if a[k:][h[k:] <= h[k] + floor_tol_m].sum() >= floor_min_area_m2:
            return float(h[k])
    return None


def lowest_floor_candidate(surfaces: Sequence[SupportSurface], config: SupportConfig) -> float | None:
    """`floor_height` of the surfaces of one view (None when no floor is in view)."""
    return floor_height([s.height_m for s in surfaces], [s.area_m2 for s in surfaces], config.floor_min_area_m2,
                        config.floor_tol_m)


def _covers(box: OrientedBox3D, surface: SupportSurface) -> float:
    """Share of the surface's footprint cells whose centres lie inside the box's x-y rectangle."""
    centres = (cell_indices(surface.cell_keys) + 0.5) * surface.cell_m
    local = (centres - np.asarray(box.center_world_m, dtype=np.float64)[:2]) @ np.asarray(box.world_R_box)[:2, :2]
    inside = np.all(np.abs(local) <= np.asarray(box.size_m, dtype=np.float64)[:2] / 2.0 + surface.cell_m, axis=1)
    return float(inside.mean()) if inside.shape[0] else 0.0


@dataclass(eq=False)
class _Registered:
    support_id: int
    height_m: float
    keys: np.ndarray
    tilt_deg: float
    weight: float
    last_update: int


class SupportMap:
    """The support surfaces found so far, merged across views, with stable ids (not thread-safe: its owner,
    the ObjectMemory, calls it under its lock)."""

    def __init__(self, config: SupportConfig | None = None) -> None:
        self.config = config or SupportConfig()
        self._surfaces: dict[int, _Registered] = {}
        self._next_id = 0
        self._updates = 0

    def update(self, surfaces: Sequence[SupportSurface]) -> None:
        """Merge the surfaces of one view (their support_id and kind are ignored)."""
        cfg = self.config
        self._updates += 1
        for s in surfaces:
            if s.cell_keys.shape[0] == 0:
                continue
            keys = s.cell_keys if s.cell_m == cfg.cell_m else np.unique(cell_keys(
                (cell_indices(s.cell_keys) + 0.5) * s.cell_m, cfg.cell_m))
            grown = grow_cells(keys, 1)
            hits = [r for r in self._surfaces.values()
                    if abs(r.height_m - s.height_m) <= cfg.merge_height_m and in_cells(r.keys, grown).any()]
            if not hits:
                if len(self._surfaces) >= cfg.max_supports:
                    victim = min(self._surfaces.values(), key=lambda r: (r.last_update, r.weight))
                    del self._surfaces[victim.support_id]
                self._surfaces[self._next_id] = _Registered(self._next_id, float(s.height_m), keys[: cfg.max_cells],
                                                            float(s.tilt_deg), float(keys.shape[0]), self._updates)
                self._next_id += 1
                continue
            # The oldest keeps its id; the others (two pieces this view shows to be one) are absorbed.
            target = min(hits, key=lambda r: r.support_id)
            weight = float(keys.shape[0])
            for r in hits:
                if r is not target:
                    keys = np.concatenate([keys, r.keys])
                    weight += r.weight
                    del self._surfaces[r.support_id]
            total = target.weight + weight
            target.height_m = float((target.height_m * target.weight + s.height_m * weight) / total)
            target.tilt_deg = float((target.tilt_deg * target.weight + s.tilt_deg * weight) / total)
            target.weight = min(total, 1e9)
            target.keys = np.unique(np.concatenate([target.keys, keys]))[: cfg.max_cells]
            target.last_update = self._updates

    def floor_height_m(self) -> float | None:
        cfg = self.config
        regs = list(self._surfaces.values())
        return floor_height([r.height_m for r in regs], [r.keys.shape[0] * cfg.cell_m ** 2 for r in regs],
                            cfg.floor_min_area_m2, cfg.floor_tol_m)

    def surfaces(self) -> tuple[SupportSurface, ...]:
        """The registered surfaces, lowest first, each with its kind."""
        cfg = self.config
        floor = self.floor_height_m()
        out = []
        for r in sorted(self._surfaces.values(), key=lambda r: r.height_m):
            kind = (SupportKind.FLOOR if floor is not None and abs(r.height_m - floor) <= cfg.floor_tol_m
                    else SupportKind.ELEVATED)
            out.append(SupportSurface(r.support_id, kind, r.height_m, cfg.cell_m, r.keys.copy(), r.tilt_deg))
        return tuple(out)

    def support_of(self, box: OrientedBox3D, surfaces: Sequence[SupportSurface] | None = None,
                   below_m: float = 0.12, above_m: float = 0.04, margin_cells: int = 2) -> SupportRef | None:
        """The surface an object's gravity-aligned box stands on: the highest whose height is between
        below_m under and above_m over the box's bottom, under the box's centre (the floor reaches
        everywhere), and which the box does not cover for the most part (that is its own top); None when
        no surface is there."""
        surfaces = self.surfaces() if surfaces is None else surfaces
        bottom = float(box.center_world_m[2] - box.size_m[2] / 2.0)
        centre = np.asarray(box.center_world_m, dtype=np.float64)[None, :2]
        best = None
        for s in surfaces:
            if not bottom - below_m <= s.height_m <= bottom + above_m:
                continue
            if s.kind is not SupportKind.FLOOR and not s.contains_xy(centre, margin_cells)[0]:
                continue
            if s.kind is not SupportKind.FLOOR and _covers(box, s) >= 0.5:
                continue  # the object's own top (a table seen from above), not what it stands on
            if best is None or s.height_m > best.height_m:
                best = s
        return None if best is None else SupportRef(best.support_id, best.kind, float(best.height_m))

    def reset(self) -> None:
        self._surfaces.clear()

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Everything the map holds, as JSON-able metadata and named arrays (`memory_file` saves them)."""
        meta = {"next_id": self._next_id, "updates": self._updates,
                "surfaces": [{"id": r.support_id, "height_m": r.height_m, "tilt_deg": r.tilt_deg, "weight": r.weight,
                              "last_update": r.last_update} for r in self._surfaces.values()]}
        return meta, {f"support_{k}_keys": r.keys for k, r in enumerate(self._surfaces.values())}

    def restore_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Replace the surfaces by those of `export_state` (checked by the caller: `memory_file`)."""
        self._surfaces = {int(e["id"]): _Registered(int(e["id"]), float(e["height_m"]),
                                                   np.asarray(arrays[f"support_{k}_keys"], dtype=np.int64),
                                                   float(e["tilt_deg"]), float(e["weight"]), int(e["last_update"]))
                          for k, e in enumerate(meta["surfaces"])}
        self._next_id, self._updates = int(meta["next_id"]), int(meta["updates"])

    def __len__(self) -> int:
        return len(self._surfaces)

    @property
    def nbytes(self) -> int:
        return sum(r.keys.nbytes for r in self._surfaces.values())


__all__ = ["SupportConfig", "SupportDetection", "SupportMap", "SupportSurface", "cell_indices", "cell_keys",
           "find_supports", "floor_height", "grow_cells", "in_cells", "lowest_floor_candidate"]
