"""Seeded furnished rooms (`generate_room`): a dining table with chairs, desks, shelves, sofas and boxes
along the walls, small objects on their supports; floor furniture never overlaps (2D oriented-box test).

Part of the simulator (`mllm3d_ros.sources.simulator` re-exports the public names)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...core.config import check_int, check_range
from .scene import STRUCTURE_ID, InstanceInfo, Primitive, Room, Shape, Texture, primitive_mesh, _rotation

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
