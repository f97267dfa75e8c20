"""SSD-MobileNetV2 (Open Images, 24 classes) run with ai-edge-litert: anchors, box decoding, NMS.

The TFLite graph ends before post-processing: it outputs raw box encodings (1, 1917, 4) and class
logits (1, 1917, 24). Decoding follows the TF Object Detection API that trained it:
- anchors: `SsdAnchorGenerator` (object_detection/anchor_generators/multiple_grid_anchor_generator.py,
  `create_ssd_anchors`) with 6 layers on 19/10/5/3/2/1 grids, scales 0.2..0.95, aspect ratios
  (1, 2, 1/2, 3, 1/3) plus an interpolated scale sqrt(s_k s_k+1) at ratio 1, and
  `reduce_boxes_in_lowest_layer=True` ((0.1, 1), (s, 2), (s, 1/2) on the first layer);
- boxes: `FasterRcnnBoxCoder` with scale factors (10, 10, 5, 5) on [ty, tx, th, tw]
  (object_detection/box_coders/faster_rcnn_box_coder.py);
- scores: sigmoid per class (the model was trained with a sigmoid focal loss), class 0 is background;
- per-class NMS with OpenCV's `cv2.dnn.NMSBoxes`.
Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016, section 2.2 for the anchor scheme.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

INPUT_SIZE = 300
FEATURE_MAP_SIZES = (19, 10, 5, 3, 2, 1)
MIN_SCALE, MAX_SCALE = 0.2, 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
BOX_CODER_SCALES = np.array([10.0, 10.0, 5.0, 5.0], dtype=np.float32)
NUM_ANCHORS = 1917


def ssd_anchors() -> np.ndarray:
    """(1917, 4) float32 anchors as [y_center, x_center, height, width], normalised to [0, 1].

    Order matches the model's outputs: layer by layer, then grid row, grid column, box spec.
    """
    num_layers = len(FEATURE_MAP_SIZES)
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (num_layers - 1) for i in range(num_layers)] + [1.0]
    per_layer = []
    for layer, grid in enumerate(FEATURE_MAP_SIZES):
        scale, scale_next = scales[layer], scales[layer + 1]
        if layer == 0:
            specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            specs = [(scale, ar) for ar in ASPECT_RATIOS] + [(math.sqrt(scale * scale_next), 1.0)]
        spec = np.array(specs, dtype=np.float64)
        heights = spec[:, 0] / np.sqrt(spec[:, 1])
        widths = spec[:, 0] * np.sqrt(spec[:, 1])
        # Anchor stride is 1/grid and offset half a stride (the generator's defaults).
        centers = (np.arange(grid, dtype=np.float64) + 0.5) / grid
        cy, cx, k = np.meshgrid(centers, centers, np.arange(len(specs)), indexing="ij")
        per_layer.append(np.stack([cy.ravel(), cx.ravel(), heights[k.ravel()], widths[k.ravel()]], axis=1))
    anchors = np.concatenate(per_layer).astype(np.float32)
    assert anchors.shape[0] == NUM_ANCHORS  # a programming invariant of the constants above, not an input check
    return anchors


def decode_boxes(encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N, 4) [ty, tx, th, tw] encodings -> (N, 4) [x0, y0, x1, y1] normalised boxes (FasterRcnnBoxCoder)."""
    rel = encodings / BOX_CODER_SCALES
    yc = rel[:, 0] * anchors[:, 2] + anchors[:, 0]
    xc = rel[:, 1] * anchors[:, 3] + anchors[:, 1]
    h = np.exp(rel[:, 2]) * anchors[:, 2]
    w = np.exp(rel[:, 3]) * anchors[:, 3]
    return np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)


@dataclass(frozen=True)
class Detection:
    """One detected object: box in pixels of the input image, class index (0 = background) and name."""

    box_xyxy: tuple[float, float, float, float]
    score: float
    class_id: int
    label: str


