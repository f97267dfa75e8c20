"""A simulated 2D reasoning segmenter that degrades ground-truth instance masks in controlled ways.

TEST AND BENCHMARK CODE ONLY: it reads the simulator's ground-truth instance ids, so it is never a
product backend (DESIGN.md: "the simulator is a camera, not an oracle"). It stands in for the
LISA-style 2D MLLM of MLLM-For3D (arXiv 2503.18135) and reproduces the failures that the paper's
spatial consistency and Token-for-Query are meant to absorb:

- boundary noise: each mask is eroded or dilated by a random radius and shifted by a few pixels;
- missed views: the target is visible but no mask is returned;
- hallucinations at rate p: a mask on another object or on empty space (floor, walls), either
  instead of the target's mask or as an extra candidate;
- wrong-instance picks: the whole answer is about a different object;
- confidences only loosely correlated with correctness (overlapping ranges);
- embeddings: the target's masks carry the target's semantic direction plus noise, other objects
  carry directions that partly overlap with it, so Token-for-Query has signal but not a free answer.
All randomness comes from one seeded numpy Generator.

Proposal mode (`propose` / `encode_text`, what the object memory is built from): every object instance
visible in a view gets a degraded mask labelled with its ground-truth class; objects are missed at
`miss_rate`; a view hallucinates at rate p (`hallucination_rate`) one proposal of a random class on
another object or on empty space; a proposal takes another class's label at `wrong_label_rate`.
Embeddings are a per-class direction plus noise, and `encode_text` maps a class phrase ("mug",
"computer monitor", "monitor", "boxes") onto its class direction, as a text model in the detector's
space would; an unknown phrase gets a direction of its own, unrelated to every class.
"""

from __future__ import annotations

from dataclasses import dataclass
import zlib
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from ..core.config import check_int, check_range
from ..core.types import BackendView, Prediction2D, SegmentationResult, ViewPredictions


