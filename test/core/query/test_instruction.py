"""The instruction grammar: target, attributes, relations, anchors, ordinals, exclusions."""

from __future__ import annotations

import dataclasses

import pytest

from mllm3d_ros.core.query.instruction import (Relation, Superlative, parse_instruction, parsed_from_json,
                                         parsed_from_structured, parsed_to_json, relation_from_phrase,
                                         superlative_from_word)


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


# ---- structured answers (a model's parse) and JSON -----------------------------------------------------
def test_a_good_structured_answer_is_taken_with_synonyms_mapped():
    parsed = parsed_from_structured({"target": "the Mug", "attributes": ["red", "ceramic"], "relation": "beside",
                                     "anchors": ["the laptop"], "superlative": None, "ordinal": None,
                                     "excluded": {"relation": "ON_TOP_OF", "anchor": "counter"}}, "the red mug ...")
    assert (parsed.text, parsed.target, parsed.target_text) == ("the red mug ...", "mug", "red ceramic mug")
    assert parsed.attributes == ("red", "ceramic") and parsed.relation is Relation.NEAR
    assert parsed.anchors == ("laptop",) and parsed.excluded == (Relation.ON, "counter") and parsed.notes == ()
    between = parsed_from_structured({"target": "box", "relation": "BETWEEN", "anchors": ["mug", "laptop"],
                                      "superlative": "largest", "ordinal": 2}, "t")
    assert (between.relation, between.anchors) == (Relation.BETWEEN, ("mug", "laptop"))
    assert (between.superlative, between.ordinal) == (Superlative.BIGGEST, 2)


@pytest.mark.parametrize("answer, why", [
    ({"relation": "on", "anchors": ["table"]}, "no usable target"),
    ({"target": "", "relation": "on"}, "no usable target"),
    ({"target": 3}, "no usable target"),
    (["mug"], "not a JSON object"),
    ("Sure! The target is the mug.", "not a JSON object ('Sure!"),
    (None, "not a JSON object ('NoneType')"),
])
def test_an_unusable_answer_falls_back_to_the_grammar_with_a_note(answer, why):
    parsed = parsed_from_structured(answer, "the mug on the table")
    assert parsed == dataclasses.replace(parse_instruction("the mug on the table"), notes=parsed.notes)
    assert parsed.target == "mug" and parsed.relation is Relation.ON
    assert parsed.notes[0].startswith("the model's parse was unusable: ") and why in parsed.notes[0]
    assert parsed.notes[0].endswith("used the grammar")


@pytest.mark.parametrize("answer, field, expected, note", [
    ({"target": "mug", "relation": "diagonally across", "anchors": ["table"]}, "relation", None,
     "'diagonally across' is not one the resolver knows"),
    ({"target": "box", "relation": "between", "anchors": ["mug"]}, "relation", None, "needs two anchors"),
    ({"target": "box", "relation": "between", "anchors": ["mug"]}, "anchors", (), "gave 1"),
    ({"target": "mug", "relation": "on", "anchors": []}, "relation", None, "without an anchor"),
    ({"target": "mug", "relation": "on", "anchors": ["table", 7]}, "anchors", ("table",), "7 is not a short phrase"),
    ({"target": "mug", "relation": "on", "anchors": "table"}, "anchors", ("table",), None),
    ({"target": "mug", "relation": "near", "anchors": ["table", "sink"]}, "anchors", ("table",), "takes one anchor"),
    ({"target": "chair", "ordinal": 0, "superlative": "leftmost"}, "ordinal", None, "not a positive integer"),
    ({"target": "chair", "ordinal": "2", "superlative": "leftmost"}, "ordinal", None, "not a positive integer"),
    ({"target": "chair", "ordinal": True, "superlative": "leftmost"}, "ordinal", None, "not a positive integer"),
    ({"target": "chair", "ordinal": 3}, "superlative", Superlative.LEFTMOST, "counted from the left"),
    ({"target": "chair", "superlative": "prettiest"}, "superlative", None, "'prettiest' is unknown"),
    ({"target": "mug", "excluded": {"relation": "on"}}, "excluded", None, "needs a known relation and an anchor"),
    ({"target": "mug", "attributes": {"colour": "red"}}, "attributes", (), "is not a list of phrases"),
])
def test_invalid_fields_are_dropped_with_a_note(answer, field, expected, note):
    parsed = parsed_from_structured(answer, "text")
    assert getattr(parsed, field) == expected
    assert parsed.target == answer["target"]
    if note is None:
        assert parsed.notes == ()
    else:
        assert any(note in n for n in parsed.notes), parsed.notes


@pytest.mark.parametrize("text", [
    "the mug next to the laptop", "the white plastic mug", "the box between the mug and the laptop",
    "the second monitor from the left", "the third chair", "the mug on the table, not the one on the counter",
    "the biggest chair", "somewhere I can sit", "the",
])
def test_json_round_trip_of_grammar_parses(text):
    parsed = parse_instruction(text)
    assert parsed_from_json(parsed_to_json(parsed), text) == parsed


def test_relation_and_superlative_synonyms():
    assert relation_from_phrase("to the left of") is Relation.LEFT_OF
    assert relation_from_phrase("LEFT_OF") is Relation.LEFT_OF and relation_from_phrase("in-front-of") is Relation.IN_FRONT_OF
    assert relation_from_phrase("across") is None and relation_from_phrase(None) is None
    assert superlative_from_word("Largest") is Superlative.BIGGEST and superlative_from_word("tallest") is None
    assert parsed_from_json("{not json", "the mug").notes[0].startswith("the backend's parse was unusable")


def test_shape_words_generic_targets_and_material_nouns():
    p = parse_instruction("the box-shaped one on the table")
    assert (p.target, p.attributes, p.relation, p.anchors) == ("object", ("box-shaped",), Relation.ON, ("table",))
    p = parse_instruction("the flat one")
    assert (p.target, p.attributes) == ("object", ("flat",))
    assert parse_instruction("the biggest one on the table").target == "object"
    assert parse_instruction("the red one").target == "object"
    # A material last in the noun phrase is its noun.
    assert parse_instruction("a wine glass").target == "wine glass"
    assert parse_instruction("the glass").target == "glass"
    assert parse_instruction("the plastic box").attributes == ("plastic",)
    assert parse_instruction("a traffic light").target == "traffic light"
