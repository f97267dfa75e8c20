"""What a robot acts on: approach poses, the floor grid, and objects that move.

    python -m benchmarks.robot --json PATH [--rooms 8] [--frames 96] [--quick] [--baseline] [--no-kitchen]

Per simulated room (`generate_room(seed)`, seeds 0..rooms-1): `frames` poses along a two-lap `trajectory`
rendered at 320x240 (as benchmarks.sim_offline), fused by the product's `Mapper` (TSDF with free-space
carving every 10th frame, keyframes at full scale), and an object memory fed each new keyframe as it is
taken (`ProposalWorker.process_one`, as the memory node does) with the simulated proposer
(`SimSegmenter.propose`: ground-truth masks with boundary noise, 10 % misses, 5 % wrong labels, a
hallucination in 30 % of the views). At the start of the second lap up to three scripted scene events
move objects (`SceneEvent`): a chair or a floor box 0.6-1.5 m across the floor, and mugs, cups, bottles,
laptops or books to another spot of their table or desk. Then:
  (a) moved objects: after each keyframe, whether the memory shows the object at its new place (an
      instance of its class with half of its voxels in the new box) and not at its old one (none with half
      in the old box and not in the new); keyframes needed, counted from the first keyframe that saw both
      places (ground truth: the noise-free render of the new state); at the end, "the <class>" through
      `QueryPipeline` + `MemoryResolver`: the new place is returned (a returned object with point IoU >= 0.5
      against the new place's map points) and the old one never (no returned object with half of its
      points in the old box and not in the new); also apart, the moves whose new and old places were each seen
      by two keyframes or more after the event (the memory's min_detections and gone_views). False removals: static objects the memory held when the
      events happened and no longer holds at the end;
  (b) the grid (`build_occupancy_grid` of the final map) against the final room: ground-truth free floor
      cells = cells where the sensor saw the floor (valid depth <= depth_max on the floor, any frame) and no
      object or wall surface is in the height band; ground-truth obstacle cells = cells holding a surface
      of the final room in the band that the sensor saw (furniture legs included); recall of each (also
      without the cells next to an obstacle, and obstacles found within one cell, for reference);
  (c) approach poses: "the chair", "the table", ... for every class the final room holds; for each
      SUCCESS, `plan_approach` on the best object, the robot at the last camera position. A pose is good
      when a cylinder of the robot's radius around it, over the height band, touches no ground-truth
      geometry (Open3D distance queries against the final room's meshes, floor and ceiling excluded), its
      distance to the returned box is within [standoff, max distance], it faces the object (the ground
      truth instance the answer is on, else the returned box) within 15 degrees, and it is reachable from
      the robot on the ground-truth floor (5 cm cells whose column has the robot's radius of clearance,
      8-connected). A query answered with no pose is a correct refusal when the ground truth has no pose
      either: no ground-truth floor cell reachable from the robot lies within [standoff, max distance] of
      the object (the same target box; a furniture passage narrower than the robot's diameter can leave
      an object out of reach). Reported apart: poses good of successful queries (the target's literal
      figure) and right answers (good poses + correct refusals) of successful queries.
  (d) the real kitchen (`../shared/data/7scenes-redkitchen`, all 250 frames, offline backend): approach
      poses for "the chair" / "the table" answers and for the annotated chairs and table
      (`benchmarks/annotations/redkitchen.json`), checked against the map fused from all frames (no
      ground-truth floor exists: the disc of the robot's radius must hold no map surface point in the
      band, the pose must stand on observed floor, be in the band from the annotated box and face it;
      reachability is reported by the product, and the area of the free component the pose is in).
`--baseline` runs the same with these mechanisms off (no carving, no keyframes for scene changes,
the memory's drop of a moved instance's empty voxels off) for the before/after table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time

import numpy as np

from mllm3d_ros.sources.simulator import (STRUCTURE_ID, EventKind, SceneEvent, SimConfig, Simulator, apply_event,
                                          generate_room, instance_points, primitive_mesh, rooms_over_time, trajectory)

SIM = SimConfig(width=320, height=240, fx=262.5, fy=262.5, cx=159.5, cy=119.5, nthreads=2)
RATE_HZ = 30.0
MOVABLE_SMALL = ("Mug", "Coffee cup", "Bottle", "Laptop", "Book")
MOVABLE_FLOOR = ("Chair", "Box")
QUERIES = {"the chair": "Chair", "the table": "Table", "the desk": "Desk", "the mug": "Mug", "the coffee cup": "Coffee cup",
           "the laptop": "Laptop", "the bottle": "Bottle", "the book": "Book", "the computer monitor": "Computer monitor",
           "the computer mouse": "Computer mouse", "the box": "Box"}
MIN_GT_POINTS = 10
FACING_DEG = 15.0


def _yaw_box(center, size, yaw):
    from mllm3d_ros.core.types import OrientedBox3D

    c, s = math.cos(yaw), math.sin(yaw)
    return OrientedBox3D(np.asarray(center, np.float64), np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]),
                         np.asarray(size, np.float64))


def _inside(box, points: np.ndarray, grow_m: float = 0.05) -> np.ndarray:
    local = (np.asarray(points, np.float64) - box.center_world_m) @ box.world_R_box
    return np.all(np.abs(local) <= box.size_m / 2 + grow_m, axis=1)


def _gt_box(info):
    return _yaw_box(info.center_world_m, info.size_m, info.yaw_rad)


# --- scene events ------------------------------------------------------------------------------

def _footprint_overlap(a, b, margin: float) -> bool:
    """Separating-axis test of two yaw boxes' footprints, each grown by margin."""
    def corners(box):
        half = box.size_m[:2] / 2 + margin
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        return local @ box.world_R_box[:2, :2].T + box.center_world_m[:2]

    pa, pb = corners(a), corners(b)
    for poly in (pa, pb):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            axis = np.array([-edge[1], edge[0]])
            if (pa @ axis).max() <= (pb @ axis).min() or (pb @ axis).max() <= (pa @ axis).min():
                return False
    return True


