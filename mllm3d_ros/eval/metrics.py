"""Accuracy metrics of 3D reasoning segmentation, as reported by MLLM-For3D (arXiv 2503.18135).

TEST AND BENCHMARK CODE ONLY. Per query, the IoU between the predicted and the ground-truth points
of the target over the map's points (ground truth per map point from the simulator's nearest surface,
`Simulator.closest_instances`); over queries, Acc@0.25 and Acc@0.5 (fraction of queries with
IoU >= 0.25 / 0.5) and mIoU (mean IoU). Instance level (ScanNet / ScanNet200): a ranked object list is
matched greedily against the GT instances of the target class; AP at an IoU threshold, precision and recall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.types import InputError


@dataclass(frozen=True)
class AccuracySummary:
    """acc25, acc50: fraction of queries with IoU >= 0.25 / 0.5; miou: mean IoU; num_queries."""

    acc25: float
    acc50: float
    miou: float
    num_queries: int


def point_iou(predicted_indices: np.ndarray, gt_mask: np.ndarray) -> float:
    """IoU over map points between predicted point indices (K,) and a ground-truth mask (N,) bool.

    An empty prediction of an empty target scores 1; anything else follows |P & G| / |P | G|.
    """
    gt = np.asarray(gt_mask, dtype=bool)
    pred = np.zeros(gt.shape[0], dtype=bool)
    idx = np.asarray(predicted_indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= gt.shape[0]):
        raise InputError(f"point_iou: predicted indices outside [0, {gt.shape[0]})")
    pred[idx] = True
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else float(np.count_nonzero(pred & gt) / union)


def summarize(ious: Sequence[float]) -> AccuracySummary:
    """Acc@0.25, Acc@0.5 and mIoU over per-query IoUs."""
    values = np.asarray(ious, dtype=np.float64)
    if values.size == 0:
        return AccuracySummary(0.0, 0.0, 0.0, 0)
    return AccuracySummary(float(np.mean(values >= 0.25)), float(np.mean(values >= 0.5)), float(values.mean()),
                           int(values.size))


@dataclass(frozen=True, eq=False)
class InstanceMatch:
    """A ranked prediction list matched against GT instances at one IoU threshold.

    confidences (K,) float64 and true_positive (K,) bool, both sorted by decreasing confidence;
    matched_iou (K,) float64: the IoU with the GT instance a prediction was matched to (0 if none).
    """

    iou_threshold: float
    confidences: np.ndarray
    true_positive: np.ndarray
    matched_iou: np.ndarray
    num_gt: int


@dataclass(frozen=True)
class InstanceScores:
    """Instance-level scores of one ranked list at one IoU threshold (ScanNet / ScanNet200 style).

    ap: area under the interpolated precision-recall curve; precision: true positives / predictions
    (0 for an empty list); recall: true positives / GT instances.
    """

    iou_threshold: float
    ap: float
    precision: float
    recall: float
    num_predictions: int
    num_gt: int
    num_true_positives: int


def match_instances(predicted: Sequence[np.ndarray], confidences: Sequence[float], gt_masks: Sequence[np.ndarray],
                    iou_threshold: float) -> InstanceMatch:
    """Greedy matching in order of decreasing confidence: each prediction (point indices) takes the
    unmatched GT instance (bool mask over the map's points) it overlaps best; it is a true positive
    when that IoU reaches `iou_threshold`, else (also a duplicate of a matched instance) a false positive.
    """
    if len(predicted) != len(confidences):
        raise InputError(f"match_instances: {len(predicted)} predictions but {len(confidences)} confidences")
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"match_instances: iou_threshold must be in (0, 1], got {iou_threshold}")
    gts = [np.asarray(g, dtype=bool) for g in gt_masks]
    if any(g.shape != gts[0].shape for g in gts):
        raise InputError("match_instances: GT masks must all cover the same points")
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    order = np.argsort(-conf, kind="stable")  # ties keep the list's own rank
    ious = (np.array([[point_iou(predicted[i], g) for g in gts] for i in order], dtype=np.float64)
            if gts else np.zeros((len(order), 0)))
    taken = np.zeros(len(gts), dtype=bool)
    tp = np.zeros(len(order), dtype=bool)
    matched = np.zeros(len(order), dtype=np.float64)
    for row in range(len(order)):
        free = np.where(taken, -1.0, ious[row]) if gts else np.zeros(0)
        if free.size and free.max() >= iou_threshold:
            best = int(np.argmax(free))
            taken[best], tp[row], matched[row] = True, True, free[best]
    return InstanceMatch(float(iou_threshold), conf[order], tp, matched, len(gts))


def average_precision(matches: Sequence[InstanceMatch]) -> float:
    """AP over one or more matched lists pooled together (ScanNet pools a class over all scenes):
    predictions re-sorted by confidence, precision made monotone (the maximum precision at any higher
    recall), area summed over the recall steps. 0 when there are predictions or GT but no true positive;
    an error when there is no GT instance (AP is undefined)."""
    num_gt = sum(m.num_gt for m in matches)
    if num_gt == 0:
        raise InputError("average_precision: no GT instances; AP is undefined")
    conf = np.concatenate([m.confidences for m in matches]) if matches else np.zeros(0)
    tp = np.concatenate([m.true_positive for m in matches]) if matches else np.zeros(0, bool)
    if tp.size == 0:
        return 0.0
    tp = tp[np.argsort(-conf, kind="stable")]
    cum_tp = np.cumsum(tp)
    recall = cum_tp / num_gt
    precision = cum_tp / np.arange(1, tp.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def instance_scores(predicted: Sequence[np.ndarray], confidences: Sequence[float], gt_masks: Sequence[np.ndarray],
                    iou_threshold: float) -> InstanceScores:
    """AP, precision and recall of one ranked list of predictions against the GT instances of the target class."""
    match = match_instances(predicted, confidences, gt_masks, iou_threshold)
    n_tp, n_pred = int(np.count_nonzero(match.true_positive)), len(match.confidences)
    return InstanceScores(match.iou_threshold, average_precision([match]), n_tp / n_pred if n_pred else 0.0,
                          n_tp / match.num_gt, n_pred, match.num_gt, n_tp)
