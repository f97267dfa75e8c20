"""The segmentation node survives bad SegmentViews requests (INVALID_INPUT, never a crash) and a
backend that cannot load (one error line, FAILURE)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Pose, Quaternion
from rclpy.context import Context
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from mllm3d_ros.core.query.instruction import parse_instruction, parsed_from_json
from mllm3d_ros.core.query.open_set import Concept, Recognition, RecognitionStatus, Vocabulary
from mllm3d_ros.core.segmentation import SegmentationBackend
from mllm3d_ros.core.types import CameraIntrinsics, GeometryMark, Prediction2D, SegmentationResult, ViewPredictions
from mllm3d_ros.ros import segmentation_node
from mllm3d_ros.ros.conversions import (depth_to_image, intrinsics_to_camera_info, mark_to_msg, matrix_to_pose,
                                        predictions_from_response, rgb_to_image)
from mllm3d_ros.ros.segmentation_node import SegmentationNode
from mllm3d_ros.srv import SegmentViews

pytestmark = pytest.mark.ros
K = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)


class ShapeCheckingBackend:
    """Stands in for a model: it indexes depth with the colour image's shape, as a real one would."""

    def segment(self, views, instruction):
        for view in views:
            if view.depth_m is not None:
                view.depth_m[view.color_rgb.shape[0] - 1, view.color_rgb.shape[1] - 1]
        return SegmentationResult("thing", np.ones(4, np.float32), tuple(ViewPredictions(v.keyframe_id, ())
                                                                         for v in views))

    def close(self):
        pass


@pytest.fixture
def node():
    context = Context()
    rclpy.init(context=context)
    n = SegmentationNode(context=context, namespace="/seg_faults",
                         parameter_overrides=[Parameter("autostart", value=False)])
    yield n
    n.destroy_node()
    rclpy.try_shutdown(context=context)


def _request(n=1, width=64, height=48, depth_size=(48, 64), pose=np.eye(4)):
    header = Header(frame_id="camera")
    req = SegmentViews.Request(instruction="the thing")
    for i in range(n):
        req.keyframe_ids.append(i)
        req.images.append(rgb_to_image(np.zeros((height, width, 3), np.uint8), header))
        req.depths.append(depth_to_image(np.ones(depth_size, np.float32), header))
        req.camera_infos.append(intrinsics_to_camera_info(K, header))
        req.world_t_camera.append(matrix_to_pose(pose))
    return req


def _answer(node, request):
    node._backend, node._active = ShapeCheckingBackend(), True
    return node._on_request(request, SegmentViews.Response())


def test_good_request_is_answered(node):
    response = _answer(node, _request(2))
    assert response.status == SegmentViews.Response.OK and response.target_phrase == "thing"


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r.camera_infos.pop(), "same length"),
    (lambda r: r.depths.pop(), "depths must be empty or one per image"),
    (lambda r: setattr(r, "images", []) or setattr(r, "depths", []) or setattr(r, "camera_infos", [])
     or setattr(r, "world_t_camera", []) or setattr(r, "keyframe_ids", []), "no images"),
    (lambda r: r.images.__setitem__(0, rgb_to_image(np.zeros((24, 32, 3), np.uint8), Header())),
     "do not match camera_info 64x48"),
    (lambda r: r.depths.__setitem__(0, depth_to_image(np.ones((24, 32), np.float32), Header())),
     "do not match camera_info 64x48"),
    (lambda r: r.world_t_camera.__setitem__(0, Pose(orientation=Quaternion(w=0.0))), "invalid quaternion"),
    (lambda r: setattr(r.world_t_camera[0].position, "x", float("nan")), "NaN"),
    (lambda r: setattr(r.images[0], "encoding", "yuv422"), "encoding"),
])
def test_bad_request_is_invalid_input_and_the_node_keeps_serving(node, mutate, expected):
    request = _request(2)
    mutate(request)
    response = _answer(node, request)
    assert response.status == SegmentViews.Response.INVALID_INPUT and expected in response.message, response.message
    assert _answer(node, _request(1)).status == SegmentViews.Response.OK


@pytest.mark.parametrize("error", [ImportError("No module named 'ai_edge_litert'"), OSError("libcudart.so: not found"),
                                   RuntimeError("CUDA error: no kernel image is available")])
