"""Benchmark on the real 7-Scenes RedKitchen against our own hand-made 3D ground truth.

    python -m benchmarks.real --json PATH [--dataset DIR] [--voxel-size M]

The recording is fused once and every instruction answered through `RecordingSession`, the code path
of `mllm3d segment` (offline backend, its defaults; `--voxel-size` only when given). Ground truth:
benchmarks/annotations/redkitchen.json (boxes in the loader's z-up world; benchmarks/real_annotations.py
has the rule); GT points of an instance = the result snapshot's points inside its boxes.

Instructions: our own set of plain class names, synonyms, functional and attribute phrasings, each
with the GT instances it accepts (a plain "a chair" accepts every chair); the top-1 object is scored
against the best-matching accepted instance (IoU over the snapshot's points). Relational instructions
("the mug next to the box") are scored separately, and the whole set together. An instruction whose
expected answer is NOT_FOUND (a noun the offline model does not know, with nothing the memory can check
to pin an object down: "the game controller") is scored apart: correct when it is NOT_FOUND. Per query
also the instance-level scores of the whole returned list against the accepted instances (AP, precision,
recall at IoU 0.25 / 0.5). Reported: Acc@0.25, Acc@0.5, mIoU (overall and per class), median seconds per query, the session's
set-up time (fusion + model load) apart, the machine. Without the data folder it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.real_annotations import REDKITCHEN_JSON, Annotations, gt_masks, load_annotations
from mllm3d_ros.eval.metrics import instance_scores, point_iou, summarize

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "7scenes-redkitchen"
CHAIRS = ("chair_left", "chair_front", "chair_back_left", "chair_back_right", "chair_right")
MUGS = ("mug_left", "mug_middle")


@dataclass(frozen=True)
class RealQuery:
    """An instruction, its kind (plain | synonym | functional | attribute | relational) and the GT ids it accepts;
    `not_found`: the honest answer is NOT_FOUND (accepted then names what it must not be taken for)."""

    instruction: str
    kind: str
    accepted: tuple[str, ...]
    not_found: bool = False


QUERIES: tuple[RealQuery, ...] = (
    RealQuery("the table", "plain", ("table",)),
    RealQuery("a chair", "plain", CHAIRS),
    RealQuery("the chair", "plain", CHAIRS),
    RealQuery("the mug", "plain", MUGS),
    RealQuery("the box", "plain", ("plastic_box",)),
    RealQuery("the dining table", "synonym", ("table",)),
    RealQuery("a seat", "synonym", CHAIRS),
    RealQuery("a cup", "synonym", MUGS),
    RealQuery("a coffee cup", "synonym", MUGS),
    RealQuery("the container", "synonym", ("plastic_box",)),
    RealQuery("somewhere I can sit", "functional", CHAIRS),
    RealQuery("something to drink from", "functional", MUGS),
    RealQuery("somewhere to put my plate while I eat", "functional", ("table",)),
    RealQuery("something to keep things in", "functional", ("plastic_box",)),
    RealQuery("the plastic box on the table", "attribute", ("plastic_box",)),
    RealQuery("the see-through plastic container", "attribute", ("plastic_box",)),
    RealQuery("the white mug", "attribute", MUGS),  # both are white (one plain, one patterned)
    RealQuery("the patterned mug", "attribute", ("mug_middle",)),
    RealQuery("the wooden table", "attribute", ("table",)),
    RealQuery("the wooden chair", "attribute", CHAIRS),
    RealQuery("the mug next to the box", "relational", ("mug_middle",)),
    RealQuery("the chair by the counter", "relational", ("chair_left",)),
    RealQuery("the container on the table", "relational", ("plastic_box",)),
    RealQuery("the mug at the end of the table", "relational", ("mug_left",)),
    RealQuery("the chair at the end of the table", "relational", ("chair_left", "chair_right")),
    # Class-agnostic objects: the box and the red game controller, which no detector class names well ("Box" at 0.2-0.35
    # in a few views) or at all; class-agnostic objects from the map, pinned by support, relation or colour.
    RealQuery("the box on the table", "relational", ("plastic_box",)),
    RealQuery("the red object on the table", "relational", ("game_controller",)),
    RealQuery("the red thing next to the box", "relational", ("game_controller",)),
    # "game controller" is not something the offline model knows and nothing pins it: NOT_FOUND is honest.
    RealQuery("the game controller", "plain", ("game_controller",), not_found=True),
)


@dataclass(frozen=True)
class QueryScore:
    """Top-1 IoU against the best accepted instance (matched_id, "" if none) and the list's instance scores."""

    iou: float
    matched_id: str
    gt_points: int
    ap25: float
    ap50: float
    precision25: float
    recall25: float
    precision50: float
    recall50: float


