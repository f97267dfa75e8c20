"""Message <-> core conversions of SegmentViews: views with their marks, and predictions with the chosen mark."""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from mllm3d_ros.core.types import BackendView, CameraIntrinsics, GeometryMark, InputError, Prediction2D
from mllm3d_ros.ros.conversions import (add_views_to_request, mark_from_msg, mark_to_msg, marks_from_request,
                                        prediction_to_msg, predictions_from_response)
from mllm3d_ros.srv import SegmentViews

pytestmark = pytest.mark.ros

K = CameraIntrinsics(32, 24, 30.0, 30.0, 15.5, 11.5)
MUG = GeometryMark(1, (10.5, 7.25), (0.2, -1.5, 0.8), (0.1, 0.08, 0.12), 1.75, "mug", (("table #3", 0.0), ("box #7", 0.42)))
CUP = GeometryMark(2, (20.0, 3.0), (0.5, -1.2, 0.8), (0.09, 0.09, 0.1), 1.5, "cup")


def _view(keyframe_id, marks=()):
    return BackendView(keyframe_id, np.full((24, 32, 3), keyframe_id, np.uint8), np.ones((24, 32), np.float32), K,
                       np.eye(4), marks)


def test_marks_round_trip_through_the_request_per_view():
    request = SegmentViews.Request(mode=SegmentViews.Request.SEGMENT, instruction="the mug")
    add_views_to_request(request, [_view(4, (MUG, CUP)), _view(9), _view(11, (CUP,))])
    assert [m.keyframe_id for m in request.marks] == [4, 4, 11]
    marks = marks_from_request(request)
    assert set(marks) == {4, 11}
    (mug, cup), (cup11,) = marks[4], marks[11]
    for got, want in ((mug, MUG), (cup, CUP), (cup11, CUP)):
        assert got.mark_id == want.mark_id and got.label == want.label
        assert got.pixel_xy == pytest.approx(want.pixel_xy) and got.center_world_m == pytest.approx(want.center_world_m)
        assert got.size_m == pytest.approx(want.size_m) and got.distance_m == pytest.approx(want.distance_m)
        assert [n for n, _ in got.anchor_distances_m] == [n for n, _ in want.anchor_distances_m]
        assert [d for _, d in got.anchor_distances_m] == pytest.approx([d for _, d in want.anchor_distances_m])


def test_bad_marks_are_input_errors():
    msg = mark_to_msg(MUG, 4)
    msg.anchor_distances_m = [0.1]
    with pytest.raises(InputError, match="2 anchor_names but 1 anchor_distances_m"):
        mark_from_msg(msg)
    msg = mark_to_msg(MUG, 4)
    msg.center.x = float("nan")
    with pytest.raises(InputError, match="finite"):
        mark_from_msg(msg)
    request = SegmentViews.Request()
    add_views_to_request(request, [_view(4)])
    request.marks.append(mark_to_msg(CUP, 5))
    with pytest.raises(InputError, match="keyframe 5, which is not in the request"):
        marks_from_request(request)


def test_predictions_round_trip_with_the_chosen_mark():
    mask = np.zeros((24, 32), bool)
    mask[5:10, 8:14] = True
    emb = np.array([0.6, 0.8], np.float32)
    header = Header(frame_id="camera")
    response = SegmentViews.Response()
    response.predictions = [prediction_to_msg(4, Prediction2D(mask, 0.75, emb, "mug", (8.0, 5.0, 14.0, 10.0), 1), header),
                            prediction_to_msg(4, Prediction2D(mask, 0.5, emb, "cup"), header),
                            prediction_to_msg(11, Prediction2D(~mask, 0.25, emb, mark_id=0), header)]
    assert [p.mark_id for p in response.predictions] == [1, -1, 0]
    views = predictions_from_response(response, [_view(4), _view(9), _view(11)])
    assert [v.keyframe_id for v in views] == [4, 9, 11] and views[1].predictions == ()
    first, second = views[0].predictions
    assert first.mark_id == 1 and second.mark_id is None and views[2].predictions[0].mark_id == 0
    np.testing.assert_array_equal(first.mask, mask)
    np.testing.assert_array_equal(views[2].predictions[0].mask, ~mask)
    assert first.box_xyxy == pytest.approx((8.0, 5.0, 14.0, 10.0)) and second.box_xyxy is None
    assert first.confidence == pytest.approx(0.75) and first.label == "mug"
    np.testing.assert_allclose(first.embedding, emb)
