"""A procedural indoor RGB-D simulator: seeded rooms of furniture rendered with Open3D raycasting.

`generate_room(seed)` builds a closed room (floor, walls, ceiling) furnished from box, cylinder and
torus primitives: a dining table with chairs in the middle, and desks (with chair, monitor, keyboard,
mouse, laptop), shelves of books, sofas (with a coffee table) and cardboard boxes along the walls;
mugs, coffee cups, bottles, books, laptops and small boxes rest on the tables and desks. Floor
furniture never overlaps (2D oriented-box test) and small objects lie on their support.
`generate_relational_room(seed)` lays out a room whose relational instructions ("the mug on the box",
"the second mug from the left") have one answer each from the construction, seen from a stated viewer
(`relational_trajectory` keeps its orientation): the spatial benchmark's rooms.

`Simulator(room, config).render(world_T_camera)` casts one ray per pixel with
`o3d.t.geometry.RaycastingScene` and returns a `SimFrame`:
- `frame`: the product's input, an `RgbdFrame`. Colour is Lambertian shading of procedural albedo
  (wood grain, fabric, floor planks, cardboard, mottled paint) under a ceiling point light with cast
  shadows, a weak headlight and ambient light, in sRGB with sensor noise and a slight blur. Depth
  follows a structured-light sensor: Gaussian noise growing with z^2 (Khoshelham & Elberink,
  Sensors 2012), 1 mm quantisation, range limits, dropout at grazing incidence and at depth edges,
  and random blob holes.
- ground truth, kept apart for evaluation only: `instance_ids` (exact per-pixel instance, 0 for
  walls/floor/ceiling) and `depth_exact_m`; the per-instance table is `Room.instances`. Nothing in
  the product may read these; the simulator is a camera, not an oracle.

World frame: z up, metres, the room centred on the origin with the floor at z = 0 (REP-103).
Camera poses are world_T_camera in the optical frame (x right, y down, z forward).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np
import open3d as o3d

from ..core.config import ConfigError, check_int, check_range
from ..core.geometry import check_pose
from ..core.types import CameraIntrinsics, RgbdFrame

STRUCTURE_ID = 0  # instance id of walls, floor and ceiling
_TEXTURE_SIZE = 256
_TEXELS_PER_M = 256.0  # textures tile every metre
_CYLINDER_SEGMENTS = 24


class Shape(enum.Enum):
    """Primitive shapes; `Primitive.size_m` is always the extent along the primitive's local axes."""

    BOX = "box"
    CYLINDER = "cylinder"  # axis along local z; size (2r, 2r, h)
    TORUS = "torus"  # in the local xy plane; size (2(R+r), 2(R+r), 2r)


class Texture(enum.IntEnum):
    """Procedural albedo patterns (index into the simulator's texture stack)."""

    PLAIN = 0
    MOTTLE = 1
    WOOD = 2
    FABRIC = 3
    PLANKS = 4
    CARDBOARD = 5


@dataclass(frozen=True)
class Primitive:
    """One solid part. world_R_local = Rz(yaw_rad) @ Rx(tilt_rad); colour is sRGB."""

    shape: Shape
    center_world_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    color_rgb: tuple[int, int, int]
    texture: Texture
    instance_id: int
    yaw_rad: float = 0.0
    tilt_rad: float = 0.0
    texture_strength: float = 0.1
    emissive: bool = False  # screens: their colour is not shaded


@dataclass(frozen=True)
class InstanceInfo:
    """Ground truth of one object: an oriented box (yaw about world z) that bounds its parts.

    support_id is the instance it rests on (0 = the floor).
    """

    instance_id: int
    label: str
    center_world_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    yaw_rad: float
    color_rgb: tuple[int, int, int]
    support_id: int = STRUCTURE_ID


@dataclass(frozen=True, eq=False)
class Room:
    """A furnished room: floor at z=0, interior x in [-size_x/2, size_x/2], y likewise.

    `instances` is ground truth (evaluation only); `primitives` is the geometry to render.
    """

    seed: int
    size_m: tuple[float, float]
    height_m: float
    primitives: tuple[Primitive, ...]
    instances: tuple[InstanceInfo, ...]

    @property
    def labels(self) -> dict[int, str]:
        """Instance id -> label (ground truth)."""
        return {info.instance_id: info.label for info in self.instances}

    def instance(self, instance_id: int) -> InstanceInfo:
        for info in self.instances:
            if info.instance_id == instance_id:
                return info
        raise KeyError(f"room {self.seed} has no instance {instance_id}")


@dataclass(frozen=True)
class SimConfig:
    """Camera, sensor-noise and lighting settings of the simulator (validated at construction)."""

    width: int = 640
    height: int = 480
    fx: float = 525.0
    fy: float = 525.0
    cx: float = 319.5
    cy: float = 239.5
    min_depth_m: float = 0.3
    max_depth_m: float = 8.0
    noise: bool = True  # False renders exact depth and noise-free colour
    depth_noise_at_1m_m: float = 0.0015  # std dev at 1 m; grows with z^2
    depth_quantum_m: float = 0.001  # 16UC1 millimetres
    hole_fraction: float = 0.01  # expected share of pixels lost to random blob holes
    edge_dropout: float = 0.5  # probability of losing a pixel on a depth discontinuity
    edge_jump_rel: float = 0.04  # a 3x3 depth range above this share of z is an edge
    grazing_dropout_deg: float = 80.0  # no return beyond this incidence angle
    color_noise_std: float = 2.0  # sensor noise, 8-bit levels
    ambient: float = 0.35
    light_intensity: float = 1.0
    shadows: bool = True
    seed: int = 0  # noise random stream
    nthreads: int = 0  # raycasting threads, 0 = all cores

    def __post_init__(self) -> None:
        check_int("width", self.width, 8, 8192)
        check_int("height", self.height, 8, 8192)
        check_range("fx", self.fx, 1.0, 1e5)
        check_range("fy", self.fy, 1.0, 1e5)
        check_range("cx", self.cx, 0.0, float(self.width))
        check_range("cy", self.cy, 0.0, float(self.height))
        check_range("min_depth_m", self.min_depth_m, 0.0, 10.0)
        check_range("max_depth_m", self.max_depth_m, self.min_depth_m, 100.0, low_inclusive=False)
        check_range("depth_noise_at_1m_m", self.depth_noise_at_1m_m, 0.0, 0.1)
        check_range("depth_quantum_m", self.depth_quantum_m, 0.0, 0.1)
        check_range("hole_fraction", self.hole_fraction, 0.0, 0.5)
        check_range("edge_dropout", self.edge_dropout, 0.0, 1.0)
        check_range("edge_jump_rel", self.edge_jump_rel, 0.0, 1.0, low_inclusive=False)
        check_range("grazing_dropout_deg", self.grazing_dropout_deg, 0.0, 90.0, low_inclusive=False)
        check_range("color_noise_std", self.color_noise_std, 0.0, 50.0)
        check_range("ambient", self.ambient, 0.0, 1.0)
        check_range("light_intensity", self.light_intensity, 0.0, 10.0)
        check_int("seed", self.seed, 0)
        check_int("nthreads", self.nthreads, 0, 1024)

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return CameraIntrinsics(self.width, self.height, self.fx, self.fy, self.cx, self.cy)


@dataclass(frozen=True, eq=False)
class SimFrame:
    """A rendered view: `frame` is sensor data; `instance_ids` (H, W) int32 and
    `depth_exact_m` (H, W) float32 (0 where no hit) are ground truth for evaluation only."""

    frame: RgbdFrame
    instance_ids: np.ndarray
    depth_exact_m: np.ndarray


@dataclass(frozen=True, eq=False)
class SurfaceLabels:
    """Ground-truth labels of query points: nearest instance id (0 = structure or too far), distance (m)."""

    instance_ids: np.ndarray
    distance_m: np.ndarray


# --- geometry of primitives ------------------------------------------------------------------

def _rotation(yaw_rad: float, tilt_rad: float = 0.0) -> np.ndarray:
    cy, sy = math.cos(yaw_rad), math.sin(yaw_rad)
    ct, st = math.cos(tilt_rad), math.sin(tilt_rad)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, ct, -st], [0.0, st, ct]])
    return rz @ rx