@dataclass(frozen=True)
class SimSegmenterConfig:
    """Degradation knobs; every rate is a per-view probability.

    Attributes:
        boundary_noise_px: masks are eroded or dilated by a radius drawn from [0, this]. >= 0, default 2.
        jitter_px: masks are shifted by up to this many pixels in x and y. >= 0, default 1.
        miss_rate: probability that a view that sees the target returns nothing for it. [0, 1], default 0.1.
        hallucination_rate: probability p that a view hallucinates. [0, 1], default 0.0.
        hallucination_replaces: fraction of hallucinations that replace the target's mask (the rest
            are added as an extra candidate). [0, 1], default 0.5.
        empty_space_fraction: fraction of hallucinations drawn on empty space (background) instead of
            on another object. [0, 1], default 0.3.
        wrong_instance_rate: probability that a view's answer is entirely about another object. [0, 1], default 0.05.
        min_visible_pixels: the target counts as visible in a view with at least this many pixels. >= 1, default 30.
        embedding_dim: size of the simulated segmentation-token embeddings. >= 2, default 64.
        embedding_noise: per-mask embedding noise (cosine to its object's direction is about
            1 / sqrt(1 + noise^2)). >= 0, default 0.6.
        distractor_similarity: cosine between another object's direction and the target's. [0, 1], default 0.45.
        query_noise: noise of the instruction's text embedding around the target direction. >= 0, default 0.3.
        wrong_label_rate: proposal mode: probability that a proposal carries another class's label and
            embedding. [0, 1], default 0.05.
    """

    boundary_noise_px: int = 2
    jitter_px: int = 1
    miss_rate: float = 0.1
    hallucination_rate: float = 0.0
    hallucination_replaces: float = 0.5
    empty_space_fraction: float = 0.3
    wrong_instance_rate: float = 0.05
    min_visible_pixels: int = 30
    embedding_dim: int = 64
    embedding_noise: float = 0.6
    distractor_similarity: float = 0.45
    query_noise: float = 0.3
    wrong_label_rate: float = 0.05

    def __post_init__(self) -> None:
        check_int("boundary_noise_px", self.boundary_noise_px, 0)
        check_int("jitter_px", self.jitter_px, 0)
        for name in ("miss_rate", "hallucination_rate", "hallucination_replaces", "empty_space_fraction",
                     "wrong_instance_rate", "distractor_similarity", "wrong_label_rate"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_int("min_visible_pixels", self.min_visible_pixels, 1)
        check_int("embedding_dim", self.embedding_dim, 2)
        check_range("embedding_noise", self.embedding_noise, 0.0)
        check_range("query_noise", self.query_noise, 0.0)


@dataclass(frozen=True, eq=False)
class SimView:
    """Ground truth of one view: its keyframe id and per-pixel instance ids (H, W) int (-1 = nothing)."""

    keyframe_id: int
    instance_ids: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


InstanceIdsFn = Callable[[BackendView], np.ndarray]


def _head_noun(phrase: str) -> str:
    words = phrase.lower().split()
    word = words[-1] if words else ""
    return word[:-2] if word.endswith("xes") else word[:-1] if word.endswith("s") and len(word) > 3 else word


class SimSegmenter:
    """Answers a query about one target instance over several views, with seeded degradations; with
    `labels` and `instance_ids_fn`, proposes every visible instance (the object memory's input)."""

    name = "sim"

    def __init__(self, config: SimSegmenterConfig = SimSegmenterConfig(), seed: int = 0,
                 background_ids: frozenset[int] = frozenset(), labels: Mapping[int, str] | None = None,
                 instance_ids_fn: InstanceIdsFn | None = None) -> None:
        """background_ids: instance ids that are not objects (floor, walls); with id -1 they are "empty space".
        labels: ground-truth class of each instance id; instance_ids_fn: the (H, W) ground-truth instance
        ids of a view at its resolution. Both are needed by the proposal mode only."""
        self.config = config
        self.background_ids = frozenset(background_ids) | {-1}
        self.labels = dict(labels or {})
        self.instance_ids_fn = instance_ids_fn
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._target_dirs: dict[int, tuple[np.ndarray, dict[int, np.ndarray]]] = {}
        self._classes = sorted(set(self.labels.values()))

    # --- proposal mode ---------------------------------------------------------------------------
    def class_direction(self, phrase: str) -> np.ndarray:
        """(D,) unit direction of a class (or of any phrase): fixed by the seed and the phrase."""
        rng = np.random.default_rng([self._seed, zlib.crc32(phrase.lower().encode("utf-8"))])
        return _unit(rng.standard_normal(self.config.embedding_dim))

    def _class_of(self, phrase: str) -> str | None:
        text = " ".join(phrase.lower().split())
        for label in self._classes:  # the whole class name first ("coffee cup" is not "mug")
            if text == label.lower() or text == label.lower() + "s":
                return label
        head = _head_noun(text)
        for label in self._classes:
            if head and head in [_head_noun(w) for w in label.lower().split()]:
                return label
        return None

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32: a class phrase's class direction; any other phrase a direction of its own."""
        if not texts:
            return np.zeros((0, self.config.embedding_dim), np.float32)
        return np.stack([self.class_direction(self._class_of(t) or "phrase:" + t) for t in texts])

    def propose(self, views: Sequence[BackendView]) -> tuple[ViewPredictions, ...]:
        """Degraded masks of every visible instance in each view, labelled with its (sometimes wrong) class."""
        if self.instance_ids_fn is None or not self.labels:
            raise ValueError("SimSegmenter.propose needs labels and instance_ids_fn (ground truth)")
        cfg, rng = self.config, self._rng
        out = []
        for view in views:
            ids = np.asarray(self.instance_ids_fn(view))
            if ids.shape != view.color_rgb.shape[:2]:
                raise ValueError(f"ground-truth ids {ids.shape} do not match view {view.color_rgb.shape[:2]}")
            counts = dict(zip(*np.unique(ids, return_counts=True)))
            visible = [int(i) for i, n in counts.items() if int(i) not in self.background_ids
                       and int(i) in self.labels and n >= cfg.min_visible_pixels]
            preds = []
            for instance in visible:
                if rng.random() < cfg.miss_rate:
                    continue
                label = self.labels[instance]
                if len(self._classes) > 1 and rng.random() < cfg.wrong_label_rate:
                    label = str(rng.choice([c for c in self._classes if c != label]))
                preds.append(self._proposal(self._noisy(ids == instance), label, True))
            if rng.random() < cfg.hallucination_rate:
                hallucination = self._hallucination(ids, visible)
                if hallucination is not None:
                    mask, instance = hallucination
                    wrong = [c for c in self._classes if c != self.labels.get(instance)]
                    preds.append(self._proposal(mask, str(rng.choice(wrong)), False))
            out.append(ViewPredictions(view.keyframe_id, tuple(p for p in preds if p.mask.any())))
        return tuple(out)

    def _proposal(self, mask: np.ndarray, label: str, correct: bool) -> Prediction2D:
        noise = _unit(self._rng.standard_normal(self.config.embedding_dim)) * self.config.embedding_noise
        embedding = _unit(self.class_direction(label) + noise)
        return Prediction2D(mask, self._confidence(correct), embedding, label)

    def close(self) -> None:
        """Nothing to free (the BackendView interface's close)."""

    def segment(self, views: Sequence[SimView], target_id: int) -> SegmentationResult:
        """Degraded masks of `target_id` in each view, a query embedding and per-mask embeddings."""
        cfg, rng = self.config, self._rng
        # One embedding space per target for the segmenter's lifetime, so that a second call (views
        # added for the region of interest) answers in the same space, as a real model would.
        if target_id not in self._target_dirs:
            self._target_dirs[target_id] = (_unit(rng.standard_normal(cfg.embedding_dim)), {})
        target_dir, object_dirs = self._target_dirs[target_id]

        def direction(instance: int) -> np.ndarray:
            # Another object's meaning overlaps the target's by distractor_similarity (cosine).
            if instance == target_id:
                return target_dir
            if instance not in object_dirs:
                other = rng.standard_normal(cfg.embedding_dim)
                other = _unit(other - (other @ target_dir) * target_dir)
                s = cfg.distractor_similarity
                object_dirs[instance] = _unit(s * target_dir + np.sqrt(1.0 - s * s) * other)
            return object_dirs[instance]

        def embed(instance: int) -> np.ndarray:
            noise = _unit(rng.standard_normal(cfg.embedding_dim)) * cfg.embedding_noise
            return _unit(direction(instance) + noise)

        out = []
        for view in views:
            ids = view.instance_ids
            present = [int(i) for i in np.unique(ids) if int(i) not in self.background_ids]
            others = [i for i in present if i != target_id and np.count_nonzero(ids == i) >= cfg.min_visible_pixels]
            target_visible = np.count_nonzero(ids == target_id) >= cfg.min_visible_pixels
            preds: list[Prediction2D] = []
            answer = target_id
            if others and rng.random() < cfg.wrong_instance_rate:
                answer = int(rng.choice(others))
            if (answer != target_id or target_visible) and rng.random() >= cfg.miss_rate:
                preds.append(Prediction2D(self._noisy(ids == answer), self._confidence(answer == target_id),
                                          embed(answer)))
            if rng.random() < cfg.hallucination_rate:
                hallucination = self._hallucination(ids, others)
                if hallucination is not None:
                    mask, instance = hallucination
                    if preds and rng.random() < cfg.hallucination_replaces:
                        preds.clear()
                    preds.append(Prediction2D(mask, self._confidence(False), embed(instance)))
            out.append(ViewPredictions(view.keyframe_id, tuple(p for p in preds if p.mask.any())))
        query = _unit(target_dir + _unit(rng.standard_normal(cfg.embedding_dim)) * cfg.query_noise)
        return SegmentationResult(target_phrase=f"instance {target_id}", query_embedding=query, views=tuple(out))

    def _confidence(self, correct: bool) -> float:
        # Loosely correlated with correctness: the ranges overlap over most of their width.
        return float(self._rng.uniform(0.5, 1.0) if correct else self._rng.uniform(0.35, 0.95))

    def _noisy(self, mask: np.ndarray) -> np.ndarray:
        """Erode or dilate by a random radius, then shift by a random jitter (boundary noise)."""
        cfg, rng = self.config, self._rng
        out = mask.astype(np.uint8)
        radius = int(rng.integers(0, cfg.boundary_noise_px + 1))
        if radius:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            out = cv2.erode(out, kernel) if rng.random() < 0.5 else cv2.dilate(out, kernel)
        if cfg.jitter_px:
            dx, dy = rng.integers(-cfg.jitter_px, cfg.jitter_px + 1, size=2)
            shift = np.array([[1.0, 0.0, float(dx)], [0.0, 1.0, float(dy)]])
            out = cv2.warpAffine(out, shift, (out.shape[1], out.shape[0]), flags=cv2.INTER_NEAREST)
        return out.astype(bool)

    def _hallucination(self, ids: np.ndarray, others: list[int]) -> tuple[np.ndarray, int] | None:
        """A mask on another object, or an object-sized blob on empty space; with its instance (-1 for space)."""
        rng = self._rng
        if others and rng.random() >= self.config.empty_space_fraction:
            instance = int(rng.choice(others))
            return self._noisy(ids == instance), instance
        background = np.isin(ids, list(self.background_ids))
        rows, cols = np.nonzero(background)
        if rows.size == 0:
            return None
        k = int(rng.integers(rows.size))
        height, width = ids.shape
        axes = (int(rng.integers(width // 20 + 2, width // 6 + 3)), int(rng.integers(height // 20 + 2, height // 6 + 3)))
        blob = np.zeros(ids.shape, np.uint8)
        cv2.ellipse(blob, (int(cols[k]), int(rows[k])), axes, float(rng.uniform(0, 180)), 0.0, 360.0, 1, -1)
        return blob.astype(bool) & background, -1