def choose_moves(room, poses, frame_index: int, rng: np.random.Generator, max_moves: int = 3) -> list[SceneEvent]:
    """One floor object (chair or box) 0.6-1.5 m across free floor, and small objects to another free spot
    of their table or desk (ground truth is used here: this is the scenario, not the product)."""
    events = []
    floor = [i for i in room.instances if i.label in MOVABLE_FLOOR and i.support_id == STRUCTURE_ID]
    small = [i for i in room.instances if i.label in MOVABLE_SMALL and i.support_id != STRUCTURE_ID
             and room.instance(i.support_id).label in ("Table", "Desk")]
    cams = np.array([p[:3, 3] for p in poses])[:, :2]
    half_room = np.array(room.size_m) / 2 - 0.15
    for info in rng.permutation(floor)[:1] if floor else []:
        others = [_gt_box(o) for o in room.instances if o.support_id == STRUCTURE_ID and o.instance_id != info.instance_id]
        for _ in range(200):
            dist, ang, dyaw = rng.uniform(0.6, 1.5), rng.uniform(0, 2 * math.pi), rng.uniform(-0.6, 0.6)
            shift = np.array([dist * math.cos(ang), dist * math.sin(ang), 0.0])
            moved = _yaw_box(np.asarray(info.center_world_m) + shift, info.size_m, info.yaw_rad + dyaw)
            corners = np.array([[sx, sy] for sx in (-1, 1) for sy in (-1, 1)]) * moved.size_m[:2] / 2
            world = corners @ moved.world_R_box[:2, :2].T + moved.center_world_m[:2]
            if np.any(np.abs(world) > half_room) or any(_footprint_overlap(moved, o, 0.1) for o in others):
                continue
            if np.min(np.linalg.norm(cams - moved.center_world_m[:2], axis=1)) < 0.4 + max(moved.size_m[:2]) / 2:
                continue  # not in the camera's path
            events.append(SceneEvent(frame_index, info.instance_id, EventKind.MOVE, tuple(shift), dyaw))
            break
    for info in rng.permutation(small):
        if len(events) >= max_moves:
            break
        support = room.instance(info.support_id)
        if any(e.instance_id == support.instance_id for e in events):
            continue
        neighbours = [o for o in room.instances if o.support_id == support.instance_id and o.instance_id != info.instance_id]
        sbox = _gt_box(support)
        r = max(info.size_m[:2]) / 2
        for _ in range(200):
            lx = rng.uniform(-1, 1) * (sbox.size_m[0] / 2 - 0.06 - r)
            ly = rng.uniform(-1, 1) * (sbox.size_m[1] / 2 - 0.06 - r)
            new_xy = sbox.center_world_m[:2] + sbox.world_R_box[:2, :2] @ np.array([lx, ly])
            shift = np.array([*(new_xy - np.asarray(info.center_world_m[:2])), 0.0])
            if np.linalg.norm(shift) < 0.25:
                continue
            if any(np.linalg.norm(new_xy - np.asarray(o.center_world_m[:2])) < r + max(o.size_m[:2]) / 2 + 0.03
                   for o in neighbours):
                continue
            events.append(SceneEvent(frame_index, info.instance_id, EventKind.MOVE, tuple(shift), rng.uniform(-1, 1)))
            break
    return events


# --- ground truth ------------------------------------------------------------------------------

def _structure_kind(p, room) -> str:
    if p.instance_id != STRUCTURE_ID:
        return "object"
    if p.center_world_m[2] < 0:
        return "floor"
    if p.center_world_m[2] > room.height_m:
        return "ceiling"
    return "wall"


