"""Keyframe selection and storage, and visibility queries over the stored keyframes.

Keyframes are selected by motion, view novelty and sharpness, stored
downsampled, capped in count and bytes, and evicted so that map coverage is kept. What a keyframe
sees is decided by `visibility.visible_mask`, the test voting uses too.
"""

from __future__ import annotations

import enum
import math
import threading
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from ..config import check_int, check_range, param, shared_param, validate_fields
from ..geometry import rotation_angle_rad, transform_points, unproject_depth
from ..types import CameraIntrinsics, Keyframe, RgbdFrame
from ..visibility import project_visible, visible_mask


@dataclass(frozen=True)
class KeyframeConfig:
    """Selection thresholds, storage caps and visibility tolerances of the keyframe store."""

    # Dense enough that table-top objects are seen from several sides (the object memory needs that);
    # 0.3 m / 20 deg / 0.2 kept 12 keyframes of the 250-frame real kitchen, these keep 37.
    min_translation_m: float = param(0.1, range=(0.0, 10.0), unit="m", doc="Camera motion that makes a new keyframe candidate.")
    min_rotation_deg: float = param(8.0, range=(0.0, 180.0), unit="deg", doc="Camera rotation that makes a new keyframe candidate.")
    min_novelty: float = 0.05
    sharpness_ratio: float = 0.5
    sharpness_window: int = 30
    image_scale: float = param(0.5, range=(0.05, 1.0), doc="Keyframe images are stored at this scale.")
    max_keyframes: int = param(100, range=(1, 100_000), doc="Keyframes kept (coverage-preserving eviction beyond).")
    max_bytes: int = 256 * 2 ** 20
    coverage_stride: int = 6
    depth_tolerance_m: float = shared_param("depth_tolerance_m")
    depth_tolerance_frac: float = 0.03
    # Scene change: a frame that is not novel is still a keyframe when at least this many of its
    # depth samples show a surface where two stored keyframes saw free space (an object moved there): the
    # object memory learns only from keyframes. 0 = off. 8 samples at stride 6 of a 320x240 keyframe: a
    # mug at ~1 m, a chair at 4 m.
    min_change_samples: int = 8

    def __post_init__(self) -> None:
        validate_fields(self)
        check_range("min_novelty", self.min_novelty, 0.0, 1.0)
        check_range("sharpness_ratio", self.sharpness_ratio, 0.0, 1.0)
        check_int("sharpness_window", self.sharpness_window, 1, 10_000)
        check_int("max_bytes", self.max_bytes, 1)
        check_int("coverage_stride", self.coverage_stride, 1, 64)
        check_range("depth_tolerance_frac", self.depth_tolerance_frac, 0.0, 1.0)
        check_int("min_change_samples", self.min_change_samples, 0, 1_000_000)


class KeyframeDecision(enum.Enum):
    """Outcome of offering a frame to the store."""

    ADDED = "added"  # motion and novelty, or a scene change (OfferResult.changed_samples)
    REJECTED_BLURRED = "rejected_blurred"
    REJECTED_NO_MOTION = "rejected_no_motion"
    REJECTED_NOT_NOVEL = "rejected_not_novel"


@dataclass(frozen=True)
class OfferResult:
    """What `KeyframeStore.offer` decided; novelty is NaN when it was not computed."""

    decision: KeyframeDecision
    keyframe_id: int | None
    sharpness: float
    novelty: float
    evicted_ids: tuple[int, ...] = ()
    changed_samples: int = 0  # samples that show the scene changed (see KeyframeConfig.min_change_samples)


@dataclass(frozen=True)
class ViewVisibility:
    """How one keyframe sees a set of points.

    score = sum over visible points of cos(angle) / max(distance_m, 1): each seen point counts,
    discounted when seen obliquely or from farther than 1 m (fewer pixels per point).
    """

    keyframe: Keyframe
    num_visible: int
    fraction_visible: float
    mean_distance_m: float
    mean_cos_angle: float
    score: float


