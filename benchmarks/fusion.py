"""Fusion benchmark: TsdfMap against plain Open3D VoxelBlockGrid, real and simulated frames.

Run: `python -m benchmarks.fusion --json PATH [--quick]`.

- Real: replays ../shared/data/7scenes-redkitchen (640x480 Kinect) at 5 cm and 2 cm voxels, through
  `TsdfMap.integrate` (ours: float depth in metres -> map, with pose check and eviction) and through
  bare `VoxelBlockGrid.compute_unique_block_coordinates + integrate` on the raw uint16 images (peer).
- Simulated stream: a small set of 640x480 frames is rendered once (the project simulator if it is
  importable, else an analytic box room) and cycled back and forth along their trajectory, so the
  18,000 frames (10 min at 30 Hz) measure fusion, not rendering. RSS is read before and after.
fps figures are 1000 / median per-frame wall time; "update" times are per-frame wall times around
the integrate call, measured from outside it. Overheads come from runs that interleave ours and the
peer frame by frame (`time_pair`), so both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import open3d.core as o3c

from mllm3d_ros.core.geometry import invert_transform
from mllm3d_ros.core.mapping.ingest import IngestWorker
from mllm3d_ros.core.mapping.keyframes import KeyframeStore
from mllm3d_ros.core.mapping.tsdf_map import TsdfMap, TsdfMapConfig
from mllm3d_ros.core.types import CameraIntrinsics, RgbdFrame

REPO_ROOT = Path(__file__).resolve().parents[1]
REDKITCHEN = REPO_ROOT.parent / "shared" / "data" / "7scenes-redkitchen"
STREAM_FRAMES = 18_000  # 10 minutes at 30 Hz
STREAM_PERIOD_NS = 33_333_333


@dataclass(frozen=True)
class RawFrame:
    """A frame in both forms: the product's RgbdFrame and the raw uint16 depth the peer fuses."""

    frame: RgbdFrame
    depth_mm: np.ndarray


@dataclass(frozen=True)
class Timing:
    """Per-frame wall times of one run."""

    fps: float
    median_ms: float
    p95_ms: float
    frames: int

    @staticmethod
    def of(times_ms: list[float]) -> "Timing":
        arr = np.asarray(times_ms)
        return Timing(round(1000.0 / float(np.median(arr)), 2), round(float(np.median(arr)), 3),
                      round(float(np.percentile(arr, 95)), 3), len(arr))


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu_model": cpu, "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
            "open3d": o3d.__version__, "numpy": np.__version__}


def load_redkitchen(folder: Path, max_frames: int | None) -> list[RawFrame]:
    intrinsics = CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    stems = sorted(p.name[: -len(".pose.txt")] for p in folder.glob("frame-*.pose.txt"))[:max_frames]
    frames = []
    for i, stem in enumerate(stems):
        color = cv2.cvtColor(cv2.imread(str(folder / f"{stem}.color.jpg")), cv2.COLOR_BGR2RGB)
        depth_mm = cv2.imread(str(folder / f"{stem}.depth.png"), cv2.IMREAD_UNCHANGED)
        depth_mm = np.where(depth_mm == 65535, 0, depth_mm).astype(np.uint16)
        pose = np.loadtxt(folder / f"{stem}.pose.txt")
        frames.append(RawFrame(RgbdFrame((i + 1) * 4 * STREAM_PERIOD_NS, color, depth_mm.astype(np.float32) / 1000.0,
                                         intrinsics, pose), depth_mm))
    return frames