def obstacle_scene(room):
    """Open3D raycasting scene of the room's objects and walls (floor and ceiling left out)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    for p in room.primitives:
        if _structure_kind(p, room) in ("floor", "ceiling"):
            continue
        v, t = primitive_mesh(p)
        scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(t.astype(np.uint32)))
    return scene


def column_clearance(scene, xy: np.ndarray, floor_z: float, band: tuple[float, float]) -> np.ndarray:
    """(N,) smallest distance from the vertical segments over xy (N, 2) within the band to any obstacle."""
    import open3d as o3d

    heights = np.arange(band[0], band[1] + 1e-9, 0.02)
    pts = np.concatenate([np.c_[xy, np.full(len(xy), floor_z + h)] for h in heights]).astype(np.float32)
    d = scene.compute_distance(o3d.core.Tensor(pts), nthreads=2).numpy().reshape(len(heights), len(xy))
    return d.min(axis=0)


def _hits(sim_frame, stride: int = 2):
    """World points of the valid depth pixels (noisy depth decides validity, exact depth the position)."""
    f = sim_frame.frame
    d = sim_frame.depth_exact_m[::stride, ::stride]
    valid = (f.depth_m[::stride, ::stride] > 0) & (d > 0)
    rows, cols = np.nonzero(valid)
    z = d[rows, cols]
    intr = f.intrinsics
    x = (cols * stride - intr.cx) / intr.fx * z
    y = (rows * stride - intr.cy) / intr.fy * z
    pts = np.c_[x, y, z] @ f.world_T_camera[:3, :3].T + f.world_T_camera[:3, 3]
    ids = sim_frame.instance_ids[::stride, ::stride][rows, cols]
    return pts.astype(np.float32), ids, z


# --- one room -------------------------------------------------------------------------------------

def _memory_view(memory, label: str):
    return [o for o in memory.objects() if o.label.lower() == label.lower()]


def _place_state(objects, new_box, old_box) -> tuple[bool, bool]:
    new_ok = any(np.mean(_inside(new_box, o.points_world_m)) >= 0.5 for o in objects)
    old = any(np.mean(_inside(old_box, o.points_world_m) & ~_inside(new_box, o.points_world_m, 0.0)) >= 0.5
              for o in objects)
    return new_ok, old


def run_room(seed: int, frames: int, baseline: bool, max_moves: int = 3, ablate: tuple[str, ...] = ()) -> dict:
    from mllm3d_ros.core.query.approach import ApproachConfig, camera_height_above_floor, plan_approach
    from mllm3d_ros.core.mapping.ingest import IngestConfig
    from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
    from mllm3d_ros.core.mapping.mapper import Mapper
    from mllm3d_ros.core.query.memory_query import MemoryQueryConfig, MemoryResolver
    from mllm3d_ros.core.memory.object_memory import ObjectMemory, voxel_keys
    from mllm3d_ros.core.mapping.occupancy import FREE, OCCUPIED, OccupancyConfig, build_occupancy_grid
    from mllm3d_ros.core.query.pipeline import QueryConfig, QueryPipeline
    from mllm3d_ros.core.memory.proposal_worker import ProposalWorker
    from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig
    from mllm3d_ros.eval.metrics import point_iou
    from mllm3d_ros.eval.sim_segmenter import SimSegmenter, SimSegmenterConfig
    from mllm3d_ros.sources.simulator import render_with_events

    from benchmarks.spatial import _unavailable

    rng = np.random.default_rng(1000 + seed)
    room0 = generate_room(seed)
    # 2.5 laps: the first builds the memory, the events come at its end, 1.5 laps show both places.
    poses = trajectory(room0, frames, laps=2.5)
    event_frame = int(round(frames / 2.5))
    events = choose_moves(room0, poses, event_frame, rng, max_moves)
    states = rooms_over_time(room0, events)
    final = states[-1][1]
    gt_sims = {id(r): Simulator(r, dataclasses.replace(SIM, noise=False)) for _, r in states}

    def state_at(stamp_ns: int):
        k = int(round(stamp_ns * RATE_HZ / 1e9))
        return [r for start, r in states if start <= k][-1]

    def instance_ids(view):
        return gt_sims[id(state_at(_stamps[view.keyframe_id]))].render(view.world_T_camera).instance_ids

    _stamps: dict[int, int] = {}
    proposer = SimSegmenter(SimSegmenterConfig(hallucination_rate=0.3), seed=seed,
                            background_ids=frozenset({STRUCTURE_ID}), labels=room0.labels, instance_ids_fn=instance_ids)
    if baseline:
        ablate = ("carve", "change", "drop")
    map_cfg = TsdfMapConfig(carve_max_weight=0.0) if "carve" in ablate else TsdfMapConfig()
    kf_cfg = KeyframeConfig(image_scale=1.0, min_change_samples=0 if "change" in ablate else 8)
    mapper = Mapper(map_cfg, kf_cfg, ingest_config=IngestConfig(carve_every=0 if "carve" in ablate else 10))
    memory = ObjectMemory()
    if "drop" in ablate:  # before moved objects were handled: a detected instance kept the voxels seen through
        memory._drop_moved = lambda *_args: None
    worker = ProposalWorker(memory, proposer.propose, mapper.keyframe_store.get)
    moved = []
    for e in events:
        before = [r for start, r in states if start < e.frame_index][-1] if e.frame_index > 0 else room0
        after = final
        moved.append({"event": e, "label": room0.instance(e.instance_id).label,
                      "old_box": _gt_box(before.instance(e.instance_id)), "new_box": _gt_box(after.instance(e.instance_id)),
                      "old_points": instance_points(before, 0.03)[e.instance_id],
                      "timeline": []})
    static_before: list[int] = []
    floor_hits, obstacle_hits = [], []
    t_fuse = 0.0
    known = set()
    for k, (sim_frame, state) in enumerate(render_with_events(room0, poses, events, SIM, RATE_HZ)):
        t0 = time.perf_counter()
        mapper.process(sim_frame.frame)
        t_fuse += time.perf_counter() - t0
        pts, ids, depth = _hits(sim_frame)
        in_range = depth <= map_cfg.depth_max_m
        floor_hits.append(pts[in_range & (ids == STRUCTURE_ID) & (pts[:, 2] < 0.01)])
        obstacle_hits.append(pts[in_range & ((ids != STRUCTURE_ID) | ((pts[:, 2] > 0.01) & (pts[:, 2] < room0.height_m - 0.01)))])
        if k == event_frame and events:
            # What the memory holds when the scene changes: static objects it must keep (out of view or not).
            objs = memory.objects()
            moved_ids = {e.instance_id for e in events}
            for info in room0.instances:
                if info.instance_id in moved_ids or info.label in ("Shelf",):
                    continue
                box = _gt_box(info)
                holders = [o for o in objs if o.label.lower() == info.label.lower()
                           and np.mean(_inside(box, o.points_world_m)) >= 0.5]
                if holders:
                    pts = np.concatenate([o.points_world_m[_inside(box, o.points_world_m)] for o in holders])
                    static_before.append((info.instance_id, np.unique(voxel_keys(pts, memory.config.voxel_size_m))))
        for kf in mapper.keyframes():
            if kf.keyframe_id in known:
                continue
            known.add(kf.keyframe_id)
            _stamps[kf.keyframe_id] = kf.stamp_ns
            worker.process_one(kf.keyframe_id)
            if k < event_frame:
                continue
            gt = gt_sims[id(final)].render(kf.world_T_camera)
            for m in moved:
                new_seen = int(np.count_nonzero(gt.instance_ids == m["event"].instance_id)) >= 30
                from mllm3d_ros.core.visibility import project_visible
                proj = project_visible(m["old_points"], kf.world_T_camera, kf.intrinsics, gt.depth_exact_m, 0.03, 0.0)
                old_seen = proj.visible_indices.shape[0] + proj.through_indices.shape[0] >= 20
                new_ok, old = _place_state(_memory_view(memory, m["label"]), m["new_box"], m["old_box"])
                m["timeline"].append({"keyframe": kf.keyframe_id, "frame": k, "new_seen": new_seen,
                                      "old_seen": old_seen, "new_ok": new_ok, "old_present": old})
    snapshot = mapper.snapshot()
    final_sim = gt_sims[id(final)]
    gt_ids = final_sim.closest_instances(snapshot.points_world_m,
                                         max_distance_m=mapper.map.config.voxel_size_m).instance_ids
    # Every instance of a class in the answer (not the 10 best): "the book" with 30 books must list the moved one.
    pipeline = QueryPipeline(mapper, _unavailable, QueryConfig(), resolver=MemoryResolver(
        memory, proposer.encode_text, MemoryQueryConfig(max_candidates=100)))
    out = {"seed": seed, "frames": frames, "keyframes": len(mapper.keyframes()), "fuse_s": round(t_fuse, 2),
           "carved_voxels": mapper.map.carved_voxels, "moves": [], "approach": [], "false_removals": []}

    # (a) moved objects
    for m in moved:
        e = m["event"]
        result = pipeline.run(f"the {m['label'].lower()}")
        ious, old_hits = [], []
        for o in result.objects:
            pts = snapshot.points_world_m[o.point_indices]
            ious.append(point_iou(o.point_indices, gt_ids == e.instance_id))
            old_hits.append(bool(np.mean(_inside(m["old_box"], pts) & ~_inside(m["new_box"], pts, 0.0)) >= 0.5))
        tl = m["timeline"]
        both = next((i for i, r in enumerate(tl) if r["new_seen"] and r["old_seen"]), None)
        ok_from = None
        for i in range(len(tl) - 1, -1, -1):
            if tl[i]["new_ok"] and not tl[i]["old_present"]:
                ok_from = i
            else:
                break
        needed = None if both is None or ok_from is None else max(1, ok_from - both + 1)
        out["moves"].append({
            "instance_id": e.instance_id, "label": m["label"], "shift_m": round(float(np.linalg.norm(e.translation_m)), 3),
            "status": result.status.name, "best_new_iou": round(max(ious, default=0.0), 4),
            "returns_new": max(ious, default=0.0) >= 0.5, "returns_old": any(old_hits),
            "pass": max(ious, default=0.0) >= 0.5 and not any(old_hits),
            # Scored only once a keyframe saw both places and the final map holds the new one.
            "evaluated": both is not None and int(np.count_nonzero(gt_ids == e.instance_id)) >= MIN_GT_POINTS,
            "keyframes_after_event": len(tl), "first_both_seen": both, "memory_ok_from": ok_from,
            "keyframes_needed": needed,
            # Keyframes after the event that saw each place: the memory confirms a place by min_detections
            # views and removes an undetected instance after gone_views views (both 2), so a place seen once
            # cannot be shown / removed by design.
            "new_seen_keyframes": sum(r["new_seen"] for r in tl), "old_seen_keyframes": sum(r["old_seen"] for r in tl),
            "new_gt_points": int(np.count_nonzero(gt_ids == e.instance_id)),
            "timeline": "".join(("B" if r["new_seen"] and r["old_seen"] else "n" if r["new_seen"] else "o" if r["old_seen"]
                                 else "-") + ("+" if r["new_ok"] else ".") + ("X" if r["old_present"] else "_") + " "
                                for r in tl)})
    # Forgotten: under half of the voxels that held a still object when the scene changed are still voxels of
    # an instance at the end (merges and splits keep them, and so does the kept-voxel rule, which only hides
    # voxels from queries; the gone rule and the drop of a moved instance's voxels remove them).
    held_at_end = np.unique(np.concatenate([inst.keys for inst in memory._instances.values()]
                                           or [np.zeros(0, np.int64)]))
    for iid, keys in static_before:
        kept = float(np.isin(keys, held_at_end).mean())
        if kept < 0.5:
            out["false_removals"].append(f"{final.instance(iid).label} #{iid} ({kept:.2f} of its voxels kept)")
    out["static_held"] = len(static_before)
    out["memory_removed_gone"] = memory.stats.removed_gone

    # (b) the grid
    occ_cfg = OccupancyConfig()
    t0 = time.perf_counter()
    grid = build_occupancy_grid(snapshot, occ_cfg)
    out["grid_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    out["grid"] = grid_scores(grid, final, np.concatenate(floor_hits), np.concatenate(obstacle_hits), occ_cfg)

    # (c) approach poses
    a_cfg = ApproachConfig()
    scene = obstacle_scene(final)
    robot_xy = tuple(poses[-1][:3, 3][:2])
    cam_h = camera_height_above_floor(np.array([kf.world_T_camera[:3, 3] for kf in mapper.keyframes()]), grid.floor_z_m)
    gt_walk = gt_traversable(scene, final, a_cfg.robot_radius_m, occ_cfg)
    present = {i.label for i in final.instances if np.count_nonzero(gt_ids == i.instance_id) >= MIN_GT_POINTS}
    for instruction, label in QUERIES.items():
        if label not in present:
            continue
        result = pipeline.run(instruction)
        row = {"instruction": instruction, "status": result.status.name}
        if result.status.name == "SUCCESS":
            best = result.objects[0]
            t0 = time.perf_counter()
            pose = plan_approach(best.box, grid, snapshot, cam_h, robot_xy, a_cfg, "", occ_cfg.min_height_m,
                                 mapper.keyframes())
            row["approach_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
            row.update(check_pose(pose, best, snapshot, gt_ids, final, scene, gt_walk, robot_xy, a_cfg, occ_cfg,
                                  grid.floor_z_m))
        out["approach"].append(row)
    return out


def grid_scores(grid, room, floor_hits: np.ndarray, obstacle_hits: np.ndarray, cfg) -> dict:
    """Recall of ground-truth free floor and obstacle cells that the sensor saw (see the module doc)."""
    import cv2
    import open3d as o3d

    from mllm3d_ros.core.mapping.occupancy import FREE, OCCUPIED

    h, w = grid.shape
    scene = obstacle_scene(room)
    # Obstacle surface of the final room in the band, sampled (1 cm), and the part the sensor saw.
    samples = []
    for p in room.primitives:
        if _structure_kind(p, room) in ("floor", "ceiling"):
            continue
        samples.append(instance_points(dataclasses.replace(room, primitives=(dataclasses.replace(p, instance_id=1),)),
                                       0.01).get(1, np.zeros((0, 3), np.float32)))
    surface = np.concatenate(samples)
    band = lambda pts: pts[(pts[:, 2] >= cfg.min_height_m) & (pts[:, 2] <= cfg.max_height_m)]  # noqa: E731

    def cells(pts):
        rc = grid.cell_of(pts[:, :2])
        ok = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
        m = np.zeros((h, w), bool)
        m[rc[ok, 0], rc[ok, 1]] = True
        return m

    def counts(pts):
        rc = grid.cell_of(pts[:, :2])
        ok = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
        return np.bincount(rc[ok, 0] * w + rc[ok, 1], minlength=h * w).reshape(h, w)

    any_obstacle = cells(band(surface))
    seen = band(obstacle_hits)
    if seen.shape[0]:
        d = scene.compute_distance(o3d.core.Tensor(seen.astype(np.float32)), nthreads=2).numpy()
        seen = seen[d <= 0.01]  # on the final room's geometry (not an object's old place)
    # Seen: at least 3 depth samples (every 2nd pixel of a frame) hit an obstacle surface in the cell; the
    # floor seen over at least 3 of the cell's 4 quarters (a cell whose corner the camera glimpsed is not
    # observed floor).
    gt_obstacle = counts(seen) >= 3
    quarter = np.floor((floor_hits[:, :2] - np.asarray(grid.origin_xy_m)) / (grid.resolution_m / 2)).astype(np.int64)
    quarter = np.unique(quarter, axis=0)
    qc = np.zeros((h, w), np.int32)
    ok = (quarter[:, 1] // 2 >= 0) & (quarter[:, 1] // 2 < h) & (quarter[:, 0] // 2 >= 0) & (quarter[:, 0] // 2 < w)
    np.add.at(qc, (quarter[ok, 1] // 2, quarter[ok, 0] // 2), 1)
    gt_free = (qc >= 3) & ~any_obstacle
    ring = cv2.dilate(any_obstacle.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    occupied = grid.data == OCCUPIED
    near_occupied = cv2.dilate(occupied.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    free = grid.data == FREE

    def share(mask, hit):
        n = int(np.count_nonzero(mask))
        return {"cells": n, "recall": round(float(np.count_nonzero(mask & hit)) / max(1, n), 4)}

    return {"floor_z_m": None if grid.floor_z_m is None else round(grid.floor_z_m, 4), "counts": grid.counts(),
            "free": share(gt_free, free), "free_away_from_obstacles": share(gt_free & ~ring, free),
            "free_marked_occupied": share(gt_free, occupied), "obstacles": share(gt_obstacle, occupied),
            "obstacles_within_one_cell": share(gt_obstacle, near_occupied),
            "obstacles_marked_free": share(gt_obstacle, free)}


def gt_traversable(scene, room, radius: float, cfg, res: float = 0.05) -> dict:
    """Ground-truth floor cells (5 cm, room interior) whose column has the robot's radius of clearance."""
    xs = np.arange(-room.size_m[0] / 2 + res / 2, room.size_m[0] / 2, res)
    ys = np.arange(-room.size_m[1] / 2 + res / 2, room.size_m[1] / 2, res)
    gx, gy = np.meshgrid(xs, ys)
    clear = column_clearance(scene, np.c_[gx.ravel(), gy.ravel()], 0.0, (cfg.min_height_m, cfg.max_height_m))
    return {"x0": float(xs[0]), "y0": float(ys[0]), "res": res, "ok": (clear >= radius).reshape(gx.shape)}


