"""Paper metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.types import InputError
from mllm3d_ros.eval.metrics import AccuracySummary, point_iou, summarize


def test_point_iou_by_hand():
    gt = np.array([True, True, True, False, False])
    assert point_iou(np.array([0, 1, 3]), gt) == pytest.approx(2 / 4)
    assert point_iou(np.array([0, 1, 2]), gt) == 1.0
    assert point_iou(np.array([], dtype=np.int64), gt) == 0.0
    assert point_iou(np.array([], dtype=np.int64), np.zeros(5, bool)) == 1.0
    assert point_iou(np.array([0, 0, 1]), gt) == pytest.approx(2 / 3)  # duplicates count once
    with pytest.raises(InputError):
        point_iou(np.array([7]), gt)


def test_summarize_matches_the_paper_definitions():
    s = summarize([0.1, 0.25, 0.49, 0.5, 0.9])
    assert s == AccuracySummary(acc25=0.8, acc50=0.4, miou=pytest.approx(0.448), num_queries=5)
    assert summarize([]) == AccuracySummary(0.0, 0.0, 0.0, 0)