def _analytic_room(num: int) -> tuple[str, list[RgbdFrame]]:
    """A 5 x 5 x 2.8 m box room with a checker texture, rendered in closed form (fallback)."""
    intr = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
    lo, hi = np.array([-2.5, -2.5, 0.0]), np.array([2.5, 2.5, 2.8])
    cols, rows = np.meshgrid(np.arange(640), np.arange(480))
    rays = np.stack([(cols - intr.cx) / intr.fx, (rows - intr.cy) / intr.fy, np.ones(cols.shape)], -1).reshape(-1, 3)
    frames = []
    for i in range(num):
        yaw = 2 * np.pi * i / num
        eye = np.array([np.cos(yaw), np.sin(yaw), 1.4])
        z = -np.array([np.cos(yaw + 0.3), np.sin(yaw + 0.3), 0.3])
        z /= np.linalg.norm(z)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, np.cross(z, x), z, eye
        d = rays @ pose[:3, :3].T
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(d > 0, (hi - eye) / d, (lo - eye) / d)
        t = np.where(np.isfinite(t) & (t > 0), t, np.inf).min(1)
        checker = (np.floor((eye + d * t[:, None]) / 0.25).astype(int).sum(1) % 2 * 140 + 60).astype(np.uint8)
        color = np.repeat(checker[:, None], 3, 1).reshape(480, 640, 3)
        frames.append(RgbdFrame(i, color, t.reshape(480, 640).astype(np.float32), intr, pose))
    return "analytic_box_room", frames


def render_stream_frames(num: int) -> tuple[str, list[RgbdFrame]]:
    """Render `num` frames once: the project simulator if importable, else the analytic room."""
    try:
        from mllm3d_ros.sources.simulator import Simulator, generate_room, trajectory

        room = generate_room(3)
        sim = Simulator(room)
        return "simulator(seed=3)", [sim.render(pose, i).frame for i, pose in enumerate(trajectory(room, num))]
    except Exception as exc:  # the simulator is developed in parallel; the benchmark must still run
        print(f"simulator unavailable ({type(exc).__name__}: {exc}); using the analytic room", file=sys.stderr)
        return _analytic_room(num)


def to_raw(frame: RgbdFrame) -> RawFrame:
    return RawFrame(frame, np.round(frame.depth_m * 1000.0).astype(np.uint16))


class PeerVbg:
    """Plain Open3D integration, the way its tutorial does it: the reference cost of fusion."""

    def __init__(self, cfg: TsdfMapConfig) -> None:
        self.cfg = cfg
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)), voxel_size=cfg.voxel_size_m, block_resolution=cfg.block_resolution,
            block_count=cfg.capacity_blocks, device=o3c.Device("CPU:0"))

    def integrate(self, raw: RawFrame) -> None:
        f, cfg = raw.frame, self.cfg
        k = o3c.Tensor(f.intrinsics.matrix, o3c.float64)
        ext = o3c.Tensor(invert_transform(f.world_T_camera), o3c.float64)
        depth = o3d.t.geometry.Image(o3c.Tensor(raw.depth_mm))
        color = o3d.t.geometry.Image(o3c.Tensor(f.color_rgb))
        mult = cfg.trunc_m / cfg.voxel_size_m
        coords = self.grid.compute_unique_block_coordinates(depth, k, ext, 1000.0, cfg.depth_max_m, mult)
        self.grid.integrate(coords, depth, color, k, k, ext, 1000.0, cfg.depth_max_m, mult)


def time_pair(frames: list[RawFrame], cfg: TsdfMapConfig) -> tuple[Timing, Timing, TsdfMap]:
    """Ours and the peer on the same frames, interleaved per frame with alternating order.

    Interleaving makes the overhead a ratio measured under the same load (cache state, other jobs on
    the machine); running one after the other gave 47 % on one run and 8 % on the next.
    """
    ours, peer = TsdfMap(cfg), PeerVbg(cfg)
    times_ours, times_peer = [], []
    for i, raw in enumerate(frames):
        steps = [(ours.integrate, raw.frame, times_ours), (peer.integrate, raw, times_peer)]
        for integrate, arg, acc in (steps if i % 2 == 0 else steps[::-1]):
            t0 = time.perf_counter()
            integrate(arg)
            acc.append((time.perf_counter() - t0) * 1e3)
    return Timing.of(times_ours), Timing.of(times_peer), ours


def overhead_pct(ours_median_ms: float, peer_median_ms: float) -> float:
    return round(100.0 * (ours_median_ms / peer_median_ms - 1.0), 1)