def _gt_robot_component(walk: dict, robot_xy) -> np.ndarray | None:
    """(H, W) bool: the ground-truth traversable cells 8-connected to the robot, None when no traversable cell
    is within 1 m of it. The robot starts in the component of the traversable cell nearest its position (its
    camera may be above the front of a sofa, where the base could not stand)."""
    import cv2

    ok = walk["ok"].astype(np.uint8)
    _, labels = cv2.connectedComponents(ok, connectivity=8)
    rows, cols = np.nonzero(ok)
    xy = np.stack([walk["x0"] + cols * walk["res"], walk["y0"] + rows * walk["res"]], axis=1)
    d = np.linalg.norm(xy - np.asarray(robot_xy, np.float64)[:2], axis=1)
    k = int(np.argmin(d))
    if d[k] > 1.0:
        return None
    return labels == labels[rows[k], cols[k]]


def _gt_reachable(walk: dict, start_xy, goal_xy) -> bool:
    mine = _gt_robot_component(walk, start_xy)
    gr, gc = int(round((goal_xy[1] - walk["y0"]) / walk["res"])), int(round((goal_xy[0] - walk["x0"]) / walk["res"]))
    return bool(mine is not None and 0 <= gr < mine.shape[0] and 0 <= gc < mine.shape[1] and mine[gr, gc])


