"""Where a robot can stand to reach or look at an object: an approach pose on the floor.

Given an object's gravity-aligned box and the floor grid of the map (`occupancy`), `plan_approach`
returns a pose on the floor, facing the box centre, whose distance to the box footprint is in
[`standoff_m`, `max_distance_m`], whose cell is observed free with `robot_radius_m` of clearance (a disc
of that radius touches no obstacle point and no unknown cell: `occupancy.clearance_m`), and, when the
robot's position is known, that is connected to it through cells with that clearance, observed free or
floor holes (floor the depth missed, enclosed by seen floor: `occupancy.floor_holes`; the robot's own disc
counts as free: it stands there), and from
which the straight line to the object meets no other obstacle first (no wall between). Among the
valid cells it takes one in the nearest 10 cm band of distance to the object, then the one nearest the
robot (without a robot position, the one with the most clearance). This is the classic sampling of
goal poses around a target on a costmap (e.g. Nav2's approach goals are poses on such a grid); the
clearance is the configuration-space test of a round robot.

No pose, with the reason, when: no floor was seen (the grid has no floor height), the object is taller
than the camera above the floor (a wall, a door or a whole cabinet row, not an object to approach), the
object hangs from a wall (its base is above the floor, nothing stands under it, and the keyframes saw the
space under it empty), no free cell is in the band, or none is reachable from the robot.
A robot position that is not on observed free floor gives a pose whose reachability is not checked
(said in the message).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..config import ConfigError, check_range, param, validate_fields
from ..mapping.occupancy import FREE, OCCUPIED, OccupancyGrid2D, clearance_m
from ..types import Keyframe, MapSnapshot, OrientedBox3D
from ..visibility import project_visible


@dataclass(frozen=True)
class ApproachConfig:
    """standoff_m: the nearest distance from the robot's centre to the object's box footprint, [0, 5],
    at least robot_radius_m. max_distance_m: the farthest, (standoff_m, 10]. robot_radius_m: the robot's
    footprint radius, [0.05, 2]. support_gap_m: an object whose base is within this of a horizontal surface
    under it (or of the floor) stands on it, [0.01, 1]."""

    standoff_m: float = param(0.45, range=(0.05, 1.4), unit="m", doc="Approach pose: the nearest distance from the "
                              "robot's centre to the object's box (at least robot_radius_m; the farthest is max_distance_m).")
    max_distance_m: float = 1.5
    robot_radius_m: float = param(0.25, range=(0.05, 2.0), unit="m", doc="Approach pose: the robot's footprint radius; "
                                  "the pose has this much observed free floor around it.")
    support_gap_m: float = 0.15

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.standoff_m < self.robot_radius_m:
            raise ConfigError(f"standoff_m must be at least robot_radius_m ({self.robot_radius_m}): a robot "
                              f"standing nearer would be inside the object's box, got {self.standoff_m}")
        check_range("max_distance_m", self.max_distance_m, self.standoff_m, 10.0, low_inclusive=False)
        check_range("support_gap_m", self.support_gap_m, 0.01, 1.0)


class ApproachStatus(enum.IntEnum):
    """Outcome of approach planning; values match SegmentQuery.action's APPROACH_* constants."""

    OK = 0
    NO_FLOOR = 1
    NO_FREE_FLOOR = 2
    UNREACHABLE = 3
    TOO_TALL = 4
    HANGING = 5
    NO_OBJECT = 6


@dataclass(frozen=True)
class ApproachPose:
    """An approach pose (status OK) or why there is none. position_world_m: on the floor (z = floor
    height), map frame; yaw_rad: heading about z (REP-103), towards the box centre. distance_m: from the
    position to the box footprint; clearance_m: free radius around it. reachability_checked: False when the
    robot's position was unknown or not on observed free floor (the message says which)."""

    status: ApproachStatus
    message: str
    position_world_m: tuple[float, float, float] | None = None
    yaw_rad: float = 0.0
    distance_m: float = math.nan
    clearance_m: float = math.nan
    reachability_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.status is ApproachStatus.OK


def footprint_distance_m(box: OrientedBox3D, xy_m: np.ndarray) -> np.ndarray:
    """(N,) distance from points (N, 2) to the box's rectangle in the ground plane (0 inside)."""
    rot = np.asarray(box.world_R_box, np.float64)
    axis_x = rot[:2, 0] / max(1e-12, float(np.linalg.norm(rot[:2, 0])))
    axis_y = np.array([-axis_x[1], axis_x[0]])
    rel = np.asarray(xy_m, np.float64).reshape(-1, 2) - np.asarray(box.center_world_m, np.float64)[:2]
    half = _footprint_half_size(box)
    local = np.stack([rel @ axis_x, rel @ axis_y], axis=1)
    outside = np.maximum(np.abs(local) - half, 0.0)
    return np.linalg.norm(outside, axis=1)


