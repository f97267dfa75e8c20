"""benchmarks.shape_nouns: which ground-truth object each box stand-in is, and the summary's counts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.shape_nouns import QUERIES, _gt_of, _summary  # noqa: E402


def test_a_stand_in_is_the_object_it_overlaps_at_iou_025_else_none():
    gts = {"a": np.arange(0, 10), "b": np.arange(10, 20)}
    labels = {"a": "Box", "b": "Mug"}
    sets = {1: np.arange(0, 8), 2: np.arange(8, 40), 3: np.arange(100, 110)}  # IoU 0.8 with a; 10/40 with b; nothing
    assert _gt_of(sets, gts, labels) == {1: "Box", 2: "Mug", 3: "(none)"}


def _room(has_box, stand_ins, confirmed=False):
    answer = {"answered": confirmed, "unconfirmed": False, "confirmed": confirmed, "by": "Box" if confirmed else "",
              "gt": "Box" if confirmed else "", "refusal": ""}
    return {"has_box": has_box, "unlabelled": len(stand_ins), "answers": {q: dict(answer) for q in QUERIES},
            "stand_ins": [{"instance_id": k, "gt": g, "size_m": [0.3, 0.2, 0.2], "support": "floor"}
                          for k, g in enumerate(stand_ins)]}


def test_the_summary_counts_stand_ins_by_object_and_invented_boxes_in_rooms_without_one():
    rooms = [_room(True, ["Box", "Mug"]), _room(False, ["Book"]), _room(False, []), _room(True, ["Mug"], confirmed=True)]
    s = _summary(rooms)
    assert (s["rooms"], s["rooms_with_box"], s["rooms_without_box"]) == (4, 2, 2)
    assert (s["stand_ins"], s["stand_ins_on_a_box"], s["stand_in_precision"]) == (4, 1, 0.25)
    assert s["stand_ins_by_gt"] == {"Mug": 2, "Box": 1, "Book": 1}
    assert s["rooms_without_box_with_a_stand_in"] == 1
    # A rule answers only where no detected box does: rooms 1 and 2, the first stand-in of each.
    assert (s["rooms_where_a_rule_would_answer"], s["rule_answer_on_a_box"]) == (2, 1)
    assert s["rule_answers_by_gt"] == {"Book": 1, "Box": 1} and s["rooms_with_a_detected_box"] == 1
    assert s["the box"]["answered"] == 1 and s["the box"]["answered_on_a_box"] == 1


def test_a_room_without_boxes_loses_its_boxes_and_what_stands_on_them_only():
    from benchmarks.shape_nouns import without_boxes
    from mllm3d_ros.sources.simulator import generate_relational_room

    room = generate_relational_room(0).room
    boxes = {i.instance_id for i in room.instances if i.label == "Box"}
    on_boxes = {i.instance_id for i in room.instances if i.support_id in boxes}
    assert boxes and on_boxes  # the relational room puts a mug on a floor box
    bare = without_boxes(room)
    kept = {i.instance_id for i in bare.instances}
    assert kept == {i.instance_id for i in room.instances} - boxes - on_boxes
    assert {p.instance_id for p in bare.primitives} <= kept | {p.instance_id for p in room.primitives
                                                               if p.instance_id not in boxes | on_boxes}
    assert not any(p.instance_id in boxes | on_boxes for p in bare.primitives)
