"""Incremental coloured TSDF map on Open3D's tensor VoxelBlockGrid, bounded by a block budget.

TSDF fusion after Curless & Levoy (SIGGRAPH 1996) on a voxel-block hash (Niessner et al., "Real-time
3D reconstruction at scale using voxel hashing", TOG 2013), as implemented by Open3D's
`o3d.t.geometry.VoxelBlockGrid` (Dong et al., "ASH", TPAMI 2022). The legacy ScalableTSDFVolume is
not used: it returns empty clouds in open3d 0.20.

Concurrency: one lock guards the grid. `integrate` holds it for one fusion step; `snapshot` holds it
only while Open3D extracts the surface points into fresh tensors (no copy of the voxel buffers) and
converts them to numpy after releasing it, so a query stalls ingestion for one extraction at most
(tens of ms for a room at 2 cm, see the README; the ingest queue absorbs that many frames).

Memory: Open3D preallocates `capacity` blocks. When more than `block_budget` blocks are active, the
blocks whose centres are farthest from the current camera are evicted (hashmap erase) down to
`evict_to_fraction * block_budget`, so eviction runs in bursts instead of on every frame.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from ..config import ConfigError, check_choice, check_range, param, validate_fields
from ..geometry import check_pose, invert_transform
from ..types import CameraIntrinsics, MapSnapshot, RgbdFrame

_ATTR_NAMES = ("tsdf", "weight", "color")


class MapFileError(ValueError):
    """A saved map cannot be loaded (missing, corrupt or incompatible); the message says which."""


@dataclass(frozen=True)
class TsdfMapConfig:
    """Parameters of the TSDF map; `sdf_trunc_m=None` means 4 voxels."""

    # 2 cm holds a mug (at 3 cm the kitchen's mugs are a few points on the table top) and still fuses
    # the real 30 Hz kitchen in real time on 2 cores (benchmarks.realtime).
    voxel_size_m: float = param(0.02, range=(0.005, 0.5), unit="m", doc="TSDF voxel edge.")
    sdf_trunc_m: float | None = None
    block_resolution: int = 8
    # 20,000 blocks of 8^3 voxels at 2 cm: a 7-Scenes room with margin (the mapping node's value).
    block_budget: int = param(20_000, range=(16, 2_000_000), doc="Voxel blocks kept; the farthest from the camera "
                              "are evicted beyond.")
    evict_to_fraction: float = 0.9
    evict_distance_m: float | None = None
    # 0.2 m: structured-light and stereo depth below ~0.2 m is invalid or a sensor's own housing.
    depth_min_m: float = param(0.2, range=(0.0, 10.0), unit="m", doc="Depth below this is ignored.")
    depth_max_m: float = param(4.0, range=(0.1, 60.0), unit="m", doc="Depth beyond this is ignored.")
    depth_stride: int = param(1, range=(1, 8), doc="Integrate every n-th depth pixel (speed vs detail).")
    weight_threshold: float = 1.0
    device: str = param("cpu", choices=("cpu", "cuda", "auto"), doc="Where the TSDF lives.")
    # Free-space carving (`carve`): a voxel behind which a frame sees clearly farther keeps at most this
    # weight before the free observation is averaged in, so a surface that is gone (an object moved away)
    # is erased after about this many carving frames; 0 turns carving off.
    carve_max_weight: float = 4.0

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.sdf_trunc_m is not None:
            check_range("sdf_trunc_m", self.sdf_trunc_m, self.voxel_size_m, 20.0 * self.voxel_size_m)
        check_choice("block_resolution", self.block_resolution, (8, 16))
        check_range("evict_to_fraction", self.evict_to_fraction, 0.1, 1.0)
        if self.evict_distance_m is not None:
            check_range("evict_distance_m", self.evict_distance_m, 0.0, low_inclusive=False)
        if self.depth_min_m >= self.depth_max_m:  # blame the field that was set: the message names both
            raise ConfigError(f"depth_min_m must be below depth_max_m ({self.depth_max_m}), got {self.depth_min_m}")
        check_range("weight_threshold", self.weight_threshold, 0.0)
        check_range("carve_max_weight", self.carve_max_weight, 0.0, 1000.0)

    @property
    def trunc_m(self) -> float:
        """Truncation distance in metres (explicit or 4 voxels)."""
        return self.sdf_trunc_m if self.sdf_trunc_m is not None else 4.0 * self.voxel_size_m

    @property
    def block_size_m(self) -> float:
        return self.voxel_size_m * self.block_resolution

    @property
    def capacity_blocks(self) -> int:
        """Blocks Open3D preallocates: the budget plus headroom for the blocks one frame may add."""
        return self.block_budget + max(2048, self.block_budget // 4)

    @property
    def memory_mb(self) -> float:
        """Approximate voxel memory preallocated (tsdf, weight, rgb as float32)."""
        return self.capacity_blocks * self.block_resolution ** 3 * 5 * 4 / 2 ** 20


@dataclass(frozen=True)
class IntegrationStats:
    """What one `integrate` call did."""

    integrate_ms: float
    active_blocks: int
    touched_blocks: int
    evicted_blocks: int


@dataclass(frozen=True)
class CarveStats:
    """What one `carve` call did: voxels tested (inside or on a surface, in the frustum) and carved."""

    carve_ms: float
    voxels_tested: int
    voxels_carved: int


# Depth is min-pooled over blocks of this many pixels, then eroded by one pooled pixel, before carving: a
# voxel on an object's rim that projects just past the silhouette onto the background must not be carved.
_CARVE_POOL_PX = 4


def _num_points(cloud) -> int:
    """Points in an Open3D tensor cloud (an empty extraction has no "positions" attribute at all)."""
    return int(cloud.point.positions.shape[0]) if "positions" in cloud.point else 0


def _resolve_device(device: str):
    import open3d.core as o3c

    cuda = o3c.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("device='cuda' was requested but this Open3D build has no usable CUDA device "
                          "(open3d-cpu, or no GPU); use 'cpu' or 'auto'")
    return o3c.Device("CUDA:0" if device == "cuda" or (device == "auto" and cuda) else "CPU:0")


_ATTR_CHANNELS = {"tsdf": 1, "weight": 1, "color": 3}


def _grid_arrays_problem(data, resolution: int, names: set[str]) -> str | None:
    """What is wrong with the arrays of a VoxelBlockGrid .npz (keys (N, 3) int32; each attribute
    (N, r, r, r, channels) float32, tsdf and weight finite), or None. Open3D would load them unchecked."""
    key = data["key"]
    if key.ndim != 2 or key.shape[1] != 3 or key.dtype != np.int32:
        return f"'key' is {key.shape} {key.dtype}, expected (N, 3) int32"
    for name in sorted(names & set(_ATTR_CHANNELS)):
        index = int(data[f"attr_name_{name}"][0])
        values = data[f"value_{index:03d}"]
        expected = (key.shape[0], resolution, resolution, resolution, _ATTR_CHANNELS[name])
        if values.shape != expected or values.dtype != np.float32:
            return f"attribute '{name}' is {values.shape} {values.dtype}, expected {expected} float32"
        if name != "color" and not np.isfinite(values).all():
            return f"attribute '{name}' holds NaN or infinite values"
    return None


class TsdfMap:
    """Thread-safe coloured TSDF map with a block budget."""

    def __init__(self, config: TsdfMapConfig | None = None) -> None:
        import open3d.core as o3c

        self.config = config or TsdfMapConfig()
        self._device = _resolve_device(self.config.device)
        self._o3c = o3c
        self._lock = threading.Lock()
        self._intrinsic_cache: tuple[CameraIntrinsics, int, object] | None = None
        self._grid = self._new_grid()
        self._frames = 0
        self._last_stamp_ns = 0
        self._last_snapshot_points = 0
        self._carved_total = 0

    @property
    def device(self) -> str:
        return str(self._device)

    def _new_grid(self):
        import open3d as o3d

        o3c = self._o3c
        return o3d.t.geometry.VoxelBlockGrid(
            attr_names=_ATTR_NAMES, attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)), voxel_size=self.config.voxel_size_m,
            block_resolution=self.config.block_resolution, block_count=self.config.capacity_blocks,
            device=self._device)

    def _intrinsic_tensor(self, intrinsics: CameraIntrinsics, stride: int):
        cached = self._intrinsic_cache
        if cached is not None and cached[0] == intrinsics and cached[1] == stride:
            return cached[2]
        # Taking every `stride`-th pixel (no averaging) maps pixel (r, c) to (r*s, c*s): divide fx, cx.
        k = intrinsics.matrix.copy()
        k[:2] /= stride
        tensor = self._o3c.Tensor(k, dtype=self._o3c.float64, device=self._device)
        self._intrinsic_cache = (intrinsics, stride, tensor)
        return tensor

    def _prepare_images(self, frame: RgbdFrame):
        import open3d as o3d

        cfg, s = self.config, self.config.depth_stride
        depth_m = frame.depth_m[::s, ::s] if s > 1 else frame.depth_m
        color = frame.color_rgb[::s, ::s] if s > 1 else frame.color_rgb
        # Open3D fuses only (float depth, float colour) or (uint16 depth, uint8 colour); the latter
        # avoids converting the colour image, and millimetre depth loses nothing a 2 mm voxel needs.
        # OpenCV rounds and saturates in one pass (NaN and negatives -> 0, which Open3D skips; beyond
        # 65.5 m -> 65535, beyond every allowed depth_max), 3x faster than the numpy equivalent. Open3D
        # drops depth > depth_max itself; only the near limit needs zeroing here.
        depth_mm = cv2.multiply(np.ascontiguousarray(depth_m, dtype=np.float32), 1000.0, dtype=cv2.CV_16U)
        min_mm = int(round(cfg.depth_min_m * 1000.0))
        if min_mm > 0:
            depth_mm = cv2.threshold(depth_mm, min_mm - 1, 0, cv2.THRESH_TOZERO)[1]
        # from_numpy shares the arrays instead of copying them; they outlive this integrate call.
        to_tensor = self._o3c.Tensor.from_numpy
        depth_img = o3d.t.geometry.Image(to_tensor(depth_mm).to(self._device))
        color_img = o3d.t.geometry.Image(to_tensor(np.ascontiguousarray(color)).to(self._device))
        return depth_img, color_img

    def integrate(self, frame: RgbdFrame) -> IntegrationStats:
        """Fuse one (already validated) frame and evict far blocks if over budget."""
        cfg, o3c = self.config, self._o3c
        world_T_camera = check_pose(frame.world_T_camera)
        extrinsic = o3c.Tensor(invert_transform(world_T_camera), dtype=o3c.float64, device=self._device)
        depth_img, color_img = self._prepare_images(frame)
        trunc_multiplier = cfg.trunc_m / cfg.voxel_size_m
        with self._lock:
            t0 = time.perf_counter()
            intrinsic = self._intrinsic_tensor(frame.intrinsics, cfg.depth_stride)
            try:
                block_coords = self._grid.compute_unique_block_coordinates(
                    depth_img, intrinsic, extrinsic, 1000.0, cfg.depth_max_m, trunc_multiplier)
            except RuntimeError:
                # Open3D raises when no block is touched (every pixel out of range): nothing to fuse.
                return IntegrationStats((time.perf_counter() - t0) * 1e3, self._grid.hashmap().size(), 0, 0)
            self._grid.integrate(block_coords, depth_img, color_img, intrinsic, intrinsic, extrinsic,
                                 1000.0, cfg.depth_max_m, trunc_multiplier)
            evicted = self._evict_locked(world_T_camera[:3, 3])
            self._frames += 1
            self._last_stamp_ns = frame.stamp_ns
            active = self._grid.hashmap().size()
            ms = (time.perf_counter() - t0) * 1e3
        return IntegrationStats(ms, active, int(block_coords.shape[0]), evicted)

    def carve(self, frame: RgbdFrame) -> CarveStats:
        """Integrate the frame's free-space evidence into voxels its truncation band does not reach.

        Open3D's integration updates only the blocks within the truncation distance of the frame's depth,
        so the surface of an object that has moved away stays in the map however often the place behind
        it is seen (Curless & Levoy's fusion would carve it: every voxel a ray traverses gets +1). Here,
        every voxel of the map that is inside or on a surface (tsdf <= 0, weight > 0), projects into the
        frame, and lies in front of the observed depth by more than the truncation distance plus a
        tolerance (max(5 cm, 3 % of the depth), the visibility test's) gets that +1 observation, with its
        weight first capped at `carve_max_weight`: a surface seen through in about that many carving
        frames is gone. The depth is min-pooled and eroded first, so silhouettes and holes give no
        evidence, and what is out of the frustum or behind the observed surface is never touched.
        """
        cfg = self.config
        t0 = time.perf_counter()
        if cfg.carve_max_weight <= 0:
            return CarveStats(0.0, 0, 0)
        world_T_camera = check_pose(frame.world_T_camera)
        camera_T_world = invert_transform(world_T_camera)
        depth = np.asarray(frame.depth_m, dtype=np.float32)
        depth = np.where(np.isfinite(depth) & (depth >= cfg.depth_min_m) & (depth <= cfg.depth_max_m), depth, 0.0)
        p = _CARVE_POOL_PX
        h, w = (depth.shape[0] // p) * p, (depth.shape[1] // p) * p
        pooled = depth[:h, :w].reshape(h // p, p, w // p, p).min(axis=(1, 3))
        pooled = cv2.erode(pooled, np.ones((3, 3), np.uint8))  # zeros (no depth) spread: no evidence there
        intr = frame.intrinsics
        fx, fy = intr.fx / p, intr.fy / p
        cx, cy = (intr.cx + 0.5) / p - 0.5, (intr.cy + 0.5) / p - 0.5
        res = cfg.block_resolution
        vs = cfg.voxel_size_m
        with self._lock:
            hashmap = self._grid.hashmap()
            if hashmap.size() == 0:
                return CarveStats((time.perf_counter() - t0) * 1e3, 0, 0)
            buf = hashmap.active_buf_indices().to(self._o3c.int64).cpu().numpy()
            keys = hashmap.key_tensor()[hashmap.active_buf_indices().to(self._o3c.int64)].cpu().numpy()
            # Blocks whose centre is in front of the camera and projects near the image (one block radius).
            centres = (keys.astype(np.float64) + 0.5) * cfg.block_size_m
            cam = centres @ camera_T_world[:3, :3].T + camera_T_world[:3, 3]
            radius = 0.87 * cfg.block_size_m
            front = cam[:, 2] > -radius
            z = np.maximum(cam[:, 2], 1e-3)
            u, v = cam[:, 0] / z * fx + cx, cam[:, 1] / z * fy + cy
            margin_u, margin_v = radius / z * fx + 1, radius / z * fy + 1
            near = front & (u > -margin_u) & (u < pooled.shape[1] + margin_u) & (v > -margin_v) & \
                (v < pooled.shape[0] + margin_v)
            # Only a block some part of which can lie clearly in front of the observed depth can hold a voxel to
            # carve: its nearest point must be in front of the farthest depth seen around its centre (a 9 x 9
            # pooled-pixel window; a block that projects larger than that, within ~1 m of the camera, may be
            # skipped: less carving, never wrong carving).
            farthest = cv2.dilate(pooled, np.ones((9, 9), np.uint8))
            ui = np.clip(np.floor(u + 0.5), 0, pooled.shape[1] - 1).astype(np.int64)
            vi = np.clip(np.floor(v + 0.5), 0, pooled.shape[0] - 1).astype(np.int64)
            near &= cam[:, 2] - radius < farthest[vi, ui] - cfg.trunc_m - 0.05
            if not near.any():
                return CarveStats((time.perf_counter() - t0) * 1e3, 0, 0)
            on_cpu = self._device.get_type() == self._o3c.Device.DeviceType.CPU
            tsdf_all = self._grid.attribute("tsdf").numpy() if on_cpu else None
            weight_all = self._grid.attribute("weight").numpy() if on_cpu else None
            sel = buf[near]
            if on_cpu:
                tsdf = tsdf_all[sel].reshape(sel.shape[0], -1)
                weight = weight_all[sel].reshape(sel.shape[0], -1)
            else:
                idx = self._o3c.Tensor(sel, dtype=self._o3c.int64, device=self._device)
                tsdf = self._grid.attribute("tsdf")[idx].cpu().numpy().reshape(sel.shape[0], -1)
                weight = self._grid.attribute("weight")[idx].cpu().numpy().reshape(sel.shape[0], -1)
            solid = (tsdf <= 0.0) & (weight > 0.0)
            b_idx, v_idx = np.nonzero(solid)
            tested = int(b_idx.shape[0])
            if tested == 0:
                return CarveStats((time.perf_counter() - t0) * 1e3, 0, 0)
            # Voxel v of a block lies at (block key * res + (x, y, z)) * voxel size, v = (z * res + y) * res + x
            # (Open3D's layout; the sample point is the voxel's corner, as Open3D integrates it).
            local = np.stack([v_idx % res, (v_idx // res) % res, v_idx // (res * res)], axis=1)
            pts = (keys[near][b_idx] * res + local).astype(np.float64) * vs
            pc = pts @ camera_T_world[:3, :3].T + camera_T_world[:3, 3]
            zc = pc[:, 2]
            ok = zc > 1e-3
            col = np.full(zc.shape, -1, np.int64)
            row = np.full(zc.shape, -1, np.int64)
            col[ok] = np.floor(pc[ok, 0] / zc[ok] * fx + cx + 0.5).astype(np.int64)
            row[ok] = np.floor(pc[ok, 1] / zc[ok] * fy + cy + 0.5).astype(np.int64)
            ok &= (col >= 0) & (col < pooled.shape[1]) & (row >= 0) & (row < pooled.shape[0])
            observed = np.zeros(zc.shape, np.float32)
            observed[ok] = pooled[row[ok], col[ok]]
            tol = np.maximum(0.05, 0.03 * observed)
            free = ok & (observed > 0) & (zc < observed - cfg.trunc_m - tol)
            carved = int(np.count_nonzero(free))
            if carved:
                bi, vi = b_idx[free], v_idx[free]
                w0 = np.minimum(weight[bi, vi], np.float32(cfg.carve_max_weight))
                new_tsdf = (tsdf[bi, vi] * w0 + 1.0) / (w0 + 1.0)
                new_weight = w0 + 1.0
                flat = sel[bi] * res ** 3 + vi
                if on_cpu:
                    tsdf_all.reshape(-1)[flat] = new_tsdf
                    weight_all.reshape(-1)[flat] = new_weight
                else:
                    tsdf[bi, vi], weight[bi, vi] = new_tsdf, new_weight
                    shape = (sel.shape[0], res, res, res, 1)
                    self._grid.attribute("tsdf")[idx] = self._o3c.Tensor(tsdf.reshape(shape), device=self._device)
                    self._grid.attribute("weight")[idx] = self._o3c.Tensor(weight.reshape(shape), device=self._device)
                self._carved_total += carved
        return CarveStats((time.perf_counter() - t0) * 1e3, tested, carved)

    def _evict_locked(self, camera_position_world_m: np.ndarray) -> int:
        cfg, o3c = self.config, self._o3c
        hashmap = self._grid.hashmap()
        active = hashmap.size()
        if active <= cfg.block_budget and cfg.evict_distance_m is None:
            return 0
        buf_indices = hashmap.active_buf_indices().to(o3c.int64)
        keys = hashmap.key_tensor()[buf_indices].cpu().numpy()
        centres = (keys.astype(np.float64) + 0.5) * cfg.block_size_m
        dist_m = np.linalg.norm(centres - camera_position_world_m, axis=1)
        evict = np.zeros(active, dtype=bool)
        if cfg.evict_distance_m is not None:
            evict |= dist_m > cfg.evict_distance_m
        keep_n = active - int(evict.sum())
        if keep_n > cfg.block_budget:
            target = int(cfg.evict_to_fraction * cfg.block_budget)
            order = np.argsort(dist_m)  # nearest first
            order = order[~evict[order]]
            evict[order[target:]] = True
        if not evict.any():
            return 0
        # Erased buffers are reused by later activations without being cleared, so reset their
        # weights: integration averages with weight 0 and thus overwrites stale tsdf and colour.
        idx = buf_indices[o3c.Tensor(np.nonzero(evict)[0], dtype=o3c.int64, device=self._device)]
        self._grid.attribute("weight")[idx] = 0.0
        hashmap.erase(o3c.Tensor(keys[evict], dtype=o3c.int32, device=self._device))
        return int(evict.sum())

    def snapshot(self, estimated_points: int = -1) -> MapSnapshot:
        """Surface points, colours and normals of the current map (see the module doc on locking)."""
        with self._lock:
            stamp_ns = self._last_stamp_ns
            if self._grid.hashmap().size() == 0:
                cloud = None
            else:
                cloud = self._extract_locked(estimated_points)
        if cloud is None or _num_points(cloud) == 0:
            empty = np.zeros((0, 3), dtype=np.float32)
            return MapSnapshot(empty, np.zeros((0, 3), dtype=np.uint8), empty.copy(), stamp_ns)
        points = cloud.point.positions.cpu().numpy().astype(np.float32, copy=True)
        colors = np.clip(cloud.point.colors.cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
        normals = cloud.point.normals.cpu().numpy().astype(np.float32, copy=True) if "normals" in cloud.point else None
        return MapSnapshot(points, colors, normals, stamp_ns)

    def _extract_locked(self, estimated_points: int):
        # Without an estimate Open3D runs a counting pass first (a third of the extraction time, which
        # is time ingestion waits). A too-small estimate silently truncates the cloud, so a result that
        # fills the estimate exactly is redone with counting.
        if estimated_points <= 0 and self._last_snapshot_points > 0:
            estimated_points = int(self._last_snapshot_points * 1.5) + 1024
        cloud = self._grid.extract_point_cloud(self.config.weight_threshold, estimated_points)
        if estimated_points > 0 and _num_points(cloud) >= estimated_points:
            cloud = self._grid.extract_point_cloud(self.config.weight_threshold, -1)
        self._last_snapshot_points = _num_points(cloud)
        return cloud

    def block_centers_world_m(self) -> np.ndarray:
        """(M, 3) float64 centres of the active blocks."""
        with self._lock:
            hashmap = self._grid.hashmap()
            keys = hashmap.key_tensor()[hashmap.active_buf_indices().to(self._o3c.int64)].cpu().numpy()
        return (keys.astype(np.float64) + 0.5) * self.config.block_size_m

    def save(self, path) -> bool:
        """Write the voxel blocks to `path` (Open3D's VoxelBlockGrid.save, an .npz); False (no file) if empty."""
        with self._lock:
            if self._grid.hashmap().size() == 0:
                return False  # Open3D cannot save a grid without blocks
            self._grid.save(str(path))
            return True

    def load(self, path, *, frames_integrated: int = 0, last_stamp_ns: int = 0) -> None:
        """Replace the map by the blocks saved at `path` (None: an empty map); on any error the map is kept.

        Raises MapFileError when the file is missing, unreadable, or made with another voxel size,
        block resolution or set of attributes than this map's config, or holds more blocks than its budget.
        """
        import open3d as o3d

        cfg, o3c = self.config, self._o3c
        fresh = self._new_grid()
        if path is not None:
            try:  # the header fields and every array's shape and dtype first, with numpy: Open3D only warns
                with np.load(str(path), allow_pickle=False) as data:
                    voxel_size = float(data["voxel_size"][0])  # stored as float32
                    resolution = int(data["block_resolution"][0])
                    names = {k[len("attr_name_"):] for k in data.files if k.startswith("attr_name_")}
                    num_blocks = int(data["key"].shape[0])
                    problem = _grid_arrays_problem(data, resolution, names)
                if problem is None:
                    grid = o3d.t.geometry.VoxelBlockGrid.load(str(path))
            except Exception as exc:  # OSError, BadZipFile, KeyError, Open3D's RuntimeError
                raise MapFileError(f"TSDF file {path} could not be read: {type(exc).__name__}: {exc}") from exc
            if problem is not None:
                raise MapFileError(f"TSDF file {path} is corrupt: {problem}")
            if abs(voxel_size - cfg.voxel_size_m) > 1e-6 * cfg.voxel_size_m or resolution != cfg.block_resolution or \
                    names != set(_ATTR_NAMES):
                raise MapFileError(f"TSDF file {path} has voxel size {voxel_size} m, block resolution {resolution} "
                                   f"and attributes {sorted(names)}; this map uses {cfg.voxel_size_m} m, "
                                   f"{cfg.block_resolution} and {sorted(_ATTR_NAMES)}")
            if num_blocks > cfg.block_budget:
                raise MapFileError(f"TSDF file {path} holds {num_blocks} blocks, more than block_budget "
                                   f"{cfg.block_budget}")
            # Copy into a grid of our own capacity and device (Open3D's load sizes it to the file).
            hashmap = grid.hashmap()
            src = hashmap.active_buf_indices().to(o3c.int64)
            dst, _ = fresh.hashmap().activate(hashmap.key_tensor()[src].to(self._device))
            dst = dst.to(o3c.int64)
            for name in _ATTR_NAMES:
                fresh.attribute(name)[dst] = grid.attribute(name)[src].to(self._device)
        with self._lock:
            self._grid = fresh
            self._frames = int(frames_integrated)
            self._last_stamp_ns = int(last_stamp_ns)
            self._last_snapshot_points = 0

    def reset(self) -> None:
        """Drop everything fused so far (a fresh grid; memory is reallocated)."""
        with self._lock:
            self._grid = self._new_grid()
            self._frames = 0
            self._last_stamp_ns = 0
            self._last_snapshot_points = 0

    @property
    def num_blocks(self) -> int:
        with self._lock:
            return int(self._grid.hashmap().size())

    @property
    def last_stamp_ns(self) -> int:
        with self._lock:
            return self._last_stamp_ns

    @property
    def frames_integrated(self) -> int:
        with self._lock:
            return self._frames

    @property
    def carved_voxels(self) -> int:
        """Voxel updates made by `carve` so far (a change of the map that fuses no frame)."""
        with self._lock:
            return self._carved_total
