"""Is a box-shaped, box-sized unlabelled object evidence for "the box"? Held-out check on the simulator and the kitchen.

    python -m benchmarks.shape_nouns --json PATH [--rooms 3] [--relational-rooms 10] [--boxless-rooms 3]
                                     [--boxless-relational-rooms 10] [--no-kitchen]

The question: may an unlabelled (class-agnostic) memory instance that passes the
box test the memory can check, box-shaped (`core/query/shapes.py`) AND consistent with the box size prior
(`core/query/size_priors.py`, standing on a support), answer the bare noun "the box" when no detector named a box?
Measured, per unlabelled instance that passes ("stand-in"): which ground-truth object it is (IoU >= 0.25 of the
points an answer would return, `MemoryResolver.candidate_objects`; "(none)" when it matches no object: floor or
wall clutter, a fragment). Precision = stand-ins on a true Box / stand-ins. Rooms without a Box count apart: any
stand-in there would be an invented box. Also what the product answers today for "the box", "the container" and
"something to keep things in" (`MemoryResolver.plan` with the offline backend's open-set gate): none, a detected
instance (confirmed) or an unlabelled one (unconfirmed), and which object that is.

Rooms: the furnished rooms of benchmarks.sim_offline and the relational rooms of benchmarks.spatial (memory built
as `benchmarks.class_agnostic` (b): the offline backend's proposals with the map's class-agnostic objects), and
the same rooms without their boxes (`without_boxes`: every Box and what stands on one taken out; every generated
room has a box): there the honest answer to "the box" is NOT_FOUND, and any stand-in is an invented box.
Ground truth, evaluation only: `Simulator.closest_instances` within one voxel. Kitchen: `RecordingSession` on
../shared/data/7scenes-redkitchen against benchmarks/annotations/redkitchen.json ("plastic_box" is the box).
Without the kitchen folder its part says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.class_agnostic import KITCHEN, MIN_GT_POINTS, fuse_sim_room

IOU = 0.25
QUERIES = ("the box", "the container", "something to keep things in")


def _gt_of(point_sets: dict[int, np.ndarray], gts: dict[str, np.ndarray], labels: dict[str, str]) -> dict[int, str]:
    """instance id -> the GT label it matches best at IoU >= IOU, "(none)" else."""
    out = {}
    for iid, pts in point_sets.items():
        best, label = 0.0, "(none)"
        for gid, g in gts.items():
            inter = np.intersect1d(pts, g, assume_unique=True).shape[0]
            iou = inter / max(1, pts.shape[0] + g.shape[0] - inter)
            if iou >= IOU and iou > best:
                best, label = iou, labels[gid]
        out[iid] = label
    return out


def score_memory(memory, snapshot, model, gts: dict[str, np.ndarray], labels: dict[str, str],
                 box_label: str = "Box") -> dict:
    """The stand-ins for Box among the memory's unlabelled instances, the GT object each is, and the answers."""
    from mllm3d_ros.core.query.instruction import parse_instruction
    from mllm3d_ros.core.query.memory_query import MemoryResolver
    from mllm3d_ros.core.query.open_set import InstructionRecognition
    from mllm3d_ros.core.query.size_priors import SIZE_PRIORS, typicality

    resolver = MemoryResolver(memory, model.encode_text)
    objects = memory.objects()
    sets = {}
    for o in objects:
        answer = resolver.candidate_objects([o], snapshot)
        if answer:
            sets[o.instance_id] = np.unique(answer[0].point_indices)
    gt_of = _gt_of(sets, gts, labels)
    stand_ins = [o for o in objects if o.unlabelled and o.instance_id in sets
                 and "box-shaped" in resolver._shapes(o) and not resolver.misfit(o, ["Box"], labelled=False)]
    # The order a bare-noun rule would answer them in: the most typical box size first, then the earlier instance.
    stand_ins.sort(key=lambda o: (typicality(SIZE_PRIORS["box"], o.box.size_m), o.instance_id))
    answers = {}
    for text in QUERIES:
        parsed = parse_instruction(text)
        plan = resolver.plan(parsed, snapshot, (), InstructionRecognition.of(parsed, model.recognise))
        top = plan.candidates[0] if plan is not None and plan.answer else None
        answers[text] = {"answered": top is not None, "unconfirmed": bool(plan is not None and plan.unconfirmed),
                         "confirmed": bool(top is not None and not plan.unconfirmed),
                         "by": "" if top is None else ("unlabelled" if top.unlabelled else top.label),
                         "gt": "" if top is None else gt_of.get(top.instance_id, "(none)"),
                         "refusal": plan.refusal[:160] if plan is not None else ""}
    return {"has_box": any(labels[g] == box_label for g in gts),
            "unlabelled": sum(o.unlabelled for o in objects),
            "stand_ins": [{"instance_id": o.instance_id, "gt": gt_of[o.instance_id],
                           "size_m": [round(float(v), 2) for v in sorted(o.box.size_m, reverse=True)],
                           "support": o.support.kind.value if o.support else ""} for o in stand_ins],
            "answers": answers}


