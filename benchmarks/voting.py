"""Benchmark of multi-view voting against three baselines on simulated rooms.

    python -m benchmarks.voting --json PATH [--quick]

Per scene (seeded `generate_room`): 48 frames rendered along `trajectory`, fused into the product's
TSDF map (`TsdfMap`, 3 cm voxels) whose surface points are the map; every 3rd frame is a keyframe
candidate; `select_views` picks 8 (its first 4 are exactly the 4-view selection, the greedy being
prefix-consistent). Ground truth per map point is the simulator's nearest surface instance within
the TSDF truncation band (GT_BAND_M; a 3 cm labelling is reported alongside in the JSON).
Queries: up to 5 objects per scene seen by at least 2 of the 4 selected views (>= 300 GT pixels,
>= 150 map points), drawn with the scene's seed. The simulated segmenter (eval only) degrades the GT
masks: boundary noise (erode/dilate up to 2 px at 320x240, 1 px jitter), 10 % missed views, 5 %
wrong-instance picks, hallucinations at rate p. Methods, on the same predictions:
- voting: `MultiViewVoter` (top-ranked object);
- voting_refined: the product's `QueryPipeline` over the whole keyframe pool: 4 coverage views, then
  up to 4 aimed at the first vote's candidates (`refine_views`), voted together;
- best_view: the single most confident mask, lifted to the points its view sees;
- union: the union of every mask lifted to the points its view sees;
- majority_no_vis: per point, the views whose image it falls in (valid depth, no occlusion test)
  vote in-mask vs out-of-mask; kept on a strict majority.
Times are the 3D step only (the 2D model excluded), per query, p50.
Instance level (voting_refined only: the product's ranked object list): AP at IoU 0.25 / 0.5 (ScanNet
style, `eval.metrics.instance_scores`), precision and recall of the whole list against the scene's GT
instances of the target's class (those with >= MIN_GT_POINTS map points; ap25, ap50, precision25,
recall25, precision50, recall50), and the same against the target instance alone (`target_only`). The
simulated segmenter answers about the one target instance, so recall against the class is bounded by
1 / (instances of the class) unless a hallucination lands on a sibling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from mllm3d_ros.core.query.pipeline import QueryConfig, QueryPipeline
from mllm3d_ros.core.mapping.tsdf_map import TsdfMap, TsdfMapConfig
from mllm3d_ros.core.types import Keyframe, MapSnapshot, QueryResult, ViewPredictions
from mllm3d_ros.core.query.view_selection import ViewSelectionConfig, select_views
from mllm3d_ros.core.memory.evidence import lift_masks
from mllm3d_ros.core.visibility import project_to_view
from mllm3d_ros.core.query.voting import MultiViewVoter
from mllm3d_ros.eval.metrics import instance_scores, point_iou, summarize
from mllm3d_ros.eval.sim_segmenter import SimSegmenter, SimSegmenterConfig, SimView
from mllm3d_ros.sources.simulator import STRUCTURE_ID, SimConfig, Simulator, generate_room, trajectory

RATES = (0.0, 0.15, 0.3, 0.5)
METHODS = ("voting", "voting_refined", "best_view", "union", "majority_no_vis")
VIEW_COUNTS = (4, 8)
SIM = SimConfig(width=320, height=240, fx=262.5, fy=262.5, cx=159.5, cy=119.5, nthreads=2)
VOXEL_M = 0.03
# A map point is labelled with the nearest true surface's instance when within the TSDF truncation
# band (4 voxels): fusion places surface points only where observations of a surface fall, so a point
# farther than that from every true surface is an artefact of none of them (labelled structure).
GT_BAND_M = 4 * VOXEL_M
# A GT instance of the target's class counts for recall when the map holds this many of its points.
MIN_GT_POINTS = 50
INSTANCE_KEYS = ("ap25", "ap50", "precision25", "recall25", "precision50", "recall50")


@dataclass(frozen=True, eq=False)
class Scene:
    """One simulated room ready for queries: map, GT label per map point, views and their GT ids."""

    seed: int
    snapshot: MapSnapshot
    gt_ids: np.ndarray  # (N,) instance per map point
    keyframes: tuple[Keyframe, ...]  # the 8 selected, in selection order
    instance_ids: tuple[np.ndarray, ...]  # GT per pixel of each selected keyframe
    targets: tuple[int, ...]
    pool: tuple[Keyframe, ...]  # every keyframe candidate (what a query may choose from)
    pool_ids: dict[int, np.ndarray]  # keyframe id -> GT per pixel
    gt_ids_3cm: np.ndarray  # the stricter labelling (one voxel), reported alongside
    labels: dict[int, str]  # instance id -> class (eval only)


class PoolSource:
    """The pipeline's MapSource over a fixed snapshot and keyframe pool."""

    def __init__(self, snapshot: MapSnapshot, pool: tuple[Keyframe, ...]) -> None:
        self._snapshot, self._pool = snapshot, pool

    def snapshot(self) -> MapSnapshot:
        return self._snapshot

    def keyframes(self) -> tuple[Keyframe, ...]:
        return self._pool


