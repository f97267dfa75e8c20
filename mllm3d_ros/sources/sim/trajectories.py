"""Camera poses: `look_at` (world_T_camera in the optical frame) and the orbit `trajectory` of a room.

Part of the simulator (`mllm3d_ros.sources.simulator` re-exports the public names)."""

from __future__ import annotations

import math

import numpy as np

from ...core.config import ConfigError, check_int, check_range
from .scene import Room

# --- camera trajectory -----------------------------------------------------------------------

def look_at(position_world_m: np.ndarray, target_world_m: np.ndarray) -> np.ndarray:
    """world_T_camera (optical frame: z towards the target, y down, x right) for a z-up world."""
    forward = np.asarray(target_world_m, float) - np.asarray(position_world_m, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    norm = np.linalg.norm(right)
    if norm < 1e-6:
        raise ConfigError("look_at: camera looks straight up or down; the optical frame is undefined")
    right /= norm
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = position_world_m
    return pose


def trajectory(room: Room, num_frames: int, *, height_m: float = 1.4, wall_clearance_m: float = 0.9,
               laps: float = 1.0, look_at_height_m: float = 0.6) -> list[np.ndarray]:
    """A smooth loop around the room: world_T_camera poses looking towards the room centre.

    The camera runs on an ellipse `wall_clearance_m` inside the walls (beyond the deepest
    wall furniture, a shelf), bobs a few cm in height and lets its gaze wander around the centre,
    as a hand-held or robot-mounted camera would.
    """
    check_int("num_frames", num_frames, 1)
    check_range("height_m", height_m, 0.3, room.height_m - 0.3)
    check_range("wall_clearance_m", wall_clearance_m, 0.3, None)
    check_range("laps", laps, 0.0, None, low_inclusive=False)
    wobble = 0.08
    semi_x = room.size_m[0] / 2 - wall_clearance_m - wobble
    semi_y = room.size_m[1] / 2 - wall_clearance_m - wobble
    if min(semi_x, semi_y) < 0.3:
        raise ConfigError(f"wall_clearance_m={wall_clearance_m} leaves no room for a loop in a "
                          f"{room.size_m[0]:.2f} x {room.size_m[1]:.2f} m room")
    phase = (room.seed % 360) * math.pi / 180
    poses = []
    for k in range(num_frames):
        theta = phase + 2 * math.pi * laps * k / num_frames
        radial = 1.0 + wobble / max(semi_x, semi_y) * math.sin(3 * theta)
        position = np.array([semi_x * radial * math.cos(theta), semi_y * radial * math.sin(theta),
                             height_m + 0.04 * math.sin(2 * theta)])
        target = np.array([0.35 * math.cos(1.7 * theta + 1.0), 0.3 * math.sin(1.3 * theta), look_at_height_m])
        poses.append(look_at(position, target))
    return poses
