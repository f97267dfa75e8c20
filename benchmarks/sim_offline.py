"""The real offline backend on seeded simulated rooms, through the product's query path.

    python -m benchmarks.sim_offline --json PATH [--rooms 10] [--frames 48]

Per room (`generate_room(seed)`, seeds 0..rooms-1): `frames` poses along `trajectory`, rendered by the
simulator and fed to the product's `Mapper` (TSDF + keyframe store, as `RecordingSession` builds it:
default map and keyframe configs), its object memory built from the offline backend's proposals on
every keyframe (`offline_segment.build_memory`), then the product's `QueryPipeline` with
`build_backend("offline")` (the detector loaded once for all rooms) and the memory answers each target
instruction, as `mllm3d segment` does.
To fit a few minutes on 2 cores, frames are rendered at 320x240 (fx 262.5) and keyframes kept at full
scale: the same 320x240 keyframe images a 640x480 camera's keyframes are stored at (image_scale 0.5).

Targets: per room the instructions below whose classes the room holds with at least MIN_GT_POINTS map
points (the detector knows them all). Ground truth, evaluation only: each map point takes the nearest
true surface's instance within one voxel (`Simulator.closest_instances`, as the demo scores). Scores:
top-1 IoU against the best-matching instance of an accepted class (Acc@0.25, Acc@0.5, mIoU, per class),
and the ranked object list against every such instance (AP at IoU 0.25 / 0.5, pooled over rooms per
instruction as ScanNet pools a class over scenes, and per query; precision and recall of the list).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

from mllm3d_ros.eval.metrics import average_precision, instance_scores, match_instances, point_iou, summarize
from mllm3d_ros.sources.simulator import SimConfig, Simulator, generate_room, trajectory

SIM = SimConfig(width=320, height=240, fx=262.5, fy=262.5, cx=159.5, cy=119.5, nthreads=2)
# A GT instance counts (as a target and for recall) when the map holds this many of its points.
MIN_GT_POINTS = 10


@dataclass(frozen=True)
class SimQuery:
    instruction: str
    labels: frozenset[str]  # ground-truth classes that count as correct (evaluation only)


QUERIES = (
    SimQuery("the chair", frozenset({"Chair"})),
    SimQuery("the table", frozenset({"Table"})),
    SimQuery("a cup I can drink from", frozenset({"Mug", "Coffee cup"})),
    SimQuery("the computer monitor", frozenset({"Computer monitor"})),
    SimQuery("the laptop", frozenset({"Laptop"})),
    SimQuery("the cardboard box", frozenset({"Box"})),
)


def _session(voxel_size_m: float | None):
    """A Mapper as RecordingSession builds it (its map and keyframe defaults; keyframes at full scale)."""
    from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
    from mllm3d_ros.core.mapping.mapper import Mapper
    from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig

    map_config = TsdfMapConfig() if voxel_size_m is None else TsdfMapConfig(voxel_size_m=voxel_size_m)
    return Mapper(map_config, KeyframeConfig(image_scale=1.0))


def run(rooms: int, frames: int, voxel_size_m: float | None) -> dict:
    from mllm3d_ros.backends.base import build_backend
    from mllm3d_ros.core.query.memory_query import MemoryResolver
    from mllm3d_ros.core.query.pipeline import QueryConfig, QueryPipeline
    from mllm3d_ros.offline_segment import build_memory

    t_start = time.perf_counter()
    model = build_backend("offline")
    rows, matches = [], {q.instruction: {0.25: [], 0.5: []} for q in QUERIES}
    fuse_s, memory_s = [], []
    try:
        for seed in range(rooms):
            room = generate_room(seed)
            sim = Simulator(room, SIM)
            mapper = _session(voxel_size_m)
            t0 = time.perf_counter()
            for k, pose in enumerate(trajectory(room, frames)):
                mapper.process(sim.render(pose, stamp_ns=k * 33_333_333).frame)
            fuse_s.append(time.perf_counter() - t0)
            snapshot = mapper.snapshot()
            voxel = mapper.map.config.voxel_size_m
            gt_ids = Simulator(room, SimConfig(noise=False)).closest_instances(
                snapshot.points_world_m, max_distance_m=voxel).instance_ids
            t0 = time.perf_counter()
            memory = build_memory(mapper, model)  # as RecordingSession (the `mllm3d segment` path) does
            memory_s.append(time.perf_counter() - t0)
            pipeline = QueryPipeline(mapper, model.segment, QueryConfig(marked_prompts=model.uses_marks),
                                     resolver=MemoryResolver(memory, model.encode_text), recognise_fn=model.recognise)
            print(f"room {seed}: {snapshot.num_points} map points, {len(mapper.keyframes())} keyframes, "
                  f"fused in {fuse_s[-1]:.1f} s", flush=True)
            for q in QUERIES:
                gt_instances = [i.instance_id for i in room.instances if i.label in q.labels
                                and np.count_nonzero(gt_ids == i.instance_id) >= MIN_GT_POINTS]
                if not gt_instances:
                    continue
                start = time.perf_counter()
                result = pipeline.run(q.instruction)
                elapsed = time.perf_counter() - start
                if result.snapshot is not None and result.snapshot.num_points != snapshot.num_points:
                    raise RuntimeError("the map changed under a query; the benchmark fuses before it asks")
                gts = [gt_ids == i for i in gt_instances]
                preds = [o.point_indices for o in result.objects]
                confs = [o.confidence for o in result.objects]
                ious = [point_iou(preds[0], g) for g in gts] if preds else [0.0]
                best = int(np.argmax(ious))
                s25, s50 = (instance_scores(preds, confs, gts, t) for t in (0.25, 0.5))
                for t in (0.25, 0.5):
                    matches[q.instruction][t].append(match_instances(preds, confs, gts, t))
                rows.append({"room": seed, "instruction": q.instruction, "status": result.status.name,
                             "target_phrase": result.target_phrase, "n_objects": len(result.objects),
                             "gt_instances": len(gt_instances), "iou": round(float(ious[best]), 4),
                             "matched_label": room.instance(gt_instances[best]).label if ious[best] > 0 else "",
                             "ap25": round(s25.ap, 4), "ap50": round(s50.ap, 4),
                             "precision25": round(s25.precision, 4), "recall25": round(s25.recall, 4),
                             "precision50": round(s50.precision, 4), "recall50": round(s50.recall, 4),
                             "elapsed_s": round(elapsed, 3)})
                print(f"  {q.instruction!r}: {result.status.name}, {len(result.objects)} objects "
                      f"({len(gt_instances)} GT), IoU {ious[best]:.2f}, AP25 {s25.ap:.2f}, {elapsed:.2f} s", flush=True)
    finally:
        model.close()

    def summary(sel: list[dict]) -> dict:
        s = summarize([r["iou"] for r in sel])
        out = {"queries": s.num_queries, "acc25": round(s.acc25, 4), "acc50": round(s.acc50, 4),
               "miou": round(s.miou, 4)}
        for key in ("ap25", "ap50", "precision25", "recall25", "precision50", "recall50"):
            out[key] = round(float(np.mean([r[key] for r in sel])), 4) if sel else 0.0
        return out

    pooled = {name: {f"ap{int(t * 100)}": round(average_precision(m[t]), 4) for t in (0.25, 0.5)}
              for name, m in matches.items() if m[0.25]}
    return {
        "machine": platform.node(), "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "rooms": rooms, "frames_per_room": frames,
        "render": f"{SIM.width}x{SIM.height}, keyframes at full scale", "voxel_size_m": voxel,
        "gt": f"nearest true surface within one voxel; instances with >= {MIN_GT_POINTS} map points",
        "all": summary(rows),
        "per_instruction": {q.instruction: {**summary([r for r in rows if r["instruction"] == q.instruction]),
                                            "pooled": pooled.get(q.instruction)}
                            for q in QUERIES if any(r["instruction"] == q.instruction for r in rows)},
        "fuse_s_median_per_room": round(float(np.median(fuse_s)), 2),
        "memory_build_s_median_per_room": round(float(np.median(memory_s)), 2),
        "query_s_median": round(float(np.median([r["elapsed_s"] for r in rows])), 3) if rows else None,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "queries": rows,
    }


def table(report: dict) -> str:
    lines = ["| instruction | queries | Acc@0.25 | Acc@0.5 | mIoU | AP25 | AP50 | pooled AP25 | precision@0.25 "
             "| recall@0.25 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in [*report["per_instruction"].items(), ("all", report["all"])]:
        pooled = f"{s['pooled']['ap25']:.3f}" if s.get("pooled") else "-"
        lines.append(f"| {name} | {s['queries']} | {s['acc25']:.3f} | {s['acc50']:.3f} | {s['miou']:.3f} "
                     f"| {s['ap25']:.3f} | {s['ap50']:.3f} | {pooled} "
                     f"| {s['precision25']:.3f} | {s['recall25']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--rooms", type=int, default=10, help="seeded rooms 0..N-1")
    parser.add_argument("--frames", type=int, default=48, help="frames along each room's trajectory")
    parser.add_argument("--voxel-size", type=float, default=None, help="TSDF voxel size (default: the map's own)")
    args = parser.parse_args(argv)
    from mllm3d_ros.backends.base import BackendError

    try:
        report = run(args.rooms, args.frames, args.voxel_size)
    except BackendError as exc:
        print(f"benchmarks.sim_offline: cannot run the offline backend: {exc}", file=sys.stderr)
        return 1
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    print(table(report))
    print(f"{report['all']['queries']} queries in {report['rooms']} rooms, median query {report['query_s_median']} s, "
          f"fusion {report['fuse_s_median_per_room']} s per room, {report['wall_s']} s in all; "
          f"{report['machine']}, {report['cpu_count']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