def build_scene(seed: int, targets_per_scene: int) -> Scene:
    room = generate_room(seed)
    sim = Simulator(room, SIM)
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=VOXEL_M, depth_max_m=6.0, block_budget=60_000))
    pool, pool_ids = [], []
    for k, pose in enumerate(trajectory(room, 48)):
        rendered = sim.render(pose, stamp_ns=k)
        tsdf.integrate(rendered.frame)
        if k % 3 == 0:
            f = rendered.frame
            pool.append(Keyframe(k, f.stamp_ns, f.world_T_camera, f.intrinsics, f.color_rgb, f.depth_m))
            pool_ids.append(rendered.instance_ids)
    snapshot = tsdf.snapshot()
    labels = sim.closest_instances(snapshot.points_world_m, max_distance_m=GT_BAND_M)
    gt_ids = labels.instance_ids
    gt_ids_3cm = np.where(labels.distance_m <= VOXEL_M, gt_ids, STRUCTURE_ID)
    chosen = select_views(pool, snapshot.points_world_m, ViewSelectionConfig(max_views=8, min_gain_frac=0.0))
    order = [next(i for i, kf in enumerate(pool) if kf.keyframe_id == c) for c in chosen]
    keyframes, instance_ids = tuple(pool[i] for i in order), tuple(pool_ids[i] for i in order)
    candidates = []
    for info in room.instances:
        iid = info.instance_id
        seen_in = sum(np.count_nonzero(ids == iid) >= 300 for ids in instance_ids[:4])
        if iid != STRUCTURE_ID and seen_in >= 2 and np.count_nonzero(gt_ids == iid) >= 150:
            candidates.append(iid)
    rng = np.random.default_rng(seed)
    targets = tuple(int(t) for t in rng.permutation(candidates)[:targets_per_scene])
    return Scene(seed, snapshot, gt_ids, keyframes, instance_ids, targets, tuple(pool),
                 {kf.keyframe_id: ids for kf, ids in zip(pool, pool_ids)}, gt_ids_3cm, room.labels)


def _lifted(snapshot: MapSnapshot, keyframes, views, depth_tolerance_m=0.05, depth_tolerance_frac=0.03):
    by_id = {kf.keyframe_id: kf for kf in keyframes}
    out = []
    for view in views:
        proj = project_to_view(snapshot.points_world_m, by_id[view.keyframe_id], depth_tolerance_m,
                               depth_tolerance_frac)
        out.append((proj, lift_masks(proj, [p.mask for p in view.predictions]), view))
    return out


def best_view(snapshot, keyframes, views) -> np.ndarray:
    candidates = [(p.confidence, view) for view in views for p in view.predictions]
    if not candidates:
        return np.zeros(0, np.int64)
    _, view = max(candidates, key=lambda c: c[0])
    best = max(view.predictions, key=lambda p: p.confidence)
    proj, hits, _ = _lifted(snapshot, keyframes, [ViewPredictions(view.keyframe_id, (best,))])[0]
    return proj.visible_indices[hits[0]]


def union(snapshot, keyframes, views) -> np.ndarray:
    parts = [proj.visible_indices[hits.any(axis=0)] for proj, hits, _ in _lifted(snapshot, keyframes, views)]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def majority_no_visibility(snapshot, keyframes, views) -> np.ndarray:
    # Any valid depth at the pixel counts as "sees it": no occlusion test (tolerance effectively infinite).
    yes = np.zeros(snapshot.num_points, np.int32)
    no = np.zeros(snapshot.num_points, np.int32)
    for proj, hits, _ in _lifted(snapshot, keyframes, views, depth_tolerance_m=1e6, depth_tolerance_frac=0.0):
        inside = hits.any(axis=0)
        yes[proj.visible_indices[inside]] += 1
        no[proj.visible_indices[~inside]] += 1
    return np.flatnonzero((yes > no) & (yes > 0))


