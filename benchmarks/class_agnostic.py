"""Class-agnostic recall: are the objects standing on a support separate instances of the memory?

    python -m benchmarks.class_agnostic --json PATH [--rooms 3] [--first-room 0] [--relational-rooms 10]
                                        [--no-offline] [--no-kitchen] [--quick] [--explain]

Simulated rooms: the furnished rooms of benchmarks.sim_offline (`generate_room(seed)`, 48 frames at 320x240)
and the relational rooms of benchmarks.spatial (`generate_relational_room(seed)`, 40 frames), fused by the
product's `Mapper`; the object memory built by `offline_segment.build_memory` with
  (a) the map's class-agnostic objects alone (`MapObjectProposer` beside a detector that finds nothing);
  (b) the product's proposals: the offline backend's with the map's (what `mllm3d segment` and the memory
      node run);
  (c) the offline backend's alone (the memory before class-agnostic proposals), for comparison.
Ground truth, evaluation only: each map point takes the nearest true surface's instance within one voxel
(`Simulator.closest_instances`); every simulated object stands on a support (the floor, or the instance it
was placed on), and counts when the map holds at least MIN_GT_POINTS of its points. A memory instance's
points are those an answer returns (`MemoryResolver.candidate_objects`). Instances and objects are matched
one to one, best IoU first, at IoU >= 0.25: recall = matched objects / objects ("found as separate
instances": two objects in one instance count once), whatever the instance's label; also per class, per
support (floor / elevated) and the share of unlabelled instances that match an object (precision).

The real kitchen (`RecordingSession` on ../shared/data/7scenes-redkitchen, the `mllm3d segment` path):
the same matching against the hand-made boxes (benchmarks/annotations/redkitchen.json); reported per
annotated instance, with the box, both mugs and the game controller as the target.
Also: the map proposer's milliseconds per keyframe (the shared machine's, named in the JSON).

--explain (map-only run): for every missed object, where it was lost (`explain_miss`) and the instance that
covers most of it (IoU, share of the object, what else it holds): each mask the map's proposer rendered is
lifted through its keyframe's depth and read against the ground truth (evaluation only), so that a miss is
  - "never_masked": no mask of the proposer held mostly this object (out of view, too few pixels, or it went
    with the support or a wall);
  - "never_apart": masks held it, always with other objects (the map's segmentation joined it to them);
  - "one_view": held apart by a mask in one keyframe only (the memory confirms an instance in two);
  - "memory": held apart in two keyframes or more, and still no instance of its own (the memory's voxels joined
    it with its neighbours, or its instance covers too much of them).
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

MIN_GT_POINTS = 25
IOU = 0.25
KITCHEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "7scenes-redkitchen"
KITCHEN_TARGETS = ("plastic_box", "mug_left", "mug_middle", "game_controller")


def fuse_sim_room(room, poses, sim_config):
    """A simulated room fused by the product's `Mapper` along `poses`: (mapper, snapshot, gt_ids), gt_ids the
    ground-truth instance of each map point (the nearest true surface within one voxel; evaluation only)."""
    from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
    from mllm3d_ros.core.mapping.mapper import Mapper
    from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig
    from mllm3d_ros.sources.simulator import SimConfig, Simulator

    sim = Simulator(room, sim_config)
    mapper = Mapper(TsdfMapConfig(), KeyframeConfig(image_scale=1.0))
    for k, pose in enumerate(poses):
        mapper.process(sim.render(pose, stamp_ns=k * 33_333_333).frame)
    snapshot = mapper.snapshot()
    gt_ids = Simulator(room, SimConfig(noise=False)).closest_instances(
        snapshot.points_world_m, max_distance_m=mapper.map.config.voxel_size_m).instance_ids
    return mapper, snapshot, gt_ids


def _null_detector(views):
    from mllm3d_ros.core.types import ViewPredictions

    return tuple(ViewPredictions(v.keyframe_id) for v in views)


class _Model:
    """A proposer that finds nothing: the memory then holds the map's class-agnostic objects alone."""

    propose = staticmethod(_null_detector)