def test_configure_failure_is_logged_once_and_returns_failure(node, monkeypatch, capfd, error):
    def broken(name, **kwargs):
        raise error

    monkeypatch.setattr(segmentation_node, "build_backend", broken)
    assert node.on_configure(None) == TransitionCallbackReturn.FAILURE
    err = capfd.readouterr().err
    assert f"cannot load backend 'offline': {type(error).__name__}: {error}" in err, err


MARK = GeometryMark(2, (30.0, 20.0), (1.0, 0.0, 0.5), (0.2, 0.2, 0.3), 1.1, "mug", (("table #1", 0.0),))


class MarkingBackend(SegmentationBackend):
    """Picks the last mark of each view; captions the mark it is given; records what it saw."""

    uses_marks = True

    def __init__(self, captions=True):
        self.seen, self.captions = [], captions

    def segment(self, views, instruction):
        self.seen.extend(v.marks for v in views)
        mask = np.ones((48, 64), bool)
        return SegmentationResult("mug", np.ones(4, np.float32), tuple(
            ViewPredictions(v.keyframe_id, (Prediction2D(mask, 0.8, np.ones(4, np.float32), "mug",
                                                         mark_id=v.marks[-1].mark_id if v.marks else None),))
            for v in views))

    def caption(self, view, mark):
        if not self.captions:
            return super().caption(view, mark)
        self.seen.append(view.marks)
        return f"a mug under mark {mark.mark_id}"


def test_marks_reach_the_backend_and_its_pick_comes_back(node):
    backend = MarkingBackend()
    node._backend, node._active = backend, True
    request = _request(2)
    request.marks.append(mark_to_msg(MARK, 1))
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.OK
    assert backend.seen[0] == () and [m.mark_id for m in backend.seen[1]] == [2]
    assert backend.seen[1][0].anchor_distances_m == (("table #1", 0.0),)
    views = predictions_from_response(response, [type("V", (), {"keyframe_id": k}) for k in (0, 1)])
    assert [p.mark_id for v in views for p in v.predictions] == [None, 2]


def test_caption_mode_answers_one_marked_view_and_says_when_the_backend_cannot(node):
    node._active = True
    request = _request(1)
    request.mode = SegmentViews.Request.CAPTION
    request.marks.append(mark_to_msg(MARK, 0))
    node._backend = MarkingBackend()
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.OK and response.caption == "a mug under mark 2"
    node._backend = MarkingBackend(captions=False)
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.UNSUPPORTED and "no caption mode" in response.message
    request.marks.pop()
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.INVALID_INPUT and "one view with a mark" in response.message


def test_a_mark_naming_a_keyframe_not_in_the_request_is_invalid_input(node):
    request = _request(1)
    request.marks.append(mark_to_msg(MARK, 7))
    response = _answer(node, request)
    assert response.status == SegmentViews.Response.INVALID_INPUT and "keyframe 7" in response.message


class ParsingBackend(SegmentationBackend):
    """Parses with the grammar, tagging its parse, so the answer is known exactly."""

    def segment(self, views, instruction):
        raise AssertionError("PARSE must not segment")

    def parse(self, instruction):
        return dataclasses.replace(parse_instruction(instruction), notes=("parsed by the backend",))


def test_parse_mode_answers_json_without_views_and_says_when_the_backend_cannot(node):
    node._active = True
    request = SegmentViews.Request(mode=SegmentViews.Request.PARSE, instruction="the red mug next to the laptop")
    node._backend = ParsingBackend()
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.OK, response.message
    parsed = parsed_from_json(response.parsed_json, request.instruction)
    assert parsed == dataclasses.replace(parse_instruction(request.instruction), notes=("parsed by the backend",))
    assert (parsed.target, parsed.attributes, parsed.anchors) == ("mug", ("red",), ("laptop",))
    node._backend = MarkingBackend()  # the base class's parse: ModeUnsupported
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.UNSUPPORTED and "no instruction parsing mode" in response.message
    assert response.parsed_json == ""
    request.instruction = "   "
    node._backend = ParsingBackend()
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.INVALID_INPUT and "empty" in response.message