def _unit_mesh(shape: Shape, size_m: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) in the local frame and triangles (T, 3) of a primitive."""
    sx, sy, sz = size_m
    if shape is Shape.BOX:
        corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        tris = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
        return corners * np.array(size_m), tris
    n = _CYLINDER_SEGMENTS
    ang = np.arange(n) * 2 * np.pi / n
    if shape is Shape.CYLINDER:
        ring = np.stack([np.cos(ang) * sx / 2, np.sin(ang) * sy / 2], axis=1)
        verts = np.concatenate([np.c_[ring, np.full(n, -sz / 2)], np.c_[ring, np.full(n, sz / 2)],
                                [[0, 0, -sz / 2], [0, 0, sz / 2]]])
        i = np.arange(n)
        j = (i + 1) % n
        side = np.concatenate([np.stack([i, j, n + j], 1), np.stack([i, n + j, n + i], 1)])
        caps = np.concatenate([np.stack([np.full(n, 2 * n), j, i], 1), np.stack([np.full(n, 2 * n + 1), n + i, n + j], 1)])
        return verts, np.concatenate([side, caps])
    minor = sz / 2
    major = sx / 2 - minor
    m = 8
    phi = np.arange(m) * 2 * np.pi / m
    a, p = np.meshgrid(ang, phi, indexing="ij")
    verts = np.stack([(major + minor * np.cos(p)) * np.cos(a), (major + minor * np.cos(p)) * np.sin(a),
                      minor * np.sin(p)], axis=-1).reshape(-1, 3)
    ia, ip = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    v00 = ia * m + ip
    v10 = ((ia + 1) % n) * m + ip
    v01 = ia * m + (ip + 1) % m
    v11 = ((ia + 1) % n) * m + (ip + 1) % m
    tris = np.concatenate([np.stack([v00, v10, v11], -1).reshape(-1, 3), np.stack([v00, v11, v01], -1).reshape(-1, 3)])
    return verts, tris


def primitive_mesh(primitive: Primitive) -> tuple[np.ndarray, np.ndarray]:
    """World-frame vertices (V, 3) float64 and triangles (T, 3) int64 of a primitive."""
    verts, tris = _unit_mesh(primitive.shape, primitive.size_m)
    world_R_local = _rotation(primitive.yaw_rad, primitive.tilt_rad)
    return verts @ world_R_local.T + np.array(primitive.center_world_m), tris


# --- room generation -------------------------------------------------------------------------

_WOODS = ((150, 111, 51), (120, 81, 45), (181, 137, 86), (101, 67, 33), (205, 170, 125), (139, 90, 43))
_FURNITURE_PAINT = ((235, 235, 230), (45, 45, 48), (200, 200, 195))
_FABRICS = ((90, 90, 95), (60, 80, 120), (170, 160, 140), (80, 110, 80), (130, 60, 55), (50, 50, 55), (150, 150, 155))
_WALLS = ((235, 232, 225), (225, 220, 205), (210, 215, 220), (230, 225, 215), (215, 225, 215))
_FLOOR_WOODS = ((170, 130, 90), (140, 105, 70), (190, 160, 120))
_MUGS = ((240, 240, 235), (190, 40, 40), (40, 80, 160), (230, 190, 50), (35, 35, 35), (60, 140, 80))
_BOOKS = ((170, 30, 30), (30, 60, 140), (30, 110, 60), (220, 180, 40), (25, 25, 25), (230, 230, 220),
          (220, 110, 30), (110, 50, 120))
_BOTTLES = ((40, 110, 60), (150, 190, 210), (100, 60, 30), (230, 230, 230))
_SCREENS = ((60, 110, 170), (40, 70, 110), (170, 190, 210), (90, 140, 120))
_CARDBOARD = (190, 150, 100)
_METAL = (110, 110, 115)
_DARK = (35, 35, 38)


@dataclass(frozen=True)
class _Footprint:
    """An oriented rectangle on the floor (or on a support top): centre, half extents, yaw."""

    cx: float
    cy: float
    hx: float
    hy: float
    yaw: float

    def corners(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        local = np.array([[-self.hx, -self.hy], [self.hx, -self.hy], [self.hx, self.hy], [-self.hx, self.hy]])
        return local @ np.array([[c, s], [-s, c]]) + [self.cx, self.cy]

    def overlaps(self, other: "_Footprint", margin: float = 0.0) -> bool:
        """Separating-axis test of two oriented rectangles, each grown by `margin`."""
        a, b = self.grown(margin).corners(), other.grown(margin).corners()
        for poly in (a, b):
            for k in range(2):
                edge = poly[k + 1] - poly[k]
                axis = np.array([-edge[1], edge[0]])
                pa, pb = a @ axis, b @ axis
                if pa.max() <= pb.min() or pb.max() <= pa.min():
                    return False
        return True

    def grown(self, margin: float) -> "_Footprint":
        return _Footprint(self.cx, self.cy, self.hx + margin, self.hy + margin, self.yaw)


class _RoomBuilder:
    """Accumulates primitives and instances; each `add_*` places one object in its own frame."""

    def __init__(self, rng: np.random.Generator, size_m: tuple[float, float], height_m: float) -> None:
        self.rng = rng
        self.size_m = size_m
        self.height_m = height_m
        self.primitives: list[Primitive] = []
        self.instances: list[InstanceInfo] = []
        self.floor_footprints: list[_Footprint] = []

    # helpers ---------------------------------------------------------------------------------
    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def jitter(self, color: tuple[int, int, int], amount: int = 12) -> tuple[int, int, int]:
        return tuple(int(np.clip(c + self.rng.integers(-amount, amount + 1), 0, 255)) for c in color)

    def begin(self) -> int:
        return len(self.instances) + 1

    def part(self, instance_id: int, origin: tuple[float, float, float], yaw: float, shape: Shape,
             local_center: tuple[float, float, float], size: tuple[float, float, float], color, texture: Texture,
             strength: float = 0.1, tilt: float = 0.0, emissive: bool = False) -> None:
        """Add a part given in the object's frame (origin on its base, rotated by yaw)."""
        center = _rotation(yaw) @ np.array(local_center) + np.array(origin)
        self.primitives.append(Primitive(shape, tuple(float(v) for v in center), tuple(float(v) for v in size),
                                         tuple(int(c) for c in color), texture, instance_id, float(yaw),
                                         float(tilt), float(strength), emissive))

    def finish(self, instance_id: int, label: str, yaw: float, color, support_id: int = STRUCTURE_ID) -> InstanceInfo:
        """Register the instance with the oriented box (in its yaw frame) bounding all its parts."""
        verts = np.concatenate([primitive_mesh(p)[0] for p in self.primitives if p.instance_id == instance_id])
        local = verts @ _rotation(yaw)  # world -> instance frame (rotation transpose on the right)
        lo, hi = local.min(axis=0), local.max(axis=0)
        center = _rotation(yaw) @ ((lo + hi) / 2)
        info = InstanceInfo(instance_id, label, tuple(float(v) for v in center), tuple(float(v) for v in hi - lo),
                            float(yaw), tuple(int(c) for c in color), support_id)
        self.instances.append(info)
        return info

    def remove(self, instance_id: int) -> None:
        self.primitives = [p for p in self.primitives if p.instance_id != instance_id]
        self.instances = [i for i in self.instances if i.instance_id != instance_id]

    def fits_floor(self, fp: _Footprint, margin: float = 0.05) -> bool:
        half_x, half_y = self.size_m[0] / 2 - 0.01, self.size_m[1] / 2 - 0.01
        corners = fp.corners()
        if np.any(np.abs(corners[:, 0]) > half_x) or np.any(np.abs(corners[:, 1]) > half_y):
            return False
        return not any(fp.overlaps(other, margin / 2) for other in self.floor_footprints)

    # structure -------------------------------------------------------------------------------
    def add_structure(self) -> None:
        sx, sy, h, t = self.size_m[0], self.size_m[1], self.height_m, 0.1
        if self.rng.random() < 0.7:
            floor_color, floor_tex, floor_strength = self.pick(_FLOOR_WOODS), Texture.PLANKS, 0.25
        else:
            floor_color, floor_tex, floor_strength = self.jitter((120, 120, 118), 20), Texture.FABRIC, 0.12
        wall = self.pick(_WALLS)
        self.part(STRUCTURE_ID, (0, 0, 0), 0, Shape.BOX, (0, 0, -t / 2), (sx + 2 * t, sy + 2 * t, t),
                  floor_color, floor_tex, floor_strength)
        self.part(STRUCTURE_ID, (0, 0, 0), 0, Shape.BOX, (0, 0, h + t / 2), (sx + 2 * t, sy + 2 * t, t),
                  (245, 245, 242), Texture.MOTTLE, 0.03)
        for sign in (-1, 1):
            self.part(STRUCTURE_ID, (0, 0, 0), 0, Shape.BOX, (sign * (sx + t) / 2, 0, h / 2), (t, sy + 2 * t, h),
                      self.jitter(wall, 4), Texture.MOTTLE, 0.05)
            self.part(STRUCTURE_ID, (0, 0, 0), 0, Shape.BOX, (0, sign * (sy + t) / 2, h / 2), (sx, t, h),
                      self.jitter(wall, 4), Texture.MOTTLE, 0.05)

    # furniture -------------------------------------------------------------------------------
    def add_table(self, x: float, y: float, yaw: float, width: float, depth: float, height: float,
                  label: str = "Table") -> InstanceInfo:
        iid = self.begin()
        wood = self.rng.random() < 0.75
        color = self.pick(_WOODS) if wood else self.pick(_FURNITURE_PAINT)
        tex, strength = (Texture.WOOD, 0.18) if wood else (Texture.MOTTLE, 0.04)
        top_t = self.u(0.03, 0.05)
        leg = self.u(0.045, 0.07)
        o = (x, y, 0.0)
        self.part(iid, o, yaw, Shape.BOX, (0, 0, height - top_t / 2), (width, depth, top_t), color, tex, strength)
        leg_color = color if self.rng.random() < 0.6 else _METAL
        for sx in (-1, 1):
            for sy in (-1, 1):
                lx, ly = sx * (width / 2 - leg / 2 - 0.04), sy * (depth / 2 - leg / 2 - 0.04)
                self.part(iid, o, yaw, Shape.BOX, (lx, ly, (height - top_t) / 2), (leg, leg, height - top_t),
                          self.jitter(leg_color, 5), tex, strength)
        if label == "Table" and height > 0.6 and self.rng.random() < 0.5:
            # an apron under the top, as most dining tables have
            for sy in (-1, 1):
                self.part(iid, o, yaw, Shape.BOX, (0, sy * (depth / 2 - 0.05), height - top_t - 0.05),
                          (width - 0.1, 0.02, 0.1), color, tex, strength)
        self.floor_footprints.append(_Footprint(x, y, width / 2, depth / 2, yaw))
        return self.finish(iid, label, yaw, color)

    def add_chair(self, x: float, y: float, yaw: float, style: tuple) -> InstanceInfo:
        """A chair facing local +y (backrest at -y): seat, four legs, backrest with two posts."""
        color, tex, strength, seat_w, seat_h, back_h, cushion = style
        iid = self.begin()
        o = (x, y, 0.0)
        seat_d = seat_w * 0.95
        seat_t = 0.045
        leg = 0.035
        self.part(iid, o, yaw, Shape.BOX, (0, 0, seat_h - seat_t / 2), (seat_w, seat_d, seat_t), color, tex, strength)
        if cushion is not None:
            self.part(iid, o, yaw, Shape.BOX, (0, 0.01, seat_h + 0.02), (seat_w - 0.04, seat_d - 0.05, 0.04),
                      cushion, Texture.FABRIC, 0.12)
        for sx in (-1, 1):
            for sy in (-1, 1):
                self.part(iid, o, yaw, Shape.BOX, (sx * (seat_w / 2 - leg / 2), sy * (seat_d / 2 - leg / 2),
                                                   (seat_h - seat_t) / 2), (leg, leg, seat_h - seat_t), color, tex, strength)
            # back posts continue the rear legs up to the top of the backrest
            self.part(iid, o, yaw, Shape.BOX, (sx * (seat_w / 2 - leg / 2), -(seat_d / 2 - leg / 2), seat_h + back_h / 2),
                      (leg, leg, back_h), color, tex, strength)
        panel_h = back_h * self.u(0.45, 0.6)
        self.part(iid, o, yaw, Shape.BOX, (0, -(seat_d / 2 - leg / 2), seat_h + back_h - panel_h / 2),
                  (seat_w - 2 * leg, 0.025, panel_h), color, tex, strength)
        self.floor_footprints.append(_Footprint(x, y, seat_w / 2, seat_d / 2, yaw))
        return self.finish(iid, "Chair", yaw, color)

    def chair_style(self) -> tuple:
        wood = self.rng.random() < 0.6
        color = self.pick(_WOODS) if wood else self.pick(_FURNITURE_PAINT)
        tex, strength = (Texture.WOOD, 0.16) if wood else (Texture.MOTTLE, 0.04)
        cushion = self.pick(_FABRICS) if self.rng.random() < 0.4 else None
        return (color, tex, strength, self.u(0.42, 0.48), self.u(0.43, 0.47), self.u(0.4, 0.5), cushion)

    def add_sofa(self, x: float, y: float, yaw: float, width: float) -> InstanceInfo:
        iid = self.begin()
        o = (x, y, 0.0)
        color = self.pick(_FABRICS)
        depth = self.u(0.85, 0.95)
        leg_h, base_top = 0.08, self.u(0.38, 0.42)
        arm_w, back_t = self.u(0.15, 0.2), self.u(0.18, 0.22)
        for sx in (-1, 1):
            for sy in (-1, 1):
                self.part(iid, o, yaw, Shape.CYLINDER, (sx * (width / 2 - 0.08), sy * (depth / 2 - 0.08), leg_h / 2),
                          (0.05, 0.05, leg_h), _DARK, Texture.PLAIN)
        self.part(iid, o, yaw, Shape.BOX, (0, 0, (leg_h + base_top) / 2), (width, depth, base_top - leg_h),
                  color, Texture.FABRIC, 0.12)
        self.part(iid, o, yaw, Shape.BOX, (0, -depth / 2 + back_t / 2, base_top + 0.22), (width, back_t, 0.44),
                  self.jitter(color, 6), Texture.FABRIC, 0.12)
        for sx in (-1, 1):
            self.part(iid, o, yaw, Shape.BOX, (sx * (width / 2 - arm_w / 2), back_t / 2, base_top + 0.11),
                      (arm_w, depth - back_t, 0.22), self.jitter(color, 6), Texture.FABRIC, 0.12)
        seats = 2 if width < 1.9 else 3
        inner = width - 2 * arm_w
        for k in range(seats):
            cx = -inner / 2 + inner * (k + 0.5) / seats
            self.part(iid, o, yaw, Shape.BOX, (cx, back_t / 2, base_top + 0.05),
                      (inner / seats - 0.01, depth - back_t - 0.02, 0.1), self.jitter(color, 10), Texture.FABRIC, 0.12)
        self.floor_footprints.append(_Footprint(x, y, width / 2, depth / 2, yaw))
        return self.finish(iid, "Sofa", yaw, color)

    def add_shelf(self, x: float, y: float, yaw: float, width: float) -> InstanceInfo:
        """A bookcase with its back to local -y; books stand on some of its boards."""
        iid = self.begin()
        o = (x, y, 0.0)
        wood = self.rng.random() < 0.7
        color = self.pick(_WOODS) if wood else self.pick(_FURNITURE_PAINT)
        tex, strength = (Texture.WOOD, 0.16) if wood else (Texture.MOTTLE, 0.04)
        depth, height, t = self.u(0.3, 0.38), self.u(1.5, 1.95), 0.02
        for sx in (-1, 1):
            self.part(iid, o, yaw, Shape.BOX, (sx * (width / 2 - t / 2), 0, height / 2), (t, depth, height), color, tex, strength)
        self.part(iid, o, yaw, Shape.BOX, (0, -depth / 2 + 0.005, height / 2), (width - 2 * t, 0.01, height),
                  self.jitter(color, 10), tex, strength)
        levels = int(self.rng.integers(4, 6))
        board_z = [0.06 + (height - 0.06 - t) * k / (levels - 1) for k in range(levels)]
        for z in board_z:
            self.part(iid, o, yaw, Shape.BOX, (0, 0, z + t / 2), (width - 2 * t, depth, t), color, tex, strength)
        self.floor_footprints.append(_Footprint(x, y, width / 2, depth / 2, yaw))
        info = self.finish(iid, "Shelf", yaw, color)
        gap = board_z[1] - board_z[0] - t
        for z in board_z[:-1]:
            if self.rng.random() < 0.75:
                self.add_shelf_books(o, yaw, iid, z + t, width - 2 * t - 0.02, depth, gap)
        return info

    def add_shelf_books(self, o, yaw: float, shelf_id: int, z: float, span: float, depth: float, gap: float) -> None:
        cursor = -span / 2 + self.u(0.0, span * 0.3)
        end = span / 2 - self.u(0.0, span * 0.3)
        while True:
            thick, height = self.u(0.02, 0.05), min(self.u(0.18, 0.3), gap - 0.02)
            if cursor + thick > end or height < 0.1:
                return
            iid = self.begin()
            color = self.pick(_BOOKS)
            book_d = min(depth - 0.03, self.u(0.15, 0.24))
            center_y = -depth / 2 + 0.012 + book_d / 2
            local = np.array([cursor + thick / 2, center_y, z + height / 2])
            world = _rotation(yaw) @ local + np.array(o)
            self.part(iid, tuple(world), yaw, Shape.BOX, (0, 0, 0), (thick, book_d, height), self.jitter(color, 15),
                      Texture.MOTTLE, 0.05)
            self.finish(iid, "Book", yaw, color, support_id=shelf_id)
            cursor += thick + (0.0 if self.rng.random() < 0.8 else self.u(0.02, 0.08))

    def add_box(self, x: float, y: float, z: float, yaw: float, size: tuple[float, float, float],
                support_id: int = STRUCTURE_ID, floor: bool = True) -> InstanceInfo:
        iid = self.begin()
        o = (x, y, z)
        color = self.jitter(_CARDBOARD, 15)
        self.part(iid, o, yaw, Shape.BOX, (0, 0, size[2] / 2), size, color, Texture.CARDBOARD, 0.12)
        # packing tape across the top
        self.part(iid, o, yaw, Shape.BOX, (0, 0, size[2] + 0.001), (size[0] + 0.002, 0.05, 0.002),
                  (200, 170, 120), Texture.PLAIN)
        if floor:
            self.floor_footprints.append(_Footprint(x, y, size[0] / 2, size[1] / 2, yaw))
        return self.finish(iid, "Box", yaw, color, support_id)

    def add_desk(self, x: float, y: float, yaw: float, width: float, depth: float) -> InstanceInfo:
        iid = self.begin()
        o = (x, y, 0.0)
        wood = self.rng.random() < 0.6
        color = self.pick(_WOODS) if wood else self.pick(_FURNITURE_PAINT)
        tex, strength = (Texture.WOOD, 0.16) if wood else (Texture.MOTTLE, 0.04)
        height, top_t = self.u(0.72, 0.76), 0.03
        self.part(iid, o, yaw, Shape.BOX, (0, 0, height - top_t / 2), (width, depth, top_t), color, tex, strength)
        if self.rng.random() < 0.5:
            for sx in (-1, 1):  # panel legs
                self.part(iid, o, yaw, Shape.BOX, (sx * (width / 2 - 0.01), 0, (height - top_t) / 2),
                          (0.02, depth - 0.02, height - top_t), color, tex, strength)
        else:
            for sx in (-1, 1):
                for sy in (-1, 1):
                    self.part(iid, o, yaw, Shape.BOX, (sx * (width / 2 - 0.03), sy * (depth / 2 - 0.03), (height - top_t) / 2),
                              (0.04, 0.04, height - top_t), _METAL, Texture.PLAIN)
        # drawer unit under one side, with a slightly darker front
        side = 1 if self.rng.random() < 0.5 else -1
        dw = 0.4
        self.part(iid, o, yaw, Shape.BOX, (side * (width / 2 - 0.03 - dw / 2), 0, (height - top_t) / 2 + 0.01),
                  (dw, depth - 0.06, height - top_t - 0.02), self.jitter(color, 15), tex, strength)
        self.floor_footprints.append(_Footprint(x, y, width / 2, depth / 2, yaw))
        return self.finish(iid, "Desk", yaw, color)

    # small objects (origin on the support surface) ------------------------------------------
    def add_monitor(self, o, yaw: float, support_id: int) -> InstanceInfo:
        iid = self.begin()
        w, h = self.u(0.5, 0.62), self.u(0.3, 0.38)
        lift = self.u(0.08, 0.14)
        self.part(iid, o, yaw, Shape.BOX, (0, 0, 0.008), (0.22, 0.16, 0.016), _DARK, Texture.PLAIN)
        self.part(iid, o, yaw, Shape.BOX, (0, -0.02, (lift + 0.016) / 2 + 0.008), (0.05, 0.03, lift + 0.02), _DARK, Texture.PLAIN)
        self.part(iid, o, yaw, Shape.BOX, (0, 0.01, lift + h / 2), (w, 0.03, h), _DARK, Texture.PLAIN)
        self.part(iid, o, yaw, Shape.BOX, (0, 0.026, lift + h / 2), (w - 0.03, 0.004, h - 0.03),
                  self.pick(_SCREENS), Texture.MOTTLE, 0.15, emissive=True)
        return self.finish(iid, "Computer monitor", yaw, _DARK, support_id)

    def add_keyboard(self, o, yaw: float, support_id: int) -> InstanceInfo:
        iid = self.begin()
        color = self.pick((_DARK, (220, 220, 220)))
        self.part(iid, o, yaw, Shape.BOX, (0, 0, 0.012), (0.44, 0.14, 0.024), color, Texture.FABRIC, 0.2)
        return self.finish(iid, "Computer keyboard", yaw, color, support_id)

    def add_mouse(self, o, yaw: float, support_id: int) -> InstanceInfo:
        iid = self.begin()
        color = self.pick((_DARK, (220, 220, 220)))
        self.part(iid, o, yaw, Shape.BOX, (0, 0, 0.015), (0.06, 0.1, 0.03), color, Texture.PLAIN)
        return self.finish(iid, "Computer mouse", yaw, color, support_id)

    def add_laptop(self, o, yaw: float, support_id: int) -> InstanceInfo:
        """Base on the support, lid hinged at the back edge and opened ~105 degrees, screen facing +y."""
        iid = self.begin()
        color = self.pick(((190, 190, 195), (40, 40, 45), (150, 150, 155)))
        w, d, base_t, lid_t = self.u(0.3, 0.36), self.u(0.21, 0.25), 0.018, 0.008
        tilt = math.radians(self.u(10, 20))  # lid leans back
        self.part(iid, o, yaw, Shape.BOX, (0, 0, base_t / 2), (w, d, base_t), color, Texture.MOTTLE, 0.03)
        self.part(iid, o, yaw, Shape.BOX, (0, 0.02, base_t + 0.001), (w - 0.03, d * 0.45, 0.002), _DARK, Texture.FABRIC, 0.2)
        hinge = np.array([0.0, -d / 2 + lid_t / 2, base_t])
        lid_rot = _rotation(0.0, tilt)
        lid_h = d * 0.95
        lid_center = hinge + lid_rot @ np.array([0, 0, lid_h / 2])
        self.part(iid, o, yaw, Shape.BOX, tuple(lid_center), (w, lid_t, lid_h), color, Texture.MOTTLE, 0.03, tilt=tilt)
        screen_center = hinge + lid_rot @ np.array([0, lid_t / 2 + 0.001, lid_h / 2 + 0.005])
        self.part(iid, o, yaw, Shape.BOX, tuple(screen_center), (w - 0.03, 0.002, lid_h - 0.04),
                  self.pick(_SCREENS), Texture.MOTTLE, 0.15, tilt=tilt, emissive=True)
        return self.finish(iid, "Laptop", yaw, color, support_id)

    def add_mug(self, o, yaw: float, support_id: int, coffee_cup: bool = False) -> InstanceInfo:
        """A cylinder with a dark interior disk and a torus handle on local +x (a cup adds a saucer)."""
        iid = self.begin()
        color = (240, 240, 235) if coffee_cup else self.pick(_MUGS)
        base = 0.0
        if coffee_cup:
            self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, 0.005), (0.14, 0.14, 0.01), color, Texture.PLAIN)
            base = 0.01
            r, h = self.u(0.038, 0.045), self.u(0.06, 0.075)
        else:
            r, h = self.u(0.037, 0.045), self.u(0.085, 0.105)
        self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, base + h / 2), (2 * r, 2 * r, h), color, Texture.MOTTLE, 0.03)
        inside = (70, 40, 20) if coffee_cup or self.rng.random() < 0.5 else tuple(int(c * 0.6) for c in color)
        self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, base + h + 0.0005), (1.7 * r, 1.7 * r, 0.002), inside, Texture.PLAIN)
        minor = 0.006
        major = h * 0.28
        self.part(iid, o, yaw, Shape.TORUS, (r + major * 0.6, 0, base + h * 0.55),
                  (2 * (major + minor), 2 * (major + minor), 2 * minor), color, Texture.PLAIN, tilt=math.pi / 2)
        return self.finish(iid, "Coffee cup" if coffee_cup else "Mug", yaw, color, support_id)

    def add_bottle(self, o, yaw: float, support_id: int) -> InstanceInfo:
        iid = self.begin()
        color = self.pick(_BOTTLES)
        r, h = self.u(0.03, 0.04), self.u(0.16, 0.22)
        self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, h / 2), (2 * r, 2 * r, h), color, Texture.MOTTLE, 0.03)
        self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, h * 0.5), (2 * r + 0.002, 2 * r + 0.002, h * 0.35),
                  self.pick(_BOOKS), Texture.MOTTLE, 0.05)
        self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, h + 0.012), (1.3 * r, 1.3 * r, 0.024), color, Texture.PLAIN)
        self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, h + 0.045), (0.026, 0.026, 0.045), color, Texture.PLAIN)
        self.part(iid, o, yaw, Shape.CYLINDER, (0, 0, h + 0.075), (0.03, 0.03, 0.02), self.pick(_MUGS), Texture.PLAIN)
        return self.finish(iid, "Bottle", yaw, color, support_id)

    def add_book(self, o, yaw: float, support_id: int) -> InstanceInfo:
        """A book lying flat: two covers, a spine and off-white pages showing on three edges."""
        iid = self.begin()
        color = self.pick(_BOOKS)
        w, d, t, c = self.u(0.15, 0.22), self.u(0.21, 0.29), self.u(0.015, 0.045), 0.003
        self.part(iid, o, yaw, Shape.BOX, (0, 0, c / 2), (w, d, c), color, Texture.MOTTLE, 0.05)
        self.part(iid, o, yaw, Shape.BOX, (0, 0, t - c / 2), (w, d, c), color, Texture.MOTTLE, 0.05)
        self.part(iid, o, yaw, Shape.BOX, (-w / 2 + c / 2, 0, t / 2), (c, d, t - 2 * c), color, Texture.MOTTLE, 0.05)
        self.part(iid, o, yaw, Shape.BOX, (0.002, 0, t / 2), (w - 2 * c - 0.004, d - 0.006, t - 2 * c),
                  (238, 234, 220), Texture.FABRIC, 0.08)
        return self.finish(iid, "Book", yaw, color, support_id)

    def furnish_top(self, support: InstanceInfo, items: list[str]) -> None:
        """Place small objects on a support's top without overlap (rejection sampling)."""
        top_z = support.center_world_m[2] + support.size_m[2] / 2
        half_x, half_y = support.size_m[0] / 2 - 0.06, support.size_m[1] / 2 - 0.06
        c, s = math.cos(support.yaw_rad), math.sin(support.yaw_rad)
        placed: list[_Footprint] = []
        radius = {"Mug": 0.09, "Coffee cup": 0.08, "Bottle": 0.05, "Book": 0.16, "Laptop": 0.2, "Box": 0.15}
        for item in items:
            for _ in range(30):
                lx, ly = self.u(-half_x, half_x), self.u(-half_y, half_y)
                r = radius[item]
                if abs(lx) + r > half_x + 0.06 or abs(ly) + r > half_y + 0.06:
                    continue
                x = support.center_world_m[0] + c * lx - s * ly
                y = support.center_world_m[1] + s * lx + c * ly
                fp = _Footprint(x, y, r, r, support.yaw_rad)
                if any(fp.overlaps(other) for other in placed):
                    continue
                self.place_item(item, x, y, top_z, support)
                placed.append(fp)
                break

    def place_item(self, item: str, x: float, y: float, z: float, support: InstanceInfo) -> None:
        o = (x, y, z)
        # laptops and books face the nearest long edge loosely; cups turn freely
        yaw = support.yaw_rad + self.pick((0.0, math.pi)) + self.u(-0.3, 0.3)
        if item == "Mug":
            self.add_mug(o, self.u(0, 2 * math.pi), support.instance_id)
        elif item == "Coffee cup":
            self.add_mug(o, self.u(0, 2 * math.pi), support.instance_id, coffee_cup=True)
        elif item == "Bottle":
            self.add_bottle(o, self.u(0, 2 * math.pi), support.instance_id)
        elif item == "Book":
            self.add_book(o, yaw, support.instance_id)
        elif item == "Laptop":
            self.add_laptop(o, yaw, support.instance_id)
        else:
            size = (self.u(0.12, 0.22), self.u(0.1, 0.18), self.u(0.06, 0.14))
            self.add_box(x, y, z, yaw, size, support.instance_id, floor=False)

    def random_items(self, low: int, high: int) -> list[str]:
        kinds = ("Mug", "Coffee cup", "Bottle", "Book", "Laptop", "Box")
        weights = np.array([0.25, 0.15, 0.2, 0.2, 0.1, 0.1])
        return [str(k) for k in self.rng.choice(kinds, size=int(self.rng.integers(low, high + 1)), p=weights)]

    # groups ------------------------------------------------------------------------------------
    def add_dining_group(self) -> None:
        width, depth = self.u(1.2, 1.7), self.u(0.75, 0.95)
        yaw = self.pick((0.0, math.pi / 2)) + self.u(-0.15, 0.15)
        x, y = self.u(-0.3, 0.3), self.u(-0.25, 0.25)
        table = self.add_table(x, y, yaw, width, depth, self.u(0.73, 0.77))
        style = self.chair_style()
        seats = [(0.0, 1), (0.0, -1)]
        if width > 1.35:
            seats = [(-width / 4, 1), (width / 4, 1), (-width / 4, -1), (width / 4, -1)]
        ends = [(1, 0), (-1, 0)] if self.rng.random() < 0.5 else []
        c, s = math.cos(yaw), math.sin(yaw)
        count = int(self.rng.integers(2, len(seats) + 1))
        for offset, side in [seats[i] for i in self.rng.permutation(len(seats))[:count]]:
            dist = depth / 2 + style[3] / 2 + self.u(0.06, 0.2)
            lx, ly = offset + self.u(-0.05, 0.05), side * dist
            self._try_chair(x + c * lx - s * ly, y + s * lx + c * ly, yaw + (math.pi if side > 0 else 0.0), style)
        for side, _ in ends:
            lx = side * (width / 2 + style[3] / 2 + self.u(0.06, 0.2))
            self._try_chair(x + c * lx, y + s * lx, yaw + (-math.pi / 2 if side < 0 else math.pi / 2), style)
        self.furnish_top(table, self.random_items(2, 6))

    def _try_chair(self, x: float, y: float, yaw: float, style: tuple) -> bool:
        """Add a chair (front facing local +y) unless it would overlap placed furniture."""
        yaw += self.u(-0.15, 0.15)
        fp = _Footprint(x, y, style[3] / 2, style[3] * 0.95 / 2, yaw)
        if not self.fits_floor(fp):
            return False
        self.add_chair(x, y, yaw, style)
        return True

    def wall_slot(self, wall: int, width: float, depth: float, along: float) -> tuple[float, float, float]:
        """Centre and yaw of an object of width x depth with its back on `wall` (0..3), front facing in."""
        hx, hy = self.size_m[0] / 2, self.size_m[1] / 2
        gap = 0.03
        if wall == 0:  # y = -hy, front towards +y
            return along, -hy + gap + depth / 2, 0.0
        if wall == 1:  # x = +hx
            return hx - gap - depth / 2, along, math.pi / 2
        if wall == 2:  # y = +hy
            return along, hy - gap - depth / 2, math.pi
        return -hx + gap + depth / 2, along, -math.pi / 2

    def add_wall_item(self, kind: str, wall: int) -> bool:
        wall_len = self.size_m[0] if wall in (0, 2) else self.size_m[1]
        c_in = {0: (0, 1), 1: (-1, 0), 2: (0, -1), 3: (1, 0)}[wall]  # inward normal
        for _ in range(15):
            if kind == "desk":
                width, depth = self.u(1.0, 1.4), self.u(0.6, 0.72)
            elif kind == "shelf":
                width, depth = self.u(0.7, 1.1), 0.38
            elif kind == "sofa":
                width, depth = self.u(1.6, 2.2), 0.95
            else:
                width, depth = self.u(0.35, 0.6), self.u(0.35, 0.6)
            along = self.u(-wall_len / 2 + width / 2 + 0.05, wall_len / 2 - width / 2 - 0.05)
            x, y, yaw = self.wall_slot(wall, width, depth, along)
            fp = _Footprint(x, y, width / 2, depth / 2, yaw)
            if not self.fits_floor(fp):
                continue
            if kind == "desk":
                chair_d = 0.5
                chair_xy = (x + c_in[0] * (depth / 2 + chair_d / 2 + 0.08), y + c_in[1] * (depth / 2 + chair_d / 2 + 0.08))
                if not self.fits_floor(_Footprint(*chair_xy, 0.25, 0.25, yaw)):
                    continue
                desk = self.add_desk(x, y, yaw, width, depth)
                self._try_chair(*chair_xy, yaw + math.pi, self.chair_style())
                top = desk.center_world_m[2] + desk.size_m[2] / 2
                c, s = math.cos(yaw), math.sin(yaw)
                if self.rng.random() < 0.8:
                    ly = -depth / 2 + 0.15
                    self.add_monitor((x - s * ly, y + c * ly, top), yaw, desk.instance_id)
                    ly2 = depth / 2 - 0.15
                    self.add_keyboard((x - s * ly2, y + c * ly2, top), yaw + self.u(-0.1, 0.1), desk.instance_id)
                    lx3 = 0.32
                    self.add_mouse((x + c * lx3 - s * ly2, y + s * lx3 + c * ly2, top), yaw + self.u(-0.3, 0.3), desk.instance_id)
                    # one drink beside the monitor, clear of the keyboard and the mouse
                    lx = -(width / 2 - 0.12)
                    item = self.pick(("Mug", "Coffee cup", "Bottle"))
                    self.place_item(item, x + c * lx, y + s * lx, top, desk)
                else:
                    self.furnish_top(desk, ["Laptop", *self.random_items(1, 3)])
            elif kind == "shelf":
                self.add_shelf(x, y, yaw, width)
            elif kind == "sofa":
                self.add_sofa(x, y, yaw, width)
                if self.rng.random() < 0.6:
                    ct_w, ct_d = self.u(0.8, 1.1), self.u(0.45, 0.6)
                    dist = depth / 2 + self.u(0.35, 0.45) + ct_d / 2
                    cx, cy = x + c_in[0] * dist, y + c_in[1] * dist
                    if self.fits_floor(_Footprint(cx, cy, ct_w / 2, ct_d / 2, yaw)):
                        table = self.add_table(cx, cy, yaw, ct_w, ct_d, self.u(0.4, 0.46))
                        self.furnish_top(table, self.random_items(1, 3))
            else:
                size = (width, depth, self.u(0.3, 0.55))
                box = self.add_box(x, y, 0.0, yaw + self.u(-0.1, 0.1), size)
                if self.rng.random() < 0.5:
                    top = box.center_world_m[2] + box.size_m[2] / 2
                    smaller = (width * self.u(0.6, 0.9), depth * self.u(0.6, 0.9), self.u(0.2, 0.4))
                    self.add_box(x, y, top, box.yaw_rad + self.u(-0.2, 0.2), smaller, box.instance_id, floor=False)
            return True
        return False


