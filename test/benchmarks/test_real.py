"""The real-kitchen ground truth file and benchmarks.real's scoring, on hand-built cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.real import QUERIES, score_objects  # noqa: E402
from benchmarks.real_annotations import (REDKITCHEN_JSON, gt_masks, load_annotations, parse_annotations,  # noqa: E402
                                         reexpress)
from mllm3d_ros.core.types import InputError  # noqa: E402


def test_redkitchen_ground_truth_loads_and_every_box_is_valid():
    gt = load_annotations(REDKITCHEN_JSON)
    labels = [i.label for i in gt.instances]
    assert labels.count("table") == 1 and labels.count("chair") == 5 and labels.count("mug") == 2
    assert labels.count("box") == 1 and labels.count("game controller") == 1
    assert len({i.instance_id for i in gt.instances}) == len(gt.instances)
    for inst in gt.instances:
        assert inst.note, inst.instance_id
        for box in inst.boxes:
            assert all(0.02 <= s <= 3.0 for s in box.size_m), inst.instance_id
            # in the kitchen's z-up world: floor near z = -1.5, table top near -0.77
            assert -1.5 < box.center_m[2] - box.size_m[2] / 2 and box.center_m[2] + box.size_m[2] / 2 < 0.0
        assert np.allclose(inst.boxes[0].world_R_box @ inst.boxes[0].world_R_box.T, np.eye(3))
    # the mugs and the plastic box stand on the table: inside its footprint, above its surface (z -0.77;
    # the table's box reaches 3 cm higher, where the smaller boxes win)
    table = gt.instance("table").boxes[0]
    for name in ("mug_left", "mug_middle", "plastic_box", "game_controller"):
        box = gt.instance(name).boxes[0]
        assert table.contains(np.array([[box.center_m[0], box.center_m[1], table.center_m[2]]]))[0]
        assert box.center_m[2] - box.size_m[2] / 2 > -0.77 + 0.01
    # every query accepts annotated instances of one class
    for q in QUERIES:
        assert len({gt.instance(a).label for a in q.accepted}) == 1, q.instruction


def _tiny() -> dict:
    # A table 1 x 1 m top at z = 0.7 (box to 0.72) and a mug on it, and a chair in two parts.
    return {"dataset": "tiny", "frame": "test", "map_T_world": np.eye(4).tolist(), "instances": [
        {"id": "table", "class": "table", "box": {"center_m": [0, 0, 0.36], "size_m": [1, 1, 0.72], "yaw_deg": 0}},
        {"id": "mug", "class": "mug", "box": {"center_m": [0, 0, 0.78], "size_m": [0.1, 0.1, 0.1], "yaw_deg": 0}},
        {"id": "chair", "class": "chair", "boxes": [
            {"center_m": [1, 0, 0.2], "size_m": [0.4, 0.4, 0.4], "yaw_deg": 45},
            {"center_m": [1.2, 0, 0.6], "size_m": [0.05, 0.4, 0.4], "yaw_deg": 0}]},
    ]}


POINTS = np.array([[0.3, 0.3, 0.7], [-0.3, 0.2, 0.7], [0.0, 0.0, 0.71],  # 0-2 table top
                   [0.0, 0.0, 0.76], [0.02, 0.0, 0.8],                 # 3-4 mug (inside the table's footprint)
                   [1.0, 0.0, 0.2], [1.2, 0.0, 0.7],                   # 5-6 chair seat and backrest
                   [2.0, 2.0, 0.0]])                                   # 7 floor


def test_gt_points_follow_the_smallest_box_and_the_parts():
    gt = parse_annotations(_tiny())
    masks = gt_masks(POINTS, gt.instances)
    assert np.flatnonzero(masks["table"]).tolist() == [0, 1, 2]
    assert np.flatnonzero(masks["mug"]).tolist() == [3, 4]
    assert np.flatnonzero(masks["chair"]).tolist() == [5, 6]


def test_score_objects_known_ious():
    gt = parse_annotations(_tiny())
    # top-1 = table top + the mug's first point: IoU 3/4 with the table, 1/5 with the mug
    s = score_objects(POINTS, [(np.array([0, 1, 2, 3]), 0.9)], gt, ("table",))
    assert (s.iou, s.matched_id, s.gt_points) == (pytest.approx(3 / 4), "table", 3)
    s = score_objects(POINTS, [(np.array([0, 1, 2, 3]), 0.9)], gt, ("mug",))
    assert s.iou == pytest.approx(1 / 5)
    # a class query accepts either instance: the best-matching one is scored
    s = score_objects(POINTS, [(np.array([5, 6, 7]), 0.8), (np.array([3, 4]), 0.5)], gt, ("mug", "chair"))
    assert (s.iou, s.matched_id) == (pytest.approx(2 / 3), "chair")
    assert (s.ap50, s.precision50, s.recall50) == (1.0, 1.0, 1.0)
    # nothing returned
    s = score_objects(POINTS, [], gt, ("mug",))
    assert (s.iou, s.matched_id, s.ap25, s.recall25) == (0.0, "", 0.0, 0.0)


def test_annotation_errors_name_the_field(tmp_path):
    bad = _tiny()
    bad["instances"][1]["box"]["size_m"] = [0.1, 0.0, 0.1]
    with pytest.raises(InputError, match=r"instance 1 \(mug\) box 0: size_m must be > 0"):
        parse_annotations(bad)
    bad = _tiny()
    bad["instances"][2]["id"] = "mug"
    with pytest.raises(InputError, match="duplicate id 'mug'"):
        parse_annotations(bad)
    path = tmp_path / "gt.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="cannot read annotations"):
        load_annotations(path)


def test_boxes_follow_a_change_of_the_loaders_frame():
    gt = parse_annotations(_tiny())
    turn = np.eye(4)
    turn[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90 deg about z, then 1 m up
    turn[2, 3] = 1.0
    moved = reexpress(gt, turn)
    masks = gt_masks(POINTS @ turn[:3, :3].T + turn[:3, 3], moved.instances)
    assert np.flatnonzero(masks["chair"]).tolist() == [5, 6] and np.flatnonzero(masks["mug"]).tolist() == [3, 4]
    tilt = np.eye(4)
    tilt[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
    with pytest.raises(InputError, match="gravity-aligned"):
        reexpress(gt, tilt)