@dataclass(frozen=True)
class DetectorConfig:
    """score_threshold in [0, 1]; nms_iou in (0, 1]; max_detections >= 1 per image; num_threads >= 1."""

    score_threshold: float = 0.3
    nms_iou: float = 0.5
    max_detections: int = 20
    num_threads: int = 2


class SsdDetector:
    """Loads the TFLite model once; `preprocess` / `forward` / `postprocess` are the pipeline stages."""

    def __init__(self, model_path: Path, labels: tuple[str, ...], config: DetectorConfig = DetectorConfig()) -> None:
        # Imported here so that importing this module (anchors, decoding) needs no runtime.
        from ai_edge_litert.interpreter import Interpreter

        self.config = config
        self.labels = labels
        self.anchors = ssd_anchors()
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=config.num_threads)
        self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        # Output order is not guaranteed by the flatbuffer; select by the names the export gave them.
        outputs = {d["name"]: d for d in self._interpreter.get_output_details()}
        self._input_index = inp["index"]
        self._boxes_index = outputs["raw_outputs/box_encodings"]["index"]
        self._scores_index = outputs["raw_outputs/class_predictions"]["index"]
        num_classes = int(outputs["raw_outputs/class_predictions"]["shape"][-1])
        if num_classes != len(labels):
            raise ValueError(f"model has {num_classes} classes but the label map has {len(labels)}")

    @staticmethod
    def preprocess(image_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (1, 300, 300, 3) float32 in [-1, 1] (the aspect ratio is not kept, as in training)."""
        resized = cv2.resize(image_rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
        return (resized.astype(np.float32) * (2.0 / 255.0) - 1.0)[None]

    def forward(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image: returns raw (1917, 4) box encodings and (1917, 24) logits.

        The graph has fixed-shape reshapes, so the interpreter cannot be resized to a batch (XNNPACK
        refuses to prepare); views run one after another on the same interpreter.
        """
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        return (self._interpreter.get_tensor(self._boxes_index)[0].copy(),
                self._interpreter.get_tensor(self._scores_index)[0].copy())

    def postprocess(self, encodings: np.ndarray, logits: np.ndarray, width: int, height: int,
                    class_ids: tuple[int, ...] | None = None) -> tuple[Detection, ...]:
        """Decode, sigmoid, per-class NMS; boxes scaled to (width, height) pixels, best first.

        class_ids restricts the output to those classes (None: all foreground classes).
        """
        cfg = self.config
        scores = 1.0 / (1.0 + np.exp(-logits[:, 1:]))  # drop background, sigmoid per class
        anchor_idx, cls = np.nonzero(scores >= cfg.score_threshold)
        cls = cls + 1
        if class_ids is not None:
            keep = np.isin(cls, np.asarray(class_ids))
            anchor_idx, cls = anchor_idx[keep], cls[keep]
        if anchor_idx.size == 0:
            return ()
        conf = scores[anchor_idx, cls - 1]
        boxes = np.clip(decode_boxes(encodings[anchor_idx], self.anchors[anchor_idx]), 0.0, 1.0)
        boxes *= np.array([width, height, width, height], dtype=np.float32)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        detections: list[Detection] = []
        for c in np.unique(cls):
            sel = np.flatnonzero(cls == c)
            kept = cv2.dnn.NMSBoxes(xywh[sel].tolist(), conf[sel].tolist(), cfg.score_threshold, cfg.nms_iou)
            for k in np.asarray(kept, dtype=np.int64).reshape(-1):
                i = sel[k]
                detections.append(Detection(tuple(float(v) for v in boxes[i]), float(conf[i]), int(c), self.labels[c]))
        detections.sort(key=lambda d: -d.score)
        return tuple(detections[: cfg.max_detections])

    def detect(self, image_rgb: np.ndarray, class_ids: tuple[int, ...] | None = None) -> tuple[Detection, ...]:
        """All three stages on one (H, W, 3) uint8 RGB image."""
        height, width = image_rgb.shape[:2]
        return self.postprocess(*self.forward(self.preprocess(image_rgb)), width, height, class_ids)

    def close(self) -> None:
        self._interpreter = None