def generate_room(seed: int, *, size_m: tuple[float, float] | None = None, height_m: float | None = None) -> Room:
    """A furnished room, fully determined by `seed` (and the optional size overrides)."""
    check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    if size_m is None:
        size_m = (float(rng.uniform(4.6, 7.0)), float(rng.uniform(4.2, 6.0)))
    check_range("size_m[0]", size_m[0], 3.6, 30.0)
    check_range("size_m[1]", size_m[1], 3.6, 30.0)
    if height_m is None:
        height_m = float(rng.uniform(2.5, 2.9))
    check_range("height_m", height_m, 2.2, 6.0)
    builder = _RoomBuilder(rng, (float(size_m[0]), float(size_m[1])), height_m)
    builder.add_structure()
    builder.add_dining_group()
    kinds = ["desk", "shelf", "sofa", "boxes", "desk", "shelf"]
    order = rng.permutation(len(kinds))
    for k in order[: int(rng.integers(4, 7))]:
        builder.add_wall_item(kinds[k], int(rng.integers(4)))
    return Room(seed, builder.size_m, height_m, tuple(builder.primitives), tuple(builder.instances))



# --- relational layouts (issue 12) -----------------------------------------------------------

@dataclass(frozen=True)
class RelationalQuery:
    """An instruction whose answer depends only on geometry, and that answer's instance id (ground truth)."""

    instruction: str
    answer_id: int
    kind: str  # the case it tests: "on", "under", "near", "left of", "nth", "biggest", "not", ...


