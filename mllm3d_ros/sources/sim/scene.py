"""What a simulated room is made of: primitives (box, cylinder, torus), ground-truth instances, the room;
primitive meshes and ground-truth surface samples (`instance_points`, evaluation only).

Part of the simulator (`mllm3d_ros.sources.simulator` re-exports the public names)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from ...core.config import check_range

STRUCTURE_ID = 0  # instance id of walls, floor and ceiling
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
