"""A persistent 3D object memory built from instruction-free proposals on every keyframe.

MLLM-For3D (arXiv 2503.18135) judges a query's masks by the views that can see them; this memory
keeps the same evidence over time, for every object the backend can name, so that a query starts
from the objects the map already holds instead of from views chosen blind to the target.

Per keyframe (`ObjectMemory.integrate`, called by the proposal worker):
  1. each proposal mask (label, confidence alpha, embedding e), eroded, is lifted with the keyframe's
     depth into voxels of `voxel_size_m`; the support surface it spilled onto (floor, table top) is
     stripped and, of its 26-connected parts, the nearest large one kept (spill onto a wall behind it
     is not part of it); a mask that lifted nothing but that surface is ignored;
  2. every instance is projected into the view once (`visibility.project_visible`, the project's one
     visibility test): which of its voxels the view sees, and which it sees *through* (over the voxel's
     whole footprint: a voxel centre on a small object's silhouette projects just past it);
  3. association: a proposal joins the instance whose seen voxels its mask covers, whose seen voxels in
     the mask explain much of what the mask lifted, or which holds its voxels: the best such instance
     (at least `associate_min_overlap`) among those of its kind (the detector gave it the instance's
     leading label, or their embeddings agree: cosine >= `associate_min_similarity`); otherwise it starts
     a new instance. The view's proposals are matched best match first, so that an instance goes to
     the mask that fits it best, not to a more confident one that only touches it. With `keep_apart`, an
     instance another mask of the same view already took, a mask sharing under half of this one's
     pixels, is not a candidate: two separate detections are two objects (books side by side, whose
     masks spill onto the neighbour and whose voxels touch);
  4. evidence (visibility-aware): a detected instance gains a detection, its voxels inside the mask a
     hit, its seen voxels outside every mask of the view (beyond `mask_boundary_px`) a miss, and so are
     those a separate detection of the view (another object) lifted, outside this object's masks (what a
     chair's mask lifts is not the table's, even where a wrong "table" box once took it in); an instance
     the view sees (`min_visible_frac` of its voxels) but no proposal matched gains a "seen, not
     detected"; a view that cannot see an instance says nothing about it;
  5. an instance seen through (`see_through_frac` of the voxels a view observes in front of the observed
     surface) in `gone_views` views and not detected since is removed: the object is gone; one that is
     detected although the view sees through that share of it has moved: the voxels seen through go. A
     detection of its kind over it whose mask lifted nothing usable (the sensor returned no depth on
     the object, or the mask only the support around it) is no view through it;
  6. instances updated in this view merge with an instance they overlap (`merge_min_overlap` of the
     smaller) when their embeddings agree, unless (`keep_apart`) more views detected the two by
     separate masks than saw one mask cover both alone (an occluded table's two halves, then the whole
     table, do merge); every `split_every` keyframes an instance whose kept voxels
     fall apart into separate parts is split.

Class-agnostic proposals (label `types.UNLABELLED`: objects from the map, `map_objects`, or SAM's
masks) take the same path with these differences: their embedding is not used; they join an instance by
overlap alone, both ways (the instance's seen voxels mostly in the mask and the mask mostly the instance's:
min(cover, explained), or the voxels' IoU, at least `associate_min_overlap`), and a mask over two instances
the memory holds apart (voxels sharing under a quarter) is an under-segmentation and is not used; a mask
rendered from the map (`geometric`) is lifted as it is (no erosion, no support to strip). They count as
class-agnostic detections and hits, kept apart from the detector's (a voxel is kept when either source's
masks agree on it): a detector's proposal that lands on an instance no detector named yet (mutual overlap
at least 0.5, one kind of name a view) gives it its label, and its label, confidence and confirmation
still rest on the detector's detections alone, over the views that saw it by the rule above from its
first detection on. An instance is confirmed by either kind of detections; one confirmed by class-agnostic detections only is reported unlabelled (`UNLABELLED`,
`MemoryObject.unlabelled`), with the detector's unconfirmed labels as `label_hints`. Instances merge with a
class-agnostic one when they share `merge_min_overlap` of the smaller's voxels and a quarter of the larger's
(a mug never merges into the table instance its box masks spilled onto). Two class-agnostic masks of one view
hold their instances apart as two masks of one kind do (`keep_apart`: the map's segmentation separated them in
that view; books 2-5 cm thick side by side share most of their 3 cm voxels, and merged before), and each
`MemoryObject` names the instances held apart from it (`apart_ids`: an answer's grown points stop at theirs). The support surfaces the map's
proposer finds come with its proposals (`ViewPredictions.supports`) and are kept in a `SupportMap`:
`supports()`, and each object's `support`.

Queries read `objects()`: the confirmed instances (detected in `min_detections` views and in at least
`min_support_ratio` of the views that saw them), each with its kept voxels (hit ratio >=
`min_voxel_hit_ratio`), label distribution, embedding, mean colour, best keyframes and a
gravity-aligned box (world z up).

Bounds: at most `max_instances` instances (the least supported is dropped when a new one needs room)
of at most `max_voxels_per_instance` voxels each (the least hit are dropped), 20 bytes a voxel:
300 x 4000 x 20 B = 24 MB at the defaults, plus one (D,) embedding per instance. Thread-safe.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from ..clustering import cluster_points
from ..config import ConfigError, check_int, check_range, param, shared_param, validate_fields
from .evidence import grow_mask, mask_extent
from ..geometry import NEIGHBOUR_KEY_OFFSETS as _NEIGHBOUR_KEY_OFFSETS
from ..geometry import transform_points, unproject_depth, voxel_centers, voxel_keys  # noqa: F401 (re-exported)
from .object_geometry import oriented_box, strip_support_surface
from .supports import SupportConfig, SupportMap, SupportSurface
from ..types import UNLABELLED, InputError, Keyframe, OrientedBox3D, Prediction2D, SupportRef
from ..visibility import project_visible

@dataclass(frozen=True)
class ObjectMemoryConfig:
    """Thresholds and bounds of the object memory; see the module docstring for what each does.

    voxel_size_m: instance voxel edge, (0.005, 0.5]. min_proposal_confidence: proposals below are
    ignored, [0, 1]. min_mask_pixels: smaller masks are ignored, >= 1. associate_min_overlap,
    associate_min_similarity, merge_min_overlap, min_voxel_hit_ratio, min_voxel_hit_frac, min_visible_frac,
    min_support_ratio, see_through_frac: fractions in [0, 1]. mask_boundary_px: band around masks
    that counts neither as hit nor miss, [0, 10]. mask_erosion_px: masks are eroded by this before they
    are lifted, [0, 10]. strip_support: the floor or table top a mask spilled onto is stripped from
    what it lifted (bool). min_detections: views that must detect an instance
    before queries see it, >= 1. gone_views: see-through views that remove an instance, >= 1.
    max_instances, max_voxels_per_instance, max_best_views: bounds. split_every: keyframes between
    split checks (0 = never). keep_apart: instances of one kind detected by separate masks of a
    view are kept apart (bool). depth_tolerance_m / depth_tolerance_frac: the visibility test's.
    support: the SupportMap's thresholds and bounds.
    """

    voxel_size_m: float = param(0.03, range=(0.005, 0.5), unit="m", doc="Instance voxel edge.")
    min_proposal_confidence: float = 0.3
    min_mask_pixels: int = 30
    associate_min_overlap: float = 0.3
    associate_min_similarity: float = 0.7
    merge_min_overlap: float = 0.5
    mask_boundary_px: int = 2
    mask_erosion_px: int = 2
    strip_support: bool = True
    min_voxel_hit_ratio: float = 0.5
    min_voxel_hit_frac: float = 0.1
    min_visible_frac: float = 0.3
    min_detections: int = param(2, range=(1, 1000), doc="Views that must detect an instance before queries see it.")
    min_support_ratio: float = 0.25
    see_through_frac: float = 0.5
    gone_views: int = 2
    max_instances: int = param(300, range=(1, 100_000), doc="Instances kept (the least supported is dropped beyond).")
    max_voxels_per_instance: int = 4000
    max_best_views: int = 6
    split_every: int = 10
    keep_apart: bool = param(True, doc="Instances of one kind detected by separate masks of a keyframe stay two "
                             "objects (books side by side).")
    depth_tolerance_m: float = shared_param("depth_tolerance_m")
    depth_tolerance_frac: float = 0.03
    support: SupportConfig = field(default_factory=SupportConfig)

    def __post_init__(self) -> None:
        validate_fields(self)
        for name in ("min_proposal_confidence", "associate_min_overlap", "associate_min_similarity",
                     "merge_min_overlap", "min_voxel_hit_ratio", "min_voxel_hit_frac", "min_visible_frac",
                     "min_support_ratio", "see_through_frac", "depth_tolerance_frac"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_int("min_mask_pixels", self.min_mask_pixels, 1)
        check_int("mask_boundary_px", self.mask_boundary_px, 0, 10)
        check_int("mask_erosion_px", self.mask_erosion_px, 0, 10)
        for name in ("strip_support", "keep_apart"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_int("gone_views", self.gone_views, 1, 1000)
        check_int("max_voxels_per_instance", self.max_voxels_per_instance, 8, 10_000_000)
        check_int("max_best_views", self.max_best_views, 1, 100)
        check_int("split_every", self.split_every, 0, 100_000)
        if not isinstance(self.support, SupportConfig):
            raise ConfigError(f"support must be a SupportConfig, got {type(self.support).__name__}")


@dataclass(frozen=True, eq=False)
class MemoryObject:
    """One confirmed instance as queries see it (a copy: safe to keep while the memory changes).

    points_world_m (V, 3) float32: centres of its kept voxels. embedding (D,) float32 L2-normalised.
    label_scores: (label, share) pairs, best first, shares summing to 1. mean_color_rgb in [0, 255].
    confidence in [0, 1]: the geometric mean of the mean detection confidence and detections / (views
    that saw it + 1), the share of the views that could see it that detected it, shrunk so that one
    unopposed view is not certainty (MLLM-For3D's support ratio). An unlabelled object (confirmed by
    class-agnostic detections only): label UNLABELLED, label_scores ((UNLABELLED, 1.0),), a zero embedding,
    detections and confidence from its class-agnostic detections; label_hints: labels a detector gave it in
    too few of the views to confirm any, (label, share of that weight), best first (unconfirmed: never an
    answer by themselves).
    """

    instance_id: int
    label: str
    label_scores: tuple[tuple[str, float], ...]
    embedding: np.ndarray
    points_world_m: np.ndarray
    box: OrientedBox3D
    mean_color_rgb: tuple[float, float, float]
    detections: int
    views_seen: int
    confidence: float
    best_keyframe_ids: tuple[int, ...]
    last_seen_stamp_ns: int
    # No detector or model named it (a class-agnostic object; `label` is types.UNLABELLED).
    unlabelled: bool = False
    # The support surface it stands on, when known.
    support: SupportRef | None = None
    label_hints: tuple[tuple[str, float], ...] = ()
    # Instances that separate masks of one view held apart from it (books side by side): an answer's points grown
    # around it do not reach into theirs.
    apart_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class MemoryStats:
    """Counters of the memory."""

    instances: int
    confirmed: int
    voxels: int
    keyframes_integrated: int
    proposals_used: int
    proposals_ignored: int
    created: int
    merged: int
    split: int
    removed_gone: int
    evicted: int
    nbytes: int
    unlabelled: int = 0
    supports: int = 0


@dataclass(eq=False)
class _Instance:
    instance_id: int
    keys: np.ndarray  # (V,) int64 sorted unique
    hits: np.ndarray  # (V,) int32
    misses: np.ndarray  # (V,) int32
    label_weight: dict[str, float]
    embedding_sum: np.ndarray  # (D,) float64, confidence-weighted
    color_sum: np.ndarray  # (3,) float64
    color_count: int
    confidence_sum: float
    detections: int
    views_seen: int
    gone_count: int = 0
    best_views: list[tuple[float, int]] = field(default_factory=list)  # (score, keyframe_id), best first
    last_seen_stamp_ns: int = 0
    # Per instance of its kind: views that detected the two by separate masks, less views in which one
    # mask covered both. Positive: two objects, never merged (keep_apart).
    apart: dict[int, int] = field(default_factory=dict)
    agnostic_detections: int = 0  # views in which a class-agnostic proposal matched it
    agnostic_confidence_sum: float = 0.0
    ahits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (V,) the hits of class-agnostic masks
    # Views that saw it as the detector's evidence counts them, from its first detection on: a detector named
    # it, or min_visible_frac of its voxels were in view (views_seen also counts every class-agnostic match).
    label_views: int = 0

    def __post_init__(self) -> None:
        if self.ahits.shape != self.hits.shape:
            self.ahits = np.zeros(self.hits.shape, np.int32)

    @property
    def labelled(self) -> bool:
        return bool(self.label_weight)

    @property
    def embedding(self) -> np.ndarray:
        n = float(np.linalg.norm(self.embedding_sum))
        return (self.embedding_sum / n).astype(np.float32) if n > 0 else self.embedding_sum.astype(np.float32)

    def kept(self, min_hit_ratio: float, min_hit_frac: float) -> np.ndarray:
        """(V,) bool: voxels the views agree on: hit in at least min_hit_ratio of the views that saw them
        around a detection, and in at least min_hit_frac of the detections (at least once). The second
        rule is MLLM-For3D's consistency across views for the voxels of one instance: what one view's
        mask spilled onto is not confirmed by the others."""
        total = self.hits + self.misses
        agreed = self.hits >= min_hit_ratio * total
        # Each source's share of its own detections: a detector's masks and the map's class-agnostic ones
        # cover an object differently, and either may confirm a voxel.
        by_detector = (self.hits - self.ahits >= max(1, int(np.ceil(min_hit_frac * self.detections)))
                       if self.detections else np.zeros(total.shape[0], dtype=bool))
        by_map = (self.ahits >= max(1, int(np.ceil(min_hit_frac * self.agnostic_detections)))
                  if self.agnostic_detections else np.zeros(total.shape[0], dtype=bool))
        return agreed & (by_detector | by_map)


@dataclass(frozen=True, eq=False)
class _Proposal:
    prediction: Prediction2D
    keys: np.ndarray  # (K,) int64 sorted unique voxels of its largest part
    colors_mean: np.ndarray  # (3,) float64
    embedding: np.ndarray  # (D,) float32 normalised; (0,) for a class-agnostic proposal
    agnostic: bool = False  # label UNLABELLED


@dataclass(frozen=True)
class _Unlifted:
    """A confident detection whose mask lifted nothing usable: its kind (embedding) and where it is: the
    detector's box (pixels), else its mask's bounding box (its mask may hold only the table beside it)."""

    embedding: np.ndarray  # (D,) float32 normalised
    rows: tuple[float, float]  # top and bottom
    cols: tuple[float, float]  # left and right

    @staticmethod
    def of(pred: Prediction2D) -> "_Unlifted":
        if pred.box_xyxy is not None:
            x0, y0, x1, y1 = (float(v) for v in pred.box_xyxy)
            return _Unlifted(_normalised(pred.embedding), (y0, y1), (x0, x1))
        r0, r1, c0, c1 = mask_extent(pred.mask)
        return _Unlifted(_normalised(pred.embedding), (float(r0), float(r1) + 1.0), (float(c0), float(c1) + 1.0))


def _detected_unlifted(inst: "_Instance", unlifted: list[_Unlifted], keyframe: Keyframe,
                       config: "ObjectMemoryConfig") -> bool:
    """Whether a detection of the instance's kind that lifted nothing usable lies over the instance's centre in
    this view: the detector saw it there even though the depth could not place it, so it is not gone."""
    if not unlifted:
        return False
    centre = voxel_centers(inst.keys, config.voxel_size_m).mean(axis=0)
    camera_T_world = np.linalg.inv(keyframe.world_T_camera)
    x, y, z = camera_T_world[:3, :3] @ centre + camera_T_world[:3, 3]
    if z <= 0:
        return False
    col = keyframe.intrinsics.fx * x / z + keyframe.intrinsics.cx
    row = keyframe.intrinsics.fy * y / z + keyframe.intrinsics.cy
    emb = inst.embedding
    return any(u.rows[0] <= row <= u.rows[1] and u.cols[0] <= col <= u.cols[1] and emb.shape == u.embedding.shape
               and float(emb @ u.embedding) >= config.associate_min_similarity for u in unlifted)


def _seen_through_whole(centres: np.ndarray, idx: np.ndarray, keyframe: Keyframe,
                        config: "ObjectMemoryConfig") -> np.ndarray:
    """Of the voxels `idx` (into `centres`, (N, 3) world) seen through at their centre's pixel, those that the
    view sees through over their whole footprint (half the voxel edge around that pixel): the nearest valid
    depth there lies behind the voxel by more than the tolerance. A voxel centre on a small object's
    silhouette is up to half a voxel outside it and projects onto the background just beside it; the
    object itself, within the footprint, says the voxel is not free space (a 3 cm voxel is a third of a mug)."""
    if idx.shape[0] == 0:
        return idx
    intr = keyframe.intrinsics
    camera_T_world = np.linalg.inv(keyframe.world_T_camera)
    pts = centres[idx].astype(np.float64) @ camera_T_world[:3, :3].T + camera_T_world[:3, 3]
    z = pts[:, 2]  # > 0: project_visible only reports points in front of the camera
    col = np.clip(np.rint(pts[:, 0] / z * intr.fx + intr.cx).astype(np.int64), 0, intr.width - 1)
    row = np.clip(np.rint(pts[:, 1] / z * intr.fy + intr.cy).astype(np.int64), 0, intr.height - 1)
    depth = np.where(np.asarray(keyframe.depth_m) > 0, keyframe.depth_m, np.inf).astype(np.float32)
    # Bounded for cost: 16 px is a 3 cm voxel at 0.3 m with a 320-px-wide camera's focal length.
    radius = np.clip(np.ceil(0.5 * config.voxel_size_m * max(intr.fx, intr.fy) / z).astype(np.int64), 1, 16)
    clear = np.zeros(idx.shape[0], dtype=bool)
    for r in np.unique(radius):
        sel = radius == r
        nearest = cv2.erode(depth, np.ones((2 * r + 1, 2 * r + 1), np.uint8))[row[sel], col[sel]]
        tol = np.maximum(config.depth_tolerance_m, config.depth_tolerance_frac * nearest)
        clear[sel] = np.isfinite(nearest) & (z[sel] < nearest - tol)
    return idx[clear]


class _SeparateMasks:
    """Whether two proposals of one view are separate detections: their masks share under half of the
    smaller (NMS keeps such boxes), not one object's two. Each pair is compared once a view."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, int], bool] = {}

    def __call__(self, p: _Proposal, q: _Proposal) -> bool:
        key = (id(p), id(q)) if id(p) < id(q) else (id(q), id(p))
        if key not in self._pairs:
            a, b = p.prediction.mask, q.prediction.mask
            self._pairs[key] = bool(np.count_nonzero(a & b) < 0.5 * min(np.count_nonzero(a), np.count_nonzero(b)))
        return self._pairs[key]


