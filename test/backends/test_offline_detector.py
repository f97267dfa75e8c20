"""SSD detector: anchor layout, box decoding, NMS, and detections on real kitchen frames."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.backends.offline.detector import (NUM_ANCHORS, DetectorConfig, SsdDetector, decode_boxes,
                                                  ssd_anchors)
from offline_redkitchen import ACCEPTED_LABELS, MARKED, iou, load_frame


def test_anchor_count_and_first_anchors():
    anchors = ssd_anchors()
    assert anchors.shape == (NUM_ANCHORS, 4) == (1917, 4)
    c = 0.5 / 19
    r2 = np.sqrt(2.0)
    # Lowest layer, reduced specs: (0.1, 1), (0.2, 2), (0.2, 1/2) at the first cell's centre.
    np.testing.assert_allclose(anchors[:3], [[c, c, 0.1, 0.1], [c, c, 0.2 / r2, 0.2 * r2], [c, c, 0.2 * r2, 0.2 / r2]],
                               rtol=1e-6)
    np.testing.assert_allclose(anchors[3, :2], [c, 3 * c], rtol=1e-6)  # next cell along x
    # Second layer starts after 19*19*3 anchors: scale 0.35, then 5 ratios + interpolated sqrt(0.35*0.5).
    np.testing.assert_allclose(anchors[1083], [0.05, 0.05, 0.35, 0.35], rtol=1e-6)
    np.testing.assert_allclose(anchors[1088, 2:], [np.sqrt(0.35 * 0.5)] * 2, rtol=1e-6)
    # Last anchor: the 1x1 layer's interpolated box sqrt(0.95 * 1.0) centred on the image.
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, np.sqrt(0.95), np.sqrt(0.95)], rtol=1e-6)


def test_zero_offsets_decode_to_the_anchor():
    anchors = ssd_anchors()[:5]
    boxes = decode_boxes(np.zeros((5, 4), np.float32), anchors)
    np.testing.assert_allclose(boxes[:, 0], anchors[:, 1] - anchors[:, 3] / 2, rtol=1e-6)
    np.testing.assert_allclose(boxes[:, 3], anchors[:, 0] + anchors[:, 2] / 2, rtol=1e-6)


@pytest.fixture(scope="module")
def detector(offline_detector_assets):
    det = SsdDetector(offline_detector_assets.model_path, offline_detector_assets.labels,
                      DetectorConfig(score_threshold=0.3, nms_iou=0.5, max_detections=20, num_threads=2))
    yield det
    det.close()


def test_postprocess_nms_threshold_and_class_filter(detector):
    logits = np.full((NUM_ANCHORS, 24), -10.0, np.float32)
    encodings = np.zeros((NUM_ANCHORS, 4), np.float32)
    # Three overlapping anchors of the same cell say Chair; one of them also says Table.
    cell = 1083 + 6 * (5 * 10 + 5)
    logits[cell, 5], logits[cell + 5, 5], logits[cell + 1, 15] = 2.0, 1.0, 0.5
    logits[0, 5] = -2.0  # below the threshold (sigmoid 0.12)
    dets = detector.postprocess(encodings, logits, 640, 480)
    assert [d.label for d in dets] == ["Chair", "Table"]
    assert dets[0].score == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-5)
    assert all(0 <= d.box_xyxy[0] < d.box_xyxy[2] <= 640 and 0 <= d.box_xyxy[1] < d.box_xyxy[3] <= 480 for d in dets)
    assert [d.label for d in detector.postprocess(encodings, logits, 640, 480, class_ids=(15,))] == ["Table"]
    assert detector.postprocess(encodings, np.full_like(logits, -10.0), 640, 480) == ()


@pytest.mark.parametrize("marked", MARKED, ids=lambda m: f"{m.frame}-{m.kind}")
def test_finds_hand_marked_objects_on_real_frames(detector, redkitchen_dir, marked):
    color, _, _ = load_frame(redkitchen_dir, marked.frame)
    dets = detector.detect(color)
    matches = [d for d in dets if d.label in ACCEPTED_LABELS[marked.kind]]
    best = max((iou(d.box_xyxy, marked.box_xyxy) for d in matches), default=0.0)
    assert best >= 0.5, f"{marked}: detections {[(d.label, round(d.score, 2), d.box_xyxy) for d in dets]}"
    assert all(0.3 <= d.score <= 1.0 for d in dets)
