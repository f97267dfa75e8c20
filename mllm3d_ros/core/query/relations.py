"""Spatial relations decided in 3D on gravity-aligned boxes (GAP-MLLM's point: make geometry explicit).

World z is up (REP-103). "left/right/in front/behind" are taken in the viewer's frame: the camera
pose passed in (the latest keyframe's, i.e. where the robot's camera looks from), with its optical x
to the right and z forward projected onto the ground plane. Every function takes boxes, so the same
rules serve the object memory's instances and voted objects, and can be checked on ground-truth boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .instruction import Relation, Superlative
from ..types import OrientedBox3D

ON_GAP_M = 0.12  # a target rests on an anchor when its bottom is within this of the anchor's top
# "At the end of" an elongated anchor (a table, a bench, a counter): in the outer END_FRACTION of the
# half-length along its long axis or beyond it, with its centre inside the band of the anchor's width
# (END_SIDE_M of slack: a chair at the head of a table sits in that band a seat's depth out; one along a
# long side, near a corner, has its centre outside it), and within END_GAP_M of it (the anchor's end,
# not the room's).
END_FRACTION = 0.6
END_SIDE_M = 0.1
END_GAP_M = 0.6
# Relations that rank every candidate (by distance) rather than hold or not: "the one next to X" in an
# exclusion is the best-ranked candidate, not every candidate at some distance.
RANKING_RELATIONS = frozenset({Relation.NEAR, Relation.NEAREST_TO, Relation.FARTHEST_FROM, Relation.BETWEEN})


@dataclass(frozen=True)
class BoxGeometry:
    """Axis-aligned bounds of an oriented box's corners in the world frame: lo (3,), hi (3,), centre (3,)."""

    lo: np.ndarray
    hi: np.ndarray
    center: np.ndarray

    @staticmethod
    def of(box: OrientedBox3D) -> "BoxGeometry":
        half = np.asarray(box.size_m, dtype=np.float64) / 2.0
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
        world = corners @ np.asarray(box.world_R_box, dtype=np.float64).T + np.asarray(box.center_world_m)
        return BoxGeometry(world.min(axis=0), world.max(axis=0), np.asarray(box.center_world_m, dtype=np.float64))


def _xy_overlap(a: BoxGeometry, b: BoxGeometry, margin_m: float = 0.0) -> float:
    """Fraction of a's ground footprint inside b's (grown by margin_m)."""
    lo = np.maximum(a.lo[:2], b.lo[:2] - margin_m)
    hi = np.minimum(a.hi[:2], b.hi[:2] + margin_m)
    inter = float(np.prod(np.maximum(0.0, hi - lo)))
    area = float(np.prod(np.maximum(1e-6, a.hi[:2] - a.lo[:2])))
    return inter / area


def _smaller_overlap(a: BoxGeometry, b: BoxGeometry, margin_m: float = 0.0) -> float:
    """Fraction of the smaller of the two ground footprints inside the other (grown by margin_m): a box
    under a mug covers little of the box's footprint but all of the mug's."""
    return max(_xy_overlap(a, b, margin_m), _xy_overlap(b, a, margin_m))


def _axis_extent(g: BoxGeometry, origin: np.ndarray, axis: np.ndarray) -> tuple[float, float]:
    """(min, max) of a box's ground-footprint corners projected on `axis` from `origin`, in units of |axis|."""
    corners = np.array([[x, y] for x in (g.lo[0], g.hi[0]) for y in (g.lo[1], g.hi[1])])
    s = (corners - origin) @ axis / max(float(axis @ axis), 1e-9)
    return float(s.min()), float(s.max())


def box_gap_m(a: BoxGeometry, b: BoxGeometry) -> float:
    """Distance between two boxes' bounds (0 when they touch or intersect)."""
    d = np.maximum(0.0, np.maximum(a.lo - b.hi, b.lo - a.hi))
    return float(np.linalg.norm(d))


