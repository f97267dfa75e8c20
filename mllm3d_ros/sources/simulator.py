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

The simulator by job (this module is the renderer and re-exports the rest, so `from
mllm3d_ros.sources.simulator import ...` keeps working): `sim/scene.py` (primitives, instances, rooms),
`sim/rooms.py` (furnished rooms), `sim/relational.py` (the spatial benchmark's rooms), `sim/events.py`
(scripted scene changes), `sim/trajectories.py` (camera poses), `sim/textures.py` (procedural albedo).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np
import open3d as o3d

from ..core.config import check_int, check_range
from ..core.geometry import check_pose
from ..core.types import CameraIntrinsics, RgbdFrame

from .sim.events import EventKind, SceneEvent, apply_event, rooms_over_time  # noqa: F401 (re-exported)
from .sim.relational import (RelationalQuery, RelationalRoom, generate_relational_room,  # noqa: F401 (re-exported)
                             relational_trajectory)
from .sim.rooms import generate_room  # noqa: F401 (re-exported)
from .sim.scene import (STRUCTURE_ID, InstanceInfo, Primitive, Room, Shape, Texture,  # noqa: F401 (re-exported)
                        instance_points, primitive_mesh)
from .sim.textures import _TEXELS_PER_M, _TEXTURE_SIZE, _make_textures, _srgb_to_linear
from .sim.trajectories import look_at, trajectory  # noqa: F401 (re-exported)


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
