"""SAM-family mask decoding from box and point prompts (`SamModel`, `Sam2Model`).

Pre- and post-processing are done here with numpy/OpenCV rather than through `SamProcessor` /
`Sam2Processor`, because in transformers 5 the SAM 2 image processor needs torchvision, which a
CPU-only robot install does not have. The steps reproduce the processors: SAM resizes the longest side
to the prompt encoder's image size and pads bottom-right; SAM 2 resizes to a square; both normalise
with the checkpoint's mean/std; masks are upsampled, un-padded and resized to the original image.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .parsing import ImageTarget

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class SamKind(enum.Enum):
    """Which SAM generation a checkpoint is (its config's model_type)."""

    SAM = "sam"
    SAM2 = "sam2"


@dataclass(frozen=True)
class SamGeometry:
    """How one image was resized for SAM: (w, h) of the resized content inside a side x side input."""

    side: int
    resized_wh: tuple[int, int]
    image_wh: tuple[int, int]


@dataclass(frozen=True, eq=False)
class SamMask:
    """One decoded mask: (H, W) bool at image resolution and SAM's predicted quality in [0, 1]."""

    mask: np.ndarray
    score: float


def read_normalisation(model_dir: Path | None, default_mean: Sequence[float] = _IMAGENET_MEAN,
                       default_std: Sequence[float] = _IMAGENET_STD) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """image_mean/std from a checkpoint's preprocessor_config.json; the defaults (ImageNet's, which all
    SAMs use) when absent."""
    if model_dir is not None and (model_dir / "preprocessor_config.json").is_file():
        cfg = json.loads((model_dir / "preprocessor_config.json").read_text())
        return tuple(cfg.get("image_mean", default_mean)), tuple(cfg.get("image_std", default_std))
    return tuple(default_mean), tuple(default_std)


def preprocess_image(color_rgb: np.ndarray, kind: SamKind, side: int, mean: Sequence[float],
                     std: Sequence[float]) -> tuple[np.ndarray, SamGeometry]:
    """(H, W, 3) uint8 -> (3, side, side) float32 normalised input and its resize geometry."""
    import cv2

    h, w = color_rgb.shape[:2]
    if kind is SamKind.SAM:
        scale = side / max(h, w)
        rw, rh = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))
    else:
        rw, rh = side, side
    resized = cv2.resize(color_rgb, (rw, rh), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    resized = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    canvas = np.zeros((side, side, 3), np.float32)
    canvas[:rh, :rw] = resized
    return canvas.transpose(2, 0, 1), SamGeometry(side=side, resized_wh=(rw, rh), image_wh=(w, h))


def _scale(geometry: SamGeometry) -> tuple[float, float]:
    return geometry.resized_wh[0] / geometry.image_wh[0], geometry.resized_wh[1] / geometry.image_wh[1]


def masks_to_image(low_res_logits: np.ndarray, geometry: SamGeometry) -> np.ndarray:
    """(N, h, w) float mask logits -> (N, H, W) bool masks at the original image resolution."""
    import cv2

    rw, rh = geometry.resized_wh
    w, h = geometry.image_wh
    out = np.zeros((low_res_logits.shape[0], h, w), bool)
    for i, logits in enumerate(low_res_logits.astype(np.float32)):
        full = cv2.resize(logits, (geometry.side, geometry.side), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.resize(full[:rh, :rw], (w, h), interpolation=cv2.INTER_LINEAR) > 0.0
    return out


def prompt_coordinates(targets: Sequence[ImageTarget], geometry: SamGeometry) -> tuple[list, list]:
    """Boxes [[x1, y1, x2, y2], ...] of the boxed targets and points [[x, y], ...] of the others, in SAM's
    input frame: image pixels scaled by resized / original per axis (SamProcessor and Sam2Processor's
    `_normalize_coordinates`; a test checks both)."""
    sx, sy = _scale(geometry)
    boxes = [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
             for b in (t.box_xyxy for t in targets if t.box_xyxy is not None)]
    points = [[t.point_xy[0] * sx, t.point_xy[1] * sy] for t in targets if t.box_xyxy is None]
    return boxes, points


def decode_masks(model, image_embeddings, geometry: SamGeometry, targets: Sequence[ImageTarget],
                 device, dtype, kind: SamKind = SamKind.SAM2) -> list[SamMask]:
    """One mask per target (same order): box prompts where a box exists, else a positive point.

    A single point is ambiguous (the mug, its handle, the table under it). SAM (v1) answers it with
    three masks and its predicted IoU picks one: `multimask_output=True`, as SamModel's docs and the SAM
    paper (arXiv 2304.02643, sec. 3) advise for one click; its single-mask output is meant for
    unambiguous prompts (boxes). SAM 2's decoder makes that choice itself when asked for one mask
    (`dynamic_multimask_via_stability`: an unstable single mask is replaced by the best of three).
    """
    import torch

    results: dict[int, SamMask] = {}
    boxed = [t for t in targets if t.box_xyxy is not None]
    pointed = [t for t in targets if t.box_xyxy is None]
    boxes, points = prompt_coordinates(targets, geometry)
    calls = []
    if boxed:
        calls.append((boxed, False, {"input_boxes": torch.tensor([boxes], dtype=dtype, device=device)}))
    if pointed:
        calls.append((pointed, kind is SamKind.SAM,
                      {"input_points": torch.tensor([[[p] for p in points]], dtype=dtype, device=device),
                       "input_labels": torch.ones((1, len(pointed), 1), dtype=torch.long, device=device)}))
    for group, multimask, prompt in calls:
        out = model(image_embeddings=image_embeddings, multimask_output=multimask, **prompt)
        # (1, targets, masks, h, w) and (1, targets, masks): the best mask by predicted IoU per target.
        scores = out.iou_scores[0].float()
        best = scores.argmax(dim=-1)
        index = torch.arange(len(group), device=best.device)
        logits = out.pred_masks[0][index, best].float().cpu().numpy()
        scores = scores[index, best]
        # SAM 2 also predicts whether an object is there at all; a confident "no object" lowers alpha.
        presence = getattr(out, "object_score_logits", None)
        if presence is not None:
            scores = scores * torch.sigmoid(presence[0, :, 0].float())
        masks = masks_to_image(logits, geometry)
        for t, mask, score in zip(group, masks, scores.clamp(0.0, 1.0).cpu().tolist()):
            results[t.rank] = SamMask(mask=mask, score=float(score))
    return [results[t.rank] for t in targets]


def slice_embeddings(image_embeddings, index: int):
    """The embeddings of one image of a batch (SAM: a tensor; SAM 2: a list of feature levels)."""
    if isinstance(image_embeddings, (list, tuple)):
        return [e[index:index + 1] for e in image_embeddings]
    return image_embeddings[index:index + 1]
