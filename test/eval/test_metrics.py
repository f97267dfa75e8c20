"""Paper metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.types import InputError
from mllm3d_ros.eval.metrics import (AccuracySummary, average_precision, instance_scores, match_instances, point_iou,
                                     summarize)


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


# Ten map points; GT instances A = {0..3}, B = {4..5}, and the rest unlabelled.
A = np.isin(np.arange(10), [0, 1, 2, 3])
B = np.isin(np.arange(10), [4, 5])


def test_instance_matching_and_ap_by_hand():
    predicted = [np.array([0, 1, 2]),   # IoU 3/4 with A
                 np.array([7, 8]),      # nothing
                 np.array([4, 5, 6])]   # IoU 2/3 with B
    m = match_instances(predicted, [0.9, 0.8, 0.7], [A, B], 0.5)
    assert m.true_positive.tolist() == [True, False, True]
    assert m.matched_iou == pytest.approx([0.75, 0.0, 2 / 3])
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: interpolated 1 up to recall 1/2, then 2/3.
    assert average_precision([m]) == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    s = instance_scores(predicted, [0.9, 0.8, 0.7], [A, B], 0.5)
    assert (s.precision, s.recall, s.num_true_positives, s.num_predictions, s.num_gt) == \
        (pytest.approx(2 / 3), 1.0, 2, 3, 2)
    # at 0.75 only the first one counts: precision 1 at recall 1/2, never reaching B
    s75 = instance_scores(predicted, [0.9, 0.8, 0.7], [A, B], 0.75)
    assert (s75.ap, s75.precision, s75.recall) == (pytest.approx(0.5), pytest.approx(1 / 3), 0.5)


def test_matching_follows_confidence_not_list_order():
    # The false positive ranked first by confidence pulls the precision of the first true positive down.
    predicted = [np.array([0, 1, 2, 3]), np.array([9])]
    s = instance_scores(predicted, [0.2, 0.9], [A, B], 0.5)
    assert s.ap == pytest.approx(0.5 * 0.5)  # recall 1/2 reached at precision 1/2
    assert instance_scores(predicted, [0.9, 0.2], [A, B], 0.5).ap == pytest.approx(0.5)


def test_a_duplicate_of_a_matched_instance_is_a_false_positive():
    predicted = [np.array([0, 1, 2, 3]), np.array([0, 1, 2])]
    m = match_instances(predicted, [0.9, 0.8], [A, B], 0.25)
    assert m.true_positive.tolist() == [True, False]
    # greedy takes the best *unmatched* instance: the second finds B too weak (IoU 0), not A again
    s = instance_scores(predicted, [0.9, 0.8], [A, B], 0.25)
    assert (s.precision, s.recall) == (0.5, 0.5)


def test_empty_list_and_pooling():
    empty = instance_scores([], [], [A, B], 0.25)
    assert (empty.ap, empty.precision, empty.recall, empty.num_predictions) == (0.0, 0.0, 0.0, 0)
    # pooled over two "scenes": a confident miss in one ranks above a hit in the other
    hit = match_instances([np.array([0, 1, 2, 3])], [0.5], [A], 0.5)
    miss = match_instances([np.array([8, 9])], [0.9], [B], 0.5)
    assert average_precision([hit, miss]) == pytest.approx(0.5 * 0.5)
    assert average_precision([hit]) == 1.0


def test_instance_metric_errors_are_specific():
    with pytest.raises(InputError, match="no GT instances"):
        instance_scores([np.array([0])], [0.5], [], 0.5)
    with pytest.raises(InputError, match="2 predictions but 1 confidences"):
        match_instances([np.array([0]), np.array([1])], [0.5], [A], 0.5)
    with pytest.raises(InputError, match="iou_threshold"):
        match_instances([], [], [A], 0.0)
    with pytest.raises(InputError, match="same points"):
        match_instances([], [], [A, np.zeros(3, bool)], 0.5)