@dataclass(frozen=True, eq=False)
class RelationalRoom:
    """A room laid out so that relational instructions have one geometric answer each.

    viewer_world_T_camera: the stated viewpoint of "left / right / in front / behind": 1.6 m in front of
    the table, looking along +y (right = +x). `relational_trajectory` keeps its orientation, so the
    latest keyframe, the viewer the resolver takes (`relations.viewer_axes`), looks the same way; every
    answer also holds for any viewer yaw within 30 degrees of it. `queries` are ground truth, for
    evaluation only.
    """

    room: Room
    viewer_world_T_camera: np.ndarray
    look_at_world_m: np.ndarray
    queries: tuple[RelationalQuery, ...]


def generate_relational_room(seed: int) -> RelationalRoom:
    """A table with a row of mugs, a bottle and a laptop on it, a mug on one of two floor boxes of
    different sizes, a chair in front of the table and one behind it; mirrored left/right by seed.

    Answers come from the construction (which mug was placed where), never from `core.query.relations`, so
    the resolver is checked against them. Spacing leaves margins larger than box noise: the mug meant
    by "next to the laptop" is >= 8 cm nearer to it than any other, the one farthest from the bottle
    >= 40 cm farther than any other; neighbours on the table are >= 12 cm apart; the two boxes differ
    in volume by >= 1.8x. Everything is within 40 degrees of the stated viewer's optical axis.
    """
    check_int("seed", seed, 0)
    rng = np.random.default_rng(10_000 + seed)
    builder = _RoomBuilder(rng, (5.6, 5.6), 2.6)
    builder.add_structure()
    side = 1.0 if seed % 2 == 0 else -1.0  # mirror: the mug box is on the viewer's right for even seeds
    tx, ty = builder.u(-0.1, 0.1), builder.u(0.3, 0.5)
    table = builder.add_table(tx, ty, 0.0, 1.6, 0.8, 0.75)
    top = table.center_world_m[2] + table.size_m[2] / 2

    def on_table(along: float) -> tuple[float, float, float]:
        return (tx + side * (along + builder.u(-0.02, 0.02)), ty + builder.u(-0.08, 0.08), top)

    mug_a = builder.add_mug(on_table(-0.68), builder.u(0, 2 * math.pi), table.instance_id)
    bottle = builder.add_bottle(on_table(-0.45), 0.0, table.instance_id)
    mug_b = builder.add_mug(on_table(-0.2), builder.u(0, 2 * math.pi), table.instance_id)
    laptop = builder.add_laptop(on_table(0.2), builder.u(-0.15, 0.15), table.instance_id)
    mug_c = builder.add_mug(on_table(0.5), builder.u(0, 2 * math.pi), table.instance_id)
    big = (builder.u(0.5, 0.56), builder.u(0.45, 0.5), builder.u(0.42, 0.48))
    small = (builder.u(0.34, 0.38), builder.u(0.32, 0.36), builder.u(0.26, 0.3))
    mug_box_big = bool(rng.random() < 0.5)
    size_1, size_2 = (big, small) if mug_box_big else (small, big)
    box_1 = builder.add_box(tx + side * (0.8 + 0.1 + size_1[0] / 2), ty + builder.u(-0.1, 0.0), 0.0,
                            builder.u(-0.1, 0.1), size_1)
    box_2 = builder.add_box(tx - side * (0.8 + 0.1 + size_2[0] / 2), ty + builder.u(-0.1, 0.0), 0.0,
                            builder.u(-0.1, 0.1), size_2)
    box_top = box_1.center_world_m[2] + box_1.size_m[2] / 2
    mug_d = builder.add_mug((box_1.center_world_m[0], box_1.center_world_m[1], box_top), builder.u(0, 2 * math.pi),
                            box_1.instance_id)
    style = builder.chair_style()
    chair_front = builder.add_chair(tx + side * 0.35, ty - 0.4 - 0.33, builder.u(-0.1, 0.1), style)
    # Behind the table's far corner, not behind its middle, where the table hides all but its backrest.
    chair_back = builder.add_chair(tx - side * 1.2, ty + 0.4 + 0.45, math.pi + builder.u(-0.1, 0.1), style)
    mugs = [mug_a, mug_b, mug_c, mug_d]
    by_x = [m.instance_id for m in sorted(mugs, key=lambda m: m.center_world_m[0])]
    bigger, smaller = (box_1, box_2) if mug_box_big else (box_2, box_1)
    # Left / right of the laptop: its nearer neighbour on that side (mug_b on the bottle's side, mug_c on
    # the other; side = -1 mirrors which one is on the viewer's left).
    left_of_laptop, right_of_laptop = (mug_b, mug_c) if side > 0 else (mug_c, mug_b)
    queries = (
        RelationalQuery("the mug on the box", mug_d.instance_id, "on"),
        RelationalQuery("the box under the mug", box_1.instance_id, "under"),
        RelationalQuery("the mug next to the laptop", mug_c.instance_id, "near"),
        RelationalQuery("the mug to the left of the laptop", left_of_laptop.instance_id, "left of"),
        RelationalQuery("the mug to the right of the laptop", right_of_laptop.instance_id, "right of"),
        RelationalQuery("the mug farthest from the bottle", mug_d.instance_id, "farthest"),
        RelationalQuery("the mug between the bottle and the laptop", mug_b.instance_id, "between"),
        RelationalQuery("the leftmost mug", by_x[0], "leftmost"),
        RelationalQuery("the second mug from the left", by_x[1], "nth"),
        RelationalQuery("the rightmost mug", by_x[-1], "rightmost"),
        RelationalQuery("the chair in front of the table", chair_front.instance_id, "in front of"),
        RelationalQuery("the chair behind the table", chair_back.instance_id, "behind"),
        RelationalQuery("the biggest box", bigger.instance_id, "biggest"),
        RelationalQuery("the smallest box", smaller.instance_id, "smallest"),
        RelationalQuery("the mug, not the one on the table", mug_d.instance_id, "not"),
        RelationalQuery("the chair, not the one behind the table", chair_front.instance_id, "not"),
    )
    del bottle, laptop
    look = np.array([tx, ty, 0.6])
    viewer = look_at(np.array([tx, ty - 1.6, 1.3]), look)
    room = Room(seed, builder.size_m, builder.height_m, tuple(builder.primitives), tuple(builder.instances))
    return RelationalRoom(room, viewer, look, queries)