def viewer_axes(world_T_camera: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(right, forward) unit vectors on the ground plane of the viewer (the map's x and y without one)."""
    if world_T_camera is None:
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    right = np.asarray(world_T_camera, dtype=np.float64)[:3, 0].copy()
    right[2] = 0.0
    n = float(np.linalg.norm(right))
    right = right / n if n > 1e-6 else np.array([1.0, 0.0, 0.0])
    forward = np.cross(np.array([0.0, 0.0, 1.0]), right)  # z up x right = forward (right-handed)
    return right, forward


def relation_score(target: OrientedBox3D, anchors: Sequence[OrientedBox3D], relation: Relation,
                   world_T_viewer: np.ndarray | None = None) -> float:
    """How well `target` stands in `relation` to the anchor(s): larger is better, -inf when it does not hold.

    ON / UNDER / ABOVE / INSIDE / LEFT_OF / RIGHT_OF / IN_FRONT_OF / BEHIND / AT_END_OF are predicates
    (ties broken by nearness); NEAR / NEAREST_TO / FARTHEST_FROM / BETWEEN rank by distance.
    """
    t = BoxGeometry.of(target)
    geoms = [BoxGeometry.of(a) for a in anchors]
    if not geoms:
        return -np.inf
    a = geoms[0]
    gap = box_gap_m(t, a)
    right, forward = viewer_axes(world_T_viewer)
    offset = t.center - a.center
    if relation is Relation.ON:
        rests = abs(t.lo[2] - a.hi[2]) <= ON_GAP_M and _xy_overlap(t, a, 0.05) >= 0.5
        return -abs(t.lo[2] - a.hi[2]) if rests else -np.inf
    if relation is Relation.UNDER:
        below = t.hi[2] <= a.hi[2] + 0.02 and t.center[2] < a.center[2] and _smaller_overlap(t, a, 0.1) >= 0.3
        return -gap if below else -np.inf
    if relation is Relation.ABOVE:
        above = t.lo[2] >= a.hi[2] - 0.05 and _xy_overlap(t, a, 0.3) >= 0.3
        return -gap if above else -np.inf
    if relation is Relation.INSIDE:
        inside = bool(np.all(t.center >= a.lo - 0.02) and np.all(t.center <= a.hi + 0.02))
        return -gap if inside else -np.inf
    if relation in (Relation.LEFT_OF, Relation.RIGHT_OF):
        side = float(offset @ right) * (-1.0 if relation is Relation.LEFT_OF else 1.0)
        return -gap if side > 0.05 else -np.inf
    if relation in (Relation.IN_FRONT_OF, Relation.BEHIND):
        # In front of = between the anchor and the viewer: smaller forward coordinate.
        depth = float(offset @ forward) * (-1.0 if relation is Relation.IN_FRONT_OF else 1.0)
        return -gap if depth > 0.05 else -np.inf
    if relation is Relation.AT_END_OF:
        # Ranked by the ground gap: a position along the anchor's footprint; how high a mug on the table stands (a
        # centimetre of map noise) does not order the things at its end, their own ranking does (a stable sort).
        ground = float(np.linalg.norm(np.maximum(0.0, np.maximum(t.lo[:2] - a.hi[:2], a.lo[:2] - t.hi[:2]))))
        return -ground if _at_end(target, anchors[0], gap) else -np.inf
    if relation in (Relation.NEAR, Relation.NEAREST_TO):
        return -gap
    if relation is Relation.FARTHEST_FROM:
        return gap
    if relation is Relation.BETWEEN:
        if len(geoms) < 2:
            return -np.inf
        p, q = geoms[0].center[:2], geoms[1].center[:2]
        seg = q - p
        # Between the anchors' facing sides, not over an anchor: a mug on one of the two anchors projects
        # inside the centre-to-centre segment too. Anchors that overlap along it: centre to centre.
        s_lo, s_hi = _axis_extent(geoms[0], p, seg)[1], _axis_extent(geoms[1], p, seg)[0]
        if s_lo >= s_hi:
            s_lo, s_hi = 0.0, 1.0
        s = float((t.center[:2] - p) @ seg / max(float(seg @ seg), 1e-9))
        if not s_lo < s < s_hi:
            return -np.inf
        return -float(np.linalg.norm(t.center[:2] - (p + s * seg)))
    raise ValueError(f"unknown relation {relation!r}")


def _at_end(target: OrientedBox3D, anchor: OrientedBox3D, gap_m: float) -> bool:
    """Whether the target's centre lies at one end of the anchor's long horizontal axis (see END_FRACTION)."""
    if gap_m > END_GAP_M:
        return False
    local = np.asarray(anchor.world_R_box, dtype=np.float64).T @ (
        np.asarray(target.center_world_m, dtype=np.float64) - np.asarray(anchor.center_world_m, dtype=np.float64))
    half = np.asarray(anchor.size_m, dtype=np.float64)[:2] / 2.0  # boxes are yaw-only: axes 0, 1 horizontal
    long_axis = int(np.argmax(half))
    along = abs(float(local[long_axis])) / max(float(half[long_axis]), 1e-6)
    side = abs(float(local[1 - long_axis])) - float(half[1 - long_axis])
    return along >= END_FRACTION and side <= END_SIDE_M


def superlative_order(boxes: Sequence[OrientedBox3D], superlative: Superlative,
                      world_T_viewer: np.ndarray | None = None) -> list[int]:
    """Indices of `boxes` ranked by the superlative (the first is the biggest / smallest / leftmost ...)."""
    right, _ = viewer_axes(world_T_viewer)
    if superlative in (Superlative.BIGGEST, Superlative.SMALLEST):
        key = [float(np.prod(b.size_m)) for b in boxes]
        sign = -1.0 if superlative is Superlative.BIGGEST else 1.0
    else:
        key = [float(np.asarray(b.center_world_m) @ right) for b in boxes]
        sign = 1.0 if superlative is Superlative.LEFTMOST else -1.0
    return sorted(range(len(boxes)), key=lambda i: sign * key[i])
