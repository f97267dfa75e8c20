"""Analytic RGB-D rendering of a box-shaped room for the mapping tests (no simulator needed).

The camera sits inside an axis-aligned box [lo, hi]; every pixel ray hits exactly one wall, so the
true surface is known in closed form and fused maps can be checked against it point by point.
"""

from __future__ import annotations

import numpy as np

from mllm3d_ros.core.types import CameraIntrinsics, RgbdFrame

ROOM_LO_M = np.array([-2.0, -2.5, 0.0])
ROOM_HI_M = np.array([3.0, 2.5, 2.8])
INTRINSICS = CameraIntrinsics(160, 120, 146.25, 146.25, 79.5, 59.5)  # 640x480 Kinect at 1/4 scale


def look_at(eye_world_m, target_world_m) -> np.ndarray:
    """world_T_camera for an optical-frame camera at `eye` looking at `target`, z-up world."""
    eye = np.asarray(eye_world_m, dtype=np.float64)
    z = np.asarray(target_world_m, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, np.cross(z, x), z, eye
    return pose


def render_room(world_T_camera: np.ndarray, intrinsics: CameraIntrinsics = INTRINSICS,
                lo=ROOM_LO_M, hi=ROOM_HI_M) -> tuple[np.ndarray, np.ndarray]:
    """(colour (H, W, 3) uint8 with a 25 cm checker texture, depth (H, W) float32 metres)."""
    cols, rows = np.meshgrid(np.arange(intrinsics.width), np.arange(intrinsics.height))
    rays_camera = np.stack([(cols - intrinsics.cx) / intrinsics.fx, (rows - intrinsics.cy) / intrinsics.fy,
                            np.ones(cols.shape)], axis=-1).reshape(-1, 3)
    rays_world = rays_camera @ world_T_camera[:3, :3].T
    origin = world_T_camera[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays_world > 0, (hi - origin) / rays_world, (lo - origin) / rays_world)
    t = np.where(np.isfinite(t) & (t > 0), t, np.inf).min(axis=1)  # z of the ray is 1, so t is depth
    hits = origin + rays_world * t[:, None]
    checker = (np.floor(hits / 0.25).astype(np.int64).sum(axis=1) % 2).astype(np.uint8)
    color = np.stack([60 + 140 * checker, 80 + 100 * checker, 70 + 120 * checker], axis=1).astype(np.uint8)
    shape = (intrinsics.height, intrinsics.width)
    return color.reshape(*shape, 3), t.reshape(shape).astype(np.float32)


def room_frame(stamp_ns: int, world_T_camera: np.ndarray, intrinsics: CameraIntrinsics = INTRINSICS) -> RgbdFrame:
    """A rendered frame of the room."""
    color, depth_m = render_room(world_T_camera, intrinsics)
    return RgbdFrame(stamp_ns, color, depth_m, intrinsics, world_T_camera)


def distance_to_room_m(points_world_m: np.ndarray, lo=ROOM_LO_M, hi=ROOM_HI_M) -> np.ndarray:
    """Distance of points inside the room to the nearest wall."""
    return np.minimum(np.abs(points_world_m - lo), np.abs(points_world_m - hi)).min(axis=1)


def orbit_poses(n: int, radius_m: float = 0.3, yaw_step_rad: float = 0.12) -> list[np.ndarray]:
    """n poses of a camera turning around the room centre at 1.4 m height."""
    poses = []
    for i in range(n):
        yaw = i * yaw_step_rad
        eye = np.array([0.5 + radius_m * np.cos(yaw), radius_m * np.sin(yaw), 1.4])
        poses.append(look_at(eye, eye + [np.cos(yaw), np.sin(yaw), -0.2]))
    return poses