def relational_trajectory(layout: RelationalRoom, num_frames: int, *, track_m: float = 1.0,
                          bob_m: float = 0.08) -> list[np.ndarray]:
    """A dolly shot: the stated viewer's orientation throughout, its position sliding +-track_m along its
    right axis (out to the right, across to the left, back) and bobbing +-bob_m; the last pose is
    `layout.viewer_world_T_camera`. Keyframes are kept for novelty, so the latest keyframe need not be
    the last pose; with one orientation throughout, whichever it is sees left and right as stated."""
    check_int("num_frames", num_frames, 2)
    check_range("track_m", track_m, 0.0, 2.0)
    check_range("bob_m", bob_m, 0.0, 0.5)
    viewer = layout.viewer_world_T_camera
    right = viewer[:3, 0]
    poses = []
    for k in range(num_frames):
        u = k / (num_frames - 1)
        pose = viewer.copy()
        pose[:3, 3] = viewer[:3, 3] + track_m * math.sin(2 * math.pi * u) * right \
            + np.array([0.0, 0.0, bob_m * math.sin(3 * math.pi * u)])
        poses.append(pose)
    poses[-1] = layout.viewer_world_T_camera.copy()
    return poses

# --- scene events (issue 22): objects that move ---------------------------------------------

class EventKind(enum.Enum):
    MOVE = "move"
    REMOVE = "remove"


