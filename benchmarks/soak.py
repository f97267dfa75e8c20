"""Soak of mapping and the object memory: 18,000 frames (10 min at 30 Hz) fused, the object memory fed, a query
every few seconds; is memory flat?

Run: `python -m benchmarks.soak --json PATH [--frames N] [--query-period-s S] [--no-memory]`.

In-process, not through the ROS graph (2 shared cores cannot carry 640x480 RGB-D over DDS at 30 Hz
next to fusion): the product's Mapper (frame gate, TSDF map, keyframe store, at the mapping node's
default parameters) fuses a simulated stream in the main thread; the object memory's ProposalWorker
runs the real offline backend's proposals on every new keyframe, polled as the memory node polls
(unless --no-memory); a third thread runs the product's QueryPipeline every `--query-period-s`
against the live map, answering with the simulated segmenter (mllm3d_ros/eval/sim_segmenter.py; its
ground-truth instance masks are the benchmark's, never the product's). Frames are rendered once and walked back and forth along the trajectory,
restamped at 30 Hz, so the run measures the map, not the renderer (as benchmarks/fusion.py does).
RSS is sampled every 100 frames; the verdict compares the median of the first and the last 10 % of
the samples, after the first pass over the trajectory (Open3D pages its preallocated blocks in on
first write).
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.fusion import STREAM_FRAMES, STREAM_PERIOD_NS, machine, rss_mb
from mllm3d_ros.core.mapping.frame_checks import FrameGateConfig
from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
from mllm3d_ros.core.mapping.mapper import Mapper
from mllm3d_ros.core.memory.object_memory import ObjectMemory
from mllm3d_ros.core.query.pipeline import QueryConfig, QueryPipeline
from mllm3d_ros.core.memory.proposal_worker import ProposalWorker
from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig
from mllm3d_ros.core.types import RgbdFrame
from mllm3d_ros.eval.sim_segmenter import SimSegmenter, SimView
from mllm3d_ros.sources.simulator import SimConfig, Simulator, generate_room, trajectory

SEED = 3
RENDERED = 90  # distinct frames along the trajectory, cycled back and forth
STRUCTURE_ID = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--frames", type=int, default=STREAM_FRAMES)
    parser.add_argument("--query-period-s", type=float, default=3.0)
    parser.add_argument("--no-memory", action="store_true", help="fuse and query only (no object memory)")
    args = parser.parse_args(argv)

    room = generate_room(SEED)
    # 320x240 (the default camera at half size): 640x480 fuses at ~15 fps here, 20 min for 18,000 frames.
    sim = Simulator(room, SimConfig(width=320, height=240, fx=262.5, fy=262.5, cx=159.5, cy=119.5))
    rendered = [sim.render(pose, i) for i, pose in enumerate(trajectory(room, RENDERED))]
    order = list(range(RENDERED)) + list(range(RENDERED - 2, 0, -1))
    targets = [info.instance_id for info in room.instances if info.instance_id != STRUCTURE_ID]

    # The mapping node's defaults (config/perception.yaml).
    mapper = Mapper(TsdfMapConfig(voxel_size_m=0.02, block_budget=20_000, depth_min_m=0.2, depth_max_m=4.0),
                    KeyframeConfig(min_translation_m=0.1, min_rotation_deg=8.0, image_scale=0.5, max_keyframes=100),
                    FrameGateConfig())
    backend = memory = worker = None
    if not args.no_memory:
        from mllm3d_ros.backends import build_backend
        backend = build_backend("offline")
        from mllm3d_ros.core.memory.map_objects import MapObjectProposer, chain_proposers
        memory = ObjectMemory()
        # As the memory node wires it: the detector's proposals and the map's class-agnostic objects.
        worker = ProposalWorker(memory, chain_proposers(backend.propose, MapObjectProposer(mapper.snapshot).propose),
                                mapper.keyframe_store.get)
        worker.start()
    query_state = {"target": 0, "segmenter": SimSegmenter(seed=0)}

    def segment_fn(views, _text):
        """The simulated model: ground-truth masks of the keyframe's rendered frame, degraded."""
        out = []
        for v in views:
            kf = mapper.keyframe_store.get(v.keyframe_id)
            if kf is None:  # evicted since it was selected
                ids = np.full((v.intrinsics.height, v.intrinsics.width), -1, np.int32)
            else:
                full = rendered[order[(kf.stamp_ns // STREAM_PERIOD_NS - 1) % len(order)]].instance_ids
                ids = cv2.resize(full, (v.intrinsics.width, v.intrinsics.height), interpolation=cv2.INTER_NEAREST)
            out.append(SimView(v.keyframe_id, ids))
        return query_state["segmenter"].segment(out, query_state["target"])

    pipeline = QueryPipeline(mapper, segment_fn, QueryConfig())
    statuses: collections.Counter[str] = collections.Counter()
    latencies_s: list[float] = []
    stop = threading.Event()

    def query_loop() -> None:
        rng = np.random.default_rng(SEED)
        k = 0
        while not stop.wait(args.query_period_s):
            # Ask for an object two current keyframes see (ground truth of the benchmark's own choice),
            # so that queries mostly succeed and exercise the whole voting path.
            seen = collections.Counter()
            for kf in mapper.keyframes():
                ids = rendered[order[(kf.stamp_ns // STREAM_PERIOD_NS - 1) % len(order)]].instance_ids
                values, counts = np.unique(ids, return_counts=True)
                seen.update(int(v) for v, c in zip(values, counts) if c >= 300 and int(v) in targets)
            candidates = sorted(i for i, n in seen.items() if n >= 2) or targets
            query_state["target"] = int(rng.choice(candidates))
            query_state["segmenter"] = SimSegmenter(seed=k)
            result = pipeline.run(f"instance {query_state['target']}")
            statuses[result.status.name] += 1
            latencies_s.append(result.elapsed_s)
            k += 1

    samples: list[tuple[int, float]] = []
    memory_samples: list[tuple[int, int, int]] = []  # frame, instances, bytes
    first_pass = len(order)
    fused = submitted = 0
    thread = threading.Thread(target=query_loop, name="soak_queries", daemon=True)
    t0 = time.perf_counter()
    thread.start()
    for i in range(args.frames):
        j = order[i % len(order)]
        f = rendered[j].frame
        stamp = (i + 1) * STREAM_PERIOD_NS
        fused += mapper.process(RgbdFrame(stamp, f.color_rgb, f.depth_m, f.intrinsics, f.world_T_camera))
        if worker is not None and i % 3 == 0:  # the memory node polls every 0.1 s
            for kf in mapper.keyframes():
                if kf.keyframe_id > submitted:
                    worker.submit(kf.keyframe_id)
                    submitted = kf.keyframe_id
        if i % 100 == 0 and i >= first_pass:
            samples.append((i, rss_mb()))
            if memory is not None:
                memory_samples.append((i, memory.stats.instances, memory.stats.nbytes))
    wall_s = time.perf_counter() - t0
    stop.set()
    thread.join(120)
    if worker is not None:
        worker.wait_idle(600.0)
    samples.append((args.frames, rss_mb()))

    rss = np.array([r for _, r in samples])
    tenth = max(1, len(rss) // 10)
    first, last = float(np.median(rss[:tenth])), float(np.median(rss[-tenth:]))
    lat = np.array(latencies_s) if latencies_s else np.zeros(1)
    stats = mapper.worker.stats
    report = {
        "machine": machine(),
        "mode": "in-process: Mapper + QueryPipeline + simulated segmenter (not the ROS graph)"
                + ("" if worker is None else " + ObjectMemory fed by the offline backend's proposals"),
        "frames": args.frames, "frames_fused": int(fused), "rejected": {r.name: n for r, n in stats.rejected.items() if n},
        "wall_s": round(wall_s, 1), "fps": round(args.frames / wall_s, 2),
        "image_size": [rendered[0].frame.intrinsics.width, rendered[0].frame.intrinsics.height],
        "query_period_s": args.query_period_s, "queries": int(sum(statuses.values())), "query_status": dict(statuses),
        "query_latency_s_median": round(float(np.median(lat)), 3),
        "query_latency_s_p95": round(float(np.percentile(lat, 95)), 3),
        "keyframes_end": len(mapper.keyframes()), "blocks_end": mapper.map.num_blocks,
        "rss_samples": len(samples), "rss_mb_first_10pct_median": round(first, 1),
        "rss_mb_last_10pct_median": round(last, 1), "rss_growth_pct": round(100.0 * (last - first) / first, 2),
        "rss_mb_min": round(float(rss.min()), 1), "rss_mb_max": round(float(rss.max()), 1),
        # The median of each tenth of the samples: growth that flattens shows here, a leak climbs.
        "rss_mb_by_tenth": [round(float(np.median(part)), 1) for part in np.array_split(rss, 10) if part.size],
    }
    if worker is not None:
        ps = worker.stats
        report["memory"] = {
            "proposals_submitted": ps.submitted, "integrated": ps.integrated, "dropped_queue_full": ps.dropped_queue_full,
            "failures": ps.failures, "lag_ms_p50": round(ps.lag_ms_p50, 1),
            "instances_end": memory.stats.instances, "confirmed_end": memory.stats.confirmed,
            "bytes_end": memory.stats.nbytes, "bytes_max": max((b for _, _, b in memory_samples), default=0),
            "instances_max": max((n for _, n, _ in memory_samples), default=0)}
        worker.stop()
        backend.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