def match(pred_sets: list[np.ndarray], gt_sets: list[np.ndarray], threshold: float = IOU) -> list[tuple[int, int, float]]:
    """One-to-one matches (pred index, gt index, IoU), best IoU first, IoU >= threshold; sets of point indices."""
    pairs = []
    for i, p in enumerate(pred_sets):
        for j, g in enumerate(gt_sets):
            inter = np.intersect1d(p, g, assume_unique=True).shape[0]
            if inter:
                iou = inter / (p.shape[0] + g.shape[0] - inter)
                if iou >= threshold:
                    pairs.append((iou, i, j))
    used_p, used_g, out = set(), set(), []
    for iou, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            out.append((i, j, float(iou)))
    return out


PURE = 0.5  # a mask holds an object "apart" when at least this share of what it lifts is that object


def explain_miss(pure_views: int, any_views: int) -> str:
    """Where a missed object was lost (see the module doc), from the keyframes in which a rendered mask held
    mostly it (pure_views) and those in which a mask held some of it (any_views)."""
    if any_views == 0:
        return "never_masked"
    if pure_views == 0:
        return "never_apart"
    return "one_view" if pure_views == 1 else "memory"


class _MaskRecorder:
    """Wraps a ProposeFn; per ground-truth instance, the keyframes in which a rendered mask lifted mostly it
    (pure) or some of it (any, at least a tenth of the mask). Evaluation only: reads the ground truth."""

    def __init__(self, propose, keyframe_fn, points_world_m, gt_ids, voxel_m: float = 0.02) -> None:
        from mllm3d_ros.core.geometry import voxel_keys

        self._propose, self._keyframe_fn, self._gt, self._voxel = propose, keyframe_fn, gt_ids, voxel_m
        keys = voxel_keys(points_world_m, voxel_m)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        self.pure: dict[int, set[int]] = {}
        self.any: dict[int, set[int]] = {}

    def __call__(self, views):
        from mllm3d_ros.core.geometry import transform_points, unproject_depth, voxel_keys

        answers = self._propose(views)
        for view, answer in zip(views, answers):
            keyframe = self._keyframe_fn(view.keyframe_id)
            for pred in answer.predictions:
                cam, _ = unproject_depth(keyframe.depth_m, keyframe.intrinsics, mask=pred.mask)
                if cam.shape[0] == 0:
                    continue
                keys = voxel_keys(transform_points(keyframe.world_T_camera, cam.astype(np.float64)), self._voxel)
                pos = np.minimum(np.searchsorted(self._sorted, keys), self._sorted.shape[0] - 1)
                ids = self._gt[self._order[pos[self._sorted[pos] == keys]]]
                if ids.shape[0] == 0:
                    continue
                uniq, counts = np.unique(ids, return_counts=True)
                for gid, c in zip(uniq.tolist(), counts.tolist()):
                    if c >= 0.1 * ids.shape[0]:
                        self.any.setdefault(gid, set()).add(view.keyframe_id)
                    if c >= PURE * ids.shape[0]:
                        self.pure.setdefault(gid, set()).add(view.keyframe_id)
        return answers


def _explain_room(room, objects, sets, gt_ids, rows, recorder) -> list[dict]:
    """Per missed object: the stage it was lost at and the instance covering most of it."""
    labels = {i.instance_id: i.label for i in room.instances}
    out = []
    for r in rows:
        if r["found"]:
            continue
        gid = r["instance_id"]
        g = np.flatnonzero(gt_ids == gid)
        best = None
        for k, s in enumerate(sets):
            inter = np.intersect1d(s, g, assume_unique=True).shape[0]
            if inter and (best is None or inter > best[0]):
                best = (inter, k)
        cover = {}
        if best is not None:
            inter, k = best
            uniq, counts = np.unique(gt_ids[sets[k]], return_counts=True)
            held = sorted(zip(counts.tolist(), uniq.tolist()), reverse=True)[:4]
            cover = {"iou": round(inter / (sets[k].shape[0] + g.shape[0] - inter), 3), "share_of_object": round(inter / g.shape[0], 3),
                     "instance_points": int(sets[k].shape[0]), "label": objects[k].label,
                     "holds": [f"{labels.get(i, 'structure')}#{i}:{c}" for c, i in held]}
        pure, seen = len(recorder.pure.get(gid, ())), len(recorder.any.get(gid, ()))
        out.append({"instance_id": gid, "class": r["class"], "stage": explain_miss(pure, seen), "pure_mask_views": pure,
                    "mask_views": seen, "best_instance": cover})
    return out


