"""Token-for-Query weights, masks lifted onto the seen points, and per-point evidence (MLLM-For3D)."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.memory.evidence import (PointVotes, grow_mask, lift_masks, point_votes, token_for_query_weights,
                                             unified_query_embedding)
from mllm3d_ros.core.types import InputError
from mllm3d_ros.core.visibility import ViewProjection


def test_query_embedding_and_token_for_query_weights():
    emb = np.array([[1.0, 0.0], [0.0, 1.0]])
    q = unified_query_embedding(emb, np.array([3.0, 1.0]))
    np.testing.assert_allclose(q, np.array([3.0, 1.0]) / np.sqrt(10.0), rtol=1e-6)
    np.testing.assert_allclose(unified_query_embedding(emb, np.ones(2), np.array([0.0, 2.0])), [0.0, 1.0])
    assert unified_query_embedding(np.zeros((0, 2)), np.zeros(0)) is None
    assert unified_query_embedding(emb, np.zeros(2)) is None
    # w = alpha * max(0, e . q), the embeddings normalised first; opposite directions weigh nothing.
    w = token_for_query_weights(np.array([0.5, 1.0, 1.0]), np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]),
                                np.array([1.0, 0.0]))
    np.testing.assert_allclose(w, [0.5, 0.0, 0.0])
    assert token_for_query_weights(np.zeros(0), np.zeros((0, 2)), np.array([1.0, 0.0])).shape == (0,)


def test_lift_grow_and_vote():
    proj = ViewProjection(3, np.array([10, 11, 12]), np.array([0, 5, 8]), (3, 3))
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = True
    hits = lift_masks(proj, [mask])
    assert hits.tolist() == [[True, False, False]]
    with pytest.raises(InputError, match="keyframe 3: mask is"):
        lift_masks(proj, [np.zeros((2, 3), bool)])
    assert grow_mask(mask, 1).sum() == 4 and grow_mask(mask, 2).all()
    votes = point_votes(13, [proj], [hits], [np.array([0.8])], [0.25])
    assert votes.positive[10] == pytest.approx(0.8) and votes.negative[11:13].tolist() == [0.25, 0.25]
    assert votes.positive[:10].sum() == 0 and votes.negative[10] == 0
    np.testing.assert_allclose(votes.ratio[10:13], [1.0, 0.0, 0.0])
    # The boundary band counts neither way.
    band = point_votes(13, [proj], [hits], [np.array([0.8])], [0.25], [np.array([True, True, False])])
    assert band.negative[11] == 0 and band.negative[12] == 0.25
    assert PointVotes(np.zeros(2, np.float32), np.zeros(2, np.float32)).ratio.tolist() == [0.0, 0.0]
