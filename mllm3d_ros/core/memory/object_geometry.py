"""Voting stage 8 geometry: gravity-aligned boxes, support surfaces stripped, unseen parts completed.

World z is up (REP-103 map frames): boxes are yaw-only, support surfaces horizontal.
"""

from __future__ import annotations

import numpy as np

from ..clustering import cluster_points
from ..types import InputError, OrientedBox3D


def _surface_cells_fraction(plane_uv: np.ndarray, inner_lo: np.ndarray, inner_hi: np.ndarray, ring_m: float,
                            cell_m: float) -> float:
    """Fraction of the 2D cells of the ring [inner - ring, inner + ring] minus [inner] holding a point of
    plane_uv (P, 2): how far a surface reaches beyond the object."""
    outer_lo, outer_hi = inner_lo - ring_m, inner_hi + ring_m
    inside_outer = np.all((plane_uv >= outer_lo) & (plane_uv <= outer_hi), axis=1)
    inside_inner = np.all((plane_uv >= inner_lo) & (plane_uv <= inner_hi), axis=1)
    uv = plane_uv[inside_outer & ~inside_inner]
    cells = np.unique(np.floor((uv - outer_lo) / cell_m).astype(np.int64), axis=0).shape[0] if uv.shape[0] else 0
    outer_cells = float(np.prod(np.ceil((outer_hi - outer_lo) / cell_m)))
    inner_cells = float(np.prod(np.maximum(0.0, np.floor((inner_hi - inner_lo) / cell_m))))
    return cells / max(1.0, outer_cells - inner_cells)