def score_objects(points_world_m: np.ndarray, objects: Sequence[tuple[np.ndarray, float]],
                  annotations: Annotations, accepted: Sequence[str]) -> QueryScore:
    """Score a ranked list of (point indices, confidence) over `points_world_m` against the accepted GT ids.

    GT masks use every annotated instance (the smallest box owns a point), then keep the accepted ones.
    """
    masks = gt_masks(points_world_m, annotations.instances)
    gts = [masks[a] for a in accepted]
    top = np.asarray(objects[0][0], dtype=np.int64) if objects else np.zeros(0, np.int64)
    ious = [point_iou(top, g) if objects else 0.0 for g in gts]
    best = int(np.argmax(ious))
    preds, confs = [np.asarray(o[0], dtype=np.int64) for o in objects], [float(o[1]) for o in objects]
    s25, s50 = (instance_scores(preds, confs, gts, t) for t in (0.25, 0.5))
    return QueryScore(float(ious[best]), accepted[best] if ious[best] > 0 else "", int(sum(g.sum() for g in gts)),
                      s25.ap, s50.ap, s25.precision, s25.recall, s50.precision, s50.recall)


def _class_of(annotations: Annotations, accepted: Sequence[str]) -> str:
    return annotations.instance(accepted[0]).label


def _summary(rows: list[dict]) -> dict:
    s = summarize([r["iou"] for r in rows])
    # The list a robot is handed: of the queries that returned objects, the share of returned objects that
    # are an accepted instance (IoU >= 0.25 / 0.5 with one), and how many objects a list holds.
    listed = [r for r in rows if r["n_objects"]]
    return {"queries": s.num_queries, "acc25": round(s.acc25, 4), "acc50": round(s.acc50, 4), "miou": round(s.miou, 4),
            "ap25": round(float(np.mean([r["ap25"] for r in rows])), 4) if rows else 0.0,
            "ap50": round(float(np.mean([r["ap50"] for r in rows])), 4) if rows else 0.0,
            "precision25": round(float(np.mean([r["precision25"] for r in rows])), 4) if rows else 0.0,
            "list_precision25": round(float(np.mean([r["precision25"] for r in listed])), 4) if listed else None,
            "list_precision50": round(float(np.mean([r["precision50"] for r in listed])), 4) if listed else None,
            "objects_per_list": round(float(np.mean([r["n_objects"] for r in listed])), 2) if listed else None}


def run(dataset: Path, voxel_size_m: float | None, annotations_path: Path = REDKITCHEN_JSON, model=None,
        queries: Sequence[RealQuery] = QUERIES, repeat: bool = True, stride: int = 1) -> dict:
    """The benchmark with the offline backend, or with `model` (a backend built by the caller and left open:
    benchmarks.gpu); `queries`, `repeat` (the repeated-query pass) and `stride` (every n-th frame fused)
    shrink it for a quick run."""
    from mllm3d_ros.offline_segment import RecordingSession

    kwargs = {"show_progress": False, "stride": stride}
    if voxel_size_m is not None:
        kwargs["voxel_size_m"] = voxel_size_m
    t0 = time.monotonic()
    session = RecordingSession(dataset, model if model is not None else "offline", **kwargs)
    setup_s = time.monotonic() - t0
    rows = []
    try:
        from mllm3d_ros.sources.dataset import open_dataset

        annotations = load_annotations(annotations_path, open_dataset(dataset, max_frames=1).map_T_world)
        for q in queries:
            start = time.monotonic()
            result = session.query(q.instruction)
            elapsed = time.monotonic() - start
            snapshot = result.snapshot if result.snapshot is not None else session.mapper.snapshot()
            score = score_objects(snapshot.points_world_m, [(o.point_indices, o.confidence) for o in result.objects],
                                  annotations, q.accepted)
            rows.append({"instruction": q.instruction, "kind": q.kind, "class": _class_of(annotations, q.accepted),
                         "expected": "NOT_FOUND" if q.not_found else "found", "status": result.status.name,
                         "target_phrase": result.target_phrase,
                         "n_objects": len(result.objects),
                         "top_label": result.objects[0].label if result.objects else "",
                         "elapsed_s": round(elapsed, 3), "map_points": snapshot.num_points,
                         **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(score).items()}})
            print(f"  {q.instruction!r}: {result.status.name} {len(result.objects)} objects, IoU {score.iou:.2f} "
                  f"({score.matched_id or '-'}), {elapsed:.2f} s", flush=True)
            # Answered by the memory alone: a success without a 2D model call (a NOT_FOUND may name the memory too).
            rows[-1]["from_memory"] = result.status.name == "SUCCESS" and result.views_used == 0
        # The same instructions once more: a repeated query on an unchanged map and memory.
        for row in rows if repeat else ():
            start = time.monotonic()
            session.query(row["instruction"])
            row["repeat_s"] = round(time.monotonic() - start, 4)
    finally:
        session.close()
    found_rows = [r for r in rows if r["expected"] == "found"]
    main_rows = [r for r in found_rows if r["kind"] != "relational"]
    honest_rows = [r for r in rows if r["expected"] == "NOT_FOUND"]
    classes = sorted({r["class"] for r in main_rows})
    return {
        "machine": platform.node(), "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "dataset": str(dataset), "annotations": str(annotations_path),
        "voxel_size_m": session.mapper.map.config.voxel_size_m,
        "voxel_size_source": "--voxel-size" if voxel_size_m is not None else "RecordingSession default",
        "frames_fused": getattr(session, "frames_fused", None),
        "fuse_s": round(session.fuse_s, 2) if hasattr(session, "fuse_s") else None,
        "session_setup_s": round(setup_s, 2),
        "query_s_median": round(float(np.median([r["elapsed_s"] for r in rows])), 3),
        "answered_from_memory": sum(r["from_memory"] for r in rows),
        "repeat_ms_median_from_memory": round(1e3 * float(np.median([r["repeat_s"] for r in rows
                                                                     if r["from_memory"] and "repeat_s" in r]
                                                                    or [np.nan])), 1),
        "repeat_ms_median_all": round(1e3 * float(np.median([r["repeat_s"] for r in rows if "repeat_s" in r]
                                                            or [np.nan])), 1),
        "main": _summary(main_rows),
        "per_class": {c: _summary([r for r in main_rows if r["class"] == c]) for c in classes},
        "per_kind": {k: _summary([r for r in found_rows if r["kind"] == k])
                     for k in dict.fromkeys(q.kind for q in queries)},
        "relational": _summary([r for r in found_rows if r["kind"] == "relational"]),
        "whole_set": _summary(found_rows),
        "whole_set_per_class": {c: _summary([r for r in found_rows if r["class"] == c])
                                for c in sorted({r["class"] for r in found_rows})},
        "expected_not_found": {"queries": len(honest_rows),
                               "not_found": sum(r["status"] == "NOT_FOUND" for r in honest_rows)},
        "queries": rows,
    }