def _footprint_half_size(box: OrientedBox3D) -> np.ndarray:
    """Half extents of the box's footprint along its own horizontal axes (a yaw-only box: size x, y)."""
    size = np.asarray(box.size_m, np.float64)
    return size[:2] / 2.0


def _support_problem(box: OrientedBox3D, snapshot: MapSnapshot | None, keyframes: Sequence[Keyframe],
                     floor_z: float, cfg: ApproachConfig, min_height_m: float) -> str | None:
    """Why the object cannot be approached on the floor because nothing holds it up from below, or None.

    An object whose base is more than `support_gap_m` above the floor hangs when the column under its
    footprint (shrunk by 3 cm, so a wall behind it is not counted) holds no map surface between the floor
    band's lower edge and 3 cm under its base, nor an up-facing surface at its base within 5 cm around its
    footprint (what it rests on), and the keyframes saw that the slab just under its base (`support_gap_m`
    deep) is empty: at least 80 % of its sample points seen through (a depth farther behind them), at most
    a fifth seen on a surface. A wall cabinet, a picture or a lamp hang; a mug on a table, a book on a shelf board, a
    monitor on its stand, a chair's backrest do not; a support the map missed (a desk top seen only at a
    grazing angle) is still in the keyframes' depth, and a slab never seen proves nothing (no refusal)."""
    centre, size = np.asarray(box.center_world_m, np.float64), np.asarray(box.size_m, np.float64)
    base_z = float(centre[2] - size[2] / 2.0)
    if base_z - floor_z <= cfg.support_gap_m or snapshot is None or snapshot.num_points == 0 or not keyframes:
        return None
    pts = np.asarray(snapshot.points_world_m, np.float64)
    world_R_box = np.asarray(box.world_R_box, np.float64)
    local = (pts - centre) @ world_R_box
    inner = np.maximum(size[:2] / 2.0 - 0.03, size[:2] / 4.0)
    column = np.all(np.abs(local[:, :2]) <= inner, axis=1)
    z = pts[column, 2]
    if np.count_nonzero((z >= floor_z + min_height_m) & (z <= base_z - 0.03)):
        return None  # something under it: a shelf's side, a monitor's stand, a chair's seat
    if snapshot.normals_world is not None:
        # What it rests on: an up-facing surface at its base, around it (under it the object hides it).
        around = np.all(np.abs(local[:, :2]) <= size[:2] / 2.0 + 0.05, axis=1) & \
            (np.asarray(snapshot.normals_world)[:, 2] >= 0.8)
        if np.count_nonzero(around & (pts[:, 2] >= base_z - cfg.support_gap_m) & (pts[:, 2] <= base_z + 0.02)) >= 3:
            return None
    # The slab under the base, 5 x 5 x 4 sample points: seen empty by the keyframes?
    u = np.linspace(-1.0, 1.0, 5)
    gx, gy, gz = np.meshgrid(u * inner[0], u * inner[1], np.linspace(base_z - cfg.support_gap_m, base_z - 0.03, 4))
    samples = (np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1) @ world_R_box.T
               + np.array([centre[0], centre[1], 0.0]))
    samples[:, 2] = gz.ravel()
    through = np.zeros(samples.shape[0], bool)
    on_surface = np.zeros(samples.shape[0], bool)
    for kf in keyframes:
        proj = project_visible(samples, kf.world_T_camera, kf.intrinsics, kf.depth_m)
        through[proj.through_indices] = True
        on_surface[proj.visible_indices] = True
    if through.mean() < 0.8 or on_surface.mean() > 0.2:  # a fifth: the back row may lie within tolerance of a wall
        return None
    return (f"the object hangs from a wall or the ceiling: its base is {base_z - floor_z:.2f} m above the floor and "
            "the space under it was seen empty: no approach pose on the floor")