def _summary(rooms: list[dict], box_label: str = "Box") -> dict:
    stand = [s for r in rooms for s in r["stand_ins"]]
    per_gt: dict[str, int] = {}
    for s in stand:
        per_gt[s["gt"]] = per_gt.get(s["gt"], 0) + 1
    without = [r for r in rooms if not r["has_box"]]
    # What a bare-noun rule would answer (its first stand-in) where no detected box answers "the box".
    first = [r["stand_ins"][0] for r in rooms if r["stand_ins"] and not r["answers"]["the box"]["confirmed"]]
    out = {"rooms": len(rooms), "rooms_with_box": len(rooms) - len(without), "rooms_without_box": len(without),
           "stand_ins": len(stand), "stand_ins_on_a_box": per_gt.get(box_label, 0),
           "stand_in_precision": round(per_gt.get(box_label, 0) / len(stand), 3) if stand else None,
           "stand_ins_by_gt": dict(sorted(per_gt.items(), key=lambda kv: -kv[1])),
           "rooms_without_box_with_a_stand_in": sum(bool(r["stand_ins"]) for r in without),
           "rooms_where_a_rule_would_answer": len(first),
           "rule_answer_on_a_box": sum(s["gt"] == box_label for s in first),
           "rule_answers_by_gt": {g: sum(s["gt"] == g for s in first) for g in sorted({s["gt"] for s in first})},
           "rooms_with_a_detected_box": sum(r["answers"]["the box"]["confirmed"] for r in rooms)}
    for text in QUERIES:
        rows = [r["answers"][text] for r in rooms]
        out[text] = {"answered": sum(a["answered"] for a in rows),
                     "answered_unconfirmed": sum(a["answered"] and a["unconfirmed"] for a in rows),
                     "answered_on_a_box": sum(a["answered"] and a["gt"] == box_label for a in rows),
                     "answered_in_rooms_without_box": sum(a["answered"] for a, r in zip(rows, rooms) if not r["has_box"])}
    return out


def without_boxes(room):
    """The room with its Box instances, and what stands on them, taken out (geometry and ground truth)."""
    import dataclasses

    gone = {i.instance_id for i in room.instances if i.label == "Box"}
    gone |= {i.instance_id for i in room.instances if i.support_id in gone}
    return dataclasses.replace(room, primitives=tuple(p for p in room.primitives if p.instance_id not in gone),
                               instances=tuple(i for i in room.instances if i.instance_id not in gone))