def _gt_pose_exists(walk: dict, robot_xy, box, a_cfg) -> bool:
    """Whether a ground-truth traversable cell reachable from the robot is within [standoff, max distance] of the
    box's footprint (what a refusal is judged against; facing is always possible, a clear line is not asked)."""
    from mllm3d_ros.core.query.approach import footprint_distance_m

    mine = _gt_robot_component(walk, robot_xy)
    if mine is None:
        return False
    rows, cols = np.nonzero(mine)
    d = footprint_distance_m(box, np.stack([walk["x0"] + cols * walk["res"], walk["y0"] + rows * walk["res"]], axis=1))
    return bool(np.any((d >= a_cfg.standoff_m) & (d <= a_cfg.max_distance_m)))


def _facing_error_deg(box, xy: np.ndarray, yaw_rad: float) -> float:
    """Angle between the heading and the nearest direction from xy that points at the box's footprint (0 when
    the heading points at the object; an extended object spans a range of directions, not only its centre)."""
    u, v = np.meshgrid(np.linspace(-0.5, 0.5, 21), np.linspace(-0.5, 0.5, 21))
    local = np.stack([u.ravel(), v.ravel()], axis=1) * box.size_m[:2]
    pts = local @ box.world_R_box[:2, :2].T + box.center_world_m[:2]
    rel = np.arctan2(pts[:, 1] - xy[1], pts[:, 0] - xy[0]) - yaw_rad
    rel = np.abs(np.remainder(rel + np.pi, 2 * np.pi) - np.pi)
    return float(np.degrees(rel.min()))