def _box_frame(points_world_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """world_R_box, centre and half size of the points' yaw-oriented box (float32)."""
    box = oriented_box(points_world_m)
    return (box.world_R_box.astype(np.float32), box.center_world_m.astype(np.float32),
            (box.size_m / 2.0).astype(np.float32))


def _near_box_local(points_world_m: np.ndarray, world_R_box: np.ndarray, center: np.ndarray,
                    reach: np.ndarray) -> np.ndarray:
    """Box coordinates of the points inside the world-axis bounds of the box of half size `reach` (a
    superset of the points inside that box): the neighbourhood the support-surface tests look at."""
    extent = np.abs(world_R_box) @ reach
    near = np.all((points_world_m >= center - extent) & (points_world_m <= center + extent), axis=1)
    return (points_world_m[near] - center) @ world_R_box


def complete_object(points_world_m: np.ndarray, object_idx: np.ndarray, unseen_idx: np.ndarray,
                    voxel_size_m: float, margin_m: float, ring_m: float = 0.3, min_support_frac: float = 0.25
                    ) -> np.ndarray:
    """Unseen map points (indices from `unseen_idx`) that complete an accepted object, (K,) int64.

    A point is added when it lies in the object's yaw-oriented box grown by `margin_m` and is
    26-connected (voxels of `voxel_size_m`) to the object through unseen points. What the object
    stands on or leans against is not part of it: for the bottom face and each vertical face of the box,
    when the map has a surface there (within a voxel of the face, out to the margin) that reaches
    `ring_m` beyond the box in its own plane (at least `min_support_frac` of that ring's cells occupied:
    floor, table top, wall), unseen points in that slab are left out.
    """
    pts = np.asarray(points_world_m, dtype=np.float32)
    obj = pts[object_idx]
    if obj.shape[0] == 0 or unseen_idx.shape[0] == 0 or margin_m <= 0.0:
        return np.zeros(0, dtype=np.int64)
    rot, center, half = _box_frame(obj)
    cand = unseen_idx
    cand_local = (pts[cand] - center) @ rot
    inside = np.all(np.abs(cand_local) <= half + margin_m, axis=1)
    cand, cand_local = cand[inside], cand_local[inside]
    if cand.shape[0] == 0:
        return cand.astype(np.int64)
    # Map points near the box, in box coordinates, for the support-surface tests.
    near_local = _near_box_local(pts, rot, center, half + margin_m + ring_m)
    drop = np.zeros(cand.shape[0], dtype=bool)
    for axis, sign in ((2, -1.0), (0, -1.0), (0, 1.0), (1, -1.0), (1, 1.0)):
        face = sign * half[axis]
        # the slab: from one voxel inside the face out to the grown box
        depth = sign * (near_local[:, axis] - face)
        in_slab = (depth >= -voxel_size_m) & (depth <= margin_m + voxel_size_m)
        others = [a for a in range(3) if a != axis]
        frac = _surface_cells_fraction(near_local[in_slab][:, others], -half[others], half[others], ring_m,
                                       voxel_size_m)
        if frac >= min_support_frac:
            cdepth = sign * (cand_local[:, axis] - face)
            drop |= cdepth >= -voxel_size_m
    cand = cand[~drop]
    if cand.shape[0] == 0:
        return cand.astype(np.int64)
    labels = cluster_points(np.concatenate([obj, pts[cand]]), voxel_size_m, 1).labels
    connected = np.unique(labels[: obj.shape[0]])
    keep = np.isin(labels[obj.shape[0]:], connected)
    return cand[keep].astype(np.int64)


def strip_support_surface(points_world_m: np.ndarray, object_idx: np.ndarray, voxel_size_m: float,
                          ring_m: float, min_support_frac: float, min_points: int, keep_flat: bool = True
                          ) -> np.ndarray:
    """object_idx without the surface the object stands on, (K,) int64.

    2D masks spill onto the floor or table top around an object's base, and every view that sees the
    base confirms the spill; in 3D it joins the object to whatever else stands on that surface. When the
    map has a horizontal surface at the bottom of the object's box that reaches `ring_m` beyond the box
    (at least `min_support_frac` of the ring's cells: the test of `complete_object`), the object's points
    within a quarter voxel of that surface's height are dropped, and of what remains, the largest
    26-connected part is kept. The object is returned unchanged when that would leave fewer than
    `min_points` points (an object flat on its support cannot be told apart from it), unless `keep_flat`
    is False: then what is left is returned, possibly nothing (the object memory: a mask that lifted
    only the table top around a mug whose own depth the sensor missed is no view of the mug).
    """
    pts = np.asarray(points_world_m, dtype=np.float32)
    obj = pts[object_idx]
    if obj.shape[0] < min_points:
        return object_idx
    rot, center, half = _box_frame(obj)
    near_local = _near_box_local(pts, rot, center, half + np.array([ring_m, ring_m, voxel_size_m], np.float32))
    in_slab = np.abs(near_local[:, 2] + half[2]) <= voxel_size_m
    slab_uv = near_local[in_slab][:, :2]
    if _surface_cells_fraction(slab_uv, -half[:2], half[:2], ring_m, voxel_size_m) < min_support_frac:
        return object_idx
    outside = np.any(np.abs(slab_uv) > half[:2], axis=1)
    surface_z = float(np.median(near_local[in_slab][outside, 2]))
    obj_z = (obj - center) @ rot[:, 2]
    # A quarter voxel: the surface's own points lie within about a centimetre of its height, the object's
    # sides continue right above it.
    rest = np.flatnonzero(np.abs(obj_z - surface_z) > voxel_size_m / 4.0)
    if rest.shape[0] < min_points:
        return object_idx if keep_flat else object_idx[rest].astype(np.int64)
    labels = cluster_points(obj[rest], voxel_size_m, 1).labels
    return object_idx[rest[labels == 0]].astype(np.int64)


def oriented_box(points_world_m: np.ndarray) -> OrientedBox3D:
    """Yaw-only oriented box (z up): PCA of the points in the ground plane, z extent from min/max.

    Robots plan with gravity-aligned boxes, so roll and pitch are fixed at zero. Box x is the main
    horizontal axis, y the other horizontal one, z world up; size_m is the extent along each.
    """
    pts = np.asarray(points_world_m, dtype=np.float64)
    if pts.shape[0] == 0:
        raise InputError("oriented_box: no points")
    xy = pts[:, :2] - pts[:, :2].mean(axis=0)
    axis_x = np.array([1.0, 0.0])
    if pts.shape[0] >= 2:
        cov = xy.T @ xy
        if np.trace(cov) > 1e-18:
            eigval, eigvec = np.linalg.eigh(cov)
            axis_x = eigvec[:, 1]
            if axis_x[0] < 0 or (axis_x[0] == 0 and axis_x[1] < 0):  # a canonical sign for yaw
                axis_x = -axis_x
    axis_y = np.array([-axis_x[1], axis_x[0]])
    world_R_box = np.eye(3)
    world_R_box[:2, 0] = axis_x
    world_R_box[:2, 1] = axis_y
    local = pts @ world_R_box  # coordinates along the box axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    center_world = world_R_box @ ((lo + hi) / 2.0)
    return OrientedBox3D(center_world_m=center_world, world_R_box=world_R_box, size_m=hi - lo)