def run(num_scenes: int, targets_per_scene: int) -> dict:
    voter = MultiViewVoter()
    ious = {(r, m, v): [] for r in RATES for m in METHODS for v in VIEW_COUNTS}
    times = {(r, m, v): [] for r in RATES for m in METHODS for v in VIEW_COUNTS}
    ious_3cm = {(r, m, v): [] for r in RATES for m in METHODS for v in VIEW_COUNTS}
    inst = {(r, which): {k: [] for k in INSTANCE_KEYS} for r in RATES for which in ("class", "target")}
    map_points, t0, queries = [], time.perf_counter(), 0
    for seed in range(num_scenes):
        scene = build_scene(seed, targets_per_scene)
        map_points.append(scene.snapshot.num_points)
        print(f"scene {seed}: {scene.snapshot.num_points} map points, targets {scene.targets}", flush=True)
        sim_views = [SimView(kf.keyframe_id, ids) for kf, ids in zip(scene.keyframes, scene.instance_ids)]
        for target in scene.targets:
            queries += 1
            gt, gt_3cm = scene.gt_ids == target, scene.gt_ids_3cm == target
            class_gt = [scene.gt_ids == i for i, label in scene.labels.items()
                        if label == scene.labels[target] and np.count_nonzero(scene.gt_ids == i) >= MIN_GT_POINTS]
            for rate in RATES:
                cfg = SimSegmenterConfig(hallucination_rate=rate)

                def segmenter() -> SimSegmenter:  # the same seeded "model" for every method
                    return SimSegmenter(cfg, seed=seed * 100_003 + target * 101 + int(rate * 100),
                                        background_ids=frozenset({STRUCTURE_ID}))

                answer = segmenter().segment(sim_views, target)
                for n in VIEW_COUNTS:
                    views, kfs = answer.views[:n], scene.keyframes[:n]
                    methods = {
                        "voting": lambda: _top(voter.vote(scene.snapshot, kfs, views, answer.query_embedding)),
                        "best_view": lambda: best_view(scene.snapshot, kfs, views),
                        "union": lambda: union(scene.snapshot, kfs, views),
                        "majority_no_vis": lambda: majority_no_visibility(scene.snapshot, kfs, views),
                    }
                    for name, method in methods.items():
                        start = time.perf_counter()
                        predicted = method()
                        times[(rate, name, n)].append((time.perf_counter() - start) * 1e3)
                        ious[(rate, name, n)].append(point_iou(predicted, gt))
                        ious_3cm[(rate, name, n)].append(point_iou(predicted, gt_3cm))
                result, ms = refined(scene, target, segmenter())
                predicted = _top(result)
                for which, gts in (("class", class_gt), ("target", [gt])):
                    for key, value in _instance_row(result, gts).items():
                        inst[(rate, which)][key].append(value)
                for n in VIEW_COUNTS:  # one figure (4 + up to 4 views), shown in both columns
                    times[(rate, "voting_refined", n)].append(ms)
                    ious[(rate, "voting_refined", n)].append(point_iou(predicted, gt))
                    ious_3cm[(rate, "voting_refined", n)].append(point_iou(predicted, gt_3cm))
    results = {}
    for rate in RATES:
        for name in METHODS:
            row = {}
            for n in VIEW_COUNTS:
                s = summarize(ious[(rate, name, n)])
                strict = summarize(ious_3cm[(rate, name, n)])
                row[f"{n}_views"] = {"acc25": round(s.acc25, 4), "acc50": round(s.acc50, 4), "miou": round(s.miou, 4),
                                     "query_ms_p50": round(float(np.median(times[(rate, name, n)])), 2),
                                     "gt_3cm": {"acc25": round(strict.acc25, 4), "acc50": round(strict.acc50, 4),
                                                "miou": round(strict.miou, 4)}}
                if name == "voting_refined":  # the same list in both columns, as its IoU
                    row[f"{n}_views"].update({k: round(float(np.mean(v)), 4) for k, v in inst[(rate, "class")].items()})
                    row[f"{n}_views"]["target_only"] = {k: round(float(np.mean(v)), 4)
                                                        for k, v in inst[(rate, "target")].items()}
            results.setdefault(f"{rate:g}", {})[name] = row
    return {
        "machine": platform.node(), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "map": f"TsdfMap {VOXEL_M} m voxels (product path), 48 frames at {SIM.width}x{SIM.height}",
        "map_points_median": int(np.median(map_points)), "scenes": num_scenes, "queries": queries,
        "boundary_noise_px": SimSegmenterConfig().boundary_noise_px,
        "instance_gt": f"GT instances of the target's class with >= {MIN_GT_POINTS} map points (voting_refined)",
        "wall_s": round(time.perf_counter() - t0, 1),
        "results": results,
    }