def check_pose(pose, obj, snapshot, gt_ids, room, scene, walk, robot_xy, a_cfg, occ_cfg, floor_z) -> dict:
    """The target's four checks of one approach pose against the ground truth."""
    from mllm3d_ros.core.query.approach import footprint_distance_m
    from mllm3d_ros.eval.metrics import point_iou

    row = {"approach_status": pose.status.name, "approach_message": pose.message}
    # The ground-truth instance the answer is on (its class's best point IoU), else the returned box.
    target, best_iou = None, 0.0
    for info in room.instances:
        iou = point_iou(obj.point_indices, gt_ids == info.instance_id)
        if iou > best_iou:
            target, best_iou = info, iou
    gt_box = _gt_box(target) if target is not None and best_iou >= 0.25 else obj.box
    if not pose.ok:
        row["gt_pose_exists"] = _gt_pose_exists(walk, robot_xy, gt_box, a_cfg)
        row["correct_refusal"] = not row["gt_pose_exists"]
        return row
    xy = np.array(pose.position_world_m[:2])
    clear = float(column_clearance(scene, xy[None], 0.0, (occ_cfg.min_height_m, occ_cfg.max_height_m))[0])
    centre = np.asarray(gt_box.center_world_m)
    bearing = math.atan2(centre[1] - xy[1], centre[0] - xy[0])
    facing_centre = abs(math.degrees(math.remainder(bearing - pose.yaw_rad, 2 * math.pi)))
    facing = _facing_error_deg(gt_box, xy, pose.yaw_rad)
    d = float(footprint_distance_m(obj.box, xy[None])[0])
    row.update({"position": [round(float(v), 3) for v in pose.position_world_m], "yaw_deg": round(math.degrees(pose.yaw_rad), 1),
                "gt_clearance_m": round(clear, 3), "collision_free": clear >= a_cfg.robot_radius_m - 1e-3,
                "distance_m": round(d, 3), "in_band": a_cfg.standoff_m - 1e-3 <= d <= a_cfg.max_distance_m + 1e-3,
                "facing_error_deg": round(facing, 2), "facing_centre_error_deg": round(facing_centre, 2),
                "facing": facing <= FACING_DEG, "reachable": _gt_reachable(walk, robot_xy, xy), "answer_iou": round(best_iou, 3),
                "answer_on": None if target is None else f"{target.label} #{target.instance_id}",
                "reachability_checked": pose.reachability_checked,
                "floor_error_m": round(float(pose.position_world_m[2] - 0.0), 4)})
    row["good"] = bool(row["collision_free"] and row["in_band"] and row["facing"] and row["reachable"])
    return row


# --- the real kitchen ------------------------------------------------------------------------

