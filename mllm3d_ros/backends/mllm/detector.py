"""Open-vocabulary detection with OWLv2 (`Owlv2ForObjectDetection`): the proposal mode's boxes and labels.

Pre- and post-processing are done here with numpy/OpenCV, as for SAM (see sam.py): the steps
reproduce `Owlv2ImageProcessor` -- pixels scaled to [0, 1], padded bottom-right to a square with
zeros, resized to the vision tower's square input (Gaussian anti-aliasing when shrinking, as the
processor's skimage-style resize does), normalised with the checkpoint's mean/std -- at OpenCV speed
instead of scipy's. Boxes come back as (cx, cy, w, h) relative to the padded square, so they scale
to image pixels by the longer image side.

Scores follow `post_process_object_detection`: per image patch, the sigmoid of the best phrase's
logit, and that phrase is the patch's label. Overlapping boxes are suppressed whatever their labels,
so one object yields one proposal (its best phrase), not one per synonym ("mug" and "cup").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, what every OWLv2 checkpoint's preprocessor_config.json carries.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Indoor household objects a robot is asked about (Open Images / ScanNet200 style class phrases).
DEFAULT_VOCABULARY = (
    "chair", "table", "desk", "mug", "cup", "laptop", "monitor", "bottle", "book", "box", "bowl", "plate",
    "keyboard", "sofa", "bed", "cabinet", "sink", "plant", "lamp", "bag", "shelf", "door", "window",
    "television", "pillow", "towel", "toilet", "refrigerator", "microwave", "oven", "kettle", "telephone",
    "clock", "vase", "backpack", "basket", "trash can", "picture", "curtain", "stool", "computer mouse",
    "remote control", "jar", "pan", "pot", "knife", "spoon", "fork", "toy", "shoe",
)


@dataclass(frozen=True)
class DetectorGeometry:
    """How one image was fed to the detector: its (w, h) and the side of the square it was padded to."""

    image_wh: tuple[int, int]
    padded_side: int


@dataclass(frozen=True)
class Detection:
    """One detected box in image pixels (x1 < x2, y1 < y2, inside the image), its score and phrase index."""

    box_xyxy: tuple[float, float, float, float]
    score: float
    label_index: int


def preprocess_image(color_rgb: np.ndarray, side: int, mean: Sequence[float],
                     std: Sequence[float]) -> tuple[np.ndarray, DetectorGeometry]:
    """(H, W, 3) uint8 -> (3, side, side) float32 normalised input and its geometry."""
    import cv2

    h, w = color_rgb.shape[:2]
    square = max(h, w)
    padded = np.zeros((square, square, 3), np.float32)
    padded[:h, :w] = color_rgb.astype(np.float32) / 255.0
    factor = square / side
    if factor > 1.0:
        # The processor's anti-aliasing: sigma = (factor - 1) / 2 before a linear resize (skimage's rule).
        sigma = (factor - 1.0) / 2.0
        padded = cv2.GaussianBlur(padded, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    resized = cv2.resize(padded, (side, side), interpolation=cv2.INTER_LINEAR)
    resized = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return resized.transpose(2, 0, 1).copy(), DetectorGeometry(image_wh=(w, h), padded_side=square)


def boxes_to_image(boxes_cxcywh: np.ndarray, geometry: DetectorGeometry) -> np.ndarray:
    """(N, 4) normalised (cx, cy, w, h) of the padded square -> (N, 4) xyxy pixels clipped to the image."""
    b = np.asarray(boxes_cxcywh, np.float64) * geometry.padded_side
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    w, h = geometry.image_wh
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0.0, w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0.0, h)
    return xyxy


def select_detections(logits: np.ndarray, boxes_xyxy: np.ndarray, score_threshold: float, nms_iou: float,
                      max_detections: int, min_box_side_px: float = 2.0) -> list[Detection]:
    """Patch logits (P, Q) and boxes (P, 4) -> the best boxes, best first, after class-agnostic NMS.

    Boxes thinner than `min_box_side_px` (what is left of a box mostly outside the image or inside
    the padding) give SAM nothing to segment and are dropped.
    """
    import cv2

    if logits.shape[0] == 0 or logits.shape[1] == 0:
        return []
    labels = logits.argmax(axis=1)
    # sigmoid(x) = exp(-log(1 + exp(-x))): no overflow for very negative logits (masked-out phrases).
    scores = np.exp(-np.logaddexp(0.0, -logits.max(axis=1).astype(np.float64)))
    sides = np.minimum(boxes_xyxy[:, 2] - boxes_xyxy[:, 0], boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    candidates = np.flatnonzero((scores >= score_threshold) & (sides >= min_box_side_px))
    if candidates.size == 0:
        return []
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes_xyxy[candidates]]
    # Scores are thresholded above (NMSBoxes' own threshold of 0 only drops exact zeros, which mean nothing).
    kept = np.asarray(cv2.dnn.NMSBoxes(xywh, scores[candidates].tolist(), 0.0, nms_iou), int).reshape(-1)
    order = candidates[kept][np.argsort(-scores[candidates[kept]], kind="stable")][:max_detections]
    return [Detection(box_xyxy=tuple(float(v) for v in boxes_xyxy[i]), score=float(scores[i]),
                      label_index=int(labels[i])) for i in order]