def table(report: dict) -> str:
    lines = ["| instruction | kind | status | objects | IoU | matched | s |", "|---|---|---|---|---|---|---|"]
    for r in report["queries"]:
        lines.append(f"| {r['instruction']} | {r['kind']} | {r['status']} | {r['n_objects']} | {r['iou']:.2f} "
                     f"| {r['matched_id'] or '-'} | {r['elapsed_s']:.2f} |")
    lines += ["", "| set | queries | Acc@0.25 | Acc@0.5 | mIoU | AP25 | AP50 | list precision@0.25 | objects per list |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, s in [("all but relational", report["main"]), *report["per_class"].items(),
                    ("relational", report["relational"]), ("whole set", report["whole_set"]),
                    *((f"whole set: {c}", v) for c, v in report["whole_set_per_class"].items())]:
        lp = "-" if s.get("list_precision25") is None else f"{s['list_precision25']:.3f}"
        n = "-" if s.get("objects_per_list") is None else f"{s['objects_per_list']:.1f}"
        lines.append(f"| {name} | {s['queries']} | {s['acc25']:.3f} | {s['acc50']:.3f} | {s['miou']:.3f} "
                     f"| {s['ap25']:.3f} | {s['ap50']:.3f} | {lp} | {n} |")
    honest = report["expected_not_found"]
    lines.append(f"\nexpected NOT_FOUND: {honest['not_found']} of {honest['queries']}")
    return "\n".join(lines)


def skipped_without(dataset: Path, json_path: str) -> bool:
    """True (and a note printed and written as the JSON) when the recording is not beside the project."""
    if dataset.is_dir():
        return False
    note = f"skipped: dataset folder {dataset} not found (see ../shared/data/README.md)"
    print(note)
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps({"skipped": note}, indent=2))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="7-Scenes RedKitchen folder")
    parser.add_argument("--voxel-size", type=float, default=None,
                        help="TSDF voxel size in metres (default: RecordingSession's own)")
    args = parser.parse_args(argv)
    if skipped_without(args.dataset, args.json):
        return 0
    from mllm3d_ros.backends.base import BackendError
    from mllm3d_ros.core.types import InputError

    try:
        report = run(args.dataset, args.voxel_size)
    except (BackendError, InputError) as exc:
        print(f"benchmarks.real: cannot run: {exc}", file=sys.stderr)
        return 1
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"query median {report['query_s_median']} s; fusion {report['fuse_s']} s "
          f"(session set-up {report['session_setup_s']} s); {report['answered_from_memory']} answered from the "
          f"object memory, repeated: {report['repeat_ms_median_from_memory']} ms median; {report['machine']}, "
          f"{report['cpu_count']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
