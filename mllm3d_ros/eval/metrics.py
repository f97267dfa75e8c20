"""Accuracy metrics of 3D reasoning segmentation, as reported by MLLM-For3D (arXiv 2503.18135).

TEST AND BENCHMARK CODE ONLY. Per query, the IoU between the predicted and the ground-truth points
of the target over the map's points (ground truth per map point from the simulator's nearest surface,
`Simulator.closest_instances`); over queries, Acc@0.25 and Acc@0.5 (fraction of queries with
IoU >= 0.25 / 0.5) and mIoU (mean IoU).
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