def _memory_sets(memory, snapshot):
    from mllm3d_ros.core.query.memory_query import MemoryResolver

    objects = memory.objects()
    resolver = MemoryResolver(memory, lambda texts: np.zeros((len(texts), 1), np.float32))
    sets, kept = [], []
    for obj in objects:
        answer = resolver.candidate_objects([obj], snapshot)
        if answer:
            sets.append(np.unique(answer[0].point_indices))
            kept.append(obj)
    return kept, sets


def score_room(room, memory, snapshot, gt_ids) -> dict:
    """Recall of the room's objects among the memory's instances (see the module doc)."""
    objects, sets = _memory_sets(memory, snapshot)
    infos = [i for i in room.instances if np.count_nonzero(gt_ids == i.instance_id) >= MIN_GT_POINTS]
    gts = [np.flatnonzero(gt_ids == i.instance_id) for i in infos]
    matches = match(sets, gts)
    found = {j: (i, iou) for i, j, iou in matches}
    rows = []
    for j, info in enumerate(infos):
        i, iou = found.get(j, (-1, 0.0))
        rows.append({"instance_id": info.instance_id, "class": info.label,
                     "support": "floor" if info.support_id == 0 else "elevated",
                     "found": i >= 0, "iou": round(iou, 3), "by": "" if i < 0 else objects[i].label,
                     "unlabelled": bool(i >= 0 and objects[i].unlabelled)})
    matched_preds = {i for i, _, _ in matches}
    unlabelled = [k for k, o in enumerate(objects) if o.unlabelled]
    return {"room": room.seed, "objects": len(infos), "found": len(matches), "instances": len(objects),
            "unlabelled_instances": len(unlabelled), "unlabelled_matched": sum(k in matched_preds for k in unlabelled),
            "rows": rows}


def _summary(rooms: list[dict]) -> dict:
    rows = [r for room in rooms for r in room["rows"]]
    per_class: dict[str, list[int]] = {}
    for r in rows:
        per_class.setdefault(r["class"], [0, 0])
        per_class[r["class"]][0] += r["found"]
        per_class[r["class"]][1] += 1
    unl = sum(room["unlabelled_instances"] for room in rooms)
    return {"objects": len(rows), "found": sum(r["found"] for r in rows),
            "recall": round(sum(r["found"] for r in rows) / max(1, len(rows)), 4),
            "recall_floor": round(np.mean([r["found"] for r in rows if r["support"] == "floor"] or [0.0]), 4),
            "recall_elevated": round(np.mean([r["found"] for r in rows if r["support"] == "elevated"] or [0.0]), 4),
            "found_by_unlabelled": sum(r["unlabelled"] for r in rows),
            "unlabelled_instances": unl,
            "unlabelled_precision": round(sum(room["unlabelled_matched"] for room in rooms) / max(1, unl), 4),
            "per_class_found_of": {k: f"{n}/{t}" for k, (n, t) in sorted(per_class.items())},
            **({"missed_by_stage": _stages([m for room in rooms for m in room["misses"]])}
               if all("misses" in room for room in rooms) and rooms else {})}


