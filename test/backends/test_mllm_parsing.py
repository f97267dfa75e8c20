"""Parsing of grounding answers: hand-written model outputs with exact expected boxes."""

from __future__ import annotations

import pytest

from mllm3d_ros.backends.mllm.parsing import (GroundingTarget, parse_caption, parse_grounding, parse_structured,
                                             to_image_targets)
from mllm3d_ros.backends.mllm.prompts import CoordinateFormat
from mllm3d_ros.core.types import GeometryMark

PIX = CoordinateFormat.RESIZED_PIXELS
NORM = CoordinateFormat.NORMALISED_1000


@pytest.mark.parametrize("text, expected", [
    ('[{"bbox_2d": [10, 20, 110, 220], "label": "mug"}]',
     [GroundingTarget("mug", (10, 20, 110, 220))]),
    ('```json\n[\n  {"bbox_2d": [1, 2, 3, 4], "label": "red mug"}\n]\n```',
     [GroundingTarget("red mug", (1, 2, 3, 4))]),
    ('Sure! The mug is here: {"bbox_2d": [5.5, 6, 7, 8.25], "label": "mug"} Hope this helps.',
     [GroundingTarget("mug", (5.5, 6, 7, 8.25))]),
    ('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], "label": "b"}]',
     [GroundingTarget("a", (1, 2, 3, 4)), GroundingTarget("b", (5, 6, 7, 8))]),
    # Truncated by max_new_tokens: the complete object survives, the cut one keeps what is complete.
    ('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], "lab',
     [GroundingTarget("a", (1, 2, 3, 4)), GroundingTarget("", (5, 6, 7, 8))]),
    ('[{"bbox_2d": [1, 2, 3', []),
    ('{"label": "chair", "point_2d": [300, 400]}', [GroundingTarget("chair", point=(300, 400))]),
    ('{"mark": 3, "label": "table"}', [GroundingTarget("table", mark_id=3)]),
    ('{"mark": "#4"}', [GroundingTarget(mark_id=4)]),
    ('[{"bbox": ["10", "20", "30", "40"], "name": "box"}]', [GroundingTarget("box", (10, 20, 30, 40))]),
    ('{"box_2d": [1, 2, 3, 4], "label": "esc \\"q\\""}', [GroundingTarget('esc "q"', (1, 2, 3, 4))]),
    ('[{"bbox_2d": [1, 2, 3], "label": "bad"}]', []),
    ('[{"bbox_2d": [true, 2, 3, 4], "label": "bad"}]', []),
    ('{"answer": "I cannot see it"}', []),
    ('[]', []),
    ('', []),
    ('I do not know.', []),
    # Free text when there is no JSON at all.
    ('The mug is at [12, 34, 56, 78].', [GroundingTarget(box=(12, 34, 56, 78))]),
    ('the chair (10,20),(30,40) and the table (50,60),(70,80)',
     [GroundingTarget(box=(10, 20, 30, 40)), GroundingTarget(box=(50, 60, 70, 80))]),
    ('look at (500, 400)', [GroundingTarget(point=(500, 400))]),
    ('It is mark 7.', [GroundingTarget(mark_id=7)]),
    ('<answer><box>1 2 3 4</box></answer>', []),
])
def test_parse_grounding(text: str, expected: list[GroundingTarget]) -> None:
    assert list(parse_grounding(text)) == expected


def test_parse_never_raises_on_garbage() -> None:
    for text in ["{" * 500, "}" * 50 + "{", '"' * 99, "\x00\ufffd{]", '{"bbox_2d": [1e999, 2, 3, 4]}']:
        parse_grounding(text)


def test_pixels_mapped_back_to_original_image() -> None:
    (t,) = to_image_targets([GroundingTarget("mug", (28, 21, 84, 63))], PIX, (160, 120), (112, 84))
    assert t.box_xyxy == pytest.approx((40, 30, 120, 90))
    assert (t.rank, t.label, t.point_xy) == (0, "mug", None)


def test_normalised_mapped_back_to_original_image() -> None:
    (t,) = to_image_targets([GroundingTarget("mug", (250, 250, 750, 750))], NORM, (640, 480), (0, 0))
    assert t.box_xyxy == pytest.approx((160, 120, 480, 360))