def time_pipeline(frames: list[RawFrame], cfg: TsdfMapConfig) -> Timing:
    """Gate + fusion + keyframe selection, as the ingest worker runs them per frame."""
    worker = IngestWorker(TsdfMap(cfg), KeyframeStore())
    times = []
    for raw in frames:
        t0 = time.perf_counter()
        worker.process(raw.frame)
        times.append((time.perf_counter() - t0) * 1e3)
    return Timing.of(times)


def snapshot_ms(tsdf: TsdfMap, repeats: int = 5) -> tuple[float, int]:
    times, points = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        points = tsdf.snapshot().num_points
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 2), points


def ingest_stall_ms(tsdf: TsdfMap, frames: list[RawFrame], snapshots: int = 5) -> dict[str, float]:
    """How long fusion waits for a concurrent snapshot: integrate times while a thread snapshots."""
    stop = threading.Event()
    taken = []

    def query_loop() -> None:
        while not stop.is_set() and len(taken) < snapshots:
            tsdf.snapshot()
            taken.append(time.perf_counter())
            time.sleep(0.2)

    for raw in frames[:30]:  # warm up, no snapshot running
        tsdf.integrate(raw.frame)
    thread = threading.Thread(target=query_loop)
    times = []
    thread.start()
    for raw in frames:
        if len(taken) >= snapshots:
            break
        t0 = time.perf_counter()
        tsdf.integrate(raw.frame)
        times.append((time.perf_counter() - t0) * 1e3)
    stop.set()
    thread.join()
    return {"integrate_ms_median": round(float(np.median(times)), 2),
            "integrate_ms_max_during_snapshots": round(float(np.max(times)), 2), "snapshots": len(taken)}


def cycled(frames: list[RawFrame], n: int) -> list[RawFrame]:
    """n frames walking the rendered trajectory back and forth (no pose teleports), restamped at 30 Hz."""
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    out = []
    for i in range(n):
        raw = frames[order[i % len(order)]]
        f = raw.frame
        out.append(RawFrame(RgbdFrame((i + 1) * STREAM_PERIOD_NS, f.color_rgb, f.depth_m, f.intrinsics,
                                      f.world_T_camera), raw.depth_mm))
    return out


