"""The query node's model parsing (SegmentViews mode PARSE) over loopback DDS (see querygraph.py): the
model's parse is used when the backend answers, UNSUPPORTED is asked once, a failure or an unusable
answer leaves the instruction to the grammar with a note, and `model_parsing: false` never asks. The
open-set gate (mode RECOGNISE) goes through the same service: a target the backend does not recognise is
NOT_FOUND naming it, without a 2D model call."""

from __future__ import annotations

import dataclasses

import pytest

from mllm3d_ros.core.query.instruction import parse_instruction, parsed_to_json
from mllm3d_ros.core.query.open_set import Recognition, RecognitionStatus
from mllm3d_ros.core.types import QueryStatus
from querygraph import Graph, result_of, wait_future, wait_until

pytestmark = pytest.mark.ros


@pytest.fixture
def graph(request):
    g = Graph(**getattr(request, "param", {}))
    yield g
    g.close()


def _query(graph, instruction="the cube"):
    status, result = result_of(wait_future(graph.send(instruction)))
    assert result.error_code == QueryStatus.SUCCESS, result.error_message
    return result.error_message


def test_unsupported_is_asked_once_and_the_grammar_is_used_silently(graph):
    assert "used the grammar" not in _query(graph) and "used the grammar" not in _query(graph)
    assert graph.segmentation.parse_calls == 1 and graph.segmentation.calls >= 2
    # A heartbeat naming another backend (the segmentation node restarted with a model): asked again.
    assert wait_until(lambda: graph.query._segmenter.status().backend == "scripted", 5.0)
    graph.query._segmenter.liveness.on_heartbeat("transformers active")
    _query(graph)
    assert graph.segmentation.parse_calls == 2


def test_the_models_parse_is_used_and_failures_fall_back_with_a_note(graph):
    model = dataclasses.replace(parse_instruction("the cube"), notes=("parsed by the scripted model",))
    graph.segmentation.parse_answer = parsed_to_json(model)
    assert "note: parsed by the scripted model" in _query(graph)
    graph.segmentation.parse_answer = "error"
    message = _query(graph)
    assert "the model's parse failed (CUDA out of memory), used the grammar" in message
    graph.segmentation.parse_answer = "{'not': json"
    assert "the segmentation node's parse was unusable: not a JSON object" in _query(graph)
    assert graph.segmentation.parse_calls == 3  # an OK or failing backend is asked on every query


@pytest.mark.parametrize("graph", [{"model_parsing": False}], indirect=True)
def test_model_parsing_off_never_asks(graph):
    graph.segmentation.parse_answer = parsed_to_json(dataclasses.replace(parse_instruction("the cube"),
                                                                         notes=("model",)))
    assert "note: model" not in _query(graph)
    assert graph.segmentation.parse_calls == 0


def test_a_target_the_backend_does_not_recognise_is_not_found_without_a_model_call(graph):
    _query(graph)  # UNSUPPORTED (an older segmentation node): asked once, phrases go on as before
    _query(graph)
    assert graph.segmentation.recognise_calls == 1
    assert wait_until(lambda: graph.query._segmenter.status().backend == "scripted", 5.0)
    graph.query._segmenter.liveness.on_heartbeat("offline active")  # another backend: asked again
    graph.segmentation.recognise_answer = Recognition(
        RecognitionStatus.UNKNOWN, "umbrella", nearest=("Box", "Chair"), model="the scripted model").to_json()
    calls = graph.segmentation.calls
    status, result = result_of(wait_future(graph.send("bring me the umbrella")))
    assert result.error_code == QueryStatus.NOT_FOUND and not result.objects
    assert ("'umbrella' is not something the scripted model recognises; nearest known: box, chair"
            in result.error_message)
    assert graph.segmentation.calls == calls  # never sent to the 2D model as its nearest class
