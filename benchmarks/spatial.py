"""Relational queries on simulated layouts whose answers depend only on geometry (the relational-layout evaluation).

    python -m benchmarks.spatial --json PATH [--rooms 10] [--frames 40] [--describe-rooms 3] [--quick]
                                 [--no-offline]

Per room (`generate_relational_room(seed)`, seeds 0..rooms-1: a table with a row of mugs, a bottle and a
laptop, a mug on one of two floor boxes, a chair in front of the table and one behind it, mirrored by
seed; 16 instructions: on, under, next to, left/right of, farthest, between, leftmost/rightmost, n-th
from the left, biggest/smallest, in front of/behind, "not the one ..."):
  (a) resolver on ground-truth boxes: the same `parse_instruction` -> `MemoryResolver.plan` on memory
      objects made from the ground-truth instances (box, class embedding of the simulated proposer),
      seen from the layout's stated viewer; scored: is the top candidate the answer instance;
  (b) product path: `frames` poses along `relational_trajectory` (a dolly shot with the stated viewer's
      orientation, so the latest keyframe, the viewer the resolver takes, looks the same way), rendered
      at 320x240 (76 x 61 degrees) and fused by the product's
      `Mapper`; the object memory built by `offline_segment.build_memory` from the simulated proposer
      (`SimSegmenter.propose`, hallucination p = 0.3, misses, wrong labels, boundary noise); then
      `QueryPipeline` with `MemoryResolver`; scored by top-1 point IoU against the answer instance's
      map points (Acc@0.25, Acc@0.5, mIoU);
  (c) the same map with the real offline backend (`build_backend("offline")`): its proposals build the
      memory, its text model embeds the phrases, its `segment` serves what the memory cannot decide;
  (d) latency of the relational queries answered from the memory (first run of each; median);
  (e) `describe_objects` on each memory: the share of ground-truth objects (with >= MIN_GT_POINTS map
      points) named by a caption of their class whose box centre is within 0.2 m of the object's; on the
      relational rooms and on `describe_rooms` furnished rooms (`generate_room(seed)`: shelves of books,
      desks, sofas; 48 frames along `trajectory` at 320x240, fx 262.5, as benchmarks.sim_offline renders).
Ground truth (evaluation only): the layouts' answer ids, map points labelled by the nearest true
surface within one voxel (`Simulator.closest_instances`), the proposer's masks from noise-free renders.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

from mllm3d_ros.sources.simulator import (STRUCTURE_ID, SimConfig, Simulator, generate_relational_room,
                                          relational_trajectory)

# 320x240 with a 76 x 61 degree field of view (an Azure Kinect's narrow depth mode is 75 x 65): from the
# stated viewer 1.6 m from the table, the whole layout is in view.
SIM = SimConfig(width=320, height=240, fx=205.0, fy=205.0, cx=159.5, cy=119.5, nthreads=2)
MIN_GT_POINTS = 10
HALLUCINATION = 0.3
DESCRIBE_RADIUS_M = 0.2


@dataclass(frozen=True)
class _GtMemory:
    """What MemoryResolver reads from an ObjectMemory, made from ground-truth instances (evaluation only)."""

    items: tuple
    config: object
    version: int = 0

    def objects(self):
        return self.items


def _gt_objects(room, proposer):
    """MemoryObjects of the room's instances: ground-truth box and points, the class's embedding."""
    from mllm3d_ros.core.memory.object_memory import MemoryObject
    from mllm3d_ros.core.types import OrientedBox3D
    from mllm3d_ros.sources.simulator import instance_points

    points = instance_points(room, spacing_m=0.02)
    out = []
    for info in room.instances:
        c, s = np.cos(info.yaw_rad), np.sin(info.yaw_rad)
        box = OrientedBox3D(np.asarray(info.center_world_m, np.float64),
                            np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.asarray(info.size_m, np.float64))
        out.append(MemoryObject(info.instance_id, info.label, ((info.label, 1.0),),
                                proposer.class_direction(info.label), points[info.instance_id], box,
                                tuple(float(v) for v in info.color_rgb), 20, 20, 1.0, (), 0))
    return tuple(out), points


def _yawed(world_T_camera: np.ndarray, yaw_deg: float) -> np.ndarray:
    """The pose turned by yaw_deg about world z (up), in place."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    out = np.array(world_T_camera, dtype=np.float64)
    out[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ out[:3, :3]
    return out


def resolver_on_gt(layout, proposer, viewer_yaw_deg: float = 0.0) -> list[dict]:
    """(a): the parser and resolver alone, on ground-truth boxes, from the layout's stated viewer (turned
    by viewer_yaw_deg: the layouts' answers hold within 30 degrees of it)."""
    from mllm3d_ros.core.query.instruction import parse_instruction
    from mllm3d_ros.core.query.memory_query import MemoryResolver
    from mllm3d_ros.core.memory.object_memory import ObjectMemoryConfig
    from mllm3d_ros.core.types import Keyframe, MapSnapshot

    objects, points = _gt_objects(layout.room, proposer)
    cloud = np.concatenate([points[o.instance_id] for o in objects])
    snapshot = MapSnapshot(cloud, np.zeros(cloud.shape, np.uint8), None, 0)
    viewer = Keyframe(0, 0, _yawed(layout.viewer_world_T_camera, viewer_yaw_deg), SIM.intrinsics,
                      np.zeros((2, 2, 3), np.uint8),
                      np.zeros((2, 2), np.float32))
    resolver = MemoryResolver(_GtMemory(objects, ObjectMemoryConfig()), proposer.encode_text)
    rows = []
    for q in layout.queries:
        plan = resolver.plan(parse_instruction(q.instruction), snapshot, (viewer,))
        top = plan.candidates[0].instance_id if plan is not None and plan.candidates else -1
        rows.append({"room": layout.room.seed, "instruction": q.instruction, "kind": q.kind, "answer_id": q.answer_id,
                     "top_id": top, "correct": top == q.answer_id, "decided": bool(plan and plan.answer),
                     "notes": list(plan.notes) if plan is not None else []})
    return rows


def _unavailable(views, instruction):
    from mllm3d_ros.core.segmentation import BackendError

    raise BackendError("the simulated proposer has no query-time mode: the object memory must decide")


def _share(flags) -> float:
    return round(float(np.mean(list(flags))), 4)


def _viewer_yaw_deg(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a[:3, 0].copy(), b[:3, 0].copy()
    ra[2] = rb[2] = 0.0
    cos = float(ra @ rb / max(1e-9, np.linalg.norm(ra) * np.linalg.norm(rb)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def run_queries(layout, mapper, memory, pipeline, gt_ids, backend: str) -> list[dict]:
    """(b)/(c): every instruction of the layout through the product's QueryPipeline."""
    from mllm3d_ros.eval.metrics import point_iou

    rows = []
    for q in layout.queries:
        result = pipeline.run(q.instruction)
        iou = point_iou(result.objects[0].point_indices, gt_ids == q.answer_id) if result.objects else 0.0
        # Answered by the memory alone: a success without a 2D model call (a NOT_FOUND message may name the memory too).
        from_memory = result.status.name == "SUCCESS" and result.views_used == 0
        rows.append({"backend": backend, "room": layout.room.seed, "instruction": q.instruction, "kind": q.kind,
                     "status": result.status.name, "iou": round(float(iou), 4), "from_memory": from_memory,
                     "elapsed_ms": round(result.elapsed_s * 1e3, 2),
                     "memory_ms": round(result.timings_ms.get("memory_ms", 0.0), 2), "message": result.message})
    return rows


def describe_score(room, memory, gt_ids) -> dict:
    """(e): GT objects with enough map points named by a caption of their class within DESCRIBE_RADIUS_M."""
    from mllm3d_ros.core.query.describe import describe_objects

    objects = {o.instance_id: o for o in memory.objects()}
    captions = describe_objects(tuple(objects.values()))
    visible = [i for i in room.instances if np.count_nonzero(gt_ids == i.instance_id) >= MIN_GT_POINTS]
    free = {c.instance_id for c in captions}
    named, missed = 0, []
    per_label: dict[str, list[int]] = {}
    for info in visible:
        per_label.setdefault(info.label, [0, 0])[1] += 1
        best, best_d = None, DESCRIBE_RADIUS_M
        for c in captions:
            if c.instance_id not in free or c.label.lower() != info.label.lower():
                continue
            d = float(np.linalg.norm(np.asarray(objects[c.instance_id].box.center_world_m) - info.center_world_m))
            if d <= best_d:
                best, best_d = c.instance_id, d
        if best is None:
            missed.append(f"{info.label} #{info.instance_id}")
        else:
            free.discard(best)
            named += 1
            per_label[info.label][0] += 1
    return {"room": room.seed, "gt_objects": len(visible), "named": named, "captions": len(captions),
            "missed": missed, "per_label": per_label}


def _proposer(room, sim_config: SimConfig, segmenter_config, seed: int):
    """The simulated proposer of a room: ground-truth labels, masks from noise-free renders (evaluation only)."""
    from mllm3d_ros.eval.sim_segmenter import SimSegmenter

    gt_render = Simulator(room, SimConfig(**{**sim_config.__dict__, "noise": False}))

    def instance_ids(view):
        if (view.intrinsics.width, view.intrinsics.height) != (sim_config.width, sim_config.height):
            raise ValueError("keyframes must be stored at the render's resolution")
        return gt_render.render(view.world_T_camera).instance_ids

    labels = {i.instance_id: i.label for i in room.instances}
    return SimSegmenter(segmenter_config, seed=seed, background_ids=frozenset({STRUCTURE_ID}), labels=labels,
                        instance_ids_fn=instance_ids)


def describe_furnished(seeds, segmenter_config) -> list[dict]:
    """(e) on furnished rooms: the memory from the simulated proposer, scored as on the relational rooms."""
    from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
    from mllm3d_ros.core.mapping.mapper import Mapper
    from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig
    from mllm3d_ros.offline_segment import build_memory
    from mllm3d_ros.sources.simulator import generate_room, trajectory

    from benchmarks.sim_offline import SIM as SIM_FURNISHED

    out = []
    for seed in seeds:
        room = generate_room(seed)
        sim = Simulator(room, SIM_FURNISHED)
        mapper = Mapper(TsdfMapConfig(), KeyframeConfig(image_scale=1.0))
        for k, pose in enumerate(trajectory(room, 48)):
            mapper.process(sim.render(pose, stamp_ns=k * 33_333_333).frame)
        gt_ids = Simulator(room, SimConfig(noise=False)).closest_instances(
            mapper.snapshot().points_world_m, max_distance_m=mapper.map.config.voxel_size_m).instance_ids
        memory = build_memory(mapper, _proposer(room, SIM_FURNISHED, segmenter_config, seed))
        out.append(describe_score(room, memory, gt_ids))
        print(f"furnished room {seed}: {out[-1]['named']}/{out[-1]['gt_objects']} objects named", flush=True)
    return out


def run(rooms: int, frames: int, offline: bool, describe_rooms: int = 0, model=None, model_name: str = "offline",
        queries_per_room: int | None = None) -> dict:
    """The benchmark; (c) with the offline backend when `offline`, or with `model` (a backend built by the
    caller and left open, reported under `model_name`: benchmarks.gpu). `queries_per_room` keeps the first
    n instructions of each room (a quick run)."""
    from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
    from mllm3d_ros.core.mapping.mapper import Mapper
    from mllm3d_ros.core.query.memory_query import MemoryResolver
    from mllm3d_ros.core.query.pipeline import QueryConfig, QueryPipeline
    from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig
    from mllm3d_ros.eval.sim_segmenter import SimSegmenterConfig
    from mllm3d_ros.offline_segment import build_memory

    t_start = time.perf_counter()
    owns_model = model is None and offline
    if owns_model:
        from mllm3d_ros.backends.base import build_backend

        model = build_backend("offline")
    names = ("offline", model_name) if model_name != "offline" else ("offline",)
    gt_rows, gt_turned, rows, describe, fuse_s, yaw_dev = [], [], [], {"sim": [], **{n: [] for n in names}}, [], []
    sim_config = SimSegmenterConfig(hallucination_rate=HALLUCINATION)
    try:
        for seed in range(rooms):
            layout = generate_relational_room(seed)
            if queries_per_room is not None:
                layout = dataclasses.replace(layout, queries=layout.queries[:queries_per_room])
            room = layout.room
            proposer = _proposer(room, SIM, sim_config, seed)
            gt_rows += resolver_on_gt(layout, proposer)
            for yaw in (-30.0, 30.0):
                gt_turned += resolver_on_gt(layout, proposer, yaw)

            sim = Simulator(room, SIM)
            mapper = Mapper(TsdfMapConfig(), KeyframeConfig(image_scale=1.0))
            t0 = time.perf_counter()
            for k, pose in enumerate(relational_trajectory(layout, frames)):
                mapper.process(sim.render(pose, stamp_ns=k * 33_333_333).frame)
            fuse_s.append(time.perf_counter() - t0)
            snapshot = mapper.snapshot()
            yaw_dev.append(_viewer_yaw_deg(mapper.keyframes()[-1].world_T_camera, layout.viewer_world_T_camera))
            gt_ids = Simulator(room, SimConfig(noise=False)).closest_instances(
                snapshot.points_world_m, max_distance_m=mapper.map.config.voxel_size_m).instance_ids

            memory = build_memory(mapper, proposer)
            pipeline = QueryPipeline(mapper, _unavailable, QueryConfig(),
                                     resolver=MemoryResolver(memory, proposer.encode_text))
            rows += run_queries(layout, mapper, memory, pipeline, gt_ids, "sim")
            describe["sim"].append(describe_score(room, memory, gt_ids))
            if model is not None:
                memory_off = build_memory(mapper, model)
                pipeline_off = QueryPipeline(mapper, model.segment, QueryConfig(marked_prompts=model.uses_marks), recognise_fn=model.recognise,
                                             resolver=MemoryResolver(memory_off, model.encode_text))
                rows += run_queries(layout, mapper, memory_off, pipeline_off, gt_ids, model_name)
                describe[model_name].append(describe_score(room, memory_off, gt_ids))
            sel = [r for r in rows if r["room"] == seed and r["backend"] == "sim"]
            print(f"room {seed}: {snapshot.num_points} map points, {len(mapper.keyframes())} keyframes, fused in "
                  f"{fuse_s[-1]:.1f} s; GT-box resolver {np.mean([r['correct'] for r in gt_rows[-16:]]):.2f}, "
                  f"sim Acc@0.5 {np.mean([r['iou'] >= 0.5 for r in sel]):.2f}", flush=True)
        furnished = describe_furnished(range(describe_rooms), sim_config)
    finally:
        if owns_model:
            model.close()

    def summary(sel: list[dict]) -> dict:
        from mllm3d_ros.eval.metrics import summarize

        s = summarize([r["iou"] for r in sel])
        mem = [r["elapsed_ms"] for r in sel if r["from_memory"]]
        return {"queries": s.num_queries, "acc25": round(s.acc25, 4), "acc50": round(s.acc50, 4),
                "miou": round(s.miou, 4), "answered_from_memory": len(mem),
                "latency_ms_median_from_memory": round(float(np.median(mem)), 2) if mem else None}

    def per_kind(sel: list[dict]) -> dict:
        return {k: summary([r for r in sel if r["kind"] == k]) for k in dict.fromkeys(r["kind"] for r in sel)}

    def describe_summary(sel: list[dict]) -> dict | None:
        if not sel:
            return None
        total = sum(d["gt_objects"] for d in sel)
        labels: dict[str, list[int]] = {}
        for d in sel:
            for label, (n, t) in d["per_label"].items():
                labels.setdefault(label, [0, 0])
                labels[label][0] += n
                labels[label][1] += t
        return {"gt_objects": total, "named": sum(d["named"] for d in sel),
                "per_label_named_of": {k: f"{n}/{t}" for k, (n, t) in sorted(labels.items())},
                "fraction": round(sum(d["named"] for d in sel) / max(1, total), 4), "rooms": sel}

    sim_rows = [r for r in rows if r["backend"] == "sim"]
    model_rows = {n: [r for r in rows if r["backend"] == n] for n in names}
    mem_ms = [r["elapsed_ms"] for r in rows if r["from_memory"]]
    return {
        "machine": platform.node(), "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "rooms": rooms, "frames_per_room": frames,
        "render": f"{SIM.width}x{SIM.height}, keyframes at full scale",
        "viewer": "the latest keyframe, as the resolver takes it; the dolly trajectory keeps the layout's stated "
                  "viewer's orientation (in front of the table, looking +y)",
        "viewer_yaw_from_stated_deg_max": round(max(yaw_dev), 2),
        "sim_segmenter": {"hallucination_rate": HALLUCINATION, "miss_rate": sim_config.miss_rate,
                          "wrong_label_rate": sim_config.wrong_label_rate,
                          "boundary_noise_px": sim_config.boundary_noise_px},
        "resolver_on_gt_boxes": {"queries": len(gt_rows),
                                 "accuracy": round(float(np.mean([r["correct"] for r in gt_rows])), 4),
                                 "decided": round(float(np.mean([r["decided"] for r in gt_rows])), 4),
                                 "accuracy_viewer_turned_30deg": _share(r["correct"] for r in gt_turned),
                                 "per_kind": {k: _share(r["correct"] for r in gt_rows if r["kind"] == k)
                                              for k in dict.fromkeys(r["kind"] for r in gt_rows)},
                                 "errors": [r for r in gt_rows if not r["correct"]]},
        "sim_p03": {**summary(sim_rows), "per_kind": per_kind(sim_rows)},
        **{n: ({**summary(sel), "per_kind": per_kind(sel)} if sel else None) for n, sel in model_rows.items()},
        "latency_ms_median_from_memory": round(float(np.median(mem_ms)), 2) if mem_ms else None,
        "describe": {"radius_m": DESCRIBE_RADIUS_M, "sim_p03": describe_summary(describe["sim"]),
                     **{n: describe_summary(describe[n]) for n in names},
                     "sim_p03_furnished_rooms": describe_summary(furnished)},
        "fuse_s_median_per_room": round(float(np.median(fuse_s)), 2),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "queries": rows,
    }


def table(report: dict) -> str:
    gt = report["resolver_on_gt_boxes"]
    lines = ["| measure | value | target |", "|---|---|---|",
             f"| resolver on ground-truth boxes, accuracy ({gt['queries']} queries) | {gt['accuracy']:.3f} | >= 0.95 |",
             f"| the same, viewer turned +-30 deg | {gt['accuracy_viewer_turned_30deg']:.3f} | - |"]
    models = [k for k in report["describe"] if k not in ("radius_m", "sim_p03", "sim_p03_furnished_rooms")]
    for name in ("sim_p03", *models):
        s = report[name]
        if s is None:
            continue
        tgt = ">= 0.85" if name == "sim_p03" else "report"
        lines.append(f"| {name}: Acc@0.25 / Acc@0.5 / mIoU ({s['queries']} queries) | {s['acc25']:.3f} / "
                     f"{s['acc50']:.3f} / {s['miou']:.3f} | Acc@0.5 {tgt} |")
    lines.append(f"| relational query from memory, median ms | {report['latency_ms_median_from_memory']} | <= 50 |")
    for name in ("sim_p03", *models, "sim_p03_furnished_rooms"):
        d = report["describe"][name]
        if d is not None:
            radius = report["describe"]["radius_m"]
            lines.append(f"| describe ({name}): objects named, class + position within {radius} m "
                         f"| {d['named']}/{d['gt_objects']} = {d['fraction']:.3f} | >= 0.90 |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--rooms", type=int, default=10, help="seeded relational rooms 0..N-1")
    parser.add_argument("--describe-rooms", type=int, default=3, help="furnished rooms 0..N-1 for (e)")
    parser.add_argument("--frames", type=int, default=40, help="frames along each room's trajectory")
    parser.add_argument("--quick", action="store_true",
                        help="1 room, 24 frames, no offline backend, no furnished rooms")
    parser.add_argument("--no-offline", action="store_true", help="skip (c), the real offline backend")
    args = parser.parse_args(argv)
    rooms, frames, offline, describe_rooms = ((1, 24, False, 0) if args.quick else
                                              (args.rooms, args.frames, not args.no_offline, args.describe_rooms))
    from mllm3d_ros.core.segmentation import BackendError

    try:
        report = run(rooms, frames, offline, describe_rooms)
    except BackendError as exc:
        print(f"benchmarks.spatial: cannot run the offline backend: {exc}", file=sys.stderr)
        return 1
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    print(table(report))
    print(f"{report['wall_s']} s in all; {report['machine']}, {report['cpu_count']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