def _stages(misses: list[dict]) -> dict[str, dict[str, int]]:
    """Missed objects per stage, per class."""
    out: dict[str, dict[str, int]] = {}
    for m in misses:
        out.setdefault(m["stage"], {}).setdefault(m["class"], 0)
        out[m["stage"]][m["class"]] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def run_sim(furnished: int, relational: int, offline: bool, first_room: int = 0, explain: bool = False) -> dict:
    from mllm3d_ros.core.memory.map_objects import MapObjectProposer
    from mllm3d_ros.core.memory.object_memory import ObjectMemory
    from mllm3d_ros.core.memory.proposal_worker import ProposalWorker
    from mllm3d_ros.core.memory.map_objects import chain_proposers
    from mllm3d_ros.sources.simulator import generate_relational_room, generate_room, relational_trajectory, trajectory

    from benchmarks.sim_offline import SIM as SIM_FURNISHED
    from benchmarks.spatial import SIM as SIM_RELATIONAL

    model = None
    if offline:
        from mllm3d_ros.backends.base import build_backend

        model = build_backend("offline")
    rooms = [("furnished", s, generate_room(s), SIM_FURNISHED, 48) for s in range(first_room, first_room + furnished)]
    rooms += [("relational", s, generate_relational_room(s), SIM_RELATIONAL, 40) for s in range(relational)]
    out: dict[str, dict[str, list]] = {"map_only": {}, "offline_and_map": {}, "offline_only": {}}
    ms: list[float] = []
    try:
        for kind, seed, layout, sim_config, frames in rooms:
            room = layout if kind == "furnished" else layout.room
            poses = trajectory(room, frames) if kind == "furnished" else relational_trajectory(layout, frames)
            mapper, snapshot, gt_ids = fuse_sim_room(room, poses, sim_config)
            sources = [("map_only", _null_detector)] + ([("offline_and_map", model.propose), ("offline_only", model.propose)]
                                                       if model else [])
            for name, detector in sources:
                memory = ObjectMemory()
                proposer = MapObjectProposer(mapper.snapshot)
                propose = detector if name == "offline_only" else chain_proposers(detector, proposer.propose)
                recorder = None
                if explain and name == "map_only":
                    propose = recorder = _MaskRecorder(propose, mapper.keyframe_store.get, snapshot.points_world_m, gt_ids)
                worker = ProposalWorker(memory, propose, mapper.keyframe_store.get)
                for kf in mapper.keyframes():
                    worker.process_one(kf.keyframe_id)
                if name == "map_only":
                    ms.append(proposer.stats.ms_p50)
                scored = score_room(room, memory, snapshot, gt_ids)
                if recorder is not None:
                    objects, sets = _memory_sets(memory, snapshot)
                    scored["misses"] = _explain_room(room, objects, sets, gt_ids, scored["rows"], recorder)
                out[name].setdefault(kind, []).append(scored)
            line = ", ".join(f"{name} {out[name][kind][-1]['found']}/{out[name][kind][-1]['objects']}"
                             for name, _ in sources)
            print(f"{kind} room {seed}: {line}", flush=True)
    finally:
        if model is not None:
            model.close()
    report = {}
    for name, kinds in out.items():
        if kinds:
            report[name] = {kind: {**_summary(rs), "rooms": rs} for kind, rs in kinds.items()}
            report[name]["all"] = _summary([r for rs in kinds.values() for r in rs])
    report["map_proposer_ms_per_keyframe_p50_median_over_rooms"] = round(float(np.median(ms)), 1) if ms else None
    return report