def refined(scene: Scene, target: int, segmenter: SimSegmenter) -> tuple[QueryResult, float]:
    """The product's QueryPipeline: 4 coverage views, then up to 4 aimed at the candidates (refine_views).

    Returns the pipeline's result and its own time without the 2D model (ms).
    """
    model_s = [0.0]

    def segment_fn(views, text):
        t = time.perf_counter()
        out = segmenter.segment([SimView(v.keyframe_id, scene.pool_ids[v.keyframe_id]) for v in views], target)
        model_s[0] += time.perf_counter() - t
        return out

    pipeline = QueryPipeline(PoolSource(scene.snapshot, scene.pool), segment_fn,
                             QueryConfig(default_max_views=4, refine_views=4, default_min_confidence=1e-6),
                             view_selection=ViewSelectionConfig(min_gain_frac=0.0))
    start = time.perf_counter()
    result = pipeline.run(f"instance {target}")
    ms = (time.perf_counter() - start - model_s[0]) * 1e3
    return result, ms


def _instance_row(result: QueryResult, gt_masks: list[np.ndarray]) -> dict[str, float]:
    """AP, precision and recall of the ranked object list at IoU 0.25 and 0.5."""
    preds = [o.point_indices for o in result.objects]
    confs = [o.confidence for o in result.objects]
    row = {}
    for t, tag in ((0.25, "25"), (0.5, "50")):
        s = instance_scores(preds, confs, gt_masks, t)
        row.update({f"ap{tag}": s.ap, f"precision{tag}": s.precision, f"recall{tag}": s.recall})
    return row


def _top(result) -> np.ndarray:
    return result.objects[0].point_indices if result.objects else np.zeros(0, np.int64)


def table(report: dict) -> str:
    lines = ["| p | method | Acc@0.25 (4v) | Acc@0.5 (4v) | mIoU (4v) | mIoU (8v) | ms p50 4v | ms p50 8v |",
             "|---|---|---|---|---|---|---|---|"]
    for rate, methods in report["results"].items():
        for name, row in methods.items():
            a, b = row["4_views"], row["8_views"]
            lines.append(f"| {rate} | {name} | {a['acc25']:.3f} | {a['acc50']:.3f} | {a['miou']:.3f} | {b['miou']:.3f} "
                         f"| {a['query_ms_p50']:.1f} | {b['query_ms_p50']:.1f} |")
    return "\n".join(lines)


def instance_table(report: dict) -> str:
    lines = ["| p | AP25 | AP50 | precision@0.25 | recall@0.25 | target only: AP25 / precision@0.25 / recall@0.25 |",
             "|---|---|---|---|---|---|"]
    for rate, methods in report["results"].items():
        a = methods["voting_refined"]["4_views"]
        t = a["target_only"]
        lines.append(f"| {rate} | {a['ap25']:.3f} | {a['ap50']:.3f} | {a['precision25']:.3f} | {a['recall25']:.3f} "
                     f"| {t['ap25']:.3f} / {t['precision25']:.3f} / {t['recall25']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="3 scenes x 3 targets instead of 10 x 5")
    args = parser.parse_args()
    report = run(3, 3) if args.quick else run(10, 5)
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    print(table(report))
    print("\nvoting_refined, instance level (the returned list against the target class's GT instances):")
    print(instance_table(report))
    print(f"{report['queries']} queries, median map {report['map_points_median']} points, {report['wall_s']} s")


if __name__ == "__main__":
    main()
