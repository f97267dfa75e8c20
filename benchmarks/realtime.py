"""The real kitchen at its real 30 Hz, replayed in real time through the live code path, against its latency targets.

    python -m benchmarks.realtime --json PATH [--dataset DIR] [--no-offline-reference]

The 1000 frames of ../shared/data/7scenes-redkitchen-30hz are decoded first (a driver hands frames over
decoded), then submitted to the product's Mapper at their recorded stamps, as the mapping node does:
the ingest worker fuses on its own thread (bounded queue, newest wins), and the object memory's
ProposalWorker runs the offline backend's proposals and the map's class-agnostic objects
(`MapObjectProposer`) on every new keyframe on another, exactly as the memory node wires them. Reported: frames received / fused / dropped, the fusion step time, the
proposal worker's lag (keyframe added -> in the memory) and drops, how long it needed after the last
frame to catch up, RSS; then the real-kitchen instruction set (benchmarks.real) answered from this
live-built map and memory, next to the same set answered by `RecordingSession` over the same frames
without time pressure (the offline reference). Machine named in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.real import QUERIES, _summary, score_objects, skipped_without
from benchmarks.real_annotations import REDKITCHEN_JSON, load_annotations

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "7scenes-redkitchen-30hz"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _answer_all(pipeline, annotations, fallback_snapshot) -> list[dict]:
    rows = []
    for q in QUERIES:
        start = time.monotonic()
        result = pipeline.run(q.instruction)
        elapsed = time.monotonic() - start
        snapshot = result.snapshot if result.snapshot is not None else fallback_snapshot()
        score = score_objects(snapshot.points_world_m, [(o.point_indices, o.confidence) for o in result.objects],
                              annotations, q.accepted)
        rows.append({"instruction": q.instruction, "kind": q.kind, "expected": "NOT_FOUND" if q.not_found else "found",
                     "status": result.status.name,
                     "iou": round(score.iou, 4), "matched_id": score.matched_id, "ap25": score.ap25, "ap50": score.ap50,
                     "precision25": score.precision25, "precision50": score.precision50,
                     "n_objects": len(result.objects), "elapsed_s": round(elapsed, 3)})
    return rows


def run(dataset: Path, offline_reference: bool = True) -> dict:
    from mllm3d_ros.backends import build_backend
    from mllm3d_ros.core.memory.map_objects import MapObjectProposer, chain_proposers
    from mllm3d_ros.core.mapping.mapper import Mapper
    from mllm3d_ros.core.query.memory_query import MemoryResolver
    from mllm3d_ros.core.memory.object_memory import ObjectMemory
    from mllm3d_ros.core.query.pipeline import QueryPipeline
    from mllm3d_ros.core.memory.proposal_worker import ProposalWorker
    from mllm3d_ros.sources.dataset import open_dataset

    recording = open_dataset(dataset)
    t0 = time.monotonic()
    frames = list(recording)
    decode_s = time.monotonic() - t0
    annotations = load_annotations(REDKITCHEN_JSON, recording.map_T_world)
    backend = build_backend("offline")
    mapper = Mapper()
    memory = ObjectMemory()
    map_objects = MapObjectProposer(mapper.snapshot)
    worker = ProposalWorker(memory, chain_proposers(backend.propose, map_objects.propose), mapper.keyframe_store.get)
    rss_start = _rss_mb()
    mapper.start()
    worker.start()
    stop = threading.Event()

    def poll() -> None:  # what MemoryNode's timer does
        submitted = -1
        while not stop.wait(0.1):
            for kf in mapper.keyframes():
                if kf.keyframe_id > submitted:
                    worker.submit(kf.keyframe_id)
                    submitted = kf.keyframe_id

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stamp0 = frames[0].stamp_ns
    lateness_ms = []
    t_start = time.monotonic()
    for frame in frames:
        due = t_start + (frame.stamp_ns - stamp0) * 1e-9
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        lateness_ms.append(max(0.0, -wait) * 1e3)
        mapper.submit(frame)
    stream_s = time.monotonic() - t_start
    t_end = time.monotonic()
    mapper.worker.wait_idle(60.0)
    time.sleep(0.3)  # the poller's last look
    worker.wait_idle(600.0)
    catch_up_s = time.monotonic() - t_end
    stop.set()
    poller.join()
    ingest, proposals = mapper.worker.stats, worker.stats
    rss_end = _rss_mb()
    pipeline = QueryPipeline(mapper, backend.segment, resolver=MemoryResolver(memory, backend.encode_text),
                             recognise_fn=backend.recognise)
    live_rows = _answer_all(pipeline, annotations, mapper.snapshot)
    mapper.stop()
    worker.stop()
    report = {
        "machine": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "dataset": str(dataset), "frames": len(frames), "decode_s": round(decode_s, 1),
        "voxel_size_m": mapper.map.config.voxel_size_m,
        "stream": {"duration_s": round(stream_s, 2), "recorded_s": round((frames[-1].stamp_ns - stamp0) * 1e-9, 2),
                   "received": ingest.received, "fused": ingest.fused, "dropped_queue_full": ingest.dropped_queue_full,
                   "rejected": ingest.rejected_total, "fusion_errors": ingest.fusion_errors,
                   "submit_lateness_ms_p95": round(float(np.percentile(lateness_ms, 95)), 1)},
        "keyframes": len(mapper.keyframes()),
        "proposals": {"submitted": proposals.submitted, "integrated": proposals.integrated,
                      "dropped_queue_full": proposals.dropped_queue_full, "failures": proposals.failures,
                      "lag_ms_p50": round(proposals.lag_ms_p50, 1), "lag_ms_max": round(proposals.lag_ms_max, 1),
                      "catch_up_after_last_frame_s": round(catch_up_s, 2)},
        "memory": {"instances": memory.stats.instances, "confirmed": memory.stats.confirmed,
                   "unlabelled": memory.stats.unlabelled, "supports": memory.stats.supports,
                   "nbytes": memory.stats.nbytes},
        "map_objects": {"views": map_objects.stats.views, "objects_proposed": map_objects.stats.objects_proposed,
                        "ms_per_keyframe_p50": round(map_objects.stats.ms_p50, 1),
                        "ms_per_keyframe_max": round(map_objects.stats.ms_max, 1)},
        "rss_mb": {"start": round(rss_start, 1), "end": round(rss_end, 1),
                   "peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
        "live": _summary([r for r in live_rows if r["kind"] != "relational" and r["expected"] == "found"]),
        "live_relational": _summary([r for r in live_rows if r["kind"] == "relational" and r["expected"] == "found"]),
        "live_whole_set": _summary([r for r in live_rows if r["expected"] == "found"]),
        "live_query_s_median": round(float(np.median([r["elapsed_s"] for r in live_rows])), 3),
        "live_queries": live_rows,
    }
    backend.close()
    del frames
    if offline_reference:
        from mllm3d_ros.offline_segment import RecordingSession
        with RecordingSession(dataset, show_progress=False) as session:
            rows = _answer_all(session.pipeline, annotations, session.mapper.snapshot)
        report["offline"] = _summary([r for r in rows if r["kind"] != "relational" and r["expected"] == "found"])
        report["offline_relational"] = _summary([r for r in rows if r["kind"] == "relational" and r["expected"] == "found"])
        report["offline_whole_set"] = _summary([r for r in rows if r["expected"] == "found"])
        report["offline_queries"] = rows
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--no-offline-reference", action="store_true")
    args = parser.parse_args(argv)
    if skipped_without(args.dataset, args.json):
        return 0
    report = run(args.dataset, not args.no_offline_reference)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    keys = ("stream", "keyframes", "proposals", "memory", "map_objects", "rss_mb", "live", "live_whole_set",
            "live_query_s_median", "offline", "offline_whole_set")
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