def plan_approach(box: OrientedBox3D | None, grid: OccupancyGrid2D, snapshot: MapSnapshot | None = None,
                  camera_height_m: float | None = None, robot_xy_m: tuple[float, float] | None = None,
                  config: ApproachConfig | None = None, robot_note: str = "", min_height_m: float = 0.05,
                  keyframes: Sequence[Keyframe] = ()) -> ApproachPose:
    """The approach pose for an object's box (see the module doc). `camera_height_m`: the highest camera
    position of the map above the floor (None: not checked); `robot_xy_m`: the robot's position in the map
    frame (None: reachability not checked; `robot_note` says why, e.g. the missing transform); `min_height_m`:
    the grid's obstacle band lower edge (what is lower stands on the floor); `keyframes`: the views that tell
    whether the space under a raised object is empty (without them, no object is taken to hang)."""
    cfg = config or ApproachConfig()
    if box is None:
        return ApproachPose(ApproachStatus.NO_OBJECT, "no object to approach")
    if grid.is_empty or grid.floor_z_m is None:
        return ApproachPose(ApproachStatus.NO_FLOOR, "no approach pose: no floor seen yet (the map has no horizontal "
                            "surface large enough to be the floor); show the camera the floor around the object")
    floor_z = float(grid.floor_z_m)
    size = np.asarray(box.size_m, np.float64)
    if camera_height_m is not None and size[2] > camera_height_m:
        return ApproachPose(ApproachStatus.TOO_TALL, f"no approach pose: the object is {size[2]:.2f} m tall, taller "
                            f"than the camera ({camera_height_m:.2f} m above the floor): a wall or a structure, not "
                            "an object to approach")
    problem = _support_problem(box, snapshot, keyframes, floor_z, cfg, min_height_m)
    if problem is not None:
        return ApproachPose(ApproachStatus.HANGING, f"no approach pose: {problem}")
    res = grid.resolution_m
    xs, ys = grid.cell_centers()
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
    dist = footprint_distance_m(box, centres).reshape(grid.shape)
    clear = clearance_m(grid)
    in_band = (dist >= cfg.standoff_m) & (dist <= cfg.max_distance_m)
    # The robot passes over floor holes (floor the depth missed, enclosed by seen floor) but stands on seen floor.
    traversable = clear >= cfg.robot_radius_m
    candidates = in_band & traversable & (grid.data == FREE)
    centre_xy = np.asarray(box.center_world_m, np.float64)[:2]
    if not candidates.any():
        nearby = int(np.count_nonzero(in_band & (grid.data == FREE)))
        return ApproachPose(ApproachStatus.NO_FREE_FLOOR, f"no approach pose: no free floor within "
                            f"{cfg.max_distance_m:.1f} m of the object with {cfg.robot_radius_m:.2f} m of clearance "
                            f"({nearby} free cells in that band, none clear of obstacles and unknown space by the "
                            "robot's radius)")
    rows, cols = np.nonzero(candidates)
    facing = _clear_line(grid, box, centres.reshape(grid.shape + (2,))[rows, cols], centre_xy, cfg.robot_radius_m)
    if not facing.any():
        return ApproachPose(ApproachStatus.NO_FREE_FLOOR, f"no approach pose: the free floor within "
                            f"{cfg.max_distance_m:.1f} m of the object has no clear line to it (another obstacle, e.g. "
                            "a wall, stands between)")
    candidates = np.zeros(grid.shape, bool)
    candidates[rows[facing], cols[facing]] = True
    checked = False
    note = robot_note
    robot_d = None
    if robot_xy_m is not None:
        robot = np.asarray(robot_xy_m, np.float64).reshape(2)
        on_disc = np.linalg.norm(centres - robot, axis=1).reshape(grid.shape) <= cfg.robot_radius_m
        if not (on_disc & traversable).any() and not _touches(on_disc, traversable):
            note = (f"the robot at ({robot[0]:.2f}, {robot[1]:.2f}) m is not on observed free floor: reachability "
                    "not checked")
        else:
            walkable = (traversable | on_disc).astype(np.uint8)
            _, labels = cv2.connectedComponents(walkable, connectivity=8)
            mine = np.unique(labels[on_disc & (walkable > 0)])
            reachable = np.isin(labels, mine[mine > 0])
            checked = True
            if not (candidates & reachable).any():
                return ApproachPose(ApproachStatus.UNREACHABLE, f"no approach pose: there is free floor within "
                                    f"{cfg.max_distance_m:.1f} m of the object, but none reachable from the robot at "
                                    f"({robot[0]:.2f}, {robot[1]:.2f}) m through free space", reachability_checked=True)
            candidates &= reachable
            robot_d = np.linalg.norm(centres - robot, axis=1).reshape(grid.shape)
    rows, cols = np.nonzero(candidates)
    band = np.floor((dist[rows, cols] - cfg.standoff_m) / 0.1)
    second = robot_d[rows, cols] if robot_d is not None else -clear[rows, cols]
    best = np.lexsort((second, band))[0]
    r, c = int(rows[best]), int(cols[best])
    px, py = float(xs[r, c]), float(ys[r, c])
    yaw = math.atan2(centre_xy[1] - py, centre_xy[0] - px)
    message = (f"approach pose at ({px:.2f}, {py:.2f}) m facing the object, {dist[r, c]:.2f} m from its box, "
               f"{clear[r, c]:.2f} m clearance")
    if checked:
        message += ", reachable from the robot"
    elif note:
        message += f"; {note}"
    else:
        message += "; robot position unknown: reachability not checked"
    return ApproachPose(ApproachStatus.OK, message, (px, py, floor_z), yaw, float(dist[r, c]), float(clear[r, c]),
                        checked)


