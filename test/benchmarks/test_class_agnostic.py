"""benchmarks.class_agnostic's one-to-one matching of memory instances and ground-truth objects."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.class_agnostic import match  # noqa: E402


def test_each_object_and_instance_are_matched_once_best_iou_first():
    gts = [np.arange(0, 10), np.arange(10, 20), np.arange(20, 24)]
    preds = [np.arange(0, 20),   # both first objects in one instance: IoU 0.5 with each
             np.arange(10, 19),  # most of the second: IoU 0.9
             np.arange(30, 40)]  # nothing
    out = match(preds, gts)
    assert [(i, j) for i, j, _ in out] == [(1, 1), (0, 0)]  # the merged instance counts for one object only
    assert [iou for _, _, iou in out] == pytest.approx([0.9, 0.5])
    assert match(preds, gts, threshold=0.95) == []
    assert match([], gts) == [] and match(preds, []) == []


def test_a_miss_is_put_at_the_stage_it_was_lost():
    from benchmarks.class_agnostic import explain_miss

    assert explain_miss(0, 0) == "never_masked"
    assert explain_miss(0, 3) == "never_apart"
    assert explain_miss(1, 3) == "one_view"
    assert explain_miss(2, 2) == "memory"
