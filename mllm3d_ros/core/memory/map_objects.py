"""Class-agnostic objects from the map: what stands on its support surfaces, as proposals.

With no class-agnostic mask model on the CPU (SAM, FastSAM), the map itself shows the objects no detector
class names: they stand on support surfaces (DESIGN.md, "Objects before labels"; ConceptGraphs and DualMap
build their memories from class-agnostic objects too). Per keyframe, `MapObjectProposer`:
  1. crops the map snapshot to the keyframe's frustum (`max_range_m`, `frustum_margin`);
  2. finds the support surfaces in it (`supports.find_supports`; the floor is the lowest large surface seen
     so far; a small patch `min_support_rise_m` above the floor around it is a low shelf board, not floor;
     a surface less than that above the one under it is the top of a flat object, a laptop's base or a
     book, not a support) and the walls (vertical planes at least `wall_min_height_m` x
     `wall_min_width_m`, found by a Hough vote over the horizontal normals' direction and offset), which
     are nobody's object;
  3. gives every other point the support it stands over: the highest surface below it (by `gap_m`, within
     `max_height_m`) whose footprint, grown by `overhang_m`, holds it; the floor holds everything above it
     (its height taken locally from the floor's own points, since a real floor is not level);
  4. segments each support's points, highest support first, into objects: 26-connected voxels
     (`voxel_m`), cut where the colour changes (CIELAB distance, lightness at half weight so that shading
     does not cut, above `colour_split`) or at a concave crease (the local convexity test of LCCP, Stein
     et al., CVPR 2014) between two side faces, or a top face and the upper rim of a side face beside it;
     a top face meeting a side face that rises from it (a chair's seat and its back) is not cut. A segment
     that does not reach down to the support (`touch_m`: a handle, a lid, a differently coloured part),
     or is small, joins the neighbour it shares most edges with; what still does not reach the support
     floats and is dropped, as is what rises less than `min_rise_m` (a magazine is part of the table top).
     A segment that is a row of things side by side (books on a shelf board) is cut into them where the top
     height, the front depth or the colour of its one-voxel slices along the row steps, or at a gap
     (`split_row`; the comment above it gives the rule and its guards), before the rules that follow.
     A segment with map points right under its base, below the surface (`attach_depth_m`,
     `attach_frac` of its 2 cm cells) and belonging to the object the surface is part of, continues
     through the surface (a chair's back over its seat) and is segmented with that object. Objects taller
     than `max_height_m` or wider than `max_extent_m` are structure;
  5. renders the objects into the keyframe as masks with a depth test: a pixel belongs to an object when
     its own depth lifts to one of the object's voxels (or, failing that, a neighbouring one) and not to a
     support surface; occluded parts are not claimed.
The masks go to `ObjectMemory.integrate` with the detector's, as class-agnostic proposals
(`types.UNLABELLED`, `geometric=True`): one fusion path for every proposal source. Surfaces found in the
view go with them, for the memory's `SupportMap`.

Bad input: a view with no horizontal support in it (a wall, the ceiling) gives no objects; a large support
that tilts (a bad gravity estimate) is logged once and skipped, and the detector's proposals go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

from ..clustering import _connected_components, voxel_edges
from ..config import check_int, check_range
from ..geometry import NEIGHBOUR_KEY_OFFSETS, invert_transform, unproject_depth, voxel_keys
from .evidence import mask_extent
from .supports import (SupportConfig, SupportDetection, SupportSurface, cell_keys, find_supports, grow_cells, in_cells,
                       lowest_floor_candidate)
from ..types import (UNLABELLED, BackendView, InputError, MapSnapshot, Prediction2D, SupportKind, ViewPredictions)

_LOG = logging.getLogger(__name__)

SnapshotFn = Callable[[], MapSnapshot]
ProposeFn = Callable[[Sequence[BackendView]], Sequence[ViewPredictions]]

# The 26 neighbour offsets.
_ALL = np.array([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                 if (dx, dy, dz) != (0, 0, 0)], dtype=np.int64)


@dataclass(frozen=True)
class MapObjectConfig:
    """Thresholds of the class-agnostic proposer; the module docstring says what each does.

    voxel_m: segmentation voxel, (0.005, 0.2]. max_range_m: (0, 20]. frustum_margin: share of the image
    size the crop reaches beyond the image, [0, 1]. gap_m: object points start this far above their
    support, (0, 0.1]. touch_m: an object's lowest point is within this of gap_m above its support,
    [0, 0.5]. min_rise_m: an object rises at least this above its support (flatter ones, a magazine, cannot
    be told from it), [0, 1]. min_support_rise_m: a surface less than this above the one under it is the top of
    a flat object (a laptop's base, a book), not a support of its own, [0, 1]. overhang_m: what stands on a
    surface may reach this far beyond the part of it in view, [0, 1]. max_height_m, max_extent_m: larger objects are structure, (0, 10]. min_points: smaller
    objects are dropped, >= 1. colour_split: CIELAB distance that cuts, (0, 200]. concave_split: cosine
    of the crease that cuts, (0, 2]. attach_depth_m / attach_frac: a segment whose base has map points
    below its surface (down to attach_depth_m) under attach_frac of its cells belongs to the object
    under that surface, (0, 1] / [0, 1]. wall_min_height_m, wall_min_width_m: (0, 10]; wall_band_m: points
    within this of a wall are the wall's, (0, 0.2]. confidence: of every mask, [0, 1]. min_mask_pixels:
    smaller masks are not proposed, >= 1. support: the surfaces' SupportConfig.
    """

    voxel_m: float = 0.02
    max_range_m: float = 4.0
    frustum_margin: float = 0.15
    gap_m: float = 0.02
    touch_m: float = 0.05
    min_rise_m: float = 0.035
    min_support_rise_m: float = 0.06
    overhang_m: float = 0.15
    max_height_m: float = 2.0
    max_extent_m: float = 3.0
    min_points: int = 15
    colour_split: float = 22.0
    concave_split: float = 0.3
    attach_depth_m: float = 0.15
    attach_frac: float = 0.3
    wall_min_height_m: float = 1.2
    wall_min_width_m: float = 1.0
    wall_band_m: float = 0.04
    confidence: float = 0.5
    min_mask_pixels: int = 20
    support: SupportConfig = field(default_factory=SupportConfig)

    def __post_init__(self) -> None:
        check_range("voxel_m", self.voxel_m, 0.005, 0.2, low_inclusive=False)
        check_range("max_range_m", self.max_range_m, 0.0, 20.0, low_inclusive=False)
        check_range("frustum_margin", self.frustum_margin, 0.0, 1.0)
        check_range("gap_m", self.gap_m, 0.0, 0.1, low_inclusive=False)
        check_range("touch_m", self.touch_m, 0.0, 0.5)
        check_range("min_rise_m", self.min_rise_m, 0.0, 1.0)
        check_range("min_support_rise_m", self.min_support_rise_m, 0.0, 1.0)
        check_range("overhang_m", self.overhang_m, 0.0, 1.0)
        check_range("max_height_m", self.max_height_m, 0.0, 10.0, low_inclusive=False)
        check_range("max_extent_m", self.max_extent_m, 0.0, 10.0, low_inclusive=False)
        check_int("min_points", self.min_points, 1)
        check_range("colour_split", self.colour_split, 0.0, 200.0, low_inclusive=False)
        check_range("concave_split", self.concave_split, 0.0, 2.0, low_inclusive=False)
        check_range("attach_depth_m", self.attach_depth_m, 0.0, 1.0, low_inclusive=False)
        check_range("attach_frac", self.attach_frac, 0.0, 1.0)
        check_range("wall_min_height_m", self.wall_min_height_m, 0.0, 10.0, low_inclusive=False)
        check_range("wall_min_width_m", self.wall_min_width_m, 0.0, 10.0, low_inclusive=False)
        check_range("wall_band_m", self.wall_band_m, 0.0, 0.2, low_inclusive=False)
        check_range("confidence", self.confidence, 0.0, 1.0)
        check_int("min_mask_pixels", self.min_mask_pixels, 1)
        if not isinstance(self.support, SupportConfig):
            raise InputError(f"support must be a SupportConfig, got {type(self.support).__name__}")


@dataclass(frozen=True, eq=False)
class MapObject:
    """One class-agnostic object: indices (K,) int64 into the points it was segmented from, and the index
    of the surface it stands on in the detection's `surfaces` (-1: the floor)."""

    indices: np.ndarray
    support_index: int


@dataclass(frozen=True, eq=False)
class MapSegmentation:
    """Objects standing on supports, the points that are support surfaces or walls ((N,) bool each), and
    `surface_index(points (M, 3)) -> (M,) int64`: the support surface other points lie on (as
    MapObject.support_index; -2 for none)."""

    objects: tuple[MapObject, ...]
    surface: np.ndarray
    wall: np.ndarray
    surface_index: Callable[[np.ndarray], np.ndarray] = field(default=lambda p: np.full(len(p), -2, dtype=np.int64))


def _transform32(a_T_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """(N, 3) float32 points moved by a 4x4 transform, in float32 and elementwise: a (N, 3) x (3, 3) product
    through BLAS costs ~15x more on a loaded 2-core machine (its threads contend with fusion's)."""
    p = np.asarray(points_b, dtype=np.float32)
    rot, t = a_T_b[:3, :3].astype(np.float32), a_T_b[:3, 3].astype(np.float32)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    return np.stack([rot[r, 0] * x + rot[r, 1] * y + rot[r, 2] * z + t[r] for r in range(3)], axis=1)


def lab_colours(colors_rgb: np.ndarray) -> np.ndarray:
    """(N, 3) float32 CIELAB (L in [0, 100]) of uint8 RGB colours."""
    rgb = np.asarray(colors_rgb, dtype=np.float32).reshape(-1, 1, 3) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3)


def wall_points(points: np.ndarray, normals: np.ndarray, config: MapObjectConfig) -> np.ndarray:
    """(N,) bool: points within wall_band_m of a wall: a vertical plane at least wall_min_height_m tall and
    wall_min_width_m wide (a Hough vote over the horizontal normals' azimuth, 5 deg bins, and offset, 4 cm)."""
    cfg = config
    out = np.zeros(points.shape[0], dtype=bool)
    side = np.flatnonzero(np.abs(normals[:, 2]) < 0.2)
    if side.shape[0] < 50:
        return out
    n_xy = normals[side, :2].astype(np.float64)
    n_xy /= np.maximum(np.linalg.norm(n_xy, axis=1, keepdims=True), 1e-9)
    azimuth = np.arctan2(n_xy[:, 1], n_xy[:, 0])
    a_bin = np.floor((azimuth + np.pi) / np.radians(5.0)).astype(np.int64) % 72
    centre = np.radians(5.0) * (a_bin + 0.5) - np.pi
    direction = np.stack([np.cos(centre), np.sin(centre)], axis=1)
    offset = np.einsum("ij,ij->i", points[side, :2].astype(np.float64), direction)
    o_bin = np.floor(offset / 0.04).astype(np.int64)
    key = a_bin * 1_000_000 + (o_bin + 500_000)
    uniq, counts = np.unique(key, return_counts=True)
    # A wall seen at 2 cm holds ~2500 points a square metre; ask for a third of the smallest wall's.
    need = max(50, int(cfg.wall_min_height_m * cfg.wall_min_width_m / cfg.voxel_m ** 2 / 3))
    side_pts = points[side, :2].astype(np.float64)
    taken = np.zeros(side.shape[0], dtype=bool)
    for b in np.argsort(-counts):
        if counts[b] < need // 3:
            break
        a0, o0 = divmod(int(uniq[b]), 1_000_000)
        o0 -= 500_000
        near = (((a_bin - a0 + 1) % 72) <= 2) & (np.abs(o_bin - o0) <= 1) & ~taken
        if near.sum() < need // 3:
            continue
        # The plane's own direction and offset (a bin is 5 deg and 4 cm wide), then every side point on it.
        d = n_xy[near].mean(axis=0)
        d /= max(1e-9, float(np.linalg.norm(d)))
        plane_offset = float(np.median(side_pts[near] @ d))
        on = (np.abs(side_pts @ d - plane_offset) <= cfg.wall_band_m) & (n_xy @ d >= np.cos(np.radians(20.0)))
        taken |= on
        pts = points[side[on]]
        along = pts[:, :2] @ np.array([-d[1], d[0]])
        if (on.sum() < need or np.ptp(pts[:, 2]) < cfg.wall_min_height_m
                or np.ptp(along) < cfg.wall_min_width_m):
            continue
        dist = np.abs(points[:, :2].astype(np.float64) @ d - plane_offset)
        all_along = points[:, :2].astype(np.float64) @ np.array([-d[1], d[0]])
        out |= (dist <= cfg.wall_band_m) & (all_along >= along.min() - 0.2) & (all_along <= along.max() + 0.2)
    return out


class _FloorField:
    """Local floor height over x-y: the median of the floor's points per 0.25 m cell, the nearest cell's
    where the floor is hidden."""

    def __init__(self, floor_points: np.ndarray, cell_m: float = 0.25) -> None:
        from scipy import ndimage

        self.cell_m = cell_m
        cells = np.floor(floor_points[:, :2] / cell_m).astype(np.int64)
        self.lo = cells.min(axis=0)
        shape = tuple(cells.max(axis=0) - self.lo + 1)
        flat = np.ravel_multi_index((cells - self.lo).T, shape)
        order = np.argsort(flat, kind="stable")
        uniq, starts = np.unique(flat[order], return_index=True)
        grid = np.full(shape, np.nan)
        z = floor_points[order, 2]
        for u, s, e in zip(uniq, starts, np.append(starts[1:], flat.shape[0])):
            grid.flat[u] = float(np.median(z[s:e]))
        missing = np.isnan(grid)
        if missing.any():
            idx = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
            grid = grid[tuple(idx)]
        self.grid = grid

    def height(self, points_xy: np.ndarray) -> np.ndarray:
        cells = np.floor(points_xy[:, :2] / self.cell_m).astype(np.int64) - self.lo
        cells = np.clip(cells, 0, np.array(self.grid.shape) - 1)
        return self.grid[cells[:, 0], cells[:, 1]]


def _voxel_graph(points: np.ndarray, voxel_m: float):
    """Voxels of the points: (keys sorted, point -> voxel index, edge_a, edge_b) over 26-neighbourhoods."""
    cell = np.floor(points / voxel_m).astype(np.int64)
    cell -= cell.min(axis=0) - 1
    return voxel_edges(cell)


def _standing_components(n: int, weights: np.ndarray, ea: np.ndarray, eb: np.ndarray, cut: np.ndarray,
                         touch: np.ndarray, min_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The objects of a graph of n nodes (voxels or pixels) standing on one support: its components without
    the cut edges are segments; a segment that does not reach down to the support (touch: (n,) bool per
    node), or weighs less than min_size (weights: (n,) per node), joins the neighbour it shares most cut
    edges with (a union-find in which each such segment points at one neighbour, the smallest first).
    Returns (component id per node (n,), (n,) bool per component id: it holds a segment on the support)."""
    seg = _connected_components(n, ea[~cut], eb[~cut])
    _, seg = np.unique(seg, return_inverse=True)
    ns = int(seg.max()) + 1
    seg_size = np.bincount(seg, weights, ns)
    seg_touch = np.bincount(seg, touch.astype(np.float64), ns) > 0
    parent = np.arange(ns)
    sa, sb = seg[ea[cut]], seg[eb[cut]]
    differ = sa != sb
    pair = np.concatenate([np.stack([sa[differ], sb[differ]], 1), np.stack([sb[differ], sa[differ]], 1)])
    best: dict[int, int] = {}
    if pair.shape[0]:
        uniq, n_edges = np.unique(pair, axis=0, return_counts=True)
        uniq = uniq[np.lexsort((-n_edges, uniq[:, 0]))]
        first = np.concatenate([[True], uniq[1:, 0] != uniq[:-1, 0]])
        best = dict(zip(uniq[first, 0].tolist(), uniq[first, 1].tolist()))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(seg_size, kind="stable"):  # the smallest first
        k = int(k)
        if (seg_touch[k] and seg_size[k] >= min_size) or k not in best:
            continue
        a, b = find(k), find(best[k])
        if a != b:
            parent[a] = b
    roots = np.array([find(i) for i in range(ns)])
    return roots[seg], np.bincount(roots, seg_touch.astype(np.float64), ns) > 0


def split_objects(points: np.ndarray, lab: np.ndarray, normals: np.ndarray | None, touching: np.ndarray,
                  config: MapObjectConfig) -> list[np.ndarray]:
    """Objects among points standing on one support: lists of point indices (see the module doc, step 4).

    touching (N,) bool: the points low enough to be standing on the support."""
    cfg = config
    n = points.shape[0]
    if n == 0:
        return []
    vkeys, inverse, ea, eb = _voxel_graph(points, cfg.voxel_m)
    nv = vkeys.shape[0]
    counts = np.bincount(inverse, minlength=nv).astype(np.float64)
    centre = np.stack([np.bincount(inverse, points[:, k], nv) for k in range(3)], axis=1) / counts[:, None]
    colour = np.stack([np.bincount(inverse, lab[:, k], nv) for k in range(3)], axis=1) / counts[:, None]
    touch_v = np.bincount(inverse, touching.astype(np.float64), nv) > 0
    cut = np.zeros(ea.shape[0], dtype=bool)
    if ea.shape[0]:
        dc = colour[ea] - colour[eb]
        dc[:, 0] *= 0.5  # shading changes lightness most: half weight
        cut |= np.linalg.norm(dc, axis=1) > cfg.colour_split
        if normals is not None:
            nrm = np.stack([np.bincount(inverse, normals[:, k], nv) for k in range(3)], axis=1)
            nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
            d = centre[ea] - centre[eb]
            d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
            concave = np.einsum("ij,ij->i", nrm[ea] - nrm[eb], d) < -cfg.concave_split  # LCCP's test
            side_a, side_b = np.abs(nrm[ea, 2]) < 0.5, np.abs(nrm[eb, 2]) < 0.5
            up_a, up_b = nrm[ea, 2] >= 0.5, nrm[eb, 2] >= 0.5
            # Two side faces facing each other (a mug against a box), or a top face beside the upper rim of
            # another's side face; not a top face meeting a wall that rises from it (a seat and its back).
            dz = centre[ea, 2] - centre[eb, 2]
            rim = 0.5 * cfg.voxel_m
            crease = ((side_a & side_b) | (side_a & up_b & (dz <= rim))
                      | (up_a & side_b & (dz >= -rim)))
            cut |= concave & crease
    node_root, stands = _standing_components(nv, counts, ea, eb, cut, touch_v, cfg.min_points)
    point_root = node_root[inverse]
    _rest_on_what_is_under(points, point_root, stands, cfg)
    order = np.argsort(point_root, kind="stable")
    roots, starts = np.unique(point_root[order], return_index=True)
    return [idx for r, idx in zip(roots, np.split(order, starts[1:])) if stands[r] and idx.shape[0] >= cfg.min_points]


# Row splitting. Things standing side by side on a support (books on a shelf board, boxes along a counter) touch
# and often meet without a crease the camera resolves, so the voxel graph holds them as one segment. Along the
# row they differ where one ends: its top height, its front face (books stand with their backs against the shelf
# back, so the fronts of books of different depth stand at different depths) or its colour changes, or the row has
# a gap. These are the cues of perceptual grouping by similarity and proximity (Wertheimer's laws), read as the
# change points of a 1-D profile: a cut where the profile steps by more than noise explains. The profile is taken
# in slices of one voxel along the row (axes below), on each slice's front: the points within two voxels of its
# front-most point (the side the side faces look to), the face the camera sees, not a back panel behind it. A step
# between slices is
# - in top height or front depth: more than two voxels (the fused surface is known to within a voxel on either
#   side, so a larger difference is not noise);
# - in colour: the slices' mean CIELAB colours (lightness at half weight, as the voxel rule: shading) apart by more
#   than 5 just-noticeable differences (JND of CIELAB ~2.3, Sharma, "Digital Color Imaging Handbook", 2003; Mahy
#   et al. 1994) and by more than the two slices' colour spreads together (texture, wood grain, sensor noise: the
#   two colour distributions must not overlap);
# - a gap: nothing along the row for more than 1.5 voxels (a surface's points lie at most a voxel apart, about
#   1.4 on a diagonal).
# A step must persist: the two slices before it all differ from the two after it, the same way. A tilted edge (a
# laptop's lid) sampled on the voxel grid zig-zags from slice to slice by more than two voxels, and a blended
# colour lies between its neighbours; neither is a boundary (so a thing one slice thin is not cut out of a row
# either). A mixed slice (the boundary inside it) halves a step on either side, so a persistent step across one
# slice cuts too, on the side of the mixed slice that differs more from it.
# One object must stay whole. The cut is kept only when the cluster is half again as long as deep (a row; a box,
# a bottle or a mug with a fringe of stray points around its base is not, its footprint being near square), three
# quarters of its slices reach down to the support (a row stands along its length; a chair, a desk or a sofa is
# held up at its legs), and each piece, once pieces that do not reach the support or hold fewer than min_points
# have joined the neighbour across the smaller step (a monitor's screen beside its stand), is no longer along the
# row than the row is deep nor than it is tall (things stand in a row upright: books, binders, bottles, jars; not a
# sofa's seat between its arms or a desk's top). A laptop, a keyboard or a box show no step at all.
_ROW_JND = 2.3
_ROW_COLOUR_JNDS = 5.0
_ROW_STEP_VOXELS = 2.0
_ROW_MIN_SLICE_POINTS = 3
_ROW_STANDING_SHARE = 0.75
_ROW_ASPECT = 1.5


def split_row(points: np.ndarray, lab: np.ndarray, normals: np.ndarray | None, rel: np.ndarray,
              config: MapObjectConfig, backdrop: bool = True) -> list[np.ndarray]:
    """The pieces of one standing object that is a row of things side by side (see the comment above): lists of
    indices into points (N, 3); lab (N, 3) CIELAB; normals (N, 3) or None; rel (N,) height above the support. One
    piece, all the points, when it is not a row or shows no step."""
    cfg = config
    n = points.shape[0]
    whole = [np.arange(n)]
    if n < 2 * cfg.min_points:
        return whole
    xy = points[:, :2].astype(np.float64)
    xy -= xy.mean(axis=0)
    # The row's axes. Things that stand in a row have faces at right angles (books, boxes): the 4-fold circular mean
    # of their side faces' horizontal normals (azimuth x 4, so that fronts, backs and sides agree) gives them from
    # hundreds of normals, the same in every view, which the slices (on a grid fixed in the map) need to cut a
    # row at the same places each time and between books rather than through them. Otherwise (round or
    # irregular things, no normals) the footprint's minimum-area rectangle (rotating calipers, Toussaint 1983).
    side = np.zeros(n, dtype=bool) if normals is None else np.abs(normals[:, 2]) < 0.5
    theta = None
    if np.count_nonzero(side) >= cfg.min_points:
        nxy = normals[side, :2].astype(np.float64)
        weight = np.hypot(nxy[:, 0], nxy[:, 1])
        m = np.sum(weight * np.exp(4j * np.arctan2(nxy[:, 1], nxy[:, 0])))
        if abs(m) >= 0.5 * weight.sum():
            theta = float(np.angle(m)) / 4.0
            first = np.array([np.cos(theta), np.sin(theta)])
            if np.ptp(xy @ first) < np.ptp(xy @ np.array([-first[1], first[0]])):
                theta += np.pi / 2
    if theta is None:
        (_, _), (w, h), angle = cv2.minAreaRect(xy.astype(np.float32))
        theta = np.radians(angle) + (0.0 if w >= h else np.pi / 2)
    along_dir = np.array([np.cos(theta), np.sin(theta)])
    across_dir = np.array([-along_dir[1], along_dir[0]])
    along, across = xy @ along_dir, xy @ across_dir
    depth = float(np.ptp(across))
    if float(np.ptp(along)) < max(_ROW_ASPECT * depth, 3 * cfg.voxel_m):
        return whole
    slice_m = cfg.voxel_m
    # The front: the side the side faces look to (a bookcase's back panel and the books' spines face it too).
    front_cue = False
    if side.any():
        facing = float(np.sum(normals[side, :2].astype(np.float64) @ across_dir))
        if facing != 0.0:
            across = -across if facing > 0 else across  # the front is where `across` is smallest
            front_cue = True
            if backdrop:
                # A backdrop: a face looking to the front at the back of the row, all along it (the bookcase's
                # back panel the books stand against). It is not one of the row's things: the row is cut without
                # it, and it is a piece of its own (which then goes with the bookcase, through the board).
                front_dir = across_dir * (-1.0 if facing > 0 else 1.0)
                back = (normals[:, :2].astype(np.float64) @ front_dir < -0.7) & (across >= across.max() - cfg.voxel_m)
                if (np.count_nonzero(back) >= cfg.min_points and np.count_nonzero(~back) >= 2 * cfg.min_points
                        and np.ptp(along[back]) >= 0.8 * np.ptp(along)):
                    rest = np.flatnonzero(~back)
                    pieces = split_row(points[rest], lab[rest], normals[rest], rel[rest], cfg, backdrop=False)
                    return [rest[p] for p in pieces] + [np.flatnonzero(back)] if len(pieces) > 1 else whole
    # Slices of a voxel, on a grid fixed in the map (not at the crop's end), so that every view cuts a row at the same
    # places and the memory sees the same pieces again. The map's surface points lie on its voxel grid's planes
    # (where the TSDF crosses zero along a voxel edge): the slices' bounds lie half a voxel off them, or a hair's
    # change of axis moves a whole column across a bound.
    grid = np.floor(points[:, :2].astype(np.float64) @ along_dir / slice_m + 0.5).astype(np.int64)
    slice_of = grid - grid.min()
    ns = int(slice_of.max()) + 1
    front = np.full(ns, np.inf)
    np.minimum.at(front, slice_of, across)
    band = across <= front[slice_of] + 2 * cfg.voxel_m
    sb = slice_of[band]
    count = np.bincount(sb, minlength=ns)
    top = np.full(ns, -np.inf)
    np.maximum.at(top, sb, rel[band])
    weighted = lab[band].astype(np.float64) * np.array([0.5, 1.0, 1.0])
    colour = np.stack([np.bincount(sb, weighted[:, k], ns) for k in range(3)], axis=1) / np.maximum(count, 1)[:, None]
    # The colour spread within a slice (texture, wood grain, sensor noise): RMS distance from the slice's mean.
    spread = np.sqrt(np.bincount(sb, np.sum((weighted - colour[sb]) ** 2, axis=1), ns) / np.maximum(count, 1))
    step_m = _ROW_STEP_VOXELS * cfg.voxel_m
    valid = np.flatnonzero(count >= _ROW_MIN_SLICE_POINTS)
    touching = rel <= cfg.gap_m + cfg.touch_m
    # A row stands on the support along its length: three quarters of its slices reach down to it. A chair, a desk
    # or a sofa (legs at the ends, the seat or the top between) is one object held up at a few places.
    slice_touches = np.bincount(slice_of, touching.astype(np.int64), ns) > 0
    if valid.shape[0] < 3 or slice_touches[valid].mean() < _ROW_STANDING_SHARE:
        return whole

    def colour_step(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The colour difference between slices x and y over its threshold (> 1: a step)."""
        return np.linalg.norm(colour[x] - colour[y], axis=1) / np.maximum(_ROW_COLOUR_JNDS * _ROW_JND,
                                                                         spread[x] + spread[y])

    def step(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """How far past its threshold the larger cue steps between slices a and b (> 1: a step)."""
        s = np.maximum(np.abs(top[a] - top[b]) / step_m, colour_step(a, b))
        return np.maximum(s, np.abs(front[a] - front[b]) / step_m) if front_cue else s

    a, b = valid[:-1], valid[1:]
    pair = step(a, b)  # adjacent slices
    nv = valid.shape[0]

    def persistent(i: np.ndarray, skip: int) -> np.ndarray:
        """The step at boundaries i (between valid[i] and valid[i + 1 + skip]) that persists: the two slices
        before it (valid[i - 1], valid[i]) all differ from the two after it, the same way (a height or depth
        step, not the zig-zag of a tilted edge sampled on the voxel grid; a colour that is not a blend)."""
        l1, l2 = valid[np.maximum(i - 1, 0)], valid[i]
        r1, r2 = valid[np.minimum(i + 1 + skip, nv - 1)], valid[np.minimum(i + 2 + skip, nv - 1)]

        def level(v: np.ndarray) -> np.ndarray:
            up = np.minimum(v[r1], v[r2]) - np.maximum(v[l1], v[l2])
            down = np.minimum(v[l1], v[l2]) - np.maximum(v[r1], v[r2])
            return np.maximum(up, down) / step_m

        s = np.maximum(level(top), np.min([colour_step(x, y) for x in (l1, l2) for y in (r1, r2)], axis=0))
        return np.maximum(s, level(front)) if front_cue else s

    score = persistent(np.arange(nv - 1), 0)
    # A gap: along the row, nothing for more than 1.5 voxels (a surface's points lie at most a voxel apart, √2 on a
    # diagonal) between two slices.
    lo_al, hi_al = np.full(ns, np.inf), np.full(ns, -np.inf)
    np.minimum.at(lo_al, slice_of, along)
    np.maximum.at(hi_al, slice_of, along)
    sorted_al = np.sort(along)
    jumps = np.diff(sorted_al)
    gap_mid = (sorted_al[:-1] + 0.5 * jumps)[jumps > 1.5 * cfg.voxel_m]
    score[np.searchsorted(gap_mid, lo_al[b]) > np.searchsorted(gap_mid, hi_al[a])] = np.inf
    cut = score > 1.0
    # A step across a mixed slice (the boundary inside it): the slices before it against those after it, cut on
    # the side of the mixed slice that differs more from it.
    if nv >= 3:
        m = np.flatnonzero((~cut[:-1]) & (~cut[1:]))
        m = m[persistent(m, 1) > 1.0]
        pick = np.where(pair[m] >= pair[m + 1], m, m + 1)
        cut[pick] = True
        score[pick] = np.maximum(score[pick], 1.0)
    if not cut.any():
        return whole
    # Pieces: runs of slices between cuts; a slice with too few front points goes with the slices around it.
    piece_of_valid = np.concatenate([[0], np.cumsum(cut)])
    piece_of_slice = np.interp(np.arange(ns), valid, piece_of_valid).round().astype(np.int64)
    piece = piece_of_slice[slice_of]
    # Join pieces that do not stand on the support (or are small) to the neighbour across the smaller step.
    boundary_score = score[cut]  # between piece k and k + 1
    npieces = int(piece.max()) + 1
    parent = np.arange(npieces)
    for _ in range(npieces):
        sizes = np.bincount(parent[piece], minlength=npieces)
        stands = np.bincount(parent[piece], touching.astype(np.int64), npieces) > 0
        rises = np.zeros(npieces)
        np.maximum.at(rises, parent[piece], rel)
        groups = np.unique(parent)
        weak = [g for g in groups if sizes[g] < cfg.min_points or not stands[g] or rises[g] < cfg.min_rise_m]
        if not weak or groups.shape[0] == 1:
            break
        g = weak[0]
        members = np.flatnonzero(parent == g)
        lo, hi = members.min(), members.max()
        left = boundary_score[lo - 1] if lo > 0 else -1.0
        right = boundary_score[hi] if hi < npieces - 1 else -1.0
        if left < 0 and right < 0:
            break
        other = parent[lo - 1] if (right < 0 or (left >= 0 and left <= right)) else parent[hi + 1]
        parent[parent == g] = other
    labels = parent[piece]
    groups = np.unique(labels)
    if groups.shape[0] < 2:
        return whole
    out = [np.flatnonzero(labels == g) for g in groups]
    if any(float(np.ptp(along[o])) > min(depth, float(rel[o].max())) for o in out):
        return whole  # not a row: a piece wider than deep or tall (a sofa's seat between its arms, a desk's top)
    return out


def _rest_on_what_is_under(points: np.ndarray, point_root: np.ndarray, stands: np.ndarray,
                           config: MapObjectConfig, drop_m: float = 0.5) -> None:
    """A part that does not reach the support and touches nothing that does (a table top, whose underside
    and the legs' upper ends no camera saw from above) is one object with the standing parts under it:
    those lying (80 % of their points) within its footprint, whose top is less than drop_m below its
    lowest point (all four legs; not a chair pushed under a table, whose back is beside it). In place."""
    roots, first, counts = np.unique(point_root, return_index=True, return_counts=True)
    order = np.argsort(point_root, kind="stable")
    members = dict(zip(roots.tolist(), np.split(order, np.cumsum(counts)[:-1])))
    floating = [r for r in roots.tolist() if not stands[r] and members[r].shape[0] >= config.min_points]
    standing = [r for r in roots.tolist() if stands[r]]
    if not floating or not standing:
        return
    keys = cell_keys(points, config.voxel_m)
    top = {r: float(points[members[r], 2].max()) for r in standing}
    for r in floating:
        mine = members[r]
        low = float(points[mine, 2].min())
        near = [h for h in standing if low - drop_m <= top[h] < low]
        if not near:
            continue
        footprint = grow_cells(keys[mine], 1)
        holders = [h for h in near if in_cells(footprint, keys[members[h]]).mean() >= 0.8]
        if holders:
            point_root[mine] = holders[0]
            for h in holders[1:]:
                point_root[members[h]] = holders[0]


def _over(surface: SupportSurface, point_keys: np.ndarray, margin_cells: int = 0) -> np.ndarray:
    """(N,) bool: the points (their `cell_keys`) over the surface's footprint, grown by margin_cells."""
    keys = grow_cells(surface.cell_keys, margin_cells) if margin_cells else surface.cell_keys
    return in_cells(keys, point_keys)


def _floor_patches(points: np.ndarray, surfaces: Sequence[SupportSurface], config: MapObjectConfig,
                   point_keys: np.ndarray) -> list:
    """The floor-kind surfaces that are the floor: the large ones, and the small ones less than
    min_support_rise_m above the large ones' local height (a real floor is uneven by a few centimetres; a
    bottom shelf board a few centimetres up is a support of its own)."""
    floors = [s for s in surfaces if s.kind is SupportKind.FLOOR]
    big = [s for s in floors if s.area_m2 >= config.support.floor_min_area_m2 / 4]
    if not big or len(big) == len(floors):
        return floors
    tol = config.support.height_tol_m
    z = points[:, 2]
    on_big = np.zeros(points.shape[0], dtype=bool)
    for s in big:
        on_big |= (np.abs(z - s.height_m) <= tol) & _over(s, point_keys)
    if not on_big.any():
        return floors
    field = _FloorField(points[on_big])
    return [s for s in floors if s in big
            or s.height_m - float(field.height(np.array([s.centre_xy_m]))[0]) < config.min_support_rise_m]


def _standalone_supports(surfaces: Sequence[SupportSurface], floors: Sequence[SupportSurface],
                         config: MapObjectConfig) -> list[int]:
    """Indices of the elevated surfaces at least min_support_rise_m above the surface under them: a thinner
    slab (a laptop's base, a book) is the top of a flat object, and what rises from it is part of it."""
    floor_z = min((s.height_m for s in floors), default=None)
    out = []
    for i, s in enumerate(surfaces):
        if s.kind is SupportKind.FLOOR:
            continue
        centre = np.array([s.centre_xy_m])
        below = [floor_z] if floor_z is not None else []
        for other in surfaces:
            if other is s or other.kind is SupportKind.FLOOR:
                continue
            h = float(other.height_at(centre)[0])
            if h < s.height_m - config.support.height_tol_m and in_cells(other.cell_keys, s.cell_keys).any():
                below.append(h)
        if not below or s.height_m - max(below) >= config.min_support_rise_m:
            out.append(i)
    return out


def segment_map_objects(points: np.ndarray, colors_rgb: np.ndarray, normals: np.ndarray | None,
                        detection: SupportDetection, config: MapObjectConfig | None = None) -> MapSegmentation:
    """Class-agnostic objects standing on the detected supports (steps 2-4 of the module doc)."""
    cfg = config or MapObjectConfig()
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    n = pts.shape[0]
    surface = np.zeros(n, dtype=bool)
    wall = np.zeros(n, dtype=bool) if normals is None else wall_points(pts, np.asarray(normals, np.float32), cfg)
    if n == 0 or not detection.surfaces:
        return MapSegmentation((), surface, wall)
    tol = cfg.support.height_tol_m
    z = pts[:, 2]
    point_keys = cell_keys(pts, cfg.support.cell_m)
    floors = _floor_patches(pts, detection.surfaces, cfg, point_keys)
    surfaces = [dataclasses.replace(s, kind=SupportKind.FLOOR if s in floors else SupportKind.ELEVATED)
                if s.kind is SupportKind.FLOOR else s for s in detection.surfaces]
    detection = dataclasses.replace(detection, surfaces=tuple(surfaces))
    elevated = _standalone_supports(detection.surfaces, floors, cfg)
    owner = np.full(n, -2, dtype=np.int64)  # -2: none; -1: the floor; i >= 0: detection.surfaces[i]
    floor_field, base_height = None, np.full(n, np.nan)
    if floors:
        on_floor = np.zeros(n, dtype=bool)
        for s in floors:
            on_floor |= (np.abs(z - s.height_m) <= tol) & _over(s, point_keys)
        if on_floor.any():
            floor_field = _FloorField(pts[on_floor])
            floor_z = floor_field.height(pts)
            surface |= np.abs(z - floor_z) <= tol
            above = (z > floor_z + cfg.gap_m) & (z <= floor_z + cfg.max_height_m)
            owner[above] = -1
            base_height[above] = floor_z[above]
    xy_in = {}
    overhang_cells = int(round(cfg.overhang_m / cfg.support.cell_m))
    for i in sorted(elevated, key=lambda i: detection.surfaces[i].height_m):  # the highest below wins
        s = detection.surfaces[i]
        xy_in[i] = _over(s, point_keys)
        # What stands on a surface hides part of it, and may overhang what is left in view (books deeper
        # than the strip of shelf board in front of them).
        inside = _over(s, point_keys, overhang_cells)
        plane = s.height_at(pts)
        surface |= inside & (np.abs(z - plane) <= tol)
        above = inside & (z > plane + cfg.gap_m) & (z <= plane + cfg.max_height_m)
        owner[above] = i
        base_height[above] = plane[above]
    owner[wall] = -2
    lab = lab_colours(colors_rgb)
    nrm = None if normals is None else np.asarray(normals, dtype=np.float32)
    def surface_index(other: np.ndarray) -> np.ndarray:
        other = np.asarray(other, dtype=np.float32).reshape(-1, 3)
        other_keys = cell_keys(other, cfg.support.cell_m)
        out = np.full(other.shape[0], -2, dtype=np.int64)
        if floor_field is not None:
            out[np.abs(other[:, 2] - floor_field.height(other)) <= tol] = -1
        for i in sorted(elevated, key=lambda i: detection.surfaces[i].height_m):
            s = detection.surfaces[i]
            out[(np.abs(other[:, 2] - s.height_at(other)) <= tol) & _over(s, other_keys)] = i
        return out

    objects: list[MapObject] = []
    for i in sorted(elevated, key=lambda i: -detection.surfaces[i].height_m) + ([-1] if floor_field else []):
        idx = np.flatnonzero(owner == i)
        if idx.shape[0] < cfg.min_points:
            continue
        rel = z[idx] - base_height[idx]
        touching = rel <= cfg.gap_m + cfg.touch_m
        below_keys = None
        if i >= 0:
            s = detection.surfaces[i]
            plane = s.height_at(pts)
            parent = owner[surface & xy_in[i] & (np.abs(z - plane) <= tol)]
            parent = parent[parent != -2]
            parent_id = int(np.bincount(parent + 1).argmax()) - 1 if parent.shape[0] else -2
            # What continues below this surface under a segment's base, and belongs with the surface to the
            # object under it (not the books on the shelf board below: they stand on another surface).
            window = (z >= plane - cfg.attach_depth_m) & (z < plane - tol) & ~wall & (owner == parent_id)
            # Cells of the segmentation voxel, not grown: what is right under the base, not beside it (books
            # against a bookcase's back panel, which goes on below the board they stand on).
            below_keys = np.unique(cell_keys(pts[window], cfg.voxel_m))
        for whole_part in split_objects(pts[idx], lab[idx], None if nrm is None else nrm[idx], touching, cfg):
            # A row of things side by side is cut first: each of them, not the row, is judged by what follows
            # (books against a bookcase's back panel, which continues below their board: the panel goes with the
            # bookcase, the books stay on their board).
            ws = idx[whole_part]
            for piece in split_row(pts[ws], lab[ws], None if nrm is None else nrm[ws], rel[whole_part], cfg):
                part = whole_part[piece]
                members = idx[part]
                if below_keys is not None:
                    base = members[rel[part] <= cfg.gap_m + cfg.touch_m]
                    base_cells = np.unique(cell_keys(pts[base], cfg.voxel_m))
                    if base_cells.shape[0] and in_cells(below_keys, base_cells).mean() >= cfg.attach_frac:
                        if parent_id != -2:  # segmented with the object under the surface, later
                            owner[members] = parent_id
                            base_height[members] = (detection.surfaces[parent_id].height_at(pts[members])
                                                    if parent_id >= 0 else floor_field.height(pts[members]))
                        continue
                extent = np.ptp(pts[members, :2], axis=0)
                if (float(extent.max()) > cfg.max_extent_m or float(np.ptp(z[members])) > cfg.max_height_m
                        or float(rel[part].max()) < cfg.min_rise_m):
                    continue
                objects.append(MapObject(members, i))
    return MapSegmentation(tuple(objects), surface, wall, surface_index)


def render_masks(view: BackendView, points: np.ndarray, segmentation: MapSegmentation,
                 config: MapObjectConfig | None = None) -> list[tuple[int, np.ndarray]]:
    """Each object's mask in the view: (object index, (H, W) bool), objects under min_mask_pixels left out.

    A pixel is an object's when its own depth, lifted into the map, falls in one of the object's voxels
    (voxel_m), or else in a voxel next to one; a pixel whose lifted point is in a wall's voxel belongs to no
    object, nor one on a support surface to the objects standing on that surface (the table top is the
    table's, never the mug's). Occluded parts of an object therefore claim no pixel."""
    cfg = config or MapObjectConfig()
    if not segmentation.objects or view.depth_m is None:
        return []
    height, width = view.depth_m.shape
    cam, pix = unproject_depth(view.depth_m, view.intrinsics)
    if cam.shape[0] == 0:
        return []
    world = _transform32(np.asarray(view.world_T_camera, dtype=np.float64), cam)
    pixel_keys = voxel_keys(world, cfg.voxel_m)
    obj_keys = [np.unique(voxel_keys(points[o.indices], cfg.voxel_m)) for o in segmentation.objects]
    keys = np.concatenate(obj_keys)
    labels = np.concatenate([np.full(k.shape[0], j, np.int64) for j, k in enumerate(obj_keys)])
    blocked = np.unique(voxel_keys(points[segmentation.wall], cfg.voxel_m))
    owner = np.full(pixel_keys.shape[0], -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    keys, labels = keys[order], labels[order]
    pos = np.minimum(np.searchsorted(keys, pixel_keys), keys.shape[0] - 1)
    exact = keys[pos] == pixel_keys
    owner[exact] = labels[pos[exact]]
    # Then the voxels next to an object's (depth noise, and the map's surface lies between voxel centres),
    # unless the pixel is on a support or a wall.
    rest = np.flatnonzero(~exact & ~in_cells(blocked, pixel_keys))
    if rest.shape[0]:
        grown = (keys[:, None] + NEIGHBOUR_KEY_OFFSETS[None, :]).ravel()
        grown_labels = np.repeat(labels, NEIGHBOUR_KEY_OFFSETS.shape[0])
        order = np.argsort(grown, kind="stable")
        grown, grown_labels = grown[order], grown_labels[order]
        pos = np.minimum(np.searchsorted(grown, pixel_keys[rest]), grown.shape[0] - 1)
        hit = grown[pos] == pixel_keys[rest]
        owner[rest[hit]] = grown_labels[pos[hit]]
    supports = np.array([o.support_index for o in segmentation.objects], dtype=np.int64)
    claimed = np.flatnonzero(owner >= 0)
    on = segmentation.surface_index(world[claimed])
    owner[claimed[on == supports[owner[claimed]]]] = -1
    flat = pix[:, 0] * width + pix[:, 1]
    out = []
    for j in np.unique(owner[owner >= 0]):
        sel = flat[owner == j]
        if sel.shape[0] < cfg.min_mask_pixels:
            continue
        mask = np.zeros(height * width, dtype=bool)
        mask[sel] = True
        out.append((int(j), mask.reshape(height, width)))
    return out


def frustum_crop(points: np.ndarray, view: BackendView, max_range_m: float, margin: float) -> np.ndarray:
    """(K,) int64 indices of the points in front of the view, within max_range_m of it, projecting inside
    the image grown by `margin` of its size on every side."""
    camera_T_world = invert_transform(np.asarray(view.world_T_camera, dtype=np.float64))
    cam = _transform32(camera_T_world, points)
    z = cam[:, 2]
    k = view.intrinsics
    front = (z > 0.05) & (z <= max_range_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = cam[:, 0] / z * k.fx + k.cx
        v = cam[:, 1] / z * k.fy + k.cy
    mw, mh = margin * k.width, margin * k.height
    inside = front & (u >= -mw) & (u < k.width + mw) & (v >= -mh) & (v < k.height + mh)
    return np.flatnonzero(inside)


@dataclass(frozen=True)
class MapObjectStats:
    """Counters of the proposer; ms per view from the snapshot to the masks (the last 500 views)."""

    views: int
    objects_proposed: int
    tilted_views: int
    ms_p50: float
    ms_max: float


class MapObjectProposer:
    """Class-agnostic proposals from the map (a ProposeFn): `propose(views)` as a detector's."""

    def __init__(self, snapshot_fn: SnapshotFn, config: MapObjectConfig | None = None) -> None:
        self.config = config or MapObjectConfig()
        self._snapshot_fn = snapshot_fn
        self._lock = threading.Lock()
        self._floor_height_m: float | None = None
        self._tilt_logged = False
        self._counts = dict(views=0, objects=0, tilted=0)
        self._ms: deque[float] = deque(maxlen=500)

    def reset(self) -> None:
        """Forget the floor height (a map reset or load)."""
        with self._lock:
            self._floor_height_m = None

    def propose(self, views: Sequence[BackendView]) -> tuple[ViewPredictions, ...]:
        snapshot = self._snapshot_fn()
        return tuple(self.propose_view(view, snapshot) for view in views)

    def propose_view(self, view: BackendView, snapshot: MapSnapshot) -> ViewPredictions:
        cfg = self.config
        t0 = time.perf_counter()
        if view.depth_m is None or snapshot.num_points == 0 or snapshot.normals_world is None:
            return ViewPredictions(view.keyframe_id)
        crop = frustum_crop(snapshot.points_world_m, view, cfg.max_range_m, cfg.frustum_margin)
        pts, normals = snapshot.points_world_m[crop], snapshot.normals_world[crop]
        with self._lock:
            floor = self._floor_height_m
        detection = find_supports(pts, normals, cfg.support, floor)
        lowest = lowest_floor_candidate(detection.surfaces, cfg.support)
        if lowest is not None and (floor is None or lowest < floor - cfg.support.floor_tol_m):
            floor = lowest  # the first floor seen, or a lower one: what was taken for it is raised off it
            detection = find_supports(pts, normals, cfg.support, floor)
            with self._lock:
                self._floor_height_m = floor
        if detection.tilted:
            self._note_tilt(view.keyframe_id, detection)
        segmentation = segment_map_objects(pts, snapshot.colors_rgb[crop], normals, detection, cfg)
        predictions = []
        for j, mask in render_masks(view, pts, segmentation, cfg):
            r0, r1, c0, c1 = mask_extent(mask)
            predictions.append(Prediction2D(mask=mask, confidence=cfg.confidence, embedding=np.zeros(0, np.float32),
                                            label=UNLABELLED, box_xyxy=(float(c0), float(r0), float(c1 + 1), float(r1 + 1)),
                                            geometric=True))
        with self._lock:
            self._counts["views"] += 1
            self._counts["objects"] += len(predictions)
            self._ms.append((time.perf_counter() - t0) * 1e3)
        return ViewPredictions(view.keyframe_id, tuple(predictions), detection.surfaces)

    def _note_tilt(self, keyframe_id: int, detection: SupportDetection) -> None:
        with self._lock:
            self._counts["tilted"] += 1
            first = not self._tilt_logged
            self._tilt_logged = True
        if first:
            tilt, area = max(detection.tilted, key=lambda t: t[1])
            _LOG.warning("keyframe %d: a %.1f m^2 support surface tilts %.1f deg from the map's z axis (limit %.1f): "
                         "is the gravity estimate right? Tilting surfaces give no class-agnostic objects (the "
                         "detector's proposals go on); logged once", keyframe_id, area, tilt,
                         self.config.support.max_tilt_deg)

    @property
    def stats(self) -> MapObjectStats:
        with self._lock:
            ms = np.asarray(self._ms) if self._ms else np.zeros(1)
            c = self._counts
            return MapObjectStats(c["views"], c["objects"], c["tilted"], float(np.median(ms)), float(ms.max()))


def chain_proposers(*fns: ProposeFn) -> ProposeFn:
    """One ProposeFn from several: per view, the predictions and surfaces of each, in order."""

    def propose(views: Sequence[BackendView]) -> tuple[ViewPredictions, ...]:
        views = tuple(views)
        out = [ViewPredictions(v.keyframe_id) for v in views]
        for fn in fns:
            answers = fn(views)
            if len(answers) != len(views):
                raise RuntimeError(f"a proposer answered {len(answers)} views for {len(views)}")
            out = [ViewPredictions(o.keyframe_id, o.predictions + tuple(a.predictions),
                                   o.supports + tuple(getattr(a, "supports", ())))
                   for o, a in zip(out, answers)]
        return tuple(out)

    return propose


__all__ = ["MapObject", "MapObjectConfig", "MapObjectProposer", "MapObjectStats", "MapSegmentation",
           "chain_proposers", "frustum_crop", "lab_colours", "render_masks", "segment_map_objects", "split_objects", "split_row",
           "wall_points"]
