"""OWLv2 pre/post-processing of the proposal mode (backends/mllm/detector.py), on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.backends.mllm import detector as owl


def _picture(h: int, w: int) -> np.ndarray:
    """A horizontal ramp with a coloured block and noise: edges and gradients for the resize to get right."""
    rng = np.random.default_rng(1)
    img = (np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))).astype(np.int64)
    img[h // 3:h // 2, w // 4:w // 2] = [200, 30, 90]
    return np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h, w, mean_tol, max_tol", [
    (120, 160, 1e-6, 1e-5),  # shrunk: Gaussian anti-aliasing then linear, as the processor does
    (300, 200, 1e-5, 1e-3),  # portrait: padded on the right
    (30, 50, 2e-3, 0.1),  # enlarged: only the border handling of the linear interpolation differs
])
def test_preprocess_matches_the_transformers_processor(h: int, w: int, mean_tol: float, max_tol: float) -> None:
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

    reference = Owlv2ImageProcessorPil(size={"height": 64, "width": 64})
    img = _picture(h, w)
    expected = reference(images=[img], return_tensors="np")["pixel_values"][0]
    ours, geometry = owl.preprocess_image(img, 64, reference.image_mean, reference.image_std)
    assert ours.shape == expected.shape == (3, 64, 64) and ours.dtype == np.float32
    assert np.abs(ours - expected).mean() < mean_tol and np.abs(ours - expected).max() < max_tol
    assert geometry.image_wh == (w, h) and geometry.padded_side == max(h, w)


def test_boxes_scale_by_the_padded_square_and_clip() -> None:
    geometry = owl.DetectorGeometry(image_wh=(160, 120), padded_side=160)
    boxes = owl.boxes_to_image(np.array([[0.5, 0.375, 0.5, 0.375], [0.9, 0.9, 0.4, 0.4]]), geometry)
    # (cx, cy, w, h) x 160 = (80, 60, 80, 60) -> (40, 30, 120, 90); the second leaves the image and is clipped.
    np.testing.assert_allclose(boxes, [[40, 30, 120, 90], [112, 112, 160, 120]])


def _logits(best: list[tuple[int, float]], n_labels: int = 3) -> np.ndarray:
    """Per patch: the label index that wins and its logit; the other labels far below."""
    out = np.full((len(best), n_labels), -30.0)
    for row, (label, logit) in enumerate(best):
        out[row, label] = logit
    return out


def test_select_detections_nms_across_labels_threshold_and_order() -> None:
    boxes = np.array([[10, 10, 50, 50],  # score 0.88, label 0
                      [12, 12, 52, 52],  # overlaps the first (IoU 0.82), label 1, weaker: suppressed
                      [60, 10, 100, 40],  # separate, label 2, strongest
                      [0, 60, 30, 90],  # below the score threshold
                      [70, 70, 71, 100]], float)  # 1 px wide: nothing for SAM to segment
    logits = _logits([(0, 2.0), (1, 1.0), (2, 3.0), (0, -3.0), (1, 5.0)])
    found = owl.select_detections(logits, boxes, score_threshold=0.3, nms_iou=0.5, max_detections=10)
    assert [d.label_index for d in found] == [2, 0]
    assert found[0].box_xyxy == (60, 10, 100, 40)
    assert [d.score for d in found] == pytest.approx([1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-2.0))])
    # A looser NMS keeps the overlapping box; the cap keeps the best ones.
    loose = owl.select_detections(logits, boxes, 0.3, nms_iou=0.9, max_detections=10)
    assert [d.label_index for d in loose] == [2, 0, 1]
    assert [d.label_index for d in owl.select_detections(logits, boxes, 0.3, 0.9, max_detections=1)] == [2]


def test_select_detections_nothing() -> None:
    assert owl.select_detections(np.zeros((0, 3)), np.zeros((0, 4)), 0.1, 0.5, 5) == []
    assert owl.select_detections(_logits([(0, -9.0)]), np.array([[0, 0, 9, 9.0]]), 0.1, 0.5, 5) == []


def test_default_vocabulary_is_distinct_household_phrases() -> None:
    vocabulary = owl.DEFAULT_VOCABULARY
    assert {"chair", "table", "mug", "cup", "box", "sofa"} <= set(vocabulary)
    assert len({v.lower() for v in vocabulary}) == len(vocabulary)
