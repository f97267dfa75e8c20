"""Voting stages 1-4: Token-for-Query weights, masks lifted onto the map, per-point evidence.

MLLM-For3D (arXiv 2503.18135): each mask is weighted w = alpha * max(0, e . q) against one query
embedding q (Token-for-Query); each view that sees a point inside a mask is positive evidence for it,
each view that sees it outside every mask negative evidence, a view that cannot see it no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..types import InputError
from ..visibility import ViewProjection


@dataclass(frozen=True, eq=False)
class PointVotes:
    """Weighted evidence per map point (N,) float32: positive (inside a mask), negative (seen outside all)."""

    positive: np.ndarray
    negative: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """positive / (positive + negative), 0 where a point has no evidence at all."""
        total = self.positive + self.negative
        return np.divide(self.positive, total, out=np.zeros_like(total), where=total > 0)


def unified_query_embedding(embeddings: np.ndarray, confidences: np.ndarray,
                            query_embedding: np.ndarray | None = None) -> np.ndarray | None:
    """Token-for-Query's single query q (D,), L2-normalised.

    The backend's own query embedding (e.g. the text embedding of the instruction) when given, else
    the confidence-weighted mean of the masks' embeddings (M, D). None when neither defines a direction.
    """
    if query_embedding is not None:
        q = np.asarray(query_embedding, dtype=np.float64).ravel()
    elif len(embeddings) == 0:
        return None
    else:
        q = (np.asarray(confidences, dtype=np.float64)[:, None] * np.asarray(embeddings, dtype=np.float64)).sum(0)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-12:
        return None
    return (q / norm).astype(np.float32)


def token_for_query_weights(confidences: np.ndarray, embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Per-mask weight w = alpha * max(0, e . q) (MLLM-For3D, Token-for-Query); (M,) float32 in [0, 1]."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.maximum(norms, 1e-12)  # the contract says normalised; do not trust it blindly
    sim = np.clip(emb @ np.asarray(query, dtype=np.float32), 0.0, 1.0)
    return (np.asarray(confidences, dtype=np.float32) * sim).astype(np.float32)


def lift_masks(projection: ViewProjection, masks: Sequence[np.ndarray]) -> np.ndarray:
    """Which of the view's visible points fall inside each mask: (J, V) bool for J masks."""
    hits = np.zeros((len(masks), projection.visible_indices.shape[0]), dtype=bool)
    for j, mask in enumerate(masks):
        if mask.shape != projection.image_shape:
            raise InputError(f"keyframe {projection.keyframe_id}: mask is {mask.shape}, image is "
                             f"{projection.image_shape}")
        hits[j] = mask.ravel()[projection.pixel_index]
    return hits


def mask_extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(first row, last row, first column, last column) of a mask's pixels, inclusive; (0, -1, 0, -1) when empty."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.shape[0] == 0:
        return 0, -1, 0, -1
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def grow_mask(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """The mask grown by radius_px pixels in every direction (8-neighbourhood steps), (H, W) bool."""
    out = np.asarray(mask, dtype=bool)
    for _ in range(radius_px):
        rows = out.copy()
        rows[1:] |= out[:-1]
        rows[:-1] |= out[1:]
        out = rows.copy()
        out[:, 1:] |= rows[:, :-1]
        out[:, :-1] |= rows[:, 1:]
    return out


def point_votes(num_points: int, projections: Sequence[ViewProjection], hits: Sequence[np.ndarray],
                weights: Sequence[np.ndarray], negative_weights: Sequence[float],
                near_masks: Sequence[np.ndarray | None] | None = None) -> PointVotes:
    """Accumulate spatial-consistency evidence over views.

    Per view k: a seen point inside mask j gains max_j weights[k][j] (one view, one vote, however
    many of its masks overlap); a seen point outside every mask gains negative_weights[k] against it;
    points the view does not see gain nothing (MLLM-For3D, spatial consistency with visibility).
    hits[k] is (J_k, V_k) bool from `lift_masks`, weights[k] (J_k,). near_masks[k], when given for a
    view with masks, (V_k,) bool marks the seen points inside its masks or just outside them (the
    uncertain boundary band): those outside every mask but inside the band count neither way.
    """
    positive = np.zeros(num_points, dtype=np.float32)
    negative = np.zeros(num_points, dtype=np.float32)
    for k, (proj, hit, weight, neg_w) in enumerate(zip(projections, hits, weights, negative_weights)):
        if hit.shape[0]:
            best = (hit * np.asarray(weight, dtype=np.float32)[:, None]).max(axis=0)
            inside = hit.any(axis=0) if near_masks is None or near_masks[k] is None else near_masks[k]
        else:
            best = np.zeros(proj.visible_indices.shape[0], dtype=np.float32)
            inside = np.zeros(proj.visible_indices.shape[0], dtype=bool)
        # visible_indices are unique within a view, so fancy-index += is exact here
        positive[proj.visible_indices] += best
        negative[proj.visible_indices] += np.where(inside, np.float32(0.0), np.float32(neg_w))
    return PointVotes(positive, negative)


# Half of the 26 neighbour offsets; the other half are the same edges seen from the other side.