@dataclass(frozen=True)
class SceneEvent:
    """At `frame_index` (the first frame rendered after it), an instance is moved or removed.

    MOVE: the instance and everything resting on it (support chain) turn by `yaw_rad` about the
    instance's box centre (world z) and shift by `translation_m`. REMOVE: they disappear. Evaluation
    scripts read the resulting rooms as ground truth; the product only ever sees the rendered frames.
    """

    frame_index: int
    instance_id: int
    kind: EventKind = EventKind.MOVE
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw_rad: float = 0.0

    def __post_init__(self) -> None:
        check_int("frame_index", self.frame_index, 0)
        if self.instance_id == STRUCTURE_ID:
            raise ConfigError("SceneEvent: walls, floor and ceiling (instance 0) cannot move")


def _carried(room: Room, instance_id: int) -> set[int]:
    """The instance and every instance resting on it, directly or not."""
    out, frontier = {instance_id}, [instance_id]
    while frontier:
        parent = frontier.pop()
        for info in room.instances:
            if info.support_id == parent and info.instance_id not in out and info.instance_id != STRUCTURE_ID:
                out.add(info.instance_id)
                frontier.append(info.instance_id)
    return out


def apply_event(room: Room, event: SceneEvent) -> Room:
    """The room after `event` (a new Room; the seed is kept, so textures stay the same)."""
    room.instance(event.instance_id)  # KeyError for an unknown instance
    moving = _carried(room, event.instance_id)
    if event.kind is EventKind.REMOVE:
        prims = tuple(p for p in room.primitives if p.instance_id not in moving)
        infos = tuple(i for i in room.instances if i.instance_id not in moving)
        return Room(room.seed, room.size_m, room.height_m, prims, infos)
    pivot = np.array(room.instance(event.instance_id).center_world_m, dtype=np.float64)
    rot = _rotation(event.yaw_rad)
    shift = np.asarray(event.translation_m, dtype=np.float64)

    def moved(center) -> tuple[float, float, float]:
        out = rot @ (np.asarray(center, dtype=np.float64) - pivot) + pivot + shift
        return tuple(float(v) for v in out)

    prims = tuple(dataclasses.replace(p, center_world_m=moved(p.center_world_m), yaw_rad=p.yaw_rad + event.yaw_rad)
                  if p.instance_id in moving else p for p in room.primitives)
    infos = tuple(dataclasses.replace(i, center_world_m=moved(i.center_world_m), yaw_rad=i.yaw_rad + event.yaw_rad)
                  if i.instance_id in moving else i for i in room.instances)
    return Room(room.seed, room.size_m, room.height_m, prims, infos)


