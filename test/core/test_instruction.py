"""The instruction grammar: target, attributes, relations, anchors, ordinals, exclusions."""

from __future__ import annotations

import pytest

from mllm3d_ros.core.instruction import Relation, Superlative, parse_instruction


@pytest.mark.parametrize("text,target,relation,anchors", [
    ("the mug next to the laptop", "mug", Relation.NEAR, ("laptop",)),
    ("the container on the table", "container", Relation.ON, ("table",)),
    ("the chair closest to the window", "chair", Relation.NEAREST_TO, ("window",)),
    ("the chair by the counter", "chair", Relation.NEAR, ("counter",)),
    ("the lamp to the left of the sofa", "lamp", Relation.LEFT_OF, ("sofa",)),
    ("the bag in front of the door", "bag", Relation.IN_FRONT_OF, ("door",)),
    ("the cat under the table", "cat", Relation.UNDER, ("table",)),
    ("the box between the mug and the laptop", "box", Relation.BETWEEN, ("mug", "laptop")),
    ("the mug at the end of the table", "mug", Relation.AT_END_OF, ("table",)),
    ("the chair at the head of the table", "chair", Relation.AT_END_OF, ("table",)),
    ("somewhere I can sit", "somewhere i can sit", None, ()),
    ("something I can sit on", "something i can sit on", None, ()),  # no noun after "on": no relation
])
def test_target_relation_and_anchors(text, target, relation, anchors):
    parsed = parse_instruction(text)
    assert (parsed.target, parsed.relation, parsed.anchors) == (target, relation, anchors)


def test_attributes_stay_in_the_embedded_text_and_make_the_query_not_plain():
    parsed = parse_instruction("the white plastic mug")
    assert parsed.target == "mug" and parsed.attributes == ("white", "plastic")
    assert parsed.target_text == "white plastic mug"
    assert not parsed.is_plain and parse_instruction("a chair").is_plain


def test_ordinals_superlatives_and_exclusions():
    second = parse_instruction("the second monitor from the left")
    assert (second.target, second.ordinal, second.superlative) == ("monitor", 2, Superlative.LEFTMOST)
    assert parse_instruction("the biggest chair").superlative is Superlative.BIGGEST
    excluded = parse_instruction("the mug on the table, not the one on the counter")
    assert excluded.relation is Relation.ON and excluded.anchors == ("table",)
    assert excluded.excluded == (Relation.ON, "counter")


def test_what_is_not_understood_is_noted():
    assert parse_instruction("the third chair").notes  # no "from the left/right"
    assert "two anchors" in " ".join(parse_instruction("the box between the mug").notes)
    assert "whole instruction" in " ".join(parse_instruction("the").notes)
