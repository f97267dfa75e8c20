"""Shape words checked on an object's gravity-aligned box and points ("the flat one", "the box-shaped one").

The box is yaw-only with z up (`object_geometry.oriented_box`); L >= W are its horizontal sides and H
its height. The rule (documented in the README, "Naming by geometry"):
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

from .types import OrientedBox3D

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


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _hull_area(xy: np.ndarray) -> float:
    """Area of the convex hull of (N, 2) points (Andrew's monotone chain); 0 for fewer than 3."""
    pts = np.unique(np.round(xy, 6), axis=0)
    if pts.shape[0] < 3:
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]

    def half(points):
        chain: list[np.ndarray] = []
        for p in points:
            while len(chain) >= 2 and _cross(chain[-1] - chain[-2], p - chain[-2]) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    hull = np.array(half(pts)[:-1] + half(pts[::-1])[:-1])
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def shape_words(box: OrientedBox3D, points_world_m: np.ndarray, cell_m: float = 0.03) -> frozenset[str]:
    """The canonical shape words (`flat`, `tall`, `box-shaped`, `round`) that hold for an object with this
    gravity-aligned box and these (N, 3) points (its surface points or voxel centres, world frame)."""
    size = np.asarray(box.size_m, dtype=np.float64)
    length, width = max(size[0], size[1]), min(size[0], size[1])
    height = float(size[2])
    out = set()
    if width <= 0 or length <= 0:
        return frozenset()
    if height <= FLAT_RATIO * width:
        out.add("flat")
    if height >= TALL_RATIO * length:
        out.add("tall")
    pts = np.asarray(points_world_m, dtype=np.float64).reshape(-1, 3)
    if pts.shape[0] == 0:
        return frozenset(out)
    # Points in the box frame (yaw only): x, y horizontal along the box's sides.
    local = (pts - np.asarray(box.center_world_m)) @ np.asarray(box.world_R_box, dtype=np.float64)
    nx, ny = (max(1, int(np.ceil(size[i] / cell_m))) for i in (0, 1))
    if not out:
        top = local[local[:, 2] >= size[2] / 2.0 - cell_m]
        ix = np.clip(((top[:, 0] + size[0] / 2.0) / cell_m).astype(int), 0, nx - 1)
        iy = np.clip(((top[:, 1] + size[1] / 2.0) / cell_m).astype(int), 0, ny - 1)
        cells = np.unique(ix * ny + iy).shape[0]
        if cells >= BOX_TOP_FILL * nx * ny:
            out.add("box-shaped")
    if width >= ROUND_ASPECT * length and min(nx, ny) >= MIN_ROUND_CELLS:
        fill = _hull_area(local[:, :2]) / max(float(size[0] * size[1]), 1e-9)
        if fill < ROUND_FILL:
            out.add("round")
            out.discard("box-shaped")
    return frozenset(out)