def rooms_over_time(room: Room, events: Iterable[SceneEvent]) -> list[tuple[int, Room]]:
    """[(first frame index, room state)] from frame 0, one entry per event (applied in frame order)."""
    states = [(0, room)]
    for event in sorted(events, key=lambda e: e.frame_index):
        states.append((event.frame_index, apply_event(states[-1][1], event)))
    return states


def render_with_events(room: Room, poses: list[np.ndarray], events: Iterable[SceneEvent],
                       config: SimConfig | None = None, rate_hz: float = 30.0) -> Iterator[tuple[SimFrame, Room]]:
    """Render a pose sequence while the scene changes: (frame, the room as it was when rendered)."""
    states = rooms_over_time(room, events)
    sim, current = None, None
    for k, pose in enumerate(poses):
        state = [r for start, r in states if start <= k][-1]
        if state is not current:
            current = state
            # The sensor's noise stream continues across states (one camera), its seed offset by the state.
            sim = Simulator(state, dataclasses.replace(config or SimConfig(), seed=(config or SimConfig()).seed + k))
        yield sim.render(pose, stamp_ns=int(round(k * 1e9 / rate_hz))), current


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


# --- rendering -------------------------------------------------------------------------------

def _periodic_noise(rng: np.random.Generator, size: int, sigma_u: float, sigma_v: float) -> np.ndarray:
    """Tileable smooth noise (std 1): white noise low-passed in the Fourier domain (texel units)."""
    white = rng.standard_normal((size, size))
    fv = np.fft.fftfreq(size)[:, None]
    fu = np.fft.fftfreq(size)[None, :]
    gain = np.exp(-2 * np.pi ** 2 * ((fu * sigma_u) ** 2 + (fv * sigma_v) ** 2))
    noise = np.real(np.fft.ifft2(np.fft.fft2(white) * gain))
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def _make_textures(seed: int = 7) -> np.ndarray:
    """(len(Texture), N, N) float32 albedo modulations, roughly in [-1, 1]; rows are v, columns u."""
    rng = np.random.default_rng(seed)
    n = _TEXTURE_SIZE
    v = np.arange(n)[:, None] / n
    u = np.arange(n)[None, :] / n
    out = np.zeros((len(Texture), n, n), np.float32)
    out[Texture.MOTTLE] = 0.7 * _periodic_noise(rng, n, 12, 12) + 0.3 * _periodic_noise(rng, n, 2, 2)
    # wood: growth rings seen side-on, warped by noise stretched along the grain (u)
    warp = _periodic_noise(rng, n, 40, 6)
    grain = np.sin(2 * np.pi * (14 * v + 0.6 * warp))
    streaks = _periodic_noise(rng, n, 30, 1.0)
    out[Texture.WOOD] = 0.6 * grain + 0.4 * streaks
    weave = np.sin(2 * np.pi * 64 * u) * np.sin(2 * np.pi * 64 * v)
    out[Texture.FABRIC] = 0.35 * weave + 0.45 * _periodic_noise(rng, n, 1.0, 1.0) + 0.4 * _periodic_noise(rng, n, 20, 20)
    # floor planks 12.5 cm wide, each with its own shade and one staggered joint per tile
    plank_rows = (v[:, 0] * 8).astype(int)
    shade = rng.uniform(-0.8, 0.8, 8)[plank_rows][:, None]
    joints = rng.uniform(0, 1, 8)[plank_rows][:, None]
    seam = (np.abs((v * 8) % 1 - 0.0) < 0.02) | (np.abs(u - joints) < 0.004)
    planks = 0.5 * shade + 0.5 * (0.6 * np.sin(2 * np.pi * (40 * v + 0.5 * warp)) + 0.4 * streaks)
    out[Texture.PLANKS] = np.where(seam, -2.5, planks)
    out[Texture.CARDBOARD] = 0.6 * _periodic_noise(rng, n, 6, 6) + 0.25 * np.sin(2 * np.pi * 128 * u) + 0.3 * _periodic_noise(rng, n, 1, 1)
    return out


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.power(np.asarray(c, np.float32) / 255.0, 2.2)


