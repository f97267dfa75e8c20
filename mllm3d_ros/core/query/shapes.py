"""Shape words checked on an object's gravity-aligned box and points ("the flat one", "the box-shaped one").

H is the height of the gravity-aligned box (z up); L >= W are the sides of the footprint's minimum-area
rectangle (the box's own PCA yaw is arbitrary for a square footprint). The rule (README, "Honest answers"):
- flat: H <= FLAT_RATIO * W (a magazine, a plate, a closed laptop: much lower than it is narrow);
- tall: H >= TALL_RATIO * L (a bottle, a vase: higher than it is long);
- box-shaped: neither, and its top is a flat face covering the footprint: at least BOX_TOP_FILL of the
  footprint's cells (a grid of `cell_m`) hold a point within `cell_m` of the box's top (a mug's rim, a
  chair's backrest or a ball's cap cover only part of it);
- round: W >= ROUND_ASPECT * L and the convex hull of its footprint fills about pi/4 of the box around
  it (a disc: 0.785, a square: 1.0; a half-seen cylinder's half disc also gives pi/4), below
  ROUND_FILL. Needs at least MIN_ROUND_CELLS cells across: at 3 cm voxels a 10 cm mug is too coarse to
  tell round from square, and is then not called either.
An object is every shape whose test holds (possibly none). Thresholds are geometric definitions, not
fitted to a scene.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from ..types import OrientedBox3D

SHAPE_WORDS = ("flat", "tall", "box-shaped", "boxy", "cuboid", "rectangular", "round", "cylindrical", "circular")
_CANONICAL = {"boxy": "box-shaped", "cuboid": "box-shaped", "rectangular": "box-shaped", "cylindrical": "round",
              "circular": "round"}
FLAT_RATIO = 0.35
TALL_RATIO = 1.5
BOX_TOP_FILL = 0.6
ROUND_ASPECT = 0.75
ROUND_FILL = 0.88
MIN_ROUND_CELLS = 5


def canonical_shape(word: str) -> str | None:
    """The shape a word names ("boxy" -> "box-shaped"), None when it names none."""
    word = word.lower()
    if word in _CANONICAL:
        return _CANONICAL[word]
    return word if word in SHAPE_WORDS else None


def _hull(xy: np.ndarray) -> np.ndarray:
    """(H, 2) convex hull of (N, 2) points, counter-clockwise (Qhull through scipy); the points themselves
    when they are too few or collinear."""
    pts = np.asarray(xy, dtype=np.float64)
    if pts.shape[0] < 3:
        return pts
    try:
        return pts[ConvexHull(pts).vertices]
    except QhullError:  # collinear (or all equal): no area
        return pts[:2]


def _area(poly: np.ndarray) -> float:
    if poly.shape[0] < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _min_area_frame(hull: np.ndarray) -> np.ndarray:
    """(2, 2) rotation whose rows are the axes of the hull's minimum-area bounding rectangle (one of its sides
    lies along a hull edge: Freeman & Shapira 1975). The box's own yaw (PCA) is arbitrary for a square."""
    edges = np.roll(hull, -1, axis=0) - hull
    norms = np.linalg.norm(edges, axis=1)
    u = edges[norms > 1e-9] / norms[norms > 1e-9, None]
    if u.shape[0] == 0:
        return np.eye(2)
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)
    pu, pv = hull @ u.T, hull @ v.T  # (H, E) projections on every candidate frame
    areas = (pu.max(axis=0) - pu.min(axis=0)) * (pv.max(axis=0) - pv.min(axis=0))
    k = int(np.argmin(areas))
    return np.array([u[k], v[k]])


def shape_words(box: OrientedBox3D, points_world_m: np.ndarray, cell_m: float = 0.03) -> frozenset[str]:
    """The canonical shape words (`flat`, `tall`, `box-shaped`, `round`) that hold for an object with this
    gravity-aligned box and these (N, 3) points (its surface points or voxel centres, world frame). The
    footprint is measured in the frame of its minimum-area rectangle (the box's PCA yaw is arbitrary for a
    square footprint); the height is the box's."""
    pts = np.asarray(points_world_m, dtype=np.float64).reshape(-1, 3)
    height = float(np.asarray(box.size_m, dtype=np.float64)[2])
    if pts.shape[0] < 3:
        return frozenset()
    hull = _hull(pts[:, :2])
    if hull.shape[0] < 3:
        return frozenset()
    rot = _min_area_frame(hull)
    local = pts[:, :2] @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    size = hi - lo
    length, width = float(size.max()), float(size.min())
    out = set()
    if width <= 0 or length <= 0:
        return frozenset()
    if height <= FLAT_RATIO * width:
        out.add("flat")
    if height >= TALL_RATIO * length:
        out.add("tall")
    nx, ny = (max(1, int(np.ceil(size[i] / cell_m))) for i in (0, 1))
    if not out:
        top = local[pts[:, 2] >= pts[:, 2].max() - cell_m]
        ix = np.clip(((top[:, 0] - lo[0]) / cell_m).astype(int), 0, nx - 1)
        iy = np.clip(((top[:, 1] - lo[1]) / cell_m).astype(int), 0, ny - 1)
        if np.unique(ix * ny + iy).shape[0] >= BOX_TOP_FILL * nx * ny:
            out.add("box-shaped")
    if width >= ROUND_ASPECT * length and min(nx, ny) >= MIN_ROUND_CELLS:
        fill = _area(hull) / max(float(size[0] * size[1]), 1e-9)
        if fill < ROUND_FILL:
            out.add("round")
            out.discard("box-shaped")
    return frozenset(out)