def run_sim(furnished: int, relational: int, boxless_furnished: int = 0, boxless_relational: int = 0) -> dict:
    from mllm3d_ros.backends.base import build_backend
    from mllm3d_ros.core.memory.map_objects import MapObjectProposer, chain_proposers
    from mllm3d_ros.core.memory.object_memory import ObjectMemory
    from mllm3d_ros.core.memory.proposal_worker import ProposalWorker
    from mllm3d_ros.sources.simulator import generate_relational_room, generate_room, relational_trajectory, trajectory

    from benchmarks.sim_offline import SIM as SIM_FURNISHED
    from benchmarks.spatial import SIM as SIM_RELATIONAL

    model = build_backend("offline")
    rooms = [("furnished", s, generate_room(s), SIM_FURNISHED, 48) for s in range(furnished)]
    rooms += [("relational", s, generate_relational_room(s), SIM_RELATIONAL, 40) for s in range(relational)]
    rooms += [("furnished, no box", s, generate_room(s), SIM_FURNISHED, 48) for s in range(boxless_furnished)]
    rooms += [("relational, no box", s, generate_relational_room(s), SIM_RELATIONAL, 40)
              for s in range(boxless_relational)]
    out = []
    try:
        for kind, seed, layout, sim_config, frames in rooms:
            room = layout if kind.startswith("furnished") else layout.room
            poses = trajectory(room, frames) if kind.startswith("furnished") else relational_trajectory(layout, frames)
            if kind.endswith("no box"):
                room = without_boxes(room)
            mapper, snapshot, gt_ids = fuse_sim_room(room, poses, sim_config)
            infos = [i for i in room.instances if np.count_nonzero(gt_ids == i.instance_id) >= MIN_GT_POINTS]
            gts = {str(i.instance_id): np.flatnonzero(gt_ids == i.instance_id) for i in infos}
            labels = {str(i.instance_id): i.label for i in infos}
            memory = ObjectMemory()
            worker = ProposalWorker(memory, chain_proposers(model.propose, MapObjectProposer(mapper.snapshot).propose),
                                    mapper.keyframe_store.get)
            for kf in mapper.keyframes():
                worker.process_one(kf.keyframe_id)
            row = {"kind": kind, "seed": seed, **score_memory(memory, snapshot, model, gts, labels)}
            out.append(row)
            print(f"{kind} room {seed}: box {'yes' if row['has_box'] else 'no'}, stand-ins "
                  f"{[s['gt'] for s in row['stand_ins']]}, 'the box' -> {row['answers']['the box']}", flush=True)
    finally:
        model.close()
    kinds = {k: _summary([r for r in out if r["kind"] == k]) for k in dict.fromkeys(r["kind"] for r in out)}
    return {"all": _summary(out), **kinds, "rooms": out}


def run_kitchen(dataset: Path) -> dict:
    from benchmarks.real_annotations import gt_masks, load_annotations
    from mllm3d_ros.offline_segment import RecordingSession
    from mllm3d_ros.sources.dataset import open_dataset

    annotations = load_annotations(map_T_world=open_dataset(dataset, max_frames=1).map_T_world)
    with RecordingSession(dataset, "offline", show_progress=False) as session:
        snapshot = session.mapper.snapshot()
        masks = gt_masks(snapshot.points_world_m, annotations.instances)
        gts = {i.instance_id: np.flatnonzero(masks[i.instance_id]) for i in annotations.instances}
        # The annotation's ids name the objects ("plastic_box", "mug_left"): the box is the Box.
        labels = {i.instance_id: ("Box" if i.instance_id == "plastic_box" else i.instance_id)
                  for i in annotations.instances}
        row = score_memory(session.memory, snapshot, session.model, gts, labels)
    print(f"kitchen: stand-ins {[s['gt'] for s in row['stand_ins']]}, 'the box' -> {row['answers']['the box']}",
          flush=True)
    return {"dataset": str(dataset), **_summary([row]), "room": row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--rooms", type=int, default=3, help="furnished rooms 0..N-1")
    parser.add_argument("--relational-rooms", type=int, default=10, help="relational rooms 0..N-1")
    parser.add_argument("--boxless-rooms", type=int, default=3, help="furnished rooms 0..N-1 without their boxes")
    parser.add_argument("--boxless-relational-rooms", type=int, default=10,
                        help="relational rooms 0..N-1 without their boxes")
    parser.add_argument("--no-kitchen", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    report = {"machine": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
              "sim": run_sim(args.rooms, args.relational_rooms, args.boxless_rooms,
                                                      args.boxless_relational_rooms)}
    if not args.no_kitchen:
        report["kitchen"] = (run_kitchen(KITCHEN) if KITCHEN.is_dir()
                             else {"skipped": f"dataset folder {KITCHEN} not found (see ../shared/data/README.md)"})
    report["seconds"] = round(time.monotonic() - t0, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    for name, summary in report["sim"].items():
        if name != "rooms":
            print(name, json.dumps(summary))
    if "kitchen" in report and "skipped" not in report["kitchen"]:
        print("kitchen", json.dumps({k: v for k, v in report["kitchen"].items() if k not in ("room", "dataset")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