class Simulator:
    """Renders a room: build the raycasting scene once, then `render(world_T_camera)` per frame."""

    def __init__(self, room: Room, config: SimConfig | None = None) -> None:
        self.room = room
        self.config = config or SimConfig()
        cfg = self.config
        verts, tris, tri_prim = [], [], []
        offset = 0
        for index, primitive in enumerate(room.primitives):
            v, t = primitive_mesh(primitive)
            verts.append(v)
            tris.append(t + offset)
            tri_prim.append(np.full(len(t), index, np.int32))
            offset += len(v)
        # triangle -> primitive; the last entry is the "no hit" sentinel (primitive row len(prims))
        self._tri_prim = np.concatenate([*tri_prim, [len(room.primitives)]]).astype(np.int32)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(np.concatenate(verts).astype(np.float32)),
                                  o3d.core.Tensor(np.concatenate(tris).astype(np.uint32)))
        prims = room.primitives
        # per-primitive tables, with one extra row (index -1) for rays that hit nothing
        self._prim_instance = np.array([p.instance_id for p in prims] + [STRUCTURE_ID], np.int32)
        self._prim_albedo = np.concatenate([_srgb_to_linear([p.color_rgb for p in prims]), np.zeros((1, 3), np.float32)])
        # start of each primitive's texture in the flattened texture stack
        self._prim_texture_base = np.array([int(p.texture) for p in prims] + [0], np.int64) * _TEXTURE_SIZE ** 2
        self._prim_strength = np.array([p.texture_strength for p in prims] + [0.0], np.float32)
        self._prim_emissive = np.array([p.emissive for p in prims] + [False])
        tex_rng = np.random.default_rng(room.seed)
        # one random texture offset per primitive, packed as v_offset * size + u_offset
        self._prim_tex_offset = tex_rng.integers(0, _TEXTURE_SIZE * _TEXTURE_SIZE, len(prims) + 1).astype(np.int32)
        # flat texture stack with per-primitive base offsets: one np.take per frame
        self._textures_flat = _make_textures().reshape(-1)
        self._gamma_lut = (255.0 * np.linspace(0.0, 1.0, 4096) ** (1 / 2.2)).astype(np.float32)
        self._light_world_m = np.array([0.0, 0.0, room.height_m - 0.25], np.float32)  # a ceiling lamp
        rows, cols = np.mgrid[0:cfg.height, 0:cfg.width].astype(np.float32)
        # pixel centres at integer coordinates, as in geometry.unproject_depth; z = 1 makes t_hit the depth
        self._dirs_camera = np.stack([(cols - cfg.cx) / cfg.fx, (rows - cfg.cy) / cfg.fy, np.ones_like(rows)], -1).reshape(-1, 1, 3)
        self._dir_norm = np.linalg.norm(self._dirs_camera.reshape(-1, 3), axis=1).astype(np.float32)
        self._rng = np.random.default_rng(cfg.seed)
        # colour noise is drawn per frame as a random window of a bank: drawing 0.9 M normals costs ~15 ms
        self._color_noise = (self._rng.standard_normal(cfg.width * cfg.height * 3 + 65536, dtype=np.float32)
                             * np.float32(cfg.color_noise_std))

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self.config.intrinsics

    def render(self, world_T_camera: np.ndarray, stamp_ns: int = 0) -> SimFrame:
        """Render one view (colour, noisy depth) with its ground truth."""
        cfg = self.config
        pose = check_pose(world_T_camera)
        h, w = cfg.height, cfg.width
        # rays [origin | world_R_camera @ dir] in one pass (cv2.transform: numpy's (N,3)@(3,3) is far slower)
        ray_map = np.zeros((6, 4), np.float32)
        ray_map[:3, 3] = pose[:3, 3]
        ray_map[3:, :3] = pose[:3, :3]
        rays = cv2.transform(self._dirs_camera, ray_map).reshape(-1, 6)
        hit = self._scene.cast_rays(o3d.core.Tensor(rays), nthreads=cfg.nthreads)
        t_hit = hit["t_hit"].numpy()
        valid = np.isfinite(t_hit)
        tri = hit["primitive_ids"].numpy()
        # misses carry INVALID_ID; clamp them onto the sentinel row of the lookup tables
        prim = self._tri_prim[np.minimum(tri, len(self._tri_prim) - 1)]
        normals = hit["primitive_normals"].numpy()
        depth_exact = np.where(valid, t_hit, np.float32(0.0))
        instance_ids = self._prim_instance[prim].reshape(h, w)

        dirs = rays[:, 3:]
        cos_view = np.einsum("ij,ij->i", normals, dirs) / self._dir_norm
        # face normals towards the camera, so winding and back faces do not matter
        normals *= np.where(cos_view > 0, np.float32(-1.0), np.float32(1.0))[:, None]
        cos_incidence = np.abs(cos_view)
        points = dirs * depth_exact[:, None]
        points += rays[0, :3]

        color = self._shade(points, normals, prim, tri, cos_incidence, valid)
        depth = depth_exact.reshape(h, w).copy()
        if cfg.noise:
            depth = self._depth_noise(depth, cos_incidence.reshape(h, w))
            start = int(self._rng.integers(len(self._color_noise) - color.size))
            color += self._color_noise[start:start + color.size].reshape(color.shape)
        else:
            depth[(depth < cfg.min_depth_m) | (depth > cfg.max_depth_m)] = 0.0
        color_rgb = np.clip(color + 0.5, 0, 255).astype(np.uint8)
        frame = RgbdFrame(stamp_ns=int(stamp_ns), color_rgb=color_rgb, depth_m=depth, intrinsics=cfg.intrinsics,
                          world_T_camera=pose.copy(), frame_id="camera_color_optical_frame")
        return SimFrame(frame=frame, instance_ids=instance_ids, depth_exact_m=depth_exact.reshape(h, w))

    def frames(self, poses: Iterable[np.ndarray], rate_hz: float = 30.0, start_ns: int = 0) -> Iterator[SimFrame]:
        """Render a pose sequence with stamps at `rate_hz`."""
        check_range("rate_hz", rate_hz, 0.0, None, low_inclusive=False)
        for k, pose in enumerate(poses):
            yield self.render(pose, stamp_ns=start_ns + int(round(k * 1e9 / rate_hz)))

    def _shade(self, points, normals, prim, tri, cos_incidence, valid) -> np.ndarray:
        """(H, W, 3) float32 sRGB in 0..255: textured albedo under a shadowed point light + headlight + ambient."""
        cfg = self.config
        h, w = cfg.height, cfg.width
        size = _TEXTURE_SIZE
        # planar texture mapping on the world plane most facing the normal (triplanar without blending)
        axis = np.argmax(np.abs(normals), axis=1)
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        u = np.where(axis == 0, y, x) * np.float32(_TEXELS_PER_M)
        v = np.where(axis == 2, y, z) * np.float32(_TEXELS_PER_M)
        offset = self._prim_tex_offset[prim]
        ui = (u.astype(np.int32) + offset) % size
        vi = (v.astype(np.int32) + offset // size) % size
        tex = np.take(self._textures_flat, self._prim_texture_base[prim] + vi * size + ui)
        # a small per-face shade change, as real surfaces are never uniformly lit or painted
        face = ((prim * 7919 + (tri // 2) * 104729) % 23).astype(np.float32)
        modulation = 1.0 + self._prim_strength[prim] * tex + np.float32(0.012 / 11) * (face - 11)

        to_light = self._light_world_m - points
        dist = np.sqrt(np.einsum("ij,ij->i", to_light, to_light)) + np.float32(1e-6)
        to_light /= dist[:, None]
        lambert = np.maximum(np.einsum("ij,ij->i", normals, to_light), 0.0)
        if cfg.shadows:
            lambert *= self._shadow_factor(points, normals, to_light, dist, lambert > 0)
        falloff = np.float32(cfg.light_intensity * 1.6) / (1.0 + (dist * np.float32(1 / 2.5)) ** 2)
        shading = np.float32(cfg.ambient) + np.float32(0.25) * cos_incidence + lambert * falloff
        shading = np.where(self._prim_emissive[prim], np.float32(1.6), shading)
        radiance = self._prim_albedo[prim] * (modulation * shading * valid)[:, None]
        # gamma through a lookup table: np.power over every pixel channel costs more than the raycast
        levels = len(self._gamma_lut) - 1
        codes = (np.minimum(radiance, 1.0) * levels).astype(np.int32)
        srgb = np.take(self._gamma_lut, codes).reshape(h, w, 3)
        # a slight blur stands in for lens softness and anti-aliasing of the one-ray-per-pixel render
        return cv2.GaussianBlur(srgb, (3, 3), 0.6)

    def _shadow_factor(self, points, normals, to_light, dist, facing) -> np.ndarray:
        """Per-pixel light visibility (1 lit, 0.15 in shadow), tested on every other pixel and row for speed."""
        cfg = self.config
        h, w = cfg.height, cfg.width
        grid = np.zeros((h, w), bool)
        grid[::2, ::2] = True
        sel = np.nonzero(grid.reshape(-1) & facing)[0]
        shadow_rays = np.empty((len(sel), 6), np.float32)
        shadow_rays[:, :3] = points[sel] + normals[sel] * np.float32(0.004)
        shadow_rays[:, 3:] = to_light[sel] * dist[sel, None]  # t = 1 at the light
        blocked = self._scene.test_occlusions(o3d.core.Tensor(shadow_rays), tnear=0.0, tfar=0.999,
                                              nthreads=cfg.nthreads).numpy()
        coarse = np.ones(h * w, np.float32)
        coarse[sel[blocked.astype(bool)]] = 0.15
        coarse = coarse.reshape(h, w)[::2, ::2]
        return np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:h, :w].reshape(-1)

    def _depth_noise(self, depth: np.ndarray, cos_incidence: np.ndarray) -> np.ndarray:
        """Structured-light depth: z^2 Gaussian noise, quantisation, range, grazing/edge dropout, holes."""
        cfg = self.config
        rng = self._rng
        h, w = depth.shape
        valid = depth > 0
        sigma = cfg.depth_noise_at_1m_m * depth * depth
        noisy = depth + rng.standard_normal(depth.shape, dtype=np.float32) * sigma
        if cfg.depth_quantum_m > 0:
            noisy = np.round(noisy / cfg.depth_quantum_m) * cfg.depth_quantum_m
        drop = ~valid | (noisy < cfg.min_depth_m) | (noisy > cfg.max_depth_m)
        drop |= cos_incidence < math.cos(math.radians(cfg.grazing_dropout_deg))
        if cfg.edge_dropout > 0:
            kernel = np.ones((3, 3), np.uint8)
            spread = cv2.dilate(depth, kernel) - cv2.erode(depth, kernel)
            edge = spread > cfg.edge_jump_rel * depth
            drop |= edge & (rng.random(depth.shape, dtype=np.float32) < cfg.edge_dropout)
        if cfg.hole_fraction > 0:
            coarse = rng.random((h // 16 + 1, w // 16 + 1), dtype=np.float32)
            field_ = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
            drop |= field_ < np.quantile(coarse, cfg.hole_fraction) * 0.8
        noisy[drop] = 0.0
        return noisy.astype(np.float32)

    def closest_instances(self, points_world_m: np.ndarray, max_distance_m: float = 0.05) -> SurfaceLabels:
        """Ground-truth instance of each query point (0 where structure or farther than max_distance_m)."""
        pts = np.asarray(points_world_m, np.float32).reshape(-1, 3)
        ans = self._scene.compute_closest_points(o3d.core.Tensor(pts), nthreads=self.config.nthreads)
        closest = ans["points"].numpy()
        distance = np.linalg.norm(closest - pts, axis=1).astype(np.float32)
        ids = self._prim_instance[self._tri_prim[ans["primitive_ids"].numpy().astype(np.int64)]]
        return SurfaceLabels(np.where(distance <= max_distance_m, ids, STRUCTURE_ID).astype(np.int32), distance)


def instance_points(room: Room, spacing_m: float = 0.01, seed: int = 0) -> dict[int, np.ndarray]:
    """Ground-truth surface samples per instance: id -> (N, 3) float32, about one per spacing_m^2.

    Samples cover every face of an instance's parts, including faces hidden by contact.
    """
    check_range("spacing_m", spacing_m, 1e-4, 1.0)
    rng = np.random.default_rng(seed)
    chunks: dict[int, list[np.ndarray]] = {}
    for primitive in room.primitives:
        if primitive.instance_id == STRUCTURE_ID:
            continue
        verts, tris = primitive_mesh(primitive)
        a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
        areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        count = max(1, int(round(areas.sum() / spacing_m ** 2)))
        which = rng.choice(len(tris), size=count, p=areas / areas.sum())
        r1, r2 = rng.random((2, count))
        s = np.sqrt(r1)
        pts = (1 - s)[:, None] * a[which] + (s * (1 - r2))[:, None] * b[which] + (s * r2)[:, None] * c[which]
        chunks.setdefault(primitive.instance_id, []).append(pts.astype(np.float32))
    return {iid: np.concatenate(parts) for iid, parts in chunks.items()}
