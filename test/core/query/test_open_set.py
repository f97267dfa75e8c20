"""The open-set gate on a hand-made vocabulary and text model (the offline vocabulary with the real MiniLM:
test/backends/test_offline_text.py; the calibration figures: benchmarks/open_set.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.query.instruction import parse_instruction
from mllm3d_ros.core.query.open_set import (Concept, InstructionRecognition, OpenSetConfig, OpenSetGate, Recognition,
                                      RecognitionStatus, Vocabulary, head_words, is_generic, singular)
from mllm3d_ros.core.config import ConfigError

# A toy text model: a phrase's direction is fixed by the first key word it contains.
_AXES = {"sit": 0, "chair": 0, "seat": 0, "drink": 1, "mug": 1, "cup": 1, "sofa": 2, "couch": 2, "lie": 3, "bed": 3}


def encode(texts):
    out = []
    for t in texts:
        v = np.full(8, 0.05, np.float32)
        for word, axis in _AXES.items():
            if word in t:
                v[axis] = 1.0
                break
        else:
            v[7] = 1.0  # anything else
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


VOCAB = Vocabulary("the toy model", (Concept("Chair", ("a chair", "something to sit on"), ("chair", "seat")),
                                     Concept("Mug", ("a mug", "something to drink from"), ("mug", "cup"),
                                             shape="round")))


@pytest.fixture
def gate():
    return OpenSetGate(VOCAB, encode)


def test_a_noun_of_a_concept_is_known_with_plurals_and_compounds(gate):
    for phrase in ("chair", "chairs", "seats", "wooden chair", "cup of tea", "cups i can drink from"):
        r = gate.recognise(phrase)
        assert r.status is RecognitionStatus.KNOWN and r.how == "noun", (phrase, r)
    assert gate.recognise("cup").concepts == ("Mug",) and gate.recognise("cup").shape == "round"


def test_a_paraphrase_is_known_by_the_text_model_when_it_beats_the_background(gate):
    r = gate.recognise("somewhere i can sit")
    assert r.status is RecognitionStatus.KNOWN and r.concepts == ("Chair",) and r.how == "embedding"
    assert r.score > 0.9 and r.margin > 0.5


def test_an_unknown_noun_is_unknown_and_names_the_nearest_known(gate):
    r = gate.recognise("umbrella")  # its direction matches no concept phrase
    assert r.status is RecognitionStatus.UNKNOWN and set(r.nearest) == {"Chair", "Mug"}
    assert r.message().startswith("'umbrella' is not something the toy model recognises; nearest known: ")
    # A background noun is unknown by the lexical rule, whatever the text model says.
    assert gate.recognise("bench").how == "background noun"


def test_a_noun_outside_the_lexicon_needs_a_close_paraphrase():
    # "sofa" lies on its own axis: far from every concept phrase -> unknown by the stricter noun thresholds.
    gate = OpenSetGate(VOCAB, encode, OpenSetConfig(noun_min_similarity=0.65, noun_min_margin=0.2))
    assert gate.recognise("sofa").status is RecognitionStatus.UNKNOWN
    assert gate.recognise("couch for two").status is RecognitionStatus.UNKNOWN


def test_generic_words_are_generic_and_an_open_vocabulary_passes_phrases_on(gate):
    assert gate.recognise("thing").status is RecognitionStatus.GENERIC and is_generic("the object")
    assert not is_generic("something to drink from")
    open_gate = OpenSetGate(Vocabulary.open_vocabulary("a VLM", "answers []"), None)
    r = open_gate.recognise("umbrella")
    assert r.status is RecognitionStatus.OPEN and r.open_vocabulary


def test_recognitions_round_trip_through_json_and_bad_json_is_a_value_error(gate):
    for phrase in ("cup", "umbrella", "thing"):
        r = gate.recognise(phrase)
        back = Recognition.from_json(r.to_json())
        assert (back.status, back.phrase, back.concepts, back.nearest, back.how, back.shape) == \
               (r.status, r.phrase, r.concepts, r.nearest, r.how, r.shape)
    with pytest.raises(ValueError, match="not a recognition"):
        Recognition.from_json('{"status": "maybe"}')


def test_an_instructions_target_and_anchors_are_recognised(gate):
    rec = InstructionRecognition.of(parse_instruction("the mug next to the umbrella"), gate.recognise)
    assert rec.target.status is RecognitionStatus.KNOWN
    assert [a.status for a in rec.anchors] == [RecognitionStatus.UNKNOWN]


def test_words_helpers():
    assert head_words("cup of tea") == ["cup"] and head_words("can i sit down") == []
    assert "box" in singular("boxes") and "cup" in singular("cups") and "person" in singular("people")


def test_a_closed_vocabulary_needs_a_text_model_and_the_config_is_validated():
    with pytest.raises(ValueError, match="text model"):
        OpenSetGate(VOCAB, None)
    with pytest.raises(ConfigError, match="min_margin"):
        OpenSetConfig(min_margin=5.0)