@dataclass(frozen=True, eq=False)
class VisibilityTable:
    """Visibility of N points in K keyframes: `visible` (K, N) bool, `views` in the same order."""

    visible: np.ndarray
    views: tuple[ViewVisibility, ...]

    @property
    def keyframe_ids(self) -> np.ndarray:
        return np.array([v.keyframe.keyframe_id for v in self.views], dtype=np.int64)


def _min_depth(depth_m: np.ndarray) -> np.ndarray:
    """The depth min-filtered over 5 x 5 pixels, 0 (no depth) spreading: the change test's conservative depth."""
    depth = np.where(np.isfinite(depth_m), depth_m, 0.0).astype(np.float32, copy=False)
    return cv2.erode(depth, np.ones((5, 5), np.uint8))


def laplacian_sharpness(color_rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (Pech-Pacheco et al., ICPR 2000); low means blurred."""
    grey = cv2.cvtColor(color_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def _view_quality(points_world_m: np.ndarray, world_T_camera: np.ndarray,
                  normals_world: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per point: distance to the camera (m) and cos of the viewing angle (to the normal, else the axis)."""
    rays = points_world_m - world_T_camera[:3, 3]
    dist_m = np.linalg.norm(rays, axis=1)
    unit = rays / np.maximum(dist_m, 1e-9)[:, None]
    if normals_world is not None:
        cos = np.abs(np.einsum("ij,ij->i", unit, normals_world))
    else:
        cos = unit @ world_T_camera[:3, 2]
    return dist_m, np.clip(cos, 0.0, 1.0)


@dataclass(eq=False)
class _Entry:
    keyframe: Keyframe
    coverage_points_world_m: np.ndarray  # (M, 3) float64 sample of the keyframe's surface
    cover_count: np.ndarray  # (M,) int32: how many *other* keyframes see each sample


class KeyframeStore:
    """Selects, stores and evicts keyframes; answers "which keyframes see these points, how well".

    Selection: a frame is rejected as blurred when its Laplacian variance is below
    `sharpness_ratio` x the median of the last `sharpness_window` offered frames; the first sharp frame
    is always added; later ones need motion (>= min_translation_m or >= min_rotation_deg from the last
    keyframe) and novelty (>= min_novelty of its depth samples not seen by any stored keyframe).

    Eviction, when over `max_keyframes` or `max_bytes`: the keyframe whose surface samples are most
    covered by other keyframes (largest fraction seen by at least one other) goes first, ties to the
    oldest; the newest keyframe is never evicted. This keeps the map's coverage rather than recency.
    Thread-safe: keyframes are immutable, and queries work on a copy of the list.
    """

    def __init__(self, config: KeyframeConfig | None = None) -> None:
        self.config = config or KeyframeConfig()
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._sharpness_history: deque[float] = deque(maxlen=self.config.sharpness_window)
        self._next_id = 0
        self._bytes = 0

    def _visible(self, points_world_m: np.ndarray, keyframe: Keyframe) -> np.ndarray:
        return visible_mask(points_world_m, keyframe, depth_tolerance_m=self.config.depth_tolerance_m,
                            depth_tolerance_frac=self.config.depth_tolerance_frac)

    def _downsample(self, frame: RgbdFrame) -> tuple[CameraIntrinsics, np.ndarray, np.ndarray]:
        scale = self.config.image_scale
        if scale == 1.0:
            return frame.intrinsics, frame.color_rgb.copy(), frame.depth_m.astype(np.float32, copy=True)
        intr = frame.intrinsics.scaled(scale)
        size = (intr.width, intr.height)
        color = cv2.resize(frame.color_rgb, size, interpolation=cv2.INTER_AREA)
        # Nearest neighbour: averaging depth across an edge would invent surfaces between objects.
        depth = cv2.resize(frame.depth_m.astype(np.float32, copy=False), size, interpolation=cv2.INTER_NEAREST)
        return intr, color, depth

    def _coverage_points(self, depth_m: np.ndarray, intrinsics: CameraIntrinsics,
                         world_T_camera: np.ndarray) -> np.ndarray:
        points_camera, _ = unproject_depth(depth_m, intrinsics, stride=self.config.coverage_stride)
        return transform_points(world_T_camera, points_camera.astype(np.float64))

    def offer(self, frame: RgbdFrame) -> OfferResult:
        """Consider a validated frame as a keyframe; add it (possibly evicting others) if selected."""
        cfg = self.config
        intr, color, depth = self._downsample(frame)
        sharpness = laplacian_sharpness(color)
        with self._lock:
            history = list(self._sharpness_history)
            self._sharpness_history.append(sharpness)
            if len(history) >= 5 and sharpness < cfg.sharpness_ratio * float(np.median(history)):
                return OfferResult(KeyframeDecision.REJECTED_BLURRED, None, sharpness, math.nan)
            entries = list(self._entries)
        pose = np.asarray(frame.world_T_camera, dtype=np.float64)
        samples = self._coverage_points(depth, intr, pose)
        novelty = math.nan
        changed = 0
        if entries:
            last = entries[-1].keyframe.world_T_camera
            moved_m = float(np.linalg.norm(pose[:3, 3] - last[:3, 3]))
            turned_deg = math.degrees(rotation_angle_rad(last[:3, :3].T @ pose[:3, :3]))
            if moved_m < cfg.min_translation_m and turned_deg < cfg.min_rotation_deg:
                return OfferResult(KeyframeDecision.REJECTED_NO_MOTION, None, sharpness, novelty)
            seen = np.zeros(len(samples), dtype=bool)
            for entry in entries:
                seen |= self._visible(samples, entry.keyframe)
            novelty = 1.0 - float(seen.mean()) if len(samples) else 0.0
            if novelty < cfg.min_novelty:
                changed = self._changed_samples(samples[~seen], entries)
                if not cfg.min_change_samples or changed < cfg.min_change_samples:
                    return OfferResult(KeyframeDecision.REJECTED_NOT_NOVEL, None, sharpness, novelty, (), changed)
        with self._lock:
            keyframe = Keyframe(self._next_id, frame.stamp_ns, pose.copy(), intr, color, depth, sharpness)
            self._next_id += 1
            self._insert_locked(keyframe, samples)
            evicted = self._evict_locked()
        return OfferResult(KeyframeDecision.ADDED, keyframe.keyframe_id, sharpness, novelty, evicted, changed)

    def _through(self, points_world_m: np.ndarray, world_T_camera: np.ndarray, intrinsics: CameraIntrinsics,
                 depth_min_m: np.ndarray) -> np.ndarray:
        """(N,) bool: points the view sees through (its observed depth is farther by the tolerance)."""
        out = np.zeros(points_world_m.shape[0], dtype=bool)
        if points_world_m.shape[0]:
            out[project_visible(points_world_m, world_T_camera, intrinsics, depth_min_m, self.config.depth_tolerance_m,
                                self.config.depth_tolerance_frac).through_indices] = True
        return out

    def _changed_samples(self, unseen_world_m: np.ndarray, entries: list[_Entry]) -> int:
        """How many samples show that the scene changed since the stored keyframes were taken: samples of this
        frame no stored keyframe sees, in front of the surface two stored keyframes observed (they saw free
        space where there is a surface now: an object moved there). The stored depth is min-filtered (5 x 5,
        holes spread): a point on a still object's rim that projects just past the silhouette reads the
        object, not the background behind it. (The other way, a stored surface this frame sees through, was
        tried: on the real kitchen KinectFusion's poses and Kinect v1 depth made 29 of 61 keyframes such
        "changes" of a still scene; this way makes 2.)
        """
        if not self.config.min_change_samples or not entries or not unseen_world_m.shape[0]:
            return 0
        freed = np.zeros(unseen_world_m.shape[0], dtype=np.int32)
        for entry in entries:
            kf = entry.keyframe
            freed += self._through(unseen_world_m, kf.world_T_camera, kf.intrinsics, _min_depth(kf.depth_m))
        return int(np.count_nonzero(freed >= 2))

    def _insert_locked(self, keyframe: Keyframe, samples: np.ndarray) -> None:
        count = np.zeros(len(samples), dtype=np.int32)
        for entry in self._entries:
            count += self._visible(samples, entry.keyframe)
            entry.cover_count += self._visible(entry.coverage_points_world_m, keyframe)
        self._entries.append(_Entry(keyframe, samples, count))
        self._bytes += keyframe.nbytes

    def _evict_locked(self) -> tuple[int, ...]:
        evicted = []
        cfg = self.config
        while len(self._entries) > 1 and (len(self._entries) > cfg.max_keyframes or self._bytes > cfg.max_bytes):
            candidates = self._entries[:-1]  # never the newest
            redundancy = [float((e.cover_count > 0).mean()) if len(e.cover_count) else 1.0 for e in candidates]
            victim = candidates[int(np.argmax(redundancy))]  # argmax takes the first = oldest on ties
            self._entries.remove(victim)
            self._bytes -= victim.keyframe.nbytes
            for entry in self._entries:
                entry.cover_count -= self._visible(entry.coverage_points_world_m, victim.keyframe)
            evicted.append(victim.keyframe.keyframe_id)
        return tuple(evicted)

    def visibility(self, points_world_m: np.ndarray, normals_world: np.ndarray | None = None) -> VisibilityTable:
        """Per keyframe: which of the (N, 3) points it sees (frustum + depth test) and how well."""
        pts = np.asarray(points_world_m, dtype=np.float64)
        normals = None if normals_world is None else np.asarray(normals_world, dtype=np.float64)
        keyframes = self.keyframes
        visible = np.zeros((len(keyframes), len(pts)), dtype=bool)
        views = []
        for k, keyframe in enumerate(keyframes):
            mask = self._visible(pts, keyframe)
            visible[k] = mask
            n = int(mask.sum())
            if n == 0:
                views.append(ViewVisibility(keyframe, 0, 0.0, math.nan, math.nan, 0.0))
                continue
            dist_m, cos = _view_quality(pts[mask], keyframe.world_T_camera, None if normals is None else normals[mask])
            score = float(np.sum(cos / np.maximum(dist_m, 1.0)))
            views.append(ViewVisibility(keyframe, n, n / len(pts), float(dist_m.mean()), float(cos.mean()), score))
        return VisibilityTable(visible, tuple(views))

    def keyframes_seeing(self, points_world_m: np.ndarray, *, normals_world: np.ndarray | None = None,
                         min_visible: int = 1, max_views: int | None = None) -> tuple[ViewVisibility, ...]:
        """Keyframes that see at least `min_visible` of the points, best score first."""
        table = self.visibility(points_world_m, normals_world)
        ranked = sorted((v for v in table.views if v.num_visible >= min_visible), key=lambda v: -v.score)
        return tuple(ranked[:max_views] if max_views is not None else ranked)

    @property
    def keyframes(self) -> tuple[Keyframe, ...]:
        with self._lock:
            return tuple(e.keyframe for e in self._entries)

    def get(self, keyframe_id: int) -> Keyframe | None:
        """The stored keyframe with this id, or None if it was evicted or never existed."""
        with self._lock:
            return next((e.keyframe for e in self._entries if e.keyframe.keyframe_id == keyframe_id), None)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def replace(self, keyframes: tuple[Keyframe, ...] | list[Keyframe]) -> None:
        """Replace every keyframe by these (e.g. loaded from disk), oldest first; coverage is recomputed.

        Keyframes beyond the caps are evicted as usual; ids continue after the largest one given.
        """
        prepared = [(kf, self._coverage_points(kf.depth_m, kf.intrinsics, kf.world_T_camera)) for kf in keyframes]
        with self._lock:
            self._entries.clear()
            self._sharpness_history.clear()
            self._bytes = 0
            for keyframe, samples in prepared:
                self._insert_locked(keyframe, samples)
            self._evict_locked()
            self._next_id = max([self._next_id] + [kf.keyframe_id + 1 for kf in keyframes])

    def clear(self) -> None:
        """Remove every keyframe (ids keep increasing)."""
        with self._lock:
            self._entries.clear()
            self._sharpness_history.clear()
            self._bytes = 0