def run_kitchen(dataset: Path) -> dict:
    from benchmarks.real_annotations import gt_masks, load_annotations
    from mllm3d_ros.offline_segment import RecordingSession
    from mllm3d_ros.sources.dataset import open_dataset

    annotations = load_annotations(map_T_world=open_dataset(dataset, max_frames=1).map_T_world)
    t0 = time.monotonic()
    with RecordingSession(dataset, "offline", show_progress=False) as session:
        memory_s = session.memory_s
        snapshot = session.mapper.snapshot()
        objects, sets = _memory_sets(session.memory, snapshot)
        masks = gt_masks(snapshot.points_world_m, annotations.instances)
        ids = [i.instance_id for i in annotations.instances]
        gts = [np.flatnonzero(masks[i]) for i in ids]
        matches = {j: (i, iou) for i, j, iou in match(sets, gts)}
        rows = {}
        for j, iid in enumerate(ids):
            i, iou = matches.get(j, (-1, 0.0))
            # the best overlap whatever the one-to-one matching, to see what a missed object fell into
            best = max((np.intersect1d(s, gts[j]).shape[0] / max(1, np.union1d(s, gts[j]).shape[0]), k)
                       for k, s in enumerate(sets)) if sets else (0.0, -1)
            rows[iid] = {"found": i >= 0, "iou": round(iou, 3), "label": objects[i].label if i >= 0 else "",
                         "unlabelled": bool(i >= 0 and objects[i].unlabelled),
                         "support": (objects[i].support.kind.value if i >= 0 and objects[i].support else ""),
                         "best_iou_any": round(float(best[0]), 3),
                         "best_label_any": objects[best[1]].label if best[1] >= 0 else ""}
        stats = session.memory.stats
    return {"dataset": str(dataset), "setup_s": round(time.monotonic() - t0, 1), "memory_build_s": round(memory_s, 1),
            "instances": len(objects), "unlabelled_instances": stats.unlabelled, "supports": stats.supports,
            "targets_found_separately": sum(rows[t]["found"] for t in KITCHEN_TARGETS),
            "targets": len(KITCHEN_TARGETS), "per_instance": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--rooms", type=int, default=3, help="furnished rooms FIRST..FIRST+N-1")
    parser.add_argument("--first-room", type=int, default=0, help="the first furnished room (held-out rooms: 3)")
    parser.add_argument("--relational-rooms", type=int, default=10, help="relational rooms 0..N-1")
    parser.add_argument("--no-offline", action="store_true", help="skip (b), the offline backend with the map")
    parser.add_argument("--no-kitchen", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 furnished room, 1 relational, map only, no kitchen")
    parser.add_argument("--explain", action="store_true", help="where each missed object was lost (module doc)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    if args.quick:
        args.rooms, args.relational_rooms, args.no_offline, args.no_kitchen = 1, 1, True, True
    report = {"machine": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
              "iou": IOU, "min_gt_points": MIN_GT_POINTS,
              "sim": run_sim(args.rooms, args.relational_rooms, not args.no_offline, args.first_room, args.explain)}
    if not args.no_kitchen:
        report["kitchen"] = run_kitchen(KITCHEN) if KITCHEN.is_dir() else {"skipped": f"{KITCHEN} not found"}
    report["wall_s"] = round(time.monotonic() - t0, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    for name in ("map_only", "offline_and_map", "offline_only"):
        for kind, s in report["sim"].get(name, {}).items():
            print(f"{name} {kind}: recall {s['found']}/{s['objects']} = {s['recall']:.3f} (floor {s['recall_floor']:.3f}, "
                  f"elevated {s['recall_elevated']:.3f}); unlabelled precision {s['unlabelled_precision']:.3f}; "
                  f"{s['per_class_found_of']}")
            if "missed_by_stage" in s:
                print(f"  missed, by stage: {s['missed_by_stage']}")
    print(f"map proposer ms per keyframe (p50, median over rooms): "
          f"{report['sim']['map_proposer_ms_per_keyframe_p50_median_over_rooms']}")
    if "kitchen" in report and "per_instance" in report["kitchen"]:
        k = report["kitchen"]
        print(f"kitchen: {k['targets_found_separately']}/{k['targets']} targets as separate instances")
        for iid, r in k["per_instance"].items():
            print(f"  {iid}: found {r['found']} IoU {r['iou']} ({r['label']}, support {r['support']}); best any "
                  f"{r['best_iou_any']} ({r['best_label_any']})")
    print(f"{report['wall_s']} s; {report['machine']}, {report['cpu_count']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