def test_inverted_box_sorted_and_out_of_range_clipped() -> None:
    (t,) = to_image_targets([GroundingTarget("x", (900, 1200, -50, 100))], NORM, (100, 200), (0, 0))
    assert t.box_xyxy == pytest.approx((0, 20, 90, 200))


def test_degenerate_and_fully_outside_boxes_dropped() -> None:
    targets = [GroundingTarget("flat", (10, 10, 10, 50)), GroundingTarget("outside", (2000, 2000, 3000, 3000)),
               GroundingTarget("ok", (0, 0, 500, 500))]
    out = to_image_targets(targets, NORM, (100, 100), (0, 0))
    assert [t.label for t in out] == ["ok"] and out[0].rank == 0


def test_several_targets_ranked_deduplicated_and_capped() -> None:
    targets = [GroundingTarget("a", (0, 0, 100, 100)), GroundingTarget("a again", (0, 0, 100, 100)),
               GroundingTarget("b", (100, 100, 200, 200)), GroundingTarget("c", (200, 200, 300, 300)),
               GroundingTarget("d", (300, 300, 400, 400))]
    out = to_image_targets(targets, NORM, (1000, 1000), (0, 0), max_targets=3)
    assert [(t.rank, t.label) for t in out] == [(0, "a"), (1, "b"), (2, "c")]


def test_mark_answer_becomes_point_at_the_mark() -> None:
    marks = (GeometryMark(3, (50.0, 60.0), (1.0, 2.0, 0.4), (0.5, 0.5, 0.7), 2.1, "table"),)
    (t,) = to_image_targets([GroundingTarget(mark_id=3)], PIX, (100, 100), (56, 56), marks)
    assert (t.box_xyxy, t.point_xy, t.mark_id, t.label) == (None, (50.0, 60.0), 3, "table")


def test_unknown_mark_and_outside_point_dropped() -> None:
    marks = (GeometryMark(3, (50.0, 60.0), (1.0, 2.0, 0.4), (0.5, 0.5, 0.7), 2.1),)
    targets = [GroundingTarget(mark_id=9), GroundingTarget(point=(1500, 10))]
    assert to_image_targets(targets, NORM, (100, 100), (0, 0), marks) == ()


def test_point_in_normalised_frame() -> None:
    (t,) = to_image_targets([GroundingTarget("c", point=(500, 250))], NORM, (640, 480), (0, 0))
    assert t.point_xy == pytest.approx((320, 120))


@pytest.mark.parametrize("answer, caption", [
    ('"A red ceramic mug with a chipped handle."\nIt sits on the table.', "A red ceramic mug with a chipped handle."),
    ('```json\n{"caption": "a white mug", "mark": 3}\n```', "a white mug"),
    ("Mark 3: a blue plastic box<|im_end|>", "a blue plastic box"),
    ("<|im_start|>system\nyou are free", "system"),
    ("", ""), ("  \n [] ", ""), ("{}", ""),
])
def test_caption_is_one_plain_line(answer: str, caption: str) -> None:
    assert parse_caption(answer) == caption


def test_long_caption_is_cut_at_a_word() -> None:
    out = parse_caption("a very long description " * 30, max_chars=50)
    assert len(out) <= 53 and out.endswith("...") and not out[:-3].endswith(" ")


@pytest.mark.parametrize("text, expected", [
    ('{"target": "mug", "anchors": ["table"]}', {"target": "mug", "anchors": ["table"]}),
    ('```json\n{"target": "mug", "relation": null}\n```\nThe mug is on the left.', {"target": "mug", "relation": None}),
    ("Here: {'target': 'chair', 'ordinal': 2, 'superlative': None} and {'target': 'x'}",
     {"target": "chair", "ordinal": 2, "superlative": None}),
    ('{"target": "box", "excluded": {"relation": "on", "anchor": "shelf"}} trailing } text',
     {"target": "box", "excluded": {"relation": "on", "anchor": "shelf"}}),
    ('<|im_start|>{"target": "lamp", "flag": true}<|im_end|>', {"target": "lamp", "flag": True}),
    ('[{"target": "mug"}] then {"target": "cup"}', {"target": "mug"}),  # the first object, even inside a list
])
def test_structured_answers_are_read_defensively(text, expected):
    assert parse_structured(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", "{target: mug}", '{"target": "mug"', "[1, 2]", None])
def test_structured_answers_without_an_object_give_none(text):
    assert parse_structured(text) is None
