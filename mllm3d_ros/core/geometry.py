"""Pinhole projection, unprojection and rigid-transform helpers (all numpy, vectorised)."""

from __future__ import annotations

import numpy as np

from .types import CameraIntrinsics, InputError, OrientedBox3D

# camera_link (REP-103 body: x forward, y left, z up) -> camera optical frame (z forward, x right, y down).
BODY_T_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_EYE3 = np.eye(3)


def check_pose(world_T_camera: np.ndarray, *, name: str = "world_T_camera", tol: float = 1e-3) -> np.ndarray:
    """Return the pose as float64 (4, 4) or raise InputError if it is not a finite rigid transform."""
    pose = np.asarray(world_T_camera, dtype=np.float64)
    if pose.shape != (4, 4):
        raise InputError(f"{name}: expected a 4x4 matrix, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise InputError(f"{name}: contains NaN or inf")
    # Plain ufuncs instead of allclose/det: this runs on every fused frame.
    if float(np.abs(pose[3] - _LAST_ROW).max()) > tol:
        raise InputError(f"{name}: last row must be [0 0 0 1], got {pose[3].tolist()}")
    rot = pose[:3, :3]
    ortho_err = float(np.abs(rot @ rot.T - _EYE3).max())
    if ortho_err > tol:
        raise InputError(f"{name}: rotation is not orthonormal (max |R R^T - I| = {ortho_err:.3g})")
    if float(np.dot(np.cross(rot[:, 0], rot[:, 1]), rot[:, 2])) < 0:
        raise InputError(f"{name}: rotation is a reflection (det < 0)")
    return pose


def invert_transform(a_T_b: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (b_T_a)."""
    rot, trans = a_T_b[:3, :3], a_T_b[:3, 3]
    out = np.eye(4)
    out[:3, :3] = rot.T
    out[:3, 3] = -rot.T @ trans
    return out


def transform_points(a_T_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points; returns (N, 3) in the dtype of the input."""
    pts = np.asarray(points_b)
    out = pts.astype(np.float64, copy=False) @ a_T_b[:3, :3].T + a_T_b[:3, 3]
    return out.astype(pts.dtype if pts.dtype.kind == "f" else np.float64, copy=False)


def transform_box(a_T_b: np.ndarray, box_b: OrientedBox3D) -> OrientedBox3D:
    """An oriented box given in frame b, expressed in frame a (a rigid motion keeps a box a box).

    The fields keep their names (`center_world_m`, `world_R_box`) but now hold frame-a values. A
    gravity-aligned box stays gravity-aligned only when frame a is gravity-aligned too (z up).
    """
    a_T_b = np.asarray(a_T_b, dtype=np.float64)
    a_R_b = a_T_b[:3, :3]
    center_a = a_R_b @ np.asarray(box_b.center_world_m, dtype=np.float64) + a_T_b[:3, 3]
    return OrientedBox3D(center_world_m=center_a, world_R_box=a_R_b @ np.asarray(box_b.world_R_box, np.float64),
                         size_m=np.asarray(box_b.size_m, dtype=np.float64).copy())


def unproject_depth(depth_m: np.ndarray, intrinsics: CameraIntrinsics, mask: np.ndarray | None = None,
                    stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Back-project valid depth pixels to camera-frame points.

    Returns (points (N, 3) float32 in the camera optical frame, pixel indices (N, 2) int as (row, col)).
    """
    depth = depth_m[::stride, ::stride]
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask[::stride, ::stride]
    rows, cols = np.nonzero(valid)
    rows_full, cols_full = rows * stride, cols * stride
    z = depth[rows, cols].astype(np.float32)
    x = (cols_full - intrinsics.cx) / intrinsics.fx * z
    y = (rows_full - intrinsics.cy) / intrinsics.fy * z
    pts = np.stack([x, y, z], axis=1).astype(np.float32)
    return pts, np.stack([rows_full, cols_full], axis=1)


def rotation_angle_rad(a_R_b: np.ndarray) -> float:
    """Angle of a rotation matrix, in radians."""
    cos = (np.trace(a_R_b) - 1.0) / 2.0
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised first, -> 3x3 rotation; InputError if its norm is 0 or not finite."""
    q = np.array([w, x, y, z], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise InputError(f"invalid quaternion (x, y, z, w) = {(x, y, z, w)}")
    w, x, y, z = q / norm
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion(rot: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation -> unit quaternion (x, y, z, w) (Shepperd's method, numerically stable)."""
    m = np.asarray(rot, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def rigid_transform(translation_xyz, quaternion_xyzw) -> np.ndarray:
    """4x4 float64 transform from a translation and a quaternion (x, y, z, w), normalised first."""
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(*quaternion_xyzw)
    out[:3, 3] = translation_xyz
    return out


def gravity_alignment(gravity_world: np.ndarray) -> np.ndarray:
    """map_T_world (4, 4): the smallest rotation taking a frame whose gravity (down) direction is
    `gravity_world` to a z-up map frame (REP-103), so boxes and support surfaces are gravity-aligned."""
    g = np.asarray(gravity_world, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(g)) if g.shape == (3,) else 0.0
    if not np.isfinite(norm) or norm < 1e-9:
        raise InputError(f"gravity direction must be a finite non-zero 3-vector, got {gravity_world!r}")
    up = -g / norm
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(up, z)
    s, c = float(np.linalg.norm(axis)), float(up @ z)
    out = np.eye(4)
    if s < 1e-12:  # already up (identity) or upside down (half turn about x)
        out[:3, :3] = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
        return out
    k = axis / s
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    out[:3, :3] = np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)  # Rodrigues
    return out


# Voxel keys (the object memory's instances, the map's class-agnostic objects, the query's "on" checks) pack
# three 21-bit signed cell indices: +-1e6 cells, i.e. +-20 km at 2 cm.
_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


# Key offsets of the 27 voxels of a 3x3x3 neighbourhood (the fields never carry at these magnitudes).
NEIGHBOUR_KEY_OFFSETS = np.array([(dx << (2 * _BITS)) + (dy << _BITS) + dz for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                                  for dz in (-1, 0, 1)], dtype=np.int64)


def voxel_keys(points_world_m: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """(N,) int64 key of the voxel holding each point."""
    cell = np.floor(np.asarray(points_world_m, dtype=np.float64) / voxel_size_m).astype(np.int64) + _OFFSET
    return (cell[:, 0] << (2 * _BITS)) | (cell[:, 1] << _BITS) | cell[:, 2]


def voxel_centers(keys: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """(N, 3) float32 world centres of the voxels `keys`."""
    keys = np.asarray(keys, dtype=np.int64)
    cell = np.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], axis=1) - _OFFSET
    return ((cell.astype(np.float64) + 0.5) * voxel_size_m).astype(np.float32)
