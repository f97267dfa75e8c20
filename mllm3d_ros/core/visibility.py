"""The one visibility test of the project: which world points a view actually sees.

MLLM-For3D's spatial consistency (arXiv 2503.18135) needs it: a view that cannot see a point (outside
its frustum, occluded, or at a pixel without depth) must not vote against it. Keyframe selection and
eviction, view selection, voting and the object memory all call `project_visible` (directly or through
`project_to_view` / `visible_mask`), so they cannot disagree about what a view sees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .geometry import invert_transform
from .types import CameraIntrinsics, InputError, Keyframe


@dataclass(frozen=True, eq=False)
class ViewProjection:
    """The map points one view sees, with the flat pixel index (row * width + col) of each.

    visible_indices (V,) int64 into the map's points; pixel_index (V,) int64 into the view's image.
    through_indices (T,) int64: points the view sees *through* (in its frustum, in front of the surface
    it observed at that pixel by more than the tolerance): free space where the point was; the object
    memory uses this to notice that an object has gone.
    """

    keyframe_id: int
    visible_indices: np.ndarray
    pixel_index: np.ndarray
    image_shape: tuple[int, int]
    through_indices: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def project_visible(points_world_m: np.ndarray, world_T_camera: np.ndarray, intrinsics: CameraIntrinsics,
                   depth_m: np.ndarray, depth_tolerance_m: float = 0.05, depth_tolerance_frac: float = 0.03,
                   view_id: int = -1) -> ViewProjection:
    """Which of the (N, 3) world points the view sees, and at which pixel.

    A point is seen when it is in front of the camera, projects inside the image onto a pixel with
    valid depth (> 0 and finite), and |z - depth| <= max(depth_tolerance_m, depth_tolerance_frac * depth):
    not occluded (behind the observed surface) and not seen through (in front of it). Float32 and
    projected once per view: voting reuses the pixels for every mask, which keeps 8 views of a
    300k-point map inside the latency budget.

    Args:
        points_world_m: (N, 3) float, world frame, metres.
        world_T_camera: (4, 4) float64, camera optical frame -> world.
        intrinsics: of `depth_m`.
        depth_m: (H, W) float metres, 0 or non-finite where invalid.
    """
    pts = np.asarray(points_world_m, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"view {view_id}: points_world_m must be (N, 3), got {pts.shape}")
    height, width = depth_m.shape
    if (height, width) != (intrinsics.height, intrinsics.width):
        raise InputError(f"view {view_id}: depth is {(height, width)}, intrinsics say "
                         f"{(intrinsics.height, intrinsics.width)}")
    camera_T_world = invert_transform(np.asarray(world_T_camera, dtype=np.float64))
    rot = camera_T_world[:3, :3].astype(np.float32)
    trans = camera_T_world[:3, 3].astype(np.float32)
    z = pts @ rot[2] + trans[2]
    # Cull behind-camera points before the division; typically half of a room is behind a view.
    front = np.flatnonzero(z > 1e-6)
    pts_f, z_f = pts[front], z[front]
    inv_z = 1.0 / z_f
    cols = np.rint((pts_f @ rot[0] + trans[0]) * inv_z * np.float32(intrinsics.fx) + np.float32(intrinsics.cx))
    rows = np.rint((pts_f @ rot[1] + trans[1]) * inv_z * np.float32(intrinsics.fy) + np.float32(intrinsics.cy))
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    idx = front[inside]
    pix = rows[inside].astype(np.int64) * width + cols[inside].astype(np.int64)
    z_in = z_f[inside]
    observed = np.asarray(depth_m, dtype=np.float32).ravel()[pix]
    tol = np.maximum(np.float32(depth_tolerance_m), np.float32(depth_tolerance_frac) * observed)
    with np.errstate(invalid="ignore"):
        seen = (observed > 0) & (np.abs(z_in - observed) <= tol)  # NaN depth compares False
        through = (observed > 0) & (z_in < observed - tol)
    return ViewProjection(view_id, idx[seen], pix[seen], (height, width), idx[through])


def project_to_view(points_world_m: np.ndarray, keyframe: Keyframe, depth_tolerance_m: float,
                    depth_tolerance_frac: float) -> ViewProjection:
    """`project_visible` for a stored keyframe."""
    return project_visible(points_world_m, keyframe.world_T_camera, keyframe.intrinsics, keyframe.depth_m,
                          depth_tolerance_m, depth_tolerance_frac, keyframe.keyframe_id)


def visible_mask(points_world_m: np.ndarray, view: Keyframe | np.ndarray,
                 intrinsics: CameraIntrinsics | None = None, depth_m: np.ndarray | None = None, *,
                 depth_tolerance_m: float = 0.05, depth_tolerance_frac: float = 0.03) -> np.ndarray:
    """(N,) bool: which world points a view sees (the test of `project_visible`).

    `view` is a Keyframe, or a (4, 4) float64 `world_T_camera`, in which case `intrinsics` and
    `depth_m` ((H, W) float32 metres, 0 where invalid) are required.
    """
    if isinstance(view, Keyframe):
        world_T_camera, intrinsics, depth_m = view.world_T_camera, view.intrinsics, view.depth_m
    else:
        world_T_camera = view
        if intrinsics is None or depth_m is None:
            raise InputError("visible_mask: a pose view needs both intrinsics and depth_m")
    pts = np.asarray(points_world_m)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"visible_mask: points_world_m must be (N, 3), got {pts.shape}")
    if depth_m.shape != (intrinsics.height, intrinsics.width):
        raise InputError(f"visible_mask: depth_m is {depth_m.shape}, intrinsics say "
                         f"{(intrinsics.height, intrinsics.width)}")
    out = np.zeros(pts.shape[0], dtype=bool)
    if pts.shape[0]:
        out[project_visible(pts, world_T_camera, intrinsics, depth_m, depth_tolerance_m,
                           depth_tolerance_frac).visible_indices] = True
    return out
