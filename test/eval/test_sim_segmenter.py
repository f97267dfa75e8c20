"""The simulated segmenter degrades ground truth exactly as configured (seeded)."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.eval.sim_segmenter import SimSegmenter, SimSegmenterConfig, SimView

CLEAN = SimSegmenterConfig(boundary_noise_px=0, jitter_px=0, miss_rate=0.0, hallucination_rate=0.0,
                           wrong_instance_rate=0.0)


def scene_ids() -> np.ndarray:
    """60x80 ids: 0 = floor (background), 5 = target square, 6 = another object."""
    ids = np.zeros((60, 80), np.int64)
    ids[10:30, 10:30] = 5
    ids[35:55, 50:75] = 6
    return ids


VIEWS = [SimView(k, scene_ids()) for k in range(40)]


def test_clean_config_returns_the_ground_truth_mask_with_aligned_embeddings():
    result = SimSegmenter(CLEAN, seed=1, background_ids=frozenset({0})).segment(VIEWS[:3], target_id=5)
    assert [v.keyframe_id for v in result.views] == [0, 1, 2]
    for view in result.views:
        (p,) = view.predictions
        np.testing.assert_array_equal(p.mask, scene_ids() == 5)
        assert 0.5 <= p.confidence <= 1.0
        assert np.linalg.norm(p.embedding) == pytest.approx(1.0, abs=1e-5)
        assert float(p.embedding @ result.query_embedding) > 0.5


def test_target_not_visible_gives_no_mask():
    ids = np.zeros((60, 80), np.int64)
    result = SimSegmenter(CLEAN, seed=0, background_ids=frozenset({0})).segment([SimView(3, ids)], target_id=5)
    assert result.views[0].predictions == ()


def test_boundary_noise_stays_near_the_boundary():
    cfg = SimSegmenterConfig(boundary_noise_px=2, jitter_px=1, miss_rate=0.0, wrong_instance_rate=0.0)
    result = SimSegmenter(cfg, seed=3, background_ids=frozenset({0})).segment(VIEWS, target_id=5)
    gt = scene_ids() == 5
    ious = [np.count_nonzero(v.predictions[0].mask & gt) / np.count_nonzero(v.predictions[0].mask | gt)
            for v in result.views]
    assert min(ious) > 0.6 and np.mean(ious) < 0.999  # perturbed, but still the same object


def test_hallucinations_occur_at_the_configured_rate_with_dissimilar_embeddings():
    cfg = SimSegmenterConfig(boundary_noise_px=0, jitter_px=0, miss_rate=0.0, wrong_instance_rate=0.0,
                             hallucination_rate=0.5, hallucination_replaces=0.0)
    result = SimSegmenter(cfg, seed=7, background_ids=frozenset({0})).segment(VIEWS, target_id=5)
    extra = [v.predictions[1] for v in result.views if len(v.predictions) == 2]
    assert 12 <= len(extra) <= 28  # 40 views at p = 0.5
    gt = scene_ids() == 5
    assert all(not np.any(p.mask & gt) for p in extra)
    target_sim = np.mean([float(v.predictions[0].embedding @ result.query_embedding) for v in result.views])
    halluc_sim = np.mean([float(p.embedding @ result.query_embedding) for p in extra])
    assert target_sim > halluc_sim + 0.2


def test_missed_views_and_seeding():
    cfg = SimSegmenterConfig(miss_rate=1.0, wrong_instance_rate=0.0)
    assert all(v.predictions == () for v in SimSegmenter(cfg, seed=0, background_ids=frozenset({0})).segment(
        VIEWS[:5], 5).views)
    a = SimSegmenter(SimSegmenterConfig(hallucination_rate=0.3), seed=11, background_ids=frozenset({0})).segment(VIEWS, 5)
    b = SimSegmenter(SimSegmenterConfig(hallucination_rate=0.3), seed=11, background_ids=frozenset({0})).segment(VIEWS, 5)
    assert all(len(x.predictions) == len(y.predictions) and all(np.array_equal(p.mask, q.mask) for p, q in
               zip(x.predictions, y.predictions)) for x, y in zip(a.views, b.views))


@pytest.mark.parametrize("field,value", [("miss_rate", 1.5), ("boundary_noise_px", -1), ("embedding_dim", 1)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SimSegmenterConfig(**{field: value})


def test_second_call_answers_in_the_same_embedding_space():
    segmenter = SimSegmenter(CLEAN, seed=4, background_ids=frozenset({0}))
    first = segmenter.segment(VIEWS[:2], target_id=5)
    second = segmenter.segment(VIEWS[2:], target_id=5)
    other = SimSegmenter(CLEAN, seed=5, background_ids=frozenset({0})).segment(VIEWS[:2], target_id=5)
    assert float(first.query_embedding @ second.query_embedding) > 0.7  # noise around one direction
    assert abs(float(first.query_embedding @ other.query_embedding)) < 0.5  # another segmenter, another space


# --- proposal mode ---------------------------------------------------------------------------

LABELS = {5: "Mug", 6: "Computer monitor"}


def backend_view(k: int, shape=(60, 80)):
    from mllm3d_ros.core.types import BackendView, CameraIntrinsics

    return BackendView(k, np.zeros((*shape, 3), np.uint8), None, CameraIntrinsics(shape[1], shape[0], 50, 50, 40, 30),
                       np.eye(4))


def proposer(config=CLEAN, seed=0):
    return SimSegmenter(config, seed=seed, background_ids=frozenset({0}), labels=LABELS,
                        instance_ids_fn=lambda view: scene_ids())


def test_proposals_name_every_visible_instance_with_its_class_embedding():
    seg = proposer()
    (view,) = seg.propose([backend_view(3)])
    assert view.keyframe_id == 3
    by_label = {p.label: p for p in view.predictions}
    assert set(by_label) == {"Mug", "Computer monitor"}
    np.testing.assert_array_equal(by_label["Mug"].mask, scene_ids() == 5)
    text = seg.encode_text(["mug", "computer monitor", "monitors", "unicorn"])
    assert text.shape == (4, 64) and np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    mug, monitor = by_label["Mug"].embedding, by_label["Computer monitor"].embedding
    assert float(mug @ text[0]) > 0.8 and float(monitor @ text[1]) > 0.8 and float(monitor @ text[2]) > 0.8
    assert abs(float(mug @ text[1])) < 0.4 and abs(float(mug @ text[3])) < 0.4 and abs(float(monitor @ text[3])) < 0.4


def test_proposal_degradations_follow_their_rates():
    config = SimSegmenterConfig(boundary_noise_px=0, jitter_px=0, miss_rate=0.2, hallucination_rate=0.3,
                                wrong_instance_rate=0.0, wrong_label_rate=0.1, empty_space_fraction=0.5)
    views = proposer(config, seed=4).propose([backend_view(k) for k in range(600)])
    ids = scene_ids()
    true, missed, wrong, hallucinated = 0, 0, 0, 0
    for v in views:
        seen = set()
        for p in v.predictions:
            inside = ids[p.mask]
            owner = int(np.bincount(inside).argmax())
            exact = np.array_equal(p.mask, ids == owner) and owner in LABELS
            if exact and owner not in seen:
                seen.add(owner)
                true += 1
                wrong += p.label != LABELS[owner]
            else:
                hallucinated += 1
                assert owner == 0 or p.label != LABELS[owner]  # on empty space, or with a wrong label
        missed += 2 - len(seen)
    assert 0.15 < missed / 1200 < 0.25
    assert 0.06 < wrong / true < 0.14
    assert 0.25 < hallucinated / 600 < 0.35


def test_propose_without_ground_truth_or_with_the_wrong_size_says_so():
    with pytest.raises(ValueError, match="labels and instance_ids_fn"):
        SimSegmenter(CLEAN).propose([backend_view(0)])
    with pytest.raises(ValueError, match="do not match"):
        proposer().propose([backend_view(0, (30, 40))])