def _clear_line(grid: OccupancyGrid2D, box: OrientedBox3D, starts_xy: np.ndarray, centre_xy: np.ndarray,
                near_m: float) -> np.ndarray:
    """(N,) bool: the straight line from each start towards the box centre meets, as its first occupied cell,
    the object or an obstacle within `near_m` of it (the table a mug stands on, the keyboard beside a monitor
    whose desk the map missed), not one farther away (a wall between). Unknown cells on the way do not
    block: an object's own shadow on the floor is unknown."""
    occupied = grid.data == OCCUPIED
    xs, ys = grid.cell_centers()
    dist = footprint_distance_m(box, np.stack([xs.ravel(), ys.ravel()], axis=1)).reshape(grid.shape)
    on_object = dist <= grid.resolution_m
    _, labels = cv2.connectedComponents((occupied | on_object).astype(np.uint8), connectivity=8)
    target = np.unique(labels[(dist <= near_m) & (occupied | on_object)])
    steps = max(2, int(np.ceil(np.max(np.linalg.norm(starts_xy - centre_xy, axis=1)) / (grid.resolution_m / 2))))
    t = np.linspace(0.0, 1.0, steps)
    path = starts_xy[:, None, :] * (1 - t)[None, :, None] + centre_xy[None, None, :] * t[None, :, None]
    rc = grid.cell_of(path.reshape(-1, 2)).reshape(len(starts_xy), steps, 2)
    inside = (rc[..., 0] >= 0) & (rc[..., 0] < grid.shape[0]) & (rc[..., 1] >= 0) & (rc[..., 1] < grid.shape[1])
    lab = np.where(inside, labels[np.clip(rc[..., 0], 0, grid.shape[0] - 1), np.clip(rc[..., 1], 0, grid.shape[1] - 1)], 0)
    hit = lab > 0
    first = np.argmax(hit, axis=1)
    first_label = lab[np.arange(len(starts_xy)), first]
    return ~hit.any(axis=1) | np.isin(first_label, target[target > 0])


def _touches(disc: np.ndarray, traversable: np.ndarray) -> bool:
    """Whether the disc has a traversable 8-neighbour (the robot stands right next to free floor)."""
    grown = cv2.dilate(disc.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return bool((grown & traversable).any())


def camera_height_above_floor(camera_positions_world_m: np.ndarray, floor_z_m: float | None) -> float | None:
    """The highest camera position above the floor (keyframe camera centres), None when unknown."""
    cams = np.asarray(camera_positions_world_m, np.float64).reshape(-1, 3)
    if floor_z_m is None or cams.shape[0] == 0:
        return None
    return float(cams[:, 2].max() - floor_z_m)


def approach_summary(approach: ApproachPose | None) -> dict | None:
    """The approach pose as JSON (map frame): status, message, position, yaw (None when not planned)."""
    if approach is None:
        return None
    out = {"status": approach.status.name, "message": approach.message,
           "reachability_checked": approach.reachability_checked}
    if approach.ok:
        out.update({"position_m": [round(float(v), 3) for v in approach.position_world_m],
                    "yaw_rad": round(float(approach.yaw_rad), 4), "distance_m": round(approach.distance_m, 3),
                    "clearance_m": round(approach.clearance_m, 3)})
    return out


__all__ = ["ApproachConfig", "ApproachPose", "ApproachStatus", "approach_summary", "camera_height_above_floor",
           "footprint_distance_m", "plan_approach"]