def kitchen(dataset: str) -> dict:
    """(d): approach poses on the real kitchen, checked against the map fused from all its frames."""
    import cv2

    from benchmarks.real_annotations import load_annotations
    from mllm3d_ros.core.query.approach import ApproachConfig, camera_height_above_floor, footprint_distance_m, plan_approach
    from mllm3d_ros.core.mapping.occupancy import FREE, OccupancyConfig, build_occupancy_grid, clearance_m
    from mllm3d_ros.offline_segment import RecordingSession

    if not os.path.isdir(dataset):
        return {"skipped": f"{dataset} not found"}
    ann = load_annotations(os.path.join(os.path.dirname(__file__), "annotations", "redkitchen.json"))
    a_cfg, occ_cfg = ApproachConfig(), OccupancyConfig()
    with RecordingSession(dataset, show_progress=False) as session:
        snapshot = session.mapper.snapshot()
        t0 = time.perf_counter()
        grid = build_occupancy_grid(snapshot, occ_cfg)
        grid_ms = (time.perf_counter() - t0) * 1e3
        cams = np.array([kf.world_T_camera[:3, 3] for kf in session.mapper.keyframes()])
        cam_h = camera_height_above_floor(cams, grid.floor_z_m)
        robot_xy = tuple(cams[-1][:2])
        pts = snapshot.points_world_m.astype(np.float64)
        h = pts[:, 2] - (grid.floor_z_m if grid.floor_z_m is not None else 0.0)
        band_pts = pts[(h >= occ_cfg.min_height_m) & (h <= occ_cfg.max_height_m), :2]
        floor_pts = pts[(np.abs(h) <= occ_cfg.floor_tolerance_m), :2]
        free = (grid.data == FREE).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(
            (clearance_m(grid) >= a_cfg.robot_radius_m).astype(np.uint8), connectivity=8)

        def check(pose, gt_box) -> dict:
            row = {"approach_status": pose.status.name, "approach_message": pose.message}
            if not pose.ok:
                return row
            xy = np.array(pose.position_world_m[:2])
            nearest_obstacle = float(np.min(np.linalg.norm(band_pts - xy, axis=1))) if len(band_pts) else math.inf
            on_floor = int(np.count_nonzero(np.linalg.norm(floor_pts - xy, axis=1) <= occ_cfg.resolution_m))
            bearing = math.atan2(gt_box.center_world_m[1] - xy[1], gt_box.center_world_m[0] - xy[0])
            facing = abs(math.degrees(math.remainder(bearing - pose.yaw_rad, 2 * math.pi)))
            d = float(footprint_distance_m(gt_box, xy[None])[0])
            rc = grid.cell_of(xy[None])[0]
            area = float(stats[labels[rc[0], rc[1]], cv2.CC_STAT_AREA] * grid.resolution_m ** 2) if labels[rc[0], rc[1]] else 0.0
            row.update({"position": [round(float(v), 3) for v in pose.position_world_m],
                        "nearest_map_obstacle_m": round(nearest_obstacle, 3),
                        "collision_free": nearest_obstacle >= a_cfg.robot_radius_m,
                        "floor_points_under": on_floor, "on_observed_floor": on_floor > 0,
                        "distance_to_annotated_box_m": round(d, 3),
                        "in_band": a_cfg.standoff_m - occ_cfg.resolution_m <= d <= a_cfg.max_distance_m + occ_cfg.resolution_m,
                        "facing_error_deg": round(facing, 2), "facing": facing <= FACING_DEG,
                        "free_component_m2": round(area, 2), "reachability_checked": pose.reachability_checked})
            row["good"] = bool(row["collision_free"] and row["on_observed_floor"] and row["in_band"] and row["facing"])
            return row

        rows = []
        times = []
        for inst in ann.instances:
            if inst.label not in ("chair", "table"):
                continue
            gt_box = max(inst.boxes, key=lambda b: b.volume_m3).box
            t0 = time.perf_counter()
            pose = plan_approach(gt_box, grid, snapshot, cam_h, robot_xy, a_cfg, "", occ_cfg.min_height_m,
                                 session.mapper.keyframes())
            times.append((time.perf_counter() - t0) * 1e3)
            rows.append({"source": "annotated box", "object": inst.instance_id, **check(pose, gt_box)})
        for instruction in ("the chair", "the table"):
            result = session.query(instruction)
            for rank, obj in enumerate(result.objects):
                pts_obj = snapshot.points_world_m[obj.point_indices]
                owner = max((i for i in ann.instances if i.label == instruction.split()[-1]),
                            key=lambda i: float(np.mean(i.contains(pts_obj))), default=None)
                if owner is None or float(np.mean(owner.contains(pts_obj))) < 0.25:
                    rows.append({"source": instruction, "rank": rank, "object": None, "note": "not on an annotated instance"})
                    continue
                gt_box = max(owner.boxes, key=lambda b: b.volume_m3).box
                pose = plan_approach(obj.box, grid, snapshot, cam_h, robot_xy, a_cfg, "", occ_cfg.min_height_m,
                                     session.mapper.keyframes())
                rows.append({"source": instruction, "rank": rank, "object": owner.instance_id, **check(pose, gt_box)})
        # The cost of one free-space carving step (every 10th frame live) on the full kitchen map, 640 x 480.
        from mllm3d_ros.sources.recording import open_recording

        carve_ms = []
        for frame in list(open_recording(dataset, 25, None))[:10]:
            carve_ms.append(session.mapper.map.carve(frame).carve_ms)
    posed = [r for r in rows if r.get("approach_status") == "OK"]
    return {"dataset": dataset, "frames": session.frames_fused, "grid_ms": round(grid_ms, 1), "grid_counts": grid.counts(),
            "carve_ms_p50": round(float(np.median(carve_ms)), 1), "carve_ms_max": round(float(np.max(carve_ms)), 1),
            "floor_z_m": grid.floor_z_m, "camera_height_m": cam_h, "approach_ms_p50": round(float(np.median(times)), 2),
            "rows": rows, "posed": len(posed), "asked": len([r for r in rows if "approach_status" in r]),
            "good_of_posed": sum(bool(r.get("good")) for r in posed)}