def stream(frames: list[RawFrame], n: int, cfg: TsdfMapConfig, ours: bool) -> dict[str, float]:
    """Fuse n cycled frames as fast as possible; times per frame and RSS.

    RSS growth is measured from the end of the first pass over the trajectory to the end: Open3D
    preallocates the block buffers but the OS pages them in only when first written.
    """
    rss_start = rss_mb()
    target = TsdfMap(cfg) if ours else PeerVbg(cfg)
    rss_alloc = rss_mb()
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    times = []
    rss_warm = rss_alloc
    t_start = time.perf_counter()
    for i in range(n):
        if i == len(order):  # one full pass: every block the trajectory touches has been paged in
            rss_warm = rss_mb()
        raw = frames[order[i % len(order)]]
        f = raw.frame
        if ours:
            item = RgbdFrame((i + 1) * STREAM_PERIOD_NS, f.color_rgb, f.depth_m, f.intrinsics, f.world_T_camera)
            t0 = time.perf_counter()
            target.integrate(item)
        else:
            t0 = time.perf_counter()
            target.integrate(raw)
        times.append((time.perf_counter() - t0) * 1e3)
    wall_s = time.perf_counter() - t_start
    rss_end = rss_mb()
    timing = Timing.of(times)
    return {"frames": n, "fps": timing.fps, "update_ms_median": timing.median_ms, "update_ms_p95": timing.p95_ms,
            "fps_overall": round(n / wall_s, 2), "rss_mb_start": round(rss_start, 1),
            "rss_mb_after_alloc": round(rss_alloc, 1), "rss_mb_after_first_pass": round(rss_warm, 1),
            "rss_mb_end": round(rss_end, 1),
            "rss_growth_pct": round(100.0 * (rss_end - rss_warm) / rss_warm, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="a few hundred frames instead of 18,000")
    parser.add_argument("--stream-frames", type=int, default=None, help="override the stream length")
    args = parser.parse_args(argv)
    n_stream = args.stream_frames or (300 if args.quick else STREAM_FRAMES)
    cfg5 = TsdfMapConfig(voxel_size_m=0.05, block_budget=10_000)
    cfg2 = TsdfMapConfig(voxel_size_m=0.02, block_budget=40_000)
    out: dict[str, object] = {"machine": machine(), "quick": args.quick, "open3d_threads": "default (OpenMP)"}

    if REDKITCHEN.is_dir():
        real = load_redkitchen(REDKITCHEN, 60 if args.quick else None)
        for name, cfg in (("5cm", cfg5), ("2cm", cfg2)):
            ours, peer, tsdf = time_pair(real, cfg)
            snap_ms, points = snapshot_ms(tsdf)
            out[f"real_{name}"] = {"frames": ours.frames, "fps": ours.fps, "update_ms_p95": ours.p95_ms,
                                   "peer_fps": peer.fps, "peer_update_ms_p95": peer.p95_ms,
                                   "overhead_pct": overhead_pct(ours.median_ms, peer.median_ms),
                                   "snapshot_ms": snap_ms, "snapshot_points": points, "blocks": tsdf.num_blocks}
        out["real_pipeline_5cm"] = time_pipeline(real, cfg5).__dict__
        print(f"real 5cm {out['real_5cm']}\nreal 2cm {out['real_2cm']}", flush=True)
    else:
        print(f"{REDKITCHEN} not found: skipping the real-data replay", file=sys.stderr)

    source, rendered = render_stream_frames(24 if args.quick else 60)
    sim = [to_raw(f) for f in rendered]
    out["stream_source"] = source
    ours2, peer2, tsdf2 = time_pair(cycled(sim, 300 if args.quick else 900), cfg2)
    snap2_ms, snap2_points = snapshot_ms(tsdf2)
    stall2 = ingest_stall_ms(tsdf2, cycled(sim, 900))
    del tsdf2
    pair5_ours, pair5_peer, _ = time_pair(cycled(sim, 600 if args.quick else 3000), cfg5)
    ours5 = stream(sim, n_stream, cfg5, ours=True)
    print(f"stream ours 5cm {ours5}", flush=True)
    peer5 = stream(sim, n_stream, cfg5, ours=False)
    print(f"stream peer 5cm {peer5}", flush=True)
    out.update({
        "stream_frames": n_stream,
        "fps_5cm": ours5["fps"], "update_ms_p95_5cm": ours5["update_ms_p95"],
        "fps_2cm": ours2.fps, "update_ms_p95_2cm": ours2.p95_ms,
        "snapshot_ms_2cm": snap2_ms, "snapshot_points_2cm": snap2_points,
        "rss_mb_start": ours5["rss_mb_start"], "rss_mb_end": ours5["rss_mb_end"],
        "rss_growth_pct": ours5["rss_growth_pct"],
        "peer_fps_5cm": peer5["fps"], "peer_update_ms_p95_5cm": peer5["update_ms_p95"],
        "peer_fps_2cm": peer2.fps, "peer_update_ms_p95_2cm": peer2.p95_ms,
        "peer_rss_mb_start": peer5["rss_mb_start"], "peer_rss_mb_end": peer5["rss_mb_end"],
        "overhead_pct_5cm": overhead_pct(pair5_ours.median_ms, pair5_peer.median_ms),
        "overhead_pct_2cm": overhead_pct(ours2.median_ms, peer2.median_ms),
        "overhead_frames_5cm": pair5_ours.frames, "ingest_during_snapshots_2cm": stall2,
        "overhead_pct_5cm_sequential_streams": overhead_pct(ours5["update_ms_median"], peer5["update_ms_median"]),
        "stream_ours_5cm": ours5, "stream_peer_5cm": peer5,
    })
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