class ClosedVocabularyBackend(SegmentationBackend):
    """A backend that recognises mugs only (its text model: a mug direction and a direction for the rest)."""

    def segment(self, views, instruction):
        raise AssertionError("RECOGNISE must not segment")

    def vocabulary(self):
        return Vocabulary("the test model", (Concept("Mug", ("a mug",), ("mug", "cup")),))

    def encode_text(self, texts):
        return np.stack([np.eye(4, dtype=np.float32)[0 if "mug" in t else 1] for t in texts])


def test_recognise_mode_answers_the_open_set_gate_as_json(node):
    node._active = True
    node._backend = ClosedVocabularyBackend()
    request = SegmentViews.Request(mode=SegmentViews.Request.RECOGNISE, instruction="umbrella")
    response = node._on_request(request, SegmentViews.Response())
    assert response.status == SegmentViews.Response.OK, response.message
    answer = Recognition.from_json(response.recognition_json)
    assert answer.status is RecognitionStatus.UNKNOWN and answer.nearest == ("Mug",) and answer.model == "the test model"
    request.instruction = "cups"
    answer = Recognition.from_json(node._on_request(request, SegmentViews.Response()).recognition_json)
    assert answer.status is RecognitionStatus.KNOWN and answer.concepts == ("Mug",)
    node._backend = MarkingBackend()  # the base class's vocabulary: open
    answer = Recognition.from_json(node._on_request(request, SegmentViews.Response()).recognition_json)
    assert answer.status is RecognitionStatus.OPEN and answer.open_vocabulary


def _segmentation_node(**overrides) -> tuple[SegmentationNode, Context]:
    context = Context()
    rclpy.init(context=context)
    params = [Parameter("autostart", value=False)] + [Parameter(k, value=v) for k, v in overrides.items()]
    return SegmentationNode(context=context, namespace="/seg_params", parameter_overrides=params), context


@pytest.mark.parametrize("device", ["cuda:1", "cuda:12", "cuda", "cpu", "auto"])
def test_device_accepts_cuda_n(device):
    n, context = _segmentation_node(device=device)
    try:
        assert n._params["device"] == device
    finally:
        n.destroy_node()
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("device", ["cuda:", "cuda:x", "gpu", "cuda:1 "])
def test_bad_device_names_the_parameter(device):
    from mllm3d_ros.ros.params import ParameterError

    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ParameterError, match=r"parameter 'device' must be one of \['auto', 'cpu', 'cuda', 'cuda:N'\]"):
            SegmentationNode(context=context, namespace="/seg_params",
                             parameter_overrides=[Parameter("autostart", value=False), Parameter("device", value=device)])
    finally:
        rclpy.try_shutdown(context=context)


def test_sam_kind_coord_format_and_max_pixels_reach_the_transformers_backend():
    n, context = _segmentation_node(backend="transformers", vlm_model="/m/qwen", sam_model="/m/sam2",
                                    sam_kind="sam2", coord_format="norm1000", max_pixels=200_000, device="cuda:1")
    try:
        kwargs = segmentation_node.backend_kwargs(n._params)
    finally:
        n.destroy_node()
        rclpy.try_shutdown(context=context)
    assert (kwargs["sam_kind"], kwargs["coord_format"], kwargs["max_pixels"], kwargs["device"]) == (
        "sam2", "norm1000", 200_000, "cuda:1")
    from mllm3d_ros.backends.mllm.backend import TransformersBackendConfig

    TransformersBackendConfig(**kwargs)  # every forwarded parameter is one the backend takes, in range


def test_node_defaults_are_the_backends_defaults():
    # One default per setting: the node's ParamSpec and the backend's config must not drift apart.
    import dataclasses

    from mllm3d_ros.backends.mllm.backend import TransformersBackendConfig

    config = {f.name: f.default for f in dataclasses.fields(TransformersBackendConfig)
              if f.default is not dataclasses.MISSING}  # vlm_model, sam_model: required, '' on the node
    specs = {s.name: s.default for s in segmentation_node.SEGMENTATION_PARAMS}
    shared = sorted(set(config) & set(specs))
    assert {"device", "dtype", "sam_kind", "coord_format", "max_pixels", "max_new_tokens"} <= set(shared)
    assert {name: specs[name] for name in shared} == {name: config[name] for name in shared}