def summarise(rooms: list[dict]) -> dict:
    moves = [m for r in rooms for m in r["moves"] if m["evaluated"]]
    approach = [a for r in rooms for a in r["approach"] if a["status"] == "SUCCESS"]
    posed = [a for a in approach if a.get("approach_status") == "OK"]
    needed = [m["keyframes_needed"] for m in moves if m["keyframes_needed"] is not None]
    twice = [m for m in moves if m["new_seen_keyframes"] >= 2 and m["old_seen_keyframes"] >= 2]

    def pooled(key):
        cells = sum(r["grid"][key]["cells"] for r in rooms)
        hit = sum(r["grid"][key]["cells"] * r["grid"][key]["recall"] for r in rooms)
        return round(hit / max(1, cells), 4)

    return {
        "moves_scripted": sum(len(r["moves"]) for r in rooms),
        "moves": len(moves), "moves_pass": sum(m["pass"] for m in moves),
        "moves_pass_rate": round(sum(m["pass"] for m in moves) / max(1, len(moves)), 4),
        "moves_returning_old": sum(m["returns_old"] for m in moves),
        "keyframes_needed_median": float(np.median(needed)) if needed else None,
        # The scored moves whose new and old places were each seen by at least two keyframes after the event.
        "moves_seen_twice": len(twice), "moves_seen_twice_pass": sum(m["pass"] for m in twice),
        "moves_seen_twice_pass_rate": round(sum(m["pass"] for m in twice) / max(1, len(twice)), 4),
        "keyframes_needed_max": max(needed) if needed else None,
        "false_removals": sum(len(r["false_removals"]) for r in rooms),
        "static_objects_held": sum(r["static_held"] for r in rooms),
        "grid_free_recall": pooled("free"), "grid_free_recall_away_from_obstacles": pooled("free_away_from_obstacles"),
        "grid_free_marked_occupied": pooled("free_marked_occupied"),
        "grid_obstacle_recall": pooled("obstacles"), "grid_obstacle_recall_within_one_cell": pooled("obstacles_within_one_cell"),
        "grid_obstacles_marked_free": pooled("obstacles_marked_free"),
        "grid_ms_p50": float(np.median([r["grid_ms"] for r in rooms])),
        "successful_queries": len(approach), "with_pose": len(posed),
        "good_poses": sum(bool(a.get("good")) for a in posed),
        "good_rate_of_successful": round(sum(bool(a.get("good")) for a in posed) / max(1, len(approach)), 4),
        # A query with no pose where the ground truth has none either (a passage narrower than the robot).
        "correct_refusals": sum(bool(a.get("correct_refusal")) for a in approach),
        "right_rate_of_successful": round(sum(bool(a.get("good")) or bool(a.get("correct_refusal")) for a in approach)
                                          / max(1, len(approach)), 4),
        "no_pose": {s: sum(a.get("approach_status") == s for a in approach)
                    for s in {a.get("approach_status") for a in approach} if s != "OK"},
        "approach_ms_p50": float(np.median([a["approach_ms"] for a in approach])) if approach else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--rooms", type=int, default=8)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--quick", action="store_true", help="1 room, 60 frames, no kitchen")
    ap.add_argument("--baseline", action="store_true", help="the moved-object mechanisms off (before/after)")
    ap.add_argument("--no-kitchen", action="store_true")
    ap.add_argument("--ablate", default="", help="comma-separated mechanisms off: carve, change, drop")
    ap.add_argument("--seeds", default="", help="comma-separated room seeds instead of 0..rooms-1")
    ap.add_argument("--dataset", default="../shared/data/7scenes-redkitchen")
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.rooms, ns.frames, ns.no_kitchen = 1, 60, True
    t0 = time.perf_counter()
    rooms = []
    seeds = [int(v) for v in ns.seeds.split(",")] if ns.seeds else list(range(ns.rooms))
    ablate = tuple(v for v in ns.ablate.split(",") if v)
    for seed in seeds:
        rooms.append(run_room(seed, ns.frames, ns.baseline, ablate=ablate))
        r = rooms[-1]
        print(f"room {seed}: moves {sum(m['pass'] for m in r['moves'])}/{len(r['moves'])}, false removals "
              f"{len(r['false_removals'])}, grid free {r['grid']['free']['recall']} obstacles {r['grid']['obstacles']['recall']}, "
              f"poses good {sum(bool(a.get('good')) for a in r['approach'])}/"
              f"{sum(a['status'] == 'SUCCESS' for a in r['approach'])}", flush=True)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.processor() or 'cpu'}), shared with other jobs",
           "baseline": ns.baseline, "ablate": list(ablate), "rooms": rooms, "summary": summarise(rooms)}
    if not ns.no_kitchen and not ns.baseline:
        out["kitchen"] = kitchen(ns.dataset)
    out["elapsed_s"] = round(time.perf_counter() - t0, 1)
    os.makedirs(os.path.dirname(os.path.abspath(ns.json)), exist_ok=True)
    with open(ns.json, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(json.dumps(out["summary"], indent=1))
    if "kitchen" in out:
        k = out["kitchen"]
        print(f"kitchen: {k.get('posed')} poses of {k.get('asked')} asked, {k.get('good_of_posed')} good")
    return 0


if __name__ == "__main__":
    sys.exit(main())