def erode_keeping_core(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """(H, W) bool: the mask eroded by radius_px (8-neighbourhood steps), but never below its 3 px core.

    The erosion trims the rim a mask spills over onto what is behind the object; on a thin object (a
    book's 5 px spine, a bottle far away) a fixed radius removes the object itself. With d the steps
    that erode the mask away (its inscribed chessboard radius: 2d - 1 or 2d px across its thickest
    part), it is eroded by min(radius_px, d - 2): masks 7 px wide or more exactly as a plain erosion."""
    mask = np.asarray(mask, dtype=bool)
    if radius_px <= 0 or not mask.any():
        return mask
    first_row, last_row, first_col, last_col = mask_extent(mask)
    # A crop reaching r + 3 px beyond the mask (clipped at the image edge, where the full image ends
    # too) erodes exactly as the whole image does for the r + 2 steps that decide.
    pad = radius_px + 3
    r0, r1 = max(0, first_row - pad), min(mask.shape[0], last_row + pad + 1)
    c0, c1 = max(0, first_col - pad), min(mask.shape[1], last_col + pad + 1)
    steps = [mask[r0:r1, c0:c1]]
    while len(steps) <= radius_px + 2 and steps[-1].any():
        steps.append(~grow_mask(~steps[-1], 1))
    depth = len(steps) - 1 if not steps[-1].any() else len(steps)  # steps that erode it away
    out = np.zeros_like(mask)
    out[r0:r1, c0:c1] = steps[min(radius_px, max(0, depth - 2))]
    return out


def _leading(inst: "_Instance") -> str:
    """A named instance's leading label (the most confidence summed)."""
    return max(inst.label_weight, key=inst.label_weight.get)


def _sorted_member(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(Q,) bool: which query keys are in the sorted array."""
    if sorted_keys.shape[0] == 0 or query.shape[0] == 0:
        return np.zeros(query.shape[0], dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.shape[0] - 1)
    return sorted_keys[pos] == query


def _front_part(labels: np.ndarray, depth_m: np.ndarray, min_share: float = 0.15) -> np.ndarray:
    """(N,) bool: the nearest (smallest median depth) of the parts holding at least min_share of the points.

    A box mask spills onto what is behind the object (a wall, the floor far below); the object itself
    is in front, even where the spill is the larger part."""
    sizes = np.bincount(labels[labels >= 0])
    big = np.flatnonzero(sizes >= max(1.0, min_share * labels.shape[0]))
    if big.shape[0] == 0:
        return labels == 0
    nearest = min(big, key=lambda c: float(np.median(depth_m[labels == c])))
    return labels == nearest


def _add_embeddings(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of two embedding sums, either of which may be empty (an instance no detector named yet)."""
    if a.shape[0] == 0:
        return b.copy()
    if b.shape[0] == 0:
        return a
    return a + b


def _spans_apart(instances: list["_Instance"]) -> bool:
    """Whether some two of the instances are separate objects: their voxels share under a quarter of the smaller's."""
    for i, a in enumerate(instances):
        for b in instances[i + 1:]:
            if int(_sorted_member(a.keys, b.keys).sum()) < 0.25 * min(a.keys.shape[0], b.keys.shape[0]):
                return True
    return False


def _vote_apart(a: "_Instance", b: "_Instance", votes: int) -> None:
    a.apart[b.instance_id] = a.apart.get(b.instance_id, 0) + votes
    b.apart[a.instance_id] = b.apart.get(a.instance_id, 0) + votes


def _normalised(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 0 and np.isfinite(n) else v


class ObjectMemory:
    """Persistent instances from proposals; `integrate` per keyframe, `objects` for queries."""

    def __init__(self, config: ObjectMemoryConfig | None = None) -> None:
        self.config = config or ObjectMemoryConfig()
        if not isinstance(self.config, ObjectMemoryConfig):
            raise ConfigError(f"config must be an ObjectMemoryConfig, got {type(self.config).__name__}")
        self._lock = threading.Lock()
        self._instances: dict[int, _Instance] = {}
        self._next_id = 0
        self._version = 0
        self._counts = dict(keyframes=0, used=0, ignored=0, created=0, merged=0, split=0, gone=0, evicted=0,
                            undersegmented=0)
        self._cache: tuple[int, tuple[MemoryObject, ...]] | None = None
        self._supports = SupportMap(self.config.support)
        self._embedding_dim = 0  # of the detector's embeddings, once one was seen (unlabelled objects get zeros)
        # Keyframes folded in since the last reset: a memory restored with its map proposes only the others.
        self._keyframe_ids: set[int] = set()

    # --- writing -------------------------------------------------------------------------------
    def integrate(self, keyframe: Keyframe, predictions: Sequence[Prediction2D],
                  supports: Sequence[SupportSurface] = ()) -> None:
        """Fold one keyframe's proposals, and the support surfaces found in it, into the memory (InputError
        for masks of the wrong size)."""
        cfg = self.config
        proposals, ignored, unlifted = self._lift(keyframe, predictions)
        with self._lock:
            if supports:
                self._supports.update(supports)
            for p in proposals:
                if not p.agnostic and p.embedding.shape[0]:
                    self._embedding_dim = self._embedding_dim or int(p.embedding.shape[0])
            self._counts["ignored"] += ignored
            instances = list(self._instances.values())
            seen, through, pixels = self._project_instances(instances, keyframe)
            separate = _SeparateMasks()
            matched = self._associate(instances, proposals, seen, pixels, separate)
            # Misses are voxels seen outside every detector mask of the view and outside the instance's own
            # class-agnostic masks (another object's class-agnostic mask says nothing about this one).
            union = np.zeros(keyframe.depth_m.shape, dtype=bool)
            for p in proposals:
                if not p.agnostic:
                    union |= p.prediction.mask
            near = grow_mask(union, cfg.mask_boundary_px).ravel() if cfg.mask_boundary_px else union.ravel()
            touched: list[_Instance] = []
            for inst in instances:
                v_idx = seen[inst.instance_id]
                mine = [p for p, target in matched if target is inst]
                if mine:
                    own = [p.prediction.mask for p in mine if p.agnostic]
                    inst_near = near
                    if own:
                        grown = grow_mask(np.logical_or.reduce(own), cfg.mask_boundary_px) if cfg.mask_boundary_px \
                            else np.logical_or.reduce(own)
                        inst_near = near | grown.ravel()
                    missed = self._missed(inst, mine, proposals, v_idx, pixels[inst.instance_id], inst_near, separate,
                                          keyframe.depth_m.shape)
                    self._update(inst, mine, v_idx, missed, keyframe, through[inst.instance_id])
                    touched.append(inst)
                    continue
                n_vis = v_idx.shape[0]
                if n_vis >= max(3, cfg.min_visible_frac * inst.keys.shape[0]):
                    inst.views_seen += 1  # saw it, did not detect it
                    inst.label_views += 1 if inst.detections else 0
                n_through = through[inst.instance_id].shape[0]
                # Not gone where the view's detector put a box of its kind over it that lifted nothing usable:
                # a close-up whose depth missed a glossy white mug sees through a few of its rim voxels, and
                # its mug box lifted only the table around the mug.
                if (n_through and n_through >= cfg.see_through_frac * max(1, n_through + n_vis)
                        and not _detected_unlifted(inst, unlifted, keyframe, cfg)):
                    inst.gone_count += 1
                    inst.misses[through[inst.instance_id]] += 1
                    if inst.gone_count >= cfg.gone_views:
                        del self._instances[inst.instance_id]
                        self._counts["gone"] += 1
            assigned = []
            for p, target in matched:
                if target is None:
                    target = self._create(p, keyframe)
                    touched.append(target)
                assigned.append((p, target))
            if cfg.keep_apart:
                self._note_apart(assigned, separate)
            for inst in touched:
                if inst.instance_id in self._instances:
                    self._merge_overlapping(inst)
            self._counts["keyframes"] += 1
            self._keyframe_ids.add(int(keyframe.keyframe_id))
            if cfg.split_every and self._counts["keyframes"] % cfg.split_every == 0:
                for inst in list(self._instances.values()):
                    # Forget instances merged, removed or evicted since (the dict stays bounded).
                    inst.apart = {i: v for i, v in inst.apart.items() if i in self._instances}
                    self._split(inst)
            self._version += 1

    def _lift(self, keyframe: Keyframe, predictions: Sequence[Prediction2D]
              ) -> tuple[list[_Proposal], int, list[_Unlifted]]:
        """The usable proposals, lifted (outside the lock: this is the costly part), how many were not, and
        the confident detections that lifted nothing usable (no depth on them, or only the support)."""
        cfg = self.config
        shape = keyframe.depth_m.shape
        out = []
        unlifted = []
        ignored = 0
        view_points = None  # the whole view's surface, for the support test: computed once, when needed
        for pred in predictions:
            mask = np.asarray(pred.mask, dtype=bool)
            if mask.shape != shape:
                raise InputError(f"keyframe {keyframe.keyframe_id}: proposal mask is {mask.shape}, image is {shape}")
            if (not np.isfinite(pred.confidence) or pred.confidence < cfg.min_proposal_confidence
                    or np.count_nonzero(mask) < cfg.min_mask_pixels):
                ignored += 1
                continue
            agnostic = pred.label == UNLABELLED
            if pred.geometric:
                # Rendered from the map's objects with a depth test: the object's own pixels, lifted as they are.
                points_camera, pix = unproject_depth(keyframe.depth_m, keyframe.intrinsics, mask=mask)
                if points_camera.shape[0] < cfg.min_mask_pixels:
                    ignored += 1
                    continue
                world = transform_points(keyframe.world_T_camera, points_camera.astype(np.float64)).astype(np.float32)
                keys = np.unique(voxel_keys(world, cfg.voxel_size_m))
                colors = keyframe.color_rgb.reshape(-1, 3)[pix[:, 0] * shape[1] + pix[:, 1]]
                embedding = np.zeros(0, np.float32) if agnostic else _normalised(pred.embedding)
                out.append(_Proposal(pred, keys, colors.mean(axis=0).astype(np.float64), embedding, agnostic))
                continue
            # Eroded first: box-refined masks spill a few pixels onto whatever is behind the object's rim.
            core = erode_keeping_core(mask, cfg.mask_erosion_px)
            points_camera, pix = unproject_depth(keyframe.depth_m, keyframe.intrinsics, mask=core)
            if points_camera.shape[0] < cfg.min_mask_pixels:
                ignored += 1
                if not agnostic:
                    unlifted.append(_Unlifted.of(pred))
                continue
            world = transform_points(keyframe.world_T_camera, points_camera.astype(np.float64)).astype(np.float32)
            # The floor or table top the mask spilled onto is stripped (the voting's test, against the
            # whole view's surface), then one 26-connected part kept: spill onto a wall behind the
            # object is dropped.
            n = world.shape[0]
            if cfg.strip_support:
                if view_points is None:
                    view_points = self._view_points(keyframe)
                context = np.concatenate([world, view_points])
                # keep_flat=False: a mask that is only floor or table top leaves too little and is ignored
                # below (the voting keeps such an object whole; the memory would learn a floor patch: on
                # the real kitchen, close-ups of a white mug whose walls the Kinect misses lift only the
                # table around and inside it, and made a table-level "mug").
                rest = strip_support_surface(context, np.arange(n), 2 * cfg.voxel_size_m, 0.3, 0.25, 1,
                                            keep_flat=False)
                rest = rest[rest < n]
                if rest.shape[0] < cfg.min_mask_pixels:
                    ignored += 1
                    if not agnostic:
                        unlifted.append(_Unlifted.of(pred))
                    continue
            else:
                rest = np.arange(n)
            part = np.zeros(n, dtype=bool)
            if rest.shape[0]:
                part[rest[_front_part(cluster_points(world[rest], cfg.voxel_size_m, 1).labels,
                                      points_camera[rest, 2])]] = True
            keys = np.unique(voxel_keys(world[part], cfg.voxel_size_m))
            flat = pix[part, 0] * shape[1] + pix[part, 1]
            colors = keyframe.color_rgb.reshape(-1, 3)[flat]
            embedding = np.zeros(0, np.float32) if agnostic else _normalised(pred.embedding)
            out.append(_Proposal(pred, keys, colors.mean(axis=0).astype(np.float64), embedding, agnostic))
        return out, ignored, unlifted

    @staticmethod
    def _view_points(keyframe: Keyframe) -> np.ndarray:
        """(M, 3) float32 world points of the keyframe's depth, every 3rd pixel: the surfaces around a mask."""
        points_camera, _ = unproject_depth(keyframe.depth_m, keyframe.intrinsics, stride=3)
        return transform_points(keyframe.world_T_camera, points_camera.astype(np.float64)).astype(np.float32)

    def _project_instances(self, instances: list[_Instance], keyframe: Keyframe):
        """Per instance: indices of its voxels the view sees, those it sees through, and their pixels."""
        cfg = self.config
        seen: dict[int, np.ndarray] = {}
        through: dict[int, np.ndarray] = {}
        pixels: dict[int, np.ndarray] = {}
        if not instances:
            return seen, through, pixels
        sizes = np.array([inst.keys.shape[0] for inst in instances])
        starts = np.concatenate([[0], np.cumsum(sizes)])
        centres = voxel_centers(np.concatenate([inst.keys for inst in instances]), cfg.voxel_size_m)
        proj = project_visible(centres, keyframe.world_T_camera, keyframe.intrinsics, keyframe.depth_m,
                              cfg.depth_tolerance_m, cfg.depth_tolerance_frac, keyframe.keyframe_id)
        owner_seen = np.searchsorted(starts, proj.visible_indices, side="right") - 1
        through_idx = _seen_through_whole(centres, proj.through_indices, keyframe, cfg)
        owner_through = np.searchsorted(starts, through_idx, side="right") - 1
        for k, inst in enumerate(instances):
            sel = owner_seen == k
            seen[inst.instance_id] = proj.visible_indices[sel] - starts[k]
            pixels[inst.instance_id] = proj.pixel_index[sel]
            through[inst.instance_id] = through_idx[owner_through == k] - starts[k]
        return seen, through, pixels

    def _score(self, p: _Proposal, inst: _Instance, pix: np.ndarray) -> tuple[float, float] | None:
        """How well proposal `p` matches instance `inst` (whose seen voxels project to pixels `pix`):
        (score, cover), or None when it cannot be this instance whatever the view's other proposals.

        Overlap both ways, no embedding, for a class-agnostic proposal or an instance no detector named;
        else the instance's seen voxels fall in the mask (cover), or explain much of what the mask lifted (a
        bloated instance, another side of the object), or hold the lifted voxels."""
        cfg = self.config
        mutual = p.agnostic or not inst.labelled
        if not mutual and not self._same_kind(p, inst):
            return None
        n_in = int(p.prediction.mask.ravel()[pix].sum())
        cover = n_in / pix.shape[0] if pix.shape[0] >= 3 else 0.0
        explained = min(1.0, n_in / max(1, p.keys.shape[0]))
        if mutual:
            if n_in == 0:
                return None
            shared = int(_sorted_member(inst.keys, p.keys).sum())
            iou = shared / max(1, inst.keys.shape[0] + p.keys.shape[0] - shared)
            score = max(min(cover, explained), iou)
            if not p.agnostic and score < 0.5:
                return None  # a name lands on an unnamed object only where mask and object match well
            return score, cover
        inside = float(_sorted_member(inst.keys, p.keys).mean()) if p.keys.shape[0] else 0.0
        return max(cover, explained, inside), cover

    def _same_kind(self, p: _Proposal, inst: _Instance) -> bool:
        """A named proposal may join a named instance: the detector gave it the instance's leading label, or
        their embeddings agree (an open vocabulary's "cup" and "mug"). Per-detection embeddings scatter
        around their class's (an image embedding, not the class's text), and a young instance's embedding
        is one detection's: the label is the detector's own statement of kind."""
        if p.prediction.label == _leading(inst):
            return True
        return float(inst.embedding @ p.embedding) >= self.config.associate_min_similarity

    def _kinds_agree(self, p: _Proposal, q: _Proposal) -> bool:
        """Two named proposals are of one kind: one label, or agreeing embeddings."""
        return (p.prediction.label == q.prediction.label
                or float(p.embedding @ q.embedding) >= self.config.associate_min_similarity)

    def _associate(self, instances: list[_Instance], proposals: list[_Proposal], seen, pixels,
                   separate: _SeparateMasks) -> list[tuple[_Proposal, _Instance | None]]:
        cfg = self.config
        out = []
        claimed: dict[int, list[_Proposal]] = {}  # instance id -> the proposals of this view it took
        joined: list[tuple[_Proposal, list[_Instance]]] = []  # a proposal and the instances of its kind it covers
        scores = {id(p): {inst.instance_id: self._score(p, inst, pixels[inst.instance_id]) for inst in instances}
                  for p in proposals}
        # The detector's proposals first (a class-agnostic mask of the same object then finds its instance),
        # the best matching first: an instance goes to the mask that matches it best, not to the most
        # confident one (a confident mask hallucinated over a desk would take the laptop on it, and keep_apart
        # would then push the laptop's own mask to a new instance).
        best_of = {id(p): max((s[0] for s in scores[id(p)].values() if s is not None), default=0.0) for p in proposals}
        for p in sorted(proposals, key=lambda q: (q.agnostic, -best_of[id(q)], -q.prediction.confidence)):
            best, best_score = None, cfg.associate_min_overlap
            covered = []
            spanned = []  # class-agnostic: confirmed instances whose seen voxels the mask covers
            for inst in instances:
                scored = scores[id(p)][inst.instance_id]
                if scored is None:
                    continue
                score, cover = scored
                mutual = p.agnostic or not inst.labelled
                mine = [q for q in claimed.get(inst.instance_id, ()) if q.agnostic == p.agnostic]
                if p.agnostic and mine:
                    continue  # class-agnostic masks of one view are disjoint: another object's
                if mutual and not p.agnostic and any(not self._kinds_agree(q, p) for q in mine):
                    continue  # an unnamed instance takes one kind of name a view (the first, most confident)
                if not p.agnostic and cfg.keep_apart and any(separate(q, p) for q in mine):
                    continue  # a separate mask of this view took it: this one is another object
                if mutual:
                    if p.agnostic and cover >= 0.5 and self._confirmed(inst):
                        spanned.append(inst)
                elif cover >= 0.5:
                    covered.append(inst)
                if score >= best_score:
                    best, best_score = inst, score
            if p.agnostic and _spans_apart(spanned):
                self._counts["undersegmented"] += 1
                self._counts["ignored"] += 1
                continue  # the map's cluster joins objects the memory holds apart (a mug touching the box)
            if best is not None:
                claimed.setdefault(best.instance_id, []).append(p)
            if len(covered) > 1:
                joined.append((p, covered))
            out.append((p, best))
        # One mask over two instances of its kind says they are one object, unless a separate mask of the
        # same view took one of them (a neighbour's mask that spilled over a thin object).
        for p, covered in joined if cfg.keep_apart else ():
            alone = [inst for inst in covered if not any(separate(q, p) for q in claimed.get(inst.instance_id, ()))]
            for i, a in enumerate(alone):
                for b in alone[i + 1:]:
                    _vote_apart(a, b, -1)
        self._counts["used"] += len(out)
        return out

    def _note_apart(self, assigned: list[tuple[_Proposal, _Instance]], separate: _SeparateMasks) -> None:
        """Two instances of one kind detected by separate masks of one view are two objects; so are two instances
        whose class-agnostic masks of one view are separate and side by side (their boxes, grown by
        mask_boundary_px + 1, meet: the neighbours whose voxels may interleave; a vote for every far pair would
        only fill the `apart` tables)."""
        margin = self.config.mask_boundary_px + 1
        extent = {id(p): mask_extent(p.prediction.mask) for p, _ in assigned if p.agnostic}
        for i, (p, a) in enumerate(assigned):
            for q, b in assigned[i + 1:]:
                if a is b or p.agnostic != q.agnostic:
                    continue
                if p.agnostic:
                    (pr0, pr1, pc0, pc1), (qr0, qr1, qc0, qc1) = extent[id(p)], extent[id(q)]
                    if pc0 > qc1 + margin or qc0 > pc1 + margin or pr0 > qr1 + margin or qr0 > pr1 + margin:
                        continue
                elif not self._kinds_agree(p, q):
                    continue
                if separate(p, q):
                    _vote_apart(a, b, 1)

    def _missed(self, inst: _Instance, mine: list[_Proposal], proposals: list[_Proposal], seen_idx: np.ndarray,
                seen_pix: np.ndarray, near: np.ndarray, separate: _SeparateMasks, shape: tuple[int, int]) -> np.ndarray:
        """(S,) bool over the instance's seen voxels: a miss in this view, which detected it with `mine`.

        Seen outside every detector mask and its own masks (the boundary band `near`, flat), or lifted by a
        separate detection of this view (another object: a detector's mask sharing under half of each of
        `mine`) while outside the masks of this object (its own, and any mask not separate from them: the same
        object under another label; a class-agnostic mask says nothing about another object).
        MLLM-For3D counts a point outside the target's mask as negative evidence; the second rule applies it
        where another object's detection claims the voxel in 3D, not where a mask only spilled over it in
        2D: on the real kitchen, chairs the detector called "Table" in a few views put their backrests into
        the table, and the chairs' own masks, which held them in every other view, hid them from misses.
        """
        cfg = self.config
        missed = ~near[seen_pix]
        others = [q for q in proposals if all(q is not p for p in mine)]
        apart = [q for q in others if not q.agnostic and all(separate(p, q) for p in mine)]
        if not apart or seen_idx.shape[0] == 0:
            return missed
        claimed = _sorted_member(np.unique(np.concatenate([q.keys for q in apart])), inst.keys[seen_idx])
        if not claimed.any():
            return missed
        own = np.zeros(shape, dtype=bool)
        for q in mine + [q for q in others if not any(q is a for a in apart)]:
            own |= q.prediction.mask
        own_near = grow_mask(own, cfg.mask_boundary_px).ravel() if cfg.mask_boundary_px else own.ravel()
        return missed | (claimed & ~own_near[seen_pix])

    def _update(self, inst: _Instance, proposals: list[_Proposal], seen_idx: np.ndarray, missed: np.ndarray,
                keyframe: Keyframe, through_idx: np.ndarray | None = None) -> None:
        # Misses first, on the voxels as they were (`_missed`).
        inst.misses[seen_idx[missed]] += 1
        visible = seen_idx.shape[0] >= max(3, self.config.min_visible_frac * inst.keys.shape[0])
        if through_idx is not None and through_idx.shape[0]:
            self._drop_moved(inst, seen_idx, through_idx, keyframe)
        new_keys = np.unique(np.concatenate([p.keys for p in proposals]))
        member = _sorted_member(inst.keys, new_keys)
        keys = np.concatenate([inst.keys, new_keys[~member]])
        hits = np.concatenate([inst.hits, np.zeros(int((~member).sum()), np.int32)])
        misses = np.concatenate([inst.misses, np.zeros(int((~member).sum()), np.int32)])
        ahits = np.concatenate([inst.ahits, np.zeros(int((~member).sum()), np.int32)])
        order = np.argsort(keys, kind="stable")
        inst.keys, inst.hits, inst.misses, inst.ahits = keys[order], hits[order], misses[order], ahits[order]
        inst.hits[np.searchsorted(inst.keys, new_keys)] += 1
        agnostic_keys = [p.keys for p in proposals if p.agnostic]
        if agnostic_keys:
            inst.ahits[np.searchsorted(inst.keys, np.unique(np.concatenate(agnostic_keys)))] += 1
        for p in proposals:
            conf = float(p.prediction.confidence)
            if not p.agnostic:
                inst.label_weight[p.prediction.label] = inst.label_weight.get(p.prediction.label, 0.0) + conf
                inst.embedding_sum = _add_embeddings(inst.embedding_sum, conf * p.embedding.astype(np.float64))
            inst.color_sum = inst.color_sum + p.colors_mean
            inst.color_count += 1
        best_conf = max(float(p.prediction.confidence) for p in proposals)
        labelled = [float(p.prediction.confidence) for p in proposals if not p.agnostic]
        if labelled:
            inst.confidence_sum += max(labelled)
            inst.detections += 1
        # Counted from the detector's first detection on: before it the instance did not exist for it.
        if labelled or (visible and inst.detections):
            inst.label_views += 1
        if len(labelled) < len(proposals):
            inst.agnostic_confidence_sum += max(float(p.prediction.confidence) for p in proposals if p.agnostic)
            inst.agnostic_detections += 1
        inst.views_seen += 1
        inst.gone_count = 0
        inst.last_seen_stamp_ns = keyframe.stamp_ns
        # The views a detector named it in rank first: they are the ones a query's 2D model is shown.
        if labelled or not inst.labelled:
            self._note_view(inst, (max(labelled) if labelled else best_conf) * (seen_idx.shape[0] + new_keys.shape[0]),
                            keyframe.keyframe_id)
        self._cap_voxels(inst)

    def _drop_moved(self, inst: _Instance, seen_idx: np.ndarray, through_idx: np.ndarray, keyframe: Keyframe) -> None:
        """Moved objects: an instance detected in this view although the view sees through most of its voxels (the
        gone test's share) has moved, and this detection is of its new place: the voxels seen through go now,
        so the instance does not span the old place and the new one. Seen through against the depth
        min-filtered over 5 x 5 pixels (holes spread), for the share too: a voxel on a rim or on a thin part
        (a chair's leg, a voxel wider than it), projecting just past it onto the background, is not seen
        through, so a still object is never taken for a moved one."""
        cfg = self.config
        if through_idx.shape[0] < cfg.see_through_frac * (through_idx.shape[0] + seen_idx.shape[0]):
            return
        depth = np.where(np.isfinite(keyframe.depth_m), keyframe.depth_m, 0.0).astype(np.float32)
        depth_min = cv2.erode(depth, np.ones((5, 5), np.uint8))
        centres = voxel_centers(inst.keys[through_idx], cfg.voxel_size_m)
        empty = project_visible(centres, keyframe.world_T_camera, keyframe.intrinsics, depth_min,
                                cfg.depth_tolerance_m, cfg.depth_tolerance_frac).through_indices
        if empty.shape[0] < cfg.see_through_frac * (empty.shape[0] + seen_idx.shape[0]):
            return
        stay = np.ones(inst.keys.shape[0], dtype=bool)
        stay[through_idx[empty]] = False
        inst.keys, inst.hits, inst.misses, inst.ahits = inst.keys[stay], inst.hits[stay], inst.misses[stay], inst.ahits[stay]

    def _note_view(self, inst: _Instance, score: float, keyframe_id: int) -> None:
        inst.best_views = sorted([v for v in inst.best_views if v[1] != keyframe_id] + [(score, keyframe_id)],
                                 key=lambda v: -v[0])[: self.config.max_best_views]

    def _cap_voxels(self, inst: _Instance) -> None:
        cap = self.config.max_voxels_per_instance
        if inst.keys.shape[0] <= cap:
            return
        keep = np.sort(np.argsort(-(inst.hits - inst.misses), kind="stable")[:cap])
        inst.keys, inst.hits, inst.misses, inst.ahits = inst.keys[keep], inst.hits[keep], inst.misses[keep], inst.ahits[keep]

    def _create(self, p: _Proposal, keyframe: Keyframe) -> _Instance:
        if len(self._instances) >= self.config.max_instances:
            victim = min(self._instances.values(),
                         key=lambda i: (i.detections + i.agnostic_detections, i.last_seen_stamp_ns))
            del self._instances[victim.instance_id]
            self._counts["evicted"] += 1
        conf = float(p.prediction.confidence)
        if p.agnostic:
            inst = _Instance(self._next_id, p.keys.copy(), np.ones(p.keys.shape[0], np.int32),
                             np.zeros(p.keys.shape[0], np.int32), {}, np.zeros(0, np.float64), p.colors_mean.copy(),
                             1, 0.0, 0, 1, last_seen_stamp_ns=keyframe.stamp_ns, agnostic_detections=1,
                             agnostic_confidence_sum=conf, ahits=np.ones(p.keys.shape[0], np.int32))
        else:
            inst = _Instance(self._next_id, p.keys.copy(), np.ones(p.keys.shape[0], np.int32),
                             np.zeros(p.keys.shape[0], np.int32), {p.prediction.label: conf},
                             conf * p.embedding.astype(np.float64), p.colors_mean.copy(), 1, conf, 1, 1,
                             last_seen_stamp_ns=keyframe.stamp_ns, label_views=1,
                             ahits=np.zeros(p.keys.shape[0], np.int32))
        self._note_view(inst, conf * p.keys.shape[0], keyframe.keyframe_id)
        self._cap_voxels(inst)
        self._instances[inst.instance_id] = inst
        self._next_id += 1
        self._counts["created"] += 1
        return inst

    def _merge_overlapping(self, inst: _Instance) -> None:
        cfg = self.config
        for other in list(self._instances.values()):
            if other is inst or inst.apart.get(other.instance_id, 0) > 0:
                continue
            both_named = inst.labelled and other.labelled
            # Embeddings alone (summed over many detections, they are the instances' kinds): a chair the detector
            # called "table" in some views must not merge into the table by that label.
            if both_named and float(other.embedding @ inst.embedding) < cfg.associate_min_similarity:
                continue
            shared = int(_sorted_member(other.keys, inst.keys).sum())
            if shared < cfg.merge_min_overlap * min(inst.keys.shape[0], other.keys.shape[0]):
                continue
            # With a class-agnostic instance, a quarter of the larger too: the mug is not the table it is on.
            if not both_named and shared < 0.25 * max(inst.keys.shape[0], other.keys.shape[0]):
                continue
            self._absorb(inst, other)
            del self._instances[other.instance_id]
            self._counts["merged"] += 1

    def _absorb(self, inst: _Instance, other: _Instance) -> None:
        keys = np.concatenate([inst.keys, other.keys])
        hits = np.concatenate([inst.hits, other.hits])
        ahits = np.concatenate([inst.ahits, other.ahits])
        misses = np.concatenate([inst.misses, other.misses])
        inst.keys, inverse = np.unique(keys, return_inverse=True)
        inst.hits = np.bincount(inverse, weights=hits, minlength=inst.keys.shape[0]).astype(np.int32)
        inst.ahits = np.bincount(inverse, weights=ahits, minlength=inst.keys.shape[0]).astype(np.int32)
        inst.misses = np.bincount(inverse, weights=misses, minlength=inst.keys.shape[0]).astype(np.int32)
        for label, w in other.label_weight.items():
            inst.label_weight[label] = inst.label_weight.get(label, 0.0) + w
        inst.embedding_sum = _add_embeddings(inst.embedding_sum, other.embedding_sum)
        inst.color_sum = inst.color_sum + other.color_sum
        inst.color_count += other.color_count
        inst.confidence_sum += other.confidence_sum
        inst.detections += other.detections
        inst.agnostic_detections += other.agnostic_detections
        inst.agnostic_confidence_sum += other.agnostic_confidence_sum
        inst.views_seen += other.views_seen
        inst.label_views += other.label_views
        inst.last_seen_stamp_ns = max(inst.last_seen_stamp_ns, other.last_seen_stamp_ns)
        for other_id, votes in other.apart.items():
            if other_id != inst.instance_id and other_id in self._instances:
                _vote_apart(inst, self._instances[other_id], votes)
        for score, kf_id in other.best_views:
            self._note_view(inst, score, kf_id)
        self._cap_voxels(inst)

    def _split(self, inst: _Instance) -> None:
        """Separate parts of an instance's kept voxels (two voxels or more apart) become instances."""
        cfg = self.config
        kept = np.flatnonzero(inst.kept(cfg.min_voxel_hit_ratio, cfg.min_voxel_hit_frac))
        if kept.shape[0] < 16:
            return
        clusters = cluster_points(voxel_centers(inst.keys[kept], cfg.voxel_size_m), 2.0 * cfg.voxel_size_m, 1)
        if clusters.num_clusters < 2:
            return
        sizes = np.bincount(clusters.labels, minlength=clusters.num_clusters)
        big = [0] + [c for c in range(1, clusters.num_clusters) if sizes[c] >= max(8, 0.25 * sizes[0])]
        if len(big) < 2:
            return
        # Every part goes with the nearest large part (a face seen from afar is its own small part).
        centres = voxel_centers(inst.keys[kept], cfg.voxel_size_m)
        means = np.stack([centres[clusters.labels == c].mean(axis=0) for c in range(clusters.num_clusters)])
        owner = np.array(big)[np.argmin(np.linalg.norm(means[:, None] - means[big][None], axis=2), axis=1)]
        part_of = owner[clusters.labels]
        for c in big[1:]:
            part = kept[part_of == c]
            new = dataclasses.replace(inst, instance_id=self._next_id, keys=inst.keys[part], hits=inst.hits[part],
                                      ahits=inst.ahits[part],
                                      misses=inst.misses[part], label_weight=dict(inst.label_weight),
                                      best_views=list(inst.best_views), apart=dict(inst.apart))
            self._instances[new.instance_id] = new
            for other_id, votes in inst.apart.items():
                if other_id in self._instances:
                    self._instances[other_id].apart[new.instance_id] = votes
            self._next_id += 1
            self._counts["split"] += 1
        stay = np.ones(inst.keys.shape[0], dtype=bool)
        stay[kept[part_of != 0]] = False
        inst.keys, inst.hits, inst.misses, inst.ahits = inst.keys[stay], inst.hits[stay], inst.misses[stay], inst.ahits[stay]

    def reset(self) -> None:
        """Forget every instance (a map reset); counters are kept."""
        with self._lock:
            self._instances.clear()
            self._supports.reset()
            self._keyframe_ids.clear()
            self._version += 1

    # --- persistence (the file format is `memory_file`'s) -----------------------------------------------
    _SCALARS = ("color_count", "confidence_sum", "detections", "views_seen", "gone_count", "last_seen_stamp_ns",
                "agnostic_detections", "agnostic_confidence_sum", "label_views")
    _ARRAYS = (("keys", np.int64), ("hits", np.int32), ("misses", np.int32), ("ahits", np.int32),
               ("embedding_sum", np.float64), ("color_sum", np.float64))

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The whole memory (instances with their evidence, counters, support surfaces, the keyframes folded
        in), as JSON-able metadata and named arrays, taken under the lock: one consistent state."""
        with self._lock:
            instances, arrays = [], {}
            for k, inst in enumerate(self._instances.values()):
                entry = {"id": inst.instance_id, "label_weight": dict(inst.label_weight),
                         "best_views": [[float(s), int(kf)] for s, kf in inst.best_views],
                         "apart": [[int(i), int(v)] for i, v in inst.apart.items()]}
                entry.update({name: getattr(inst, name) for name in self._SCALARS})
                instances.append(entry)
                for name, _ in self._ARRAYS:
                    arrays[f"inst_{k}_{name}"] = getattr(inst, name)
            supports_meta, support_arrays = self._supports.export_state()
            arrays.update(support_arrays)
            meta = {"next_id": self._next_id, "counts": dict(self._counts), "embedding_dim": self._embedding_dim,
                    "keyframe_ids": sorted(self._keyframe_ids), "instances": instances, "supports": supports_meta}
            return meta, arrays

    def restore_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Replace the memory by a state of `export_state` (read and checked by `memory_file.read_memory`:
        shapes and dtypes; KeyError / ValueError / TypeError here mean a malformed state and change nothing)."""
        instances = {}
        for k, e in enumerate(meta["instances"]):
            fields = {}
            for name, dtype in self._ARRAYS:
                array = np.asarray(arrays[f"inst_{k}_{name}"])
                if array.dtype != dtype or array.ndim != 1:
                    raise ValueError(f"instance {e['id']}: {name} is {array.dtype} {array.shape}, expected 1-D {np.dtype(dtype)}")
                fields[name] = array.copy()
            n = fields["keys"].shape[0]
            if any(fields[name].shape != (n,) for name in ("hits", "misses", "ahits")) or fields["color_sum"].shape != (3,):
                raise ValueError(f"instance {e['id']}: arrays of different lengths")
            inst = _Instance(int(e["id"]), fields["keys"], fields["hits"], fields["misses"],
                             {str(lab): float(w) for lab, w in e["label_weight"].items()}, fields["embedding_sum"],
                             fields["color_sum"], int(e["color_count"]), float(e["confidence_sum"]),
                             int(e["detections"]), int(e["views_seen"]), int(e["gone_count"]),
                             [(float(s), int(kf)) for s, kf in e["best_views"]], int(e["last_seen_stamp_ns"]),
                             {int(i): int(v) for i, v in e["apart"]}, int(e["agnostic_detections"]),
                             float(e["agnostic_confidence_sum"]), fields["ahits"], int(e["label_views"]))
            instances[inst.instance_id] = inst
        supports = SupportMap(self.config.support)
        supports.restore_state(meta["supports"], arrays)
        counts = {name: int(meta["counts"][name]) for name in self._counts}
        with self._lock:
            self._instances = instances
            self._supports = supports
            self._next_id = int(meta["next_id"])
            self._counts = counts
            self._embedding_dim = int(meta["embedding_dim"])
            self._keyframe_ids = {int(i) for i in meta["keyframe_ids"]}
            self._version += 1

    @property
    def keyframe_ids(self) -> frozenset[int]:
        """The keyframes folded in since the last reset (or restored with the memory)."""
        with self._lock:
            return frozenset(self._keyframe_ids)

    # --- reading -------------------------------------------------------------------------------
    def _named(self, inst: _Instance) -> bool:
        """Confirmed by the detector's detections (its label is an answer)."""
        cfg = self.config
        return (inst.detections >= cfg.min_detections
                and inst.detections >= cfg.min_support_ratio * inst.label_views)

    def _found(self, inst: _Instance) -> bool:
        """Confirmed by class-agnostic detections."""
        cfg = self.config
        return (inst.agnostic_detections >= cfg.min_detections
                and inst.agnostic_detections >= cfg.min_support_ratio * inst.views_seen)

    def _confirmed(self, inst: _Instance) -> bool:
        return self._named(inst) or self._found(inst)

    def objects(self) -> tuple[MemoryObject, ...]:
        """The confirmed instances, most confident first (cached until the memory changes)."""
        cfg = self.config
        with self._lock:
            if self._cache is not None and self._cache[0] == self._version:
                return self._cache[1]
            out = []
            surfaces = self._supports.surfaces()
            for inst in self._instances.values():
                named = self._named(inst)
                if not named and not self._found(inst):
                    continue
                keys = inst.keys[inst.kept(cfg.min_voxel_hit_ratio, cfg.min_voxel_hit_frac)]
                if keys.shape[0] == 0:
                    continue
                points = voxel_centers(keys, cfg.voxel_size_m)
                total = sum(inst.label_weight.values())
                scores = tuple(sorted(((lab, w / total) for lab, w in inst.label_weight.items()), key=lambda x: -x[1]))
                color = inst.color_sum / max(1, inst.color_count)
                box = oriented_box(points)
                common = dict(points_world_m=points, box=box,
                              mean_color_rgb=(float(color[0]), float(color[1]), float(color[2])),
                              best_keyframe_ids=tuple(kf for _, kf in inst.best_views),
                              last_seen_stamp_ns=inst.last_seen_stamp_ns,
                              support=self._supports.support_of(box, surfaces),
                              apart_ids=frozenset(i for i, v in inst.apart.items() if v > 0))
                if named:
                    ratio = inst.detections / (inst.label_views + 1.0)
                    confidence = float(np.sqrt(ratio * inst.confidence_sum / inst.detections))
                    out.append(MemoryObject(inst.instance_id, scores[0][0], scores, inst.embedding,
                                            detections=inst.detections, views_seen=inst.label_views,
                                            confidence=confidence, **common))
                else:
                    ratio = inst.agnostic_detections / (inst.views_seen + 1.0)
                    confidence = float(np.sqrt(ratio * inst.agnostic_confidence_sum / inst.agnostic_detections))
                    out.append(MemoryObject(inst.instance_id, UNLABELLED, ((UNLABELLED, 1.0),),
                                            np.zeros(self._embedding_dim, np.float32),
                                            detections=inst.agnostic_detections, views_seen=inst.views_seen,
                                            confidence=confidence,
                                            unlabelled=True, label_hints=scores, **common))
            result = tuple(sorted(out, key=lambda o: -o.confidence))
            self._cache = (self._version, result)
            return result

    def supports(self) -> tuple[SupportSurface, ...]:
        """The support surfaces seen so far (floor, table tops, counters, shelves), lowest first, with
        stable ids (`MemoryObject.support.support_id`), kind, height and footprint."""
        with self._lock:
            return self._supports.surfaces()

    @property
    def version(self) -> int:
        """Changes whenever the memory does (for caches)."""
        with self._lock:
            return self._version

    @property
    def stats(self) -> MemoryStats:
        with self._lock:
            insts = list(self._instances.values())
            voxels = sum(i.keys.shape[0] for i in insts)
            nbytes = sum(i.keys.nbytes + i.hits.nbytes + i.misses.nbytes + i.ahits.nbytes + i.embedding_sum.nbytes
                         for i in insts)
            nbytes += self._supports.nbytes
            c = self._counts
            return MemoryStats(len(insts), sum(self._confirmed(i) for i in insts), voxels, c["keyframes"], c["used"],
                               c["ignored"], c["created"], c["merged"], c["split"], c["gone"], c["evicted"], nbytes,
                               sum(self._found(i) and not self._named(i) for i in insts), len(self._supports))

    def __len__(self) -> int:
        with self._lock:
            return len(self._instances)


class VoxelIndex:
    """Map points grouped by memory voxel, built once per snapshot: which points lie in given voxels."""

    def __init__(self, points_world_m: np.ndarray, voxel_size_m: float) -> None:
        self.voxel_size_m = voxel_size_m
        keys = voxel_keys(points_world_m, voxel_size_m)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]

    def indices(self, points_world_m: np.ndarray, grow_voxels: int = 0,
                not_into: np.ndarray | None = None) -> np.ndarray:
        """(K,) int64 sorted indices of the map points in the voxels holding `points_world_m`, or within
        `grow_voxels` voxels of them (26-neighbourhood steps); the grown voxels leave out those holding
        `not_into` (M, 3) (another object's own voxels)."""
        own = np.unique(voxel_keys(points_world_m, self.voxel_size_m))
        inst_keys = own
        for _ in range(grow_voxels):
            inst_keys = np.unique((inst_keys[:, None] + _NEIGHBOUR_KEY_OFFSETS[None, :]).ravel())
        if grow_voxels and not_into is not None and len(not_into):
            theirs = np.setdiff1d(np.unique(voxel_keys(not_into, self.voxel_size_m)), own, assume_unique=True)
            inst_keys = np.setdiff1d(inst_keys, theirs, assume_unique=True)
        lo = np.searchsorted(self._sorted, inst_keys, side="left")
        counts = np.searchsorted(self._sorted, inst_keys, side="right") - lo
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.sort(self._order[np.repeat(lo, counts) + within]).astype(np.int64)


__all__ = ["MemoryObject", "MemoryStats", "ObjectMemory", "ObjectMemoryConfig", "VoxelIndex", "erode_keeping_core",
           "voxel_centers", "voxel_keys"]
