"""Multi-view consistency voting: from per-view 2D masks to trustworthy, ranked 3D objects.

Implements the 3D side of MLLM-For3D (arXiv 2503.18135) without its trained 3D network:
the 2D model's per-view pseudo masks are lifted onto the map's points and only what the views agree
on in 3D survives. The paper's two ideas, as used here:

- *Spatial consistency* (the paper's answer to "hallucinated objects and targets that are not
  localised consistently across views"): a map point is judged only by the views that can actually
  see it (inside the frustum and not occluded, the depth test of `keyframes.visible_mask`); a view
  that sees it inside a mask is positive evidence, one that sees it outside every mask is negative
  evidence, a view that cannot see it is no evidence at all.
- *Token-for-Query* (the paper's multimodal alignment that "identifies the same object across
  views"): one query embedding q is formed for the whole query and each mask is weighted by
  w = alpha * max(0, e . q), so a mask whose segmentation-token embedding disagrees with the query
  carries little or no vote.

Pipeline of `MultiViewVoter.vote` (stage names match `VoteTimings`):
  1. filter: drop low-confidence and tiny masks;
  2. weight: Token-for-Query weights;
  3. lift: project the map once per view (float32, reused by every mask of that view);
  4. consistency: per-point weighted positive / (positive + negative) ratio, keep points above it
     (a point just outside a mask, within mask_boundary_px, counts neither way);
  5. cluster: voxel connected components of the kept points (object hypotheses);
  6./7. associate: assign each mask to every hypothesis it covers, check embedding agreement,
     count supporting vs seeing views, reject hallucinations (support ratio below threshold) and
     fragments supported only by a better object's masks (`drop_borrowed_support`);
  Then, when objects were accepted, views that see one but support none are discredited (they lost
  the target or hallucinated, as 3D just showed) and steps 4-7 run again without their negative
  evidence (`discredit_views`).
  8. objects: the surface an accepted object stands on is stripped from it (mask spill onto floor or
     table top); per-point and per-object confidence, yaw-only oriented box, rank by confidence;
     completion adds the map points no selected view sees (no evidence either way) that are
     voxel-connected to an accepted object inside its slightly grown box, minus support surfaces
     (floor, table top, wall), at a lower per-point confidence.

The stages live in their own modules: `visibility` (the one visibility test, step 3), `evidence`
(steps 1-4), `clustering` (step 5), this module (steps 6-7 and the voter), `object_geometry` (step 8).
Pure numpy: no ROS, no open3d, no scipy, so it runs wherever the core runs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..clustering import PointClusters, cluster_points
from ..config import ConfigError, check_int, check_range
from ..memory.evidence import grow_mask, lift_masks, point_votes, token_for_query_weights, unified_query_embedding
from ..memory.object_geometry import complete_object, oriented_box, strip_support_surface
from ..types import InputError, Keyframe, MapSnapshot, Object3D, ViewPredictions
from ..visibility import ViewProjection, project_to_view


@dataclass(frozen=True)
class VotingConfig:
    """Every threshold of multi-view voting, validated at construction.

    Attributes:
        min_mask_confidence: masks whose confidence alpha is below this are dropped before anything
            else (MLLM-For3D drops low-confidence masks first). [0, 1], default 0.3.
        min_mask_area_frac: masks covering less than this fraction of their image are dropped as
            tiny (a few pixels of mask lift to noise). [0, 1], default 0.0005.
        min_mask_area_pixels: absolute floor for the same test, in pixels of the keyframe image;
            the larger of the two floors applies. >= 0, default 20.
        min_mask_weight: masks whose Token-for-Query weight alpha * max(0, e . q) is below this carry
            no vote (they are off-query: the model segmented something the query is not about).
            [0, 1], default 0.05.
        depth_tolerance_m: a map point is seen by a view when |z_point - depth_at_pixel| is within
            max(depth_tolerance_m, depth_tolerance_frac * depth); otherwise it is occluded (or in
            front of the observed surface) and the view gives no evidence on it. > 0, default 0.05.
        depth_tolerance_frac: the depth-proportional part of that tolerance (depth noise grows
            with range). [0, 1], default 0.03.
        empty_view_weight: negative-evidence weight of a view whose model returned no usable mask
            ("not found here" is weaker evidence than "found it elsewhere"). [0, 1], default 0.1.
        mask_boundary_px: a seen point outside every mask of a view but within this many pixels of
            one is no evidence either way: 2D masks are uncertain by a few pixels at their boundary,
            and the map's surface points at an object's silhouette project onto it (depth-colour
            registration, pose error, the rounding of projection). Without the band, every view
            that sees an object's rim votes against it. In pixels of the keyframe image; 0 makes the
            mask boundary exact. >= 0, default 2.
        min_positive_ratio: spatial consistency; a point is kept when its weighted positive evidence
            is at least this fraction of all its evidence. (0, 1], default 0.5.
        min_positive_weight: a kept point also needs at least this much positive weight, so one
            weak, unopposed mask cannot create an object on its own. >= 0, default 0.15.
        cluster_voxel_size_m: kept points are grouped by 26-connectivity of voxels this big; about
            twice the map resolution bridges sampling gaps without merging separate objects.
            > 0, default 0.06.
        min_cluster_points: hypotheses with fewer points are discarded as specks. >= 1, default 20.
        min_visible_frac: a view "can see" a hypothesis when it sees at least this fraction of its
            points. (0, 1], default 0.2.
        min_mask_cover_frac: a mask supports every hypothesis of which it covers at least this
            fraction of the points its view sees. (0, 1], default 0.3.
        min_association_similarity: cross-view association; a mask assigned to a hypothesis by 3D
            overlap counts as support only if its embedding's cosine similarity with the
            hypothesis's (weight-averaged) embedding is at least this. [-1, 1], default 0.3.
        min_support_ratio: hallucination rejection; a hypothesis is rejected when both the fraction of
            the views that can see it which support it, and the supporting views' share of the weight
            of all those views (each counted with its best mask's weight, or empty_view_weight when it
            found nothing), are below this. Weighing lets two confident views outvote four that found
            nothing, but not four that confidently found the target elsewhere. [0, 1], default 0.5.
        min_supporting_views: a hypothesis must also be confirmed by at least this many views (by
            all of them when the query has fewer): surfaces that only one view sees cannot be checked
            for consistency, and a lone confident hallucination looks exactly like that. >= 1, default 2.
        lone_support_min_weighted_ratio: exception to min_supporting_views: a hypothesis that at least
            two views can see but only one confirms is still accepted when that view's weight is at
            least this fraction of all the weight of the views that see it (each seeing view counts
            with its best mask's weight, or empty_view_weight when it found nothing). A target that
            one of its two views simply missed passes (0.9 against 0.1); a hallucination contradicted
            by a view that found the target elsewhere does not (0.95 against 0.9). 1.0 disables the
            exception. [0, 1], default 0.66.
        confidence_prior_weight: pseudo-weight of negative evidence added to every hypothesis's
            confidence denominator, so an object seen by one view only cannot reach the confidence
            of one confirmed by several. >= 0, default 1.0.
        max_objects: at most this many objects are returned, best first. >= 1, default 10.
        completion_margin_m: completion; after a hypothesis is accepted, map points that no
            selected view sees (no evidence either way: back faces, undersides, parts hidden in
            every chosen view) are added to it when they are voxel-connected (cluster_voxel_size_m)
            to it through other unseen points and lie inside its yaw-oriented box grown by this
            margin. 0 disables completion. >= 0, default 0.06.
        completion_point_confidence: per-point confidence given to completed points (they were
            never observed, so they rank below every voted point). [0, 1], default 0.25.
        support_ring_m: completion never adds points of a support surface under the object (floor,
            table top): unseen points within one voxel of the object's bottom are excluded when the
            map has a surface at that height that reaches this far beyond the object's box.
            > 0, default 0.3.
        support_min_frac: ... "reaches" meaning it occupies at least this fraction of the ring's
            voxel columns. (0, 1], default 0.25.
        strip_support: 2D masks spill onto the floor or table top around an object's base and every
            view confirms the spill, which then joins the object to its neighbours in 3D. When the map
            has a surface at the bottom of an accepted object that reaches support_ring_m beyond it
            (support_min_frac), the object's points at that surface's height are dropped and its
            largest connected part kept (`strip_support_surface`). Default True.
        discredit_views: when an object was accepted, a view that sees it but whose masks support no
            accepted object (it missed the object, or answered about something the other views
            refuted in 3D) loses its negative evidence and the points are voted again: a hallucinating
            view no longer erases the object's points that it happens to see. False: a single vote.
            Default True.
        drop_borrowed_support: a 2D mask that spills past its object (onto a neighbour's edge, a
            depth fringe) supports, in 3D, the fragment it spilled onto as well, and the fragment is
            then returned as an object of its own. With this set, a hypothesis some of whose support
            comes from masks that hold at least twice as many points of a better-ranked object must
            reach min_supporting_views with its own masks, or it is dropped (`_own_support`).
            Default True.
    """

    min_mask_confidence: float = 0.3
    min_mask_area_frac: float = 0.0005
    min_mask_area_pixels: int = 20
    min_mask_weight: float = 0.05
    depth_tolerance_m: float = 0.05
    depth_tolerance_frac: float = 0.03
    empty_view_weight: float = 0.1
    mask_boundary_px: int = 2
    min_positive_ratio: float = 0.5
    min_positive_weight: float = 0.15
    cluster_voxel_size_m: float = 0.06
    min_cluster_points: int = 20
    min_visible_frac: float = 0.2
    min_mask_cover_frac: float = 0.3
    min_association_similarity: float = 0.3
    min_support_ratio: float = 0.5
    min_supporting_views: int = 2
    lone_support_min_weighted_ratio: float = 0.66
    confidence_prior_weight: float = 1.0
    max_objects: int = 10
    completion_margin_m: float = 0.06
    completion_point_confidence: float = 0.25
    support_ring_m: float = 0.3
    support_min_frac: float = 0.25
    strip_support: bool = True
    discredit_views: bool = True
    drop_borrowed_support: bool = True

    def __post_init__(self) -> None:
        check_range("min_mask_confidence", self.min_mask_confidence, 0.0, 1.0)
        check_range("min_mask_area_frac", self.min_mask_area_frac, 0.0, 1.0)
        check_int("min_mask_area_pixels", self.min_mask_area_pixels, 0)
        check_range("min_mask_weight", self.min_mask_weight, 0.0, 1.0)
        check_range("depth_tolerance_m", self.depth_tolerance_m, 0.0, low_inclusive=False)
        check_range("depth_tolerance_frac", self.depth_tolerance_frac, 0.0, 1.0)
        check_range("empty_view_weight", self.empty_view_weight, 0.0, 1.0)
        check_range("min_positive_ratio", self.min_positive_ratio, 0.0, 1.0, low_inclusive=False)
        check_range("min_positive_weight", self.min_positive_weight, 0.0)
        check_range("cluster_voxel_size_m", self.cluster_voxel_size_m, 0.0, low_inclusive=False)
        check_int("min_cluster_points", self.min_cluster_points, 1)
        check_range("min_visible_frac", self.min_visible_frac, 0.0, 1.0, low_inclusive=False)
        check_range("min_mask_cover_frac", self.min_mask_cover_frac, 0.0, 1.0, low_inclusive=False)
        check_range("min_association_similarity", self.min_association_similarity, -1.0, 1.0)
        check_range("min_support_ratio", self.min_support_ratio, 0.0, 1.0)
        check_int("min_supporting_views", self.min_supporting_views, 1)
        check_range("lone_support_min_weighted_ratio", self.lone_support_min_weighted_ratio, 0.0, 1.0)
        check_range("confidence_prior_weight", self.confidence_prior_weight, 0.0)
        check_int("max_objects", self.max_objects, 1)
        check_range("completion_margin_m", self.completion_margin_m, 0.0)
        check_range("completion_point_confidence", self.completion_point_confidence, 0.0, 1.0)
        check_range("support_ring_m", self.support_ring_m, 0.0, low_inclusive=False)
        check_range("support_min_frac", self.support_min_frac, 0.0, 1.0, low_inclusive=False)
        check_int("mask_boundary_px", self.mask_boundary_px, 0)
        for name in ("strip_support", "discredit_views", "drop_borrowed_support"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class VoteTimings:
    """Wall time per stage, milliseconds."""

    filter_ms: float = 0.0
    lift_ms: float = 0.0
    consistency_ms: float = 0.0
    cluster_ms: float = 0.0
    associate_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class VoteDiagnostics:
    """What happened to the input: masks dropped and why, points and hypotheses kept and rejected."""

    views: int = 0
    masks_in: int = 0
    masks_dropped_low_confidence: int = 0
    masks_dropped_small: int = 0
    masks_dropped_off_query: int = 0
    masks_used: int = 0
    points_seen: int = 0
    points_positive: int = 0
    points_kept: int = 0
    hypotheses: int = 0
    hypotheses_rejected_small: int = 0
    hypotheses_rejected_unsupported: int = 0
    views_discredited: int = 0
    objects: int = 0


@dataclass(frozen=True, eq=False)
class VoteResult:
    """Ranked objects (best first), the query embedding used (D,) or None, timings and diagnostics.

    candidate_indices (K,) int64: every map point that passed the per-point consistency test, in an
    accepted object or not; where to look again when more views are affordable (`pipeline`).
    """

    objects: tuple[Object3D, ...]
    query_embedding: np.ndarray | None
    timings: VoteTimings
    diagnostics: VoteDiagnostics
    candidate_indices: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def _view_cover(labels_seen: np.ndarray, hit: np.ndarray, sizes: np.ndarray, min_visible_frac: float,
                min_cover_frac: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which hypotheses one view sees (C,), which of them each of its masks covers (J, C), and how many
    of each hypothesis's points each mask holds (J, C).

    labels_seen (V,): hypothesis of each point the view sees (-1 none); hit (J, V) from `lift_masks`.
    A view sees a hypothesis when it sees at least min_visible_frac of its points; a mask covers a seen
    hypothesis when it holds at least min_cover_frac of the hypothesis's points the view sees.
    """
    num = sizes.shape[0]
    in_cluster = labels_seen >= 0
    visible = np.bincount(labels_seen[in_cluster], minlength=num)
    sees = visible >= np.maximum(1.0, min_visible_frac * sizes)
    covered = np.zeros((hit.shape[0], num), dtype=np.int64)
    for j in range(hit.shape[0]):
        covered[j] = np.bincount(labels_seen[in_cluster & hit[j]], minlength=num)
    return sees, (covered > 0) & (covered >= min_cover_frac * np.maximum(visible, 1)) & sees, covered


def _own_support(ranked: list[int], mask_support: list[list[tuple[int, int]]], held: Sequence[np.ndarray],
                 min_views: int) -> list[int]:
    """The accepted hypotheses (best first) that keep enough support of their own.

    A supporting mask is borrowed when it holds at least twice as many points of a better-ranked kept
    hypothesis as of this one: it is that object's mask, spilled onto a fragment beside it (one mask
    over two similar objects, which the model segmented as one, holds about as much of each and
    supports both). A hypothesis whose views
    support it only with borrowed masks is what one 2D answer left around a better object, not an
    object of its own: once a mask is borrowed, its own views must reach min_views.
    """
    kept: list[int] = []
    for c in ranked:
        views = {k for k, _ in mask_support[c]}
        own_views = {k for k, j in mask_support[c]
                     if not any(held[k][j, better] >= 2 * held[k][j, c] for better in kept)}
        if own_views == views or len(own_views) >= min_views:
            kept.append(c)
    return kept


# ----------------------------------------------------------------------------------------------
# The voter
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _ViewMasks:
    """The masks of one view that survived filtering, with their Token-for-Query weights."""

    keyframe: Keyframe
    masks: tuple[np.ndarray, ...]
    confidences: np.ndarray  # (J,) float32
    embeddings: np.ndarray  # (J, D) float32
    labels: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class _Verdict:
    """What association decided about each hypothesis c (arrays indexed by c)."""

    order: tuple[int, ...]  # accepted hypotheses, best first, at most max_objects
    confidence: np.ndarray  # (C,) float64
    n_support: np.ndarray  # (C,) views supporting it
    n_visible: np.ndarray  # (C,) views that can see it
    labels: tuple[str, ...]  # (C,) label of its heaviest supporting mask
    rejected: int  # hypotheses rejected as unsupported
    discredited: np.ndarray  # (V,) bool: views that see an accepted hypothesis but support none


class MultiViewVoter:
    """Fuses per-view 2D predictions into ranked 3D objects (MLLM-For3D spatial consistency + Token-for-Query)."""

    def __init__(self, config: VotingConfig = VotingConfig()) -> None:
        if not isinstance(config, VotingConfig):
            raise ConfigError(f"config must be a VotingConfig, got {type(config).__name__}")
        self.config = config

    def vote(self, snapshot: MapSnapshot, keyframes: Sequence[Keyframe], views: Sequence[ViewPredictions],
             query_embedding: np.ndarray | None = None) -> VoteResult:
        """Vote the views' masks into 3D objects over the snapshot's points, best first.

        `views` decide which keyframes take part (a keyframe without predictions is ignored; a view
        with zero predictions is a view where the model found nothing). Raises InputError when a view
        names a keyframe not in `keyframes` or a mask does not match its keyframe's image size.
        """
        cfg = self.config
        t_start = time.perf_counter()
        by_id = {kf.keyframe_id: kf for kf in keyframes}
        points = np.asarray(snapshot.points_world_m, dtype=np.float32)

        # 1. filter: drop low-confidence and tiny masks first (MLLM-For3D, before any weighting).
        filtered, counts = self._filter(views, by_id)
        all_conf = np.concatenate([v.confidences for v in filtered]) if filtered else np.zeros(0, np.float32)
        all_emb = [v.embeddings for v in filtered if v.embeddings.shape[0]]
        # 2. weight: Token-for-Query.
        query = unified_query_embedding(np.concatenate(all_emb) if all_emb else np.zeros((0, 1)), all_conf,
                                        query_embedding)
        if query is not None and all_emb and all_emb[0].shape[1] != query.shape[0]:
            raise InputError(f"query embedding has {query.shape[0]} dimensions, mask embeddings {all_emb[0].shape[1]}")
        weights = [token_for_query_weights(v.confidences, v.embeddings, query) if query is not None
                   else np.zeros(len(v.masks), np.float32) for v in filtered]
        kept_views, kept_weights, dropped_off_query = [], [], 0
        for view, w in zip(filtered, weights):
            keep = w >= cfg.min_mask_weight
            dropped_off_query += int((~keep).sum())
            kept_views.append(_ViewMasks(view.keyframe, tuple(m for m, k in zip(view.masks, keep) if k),
                                         view.confidences[keep], view.embeddings[keep],
                                         tuple(lab for lab, k in zip(view.labels, keep) if k)))
            kept_weights.append(w[keep])
        t_filter = time.perf_counter()

        # 3. lift: one projection per view, shared by all its masks.
        projections = [project_to_view(points, v.keyframe, cfg.depth_tolerance_m, cfg.depth_tolerance_frac)
                       for v in kept_views]
        hits = [lift_masks(p, v.masks) for p, v in zip(projections, kept_views)]
        near = None
        if cfg.mask_boundary_px:
            near = [grow_mask(np.logical_or.reduce(v.masks), cfg.mask_boundary_px).ravel()[p.pixel_index]
                    if v.masks else None for p, v in zip(projections, kept_views)]
        t_lift = time.perf_counter()
        stage_s = {"consistency": 0.0, "cluster": 0.0, "associate": 0.0}

        def decide(neg_weights: Sequence[float], point_neg_weights: Sequence[float]):
            """Steps 4-7; point_neg_weights weigh each view's per-point negative evidence, neg_weights its
            weight in support counting."""
            t0 = time.perf_counter()
            # 4. consistency: weighted positive vs negative evidence per point.
            votes = point_votes(points.shape[0], projections, hits, kept_weights, point_neg_weights, near)
            ratio = votes.ratio
            kept_idx = np.flatnonzero((ratio >= cfg.min_positive_ratio) & (votes.positive >= cfg.min_positive_weight))
            t1 = time.perf_counter()
            # 5. cluster the surviving points into object hypotheses.
            clusters = cluster_points(points[kept_idx], cfg.cluster_voxel_size_m, cfg.min_cluster_points)
            t2 = time.perf_counter()
            # 6./7. associate masks to hypotheses, reject unsupported ones.
            verdict = self._associate(points, kept_idx, clusters, projections, hits, kept_views, kept_weights,
                                      neg_weights)
            t3 = time.perf_counter()
            stage_s["consistency"] += t1 - t0
            stage_s["cluster"] += t2 - t1
            stage_s["associate"] += t3 - t2
            return votes, kept_idx, clusters, verdict

        # A view that found the target elsewhere speaks against a point as strongly as its best mask; a
        # view that found nothing speaks weakly (empty_view_weight).
        negative_weights = [float(w.max()) if w.shape[0] else cfg.empty_view_weight for w in kept_weights]
        votes, kept_idx, clusters, verdict = decide(negative_weights, negative_weights)
        discredited = verdict.discredited if cfg.discredit_views else np.zeros(len(kept_views), dtype=bool)
        if discredited.any():
            # A view that sees an accepted object but supports none missed it or answered about something
            # else, and the other views refuted that in 3D: its "outside every mask" is then no evidence.
            # Vote again without its negative evidence (points only it saw become unobserved, which
            # completion may add). Which hypotheses it could see and did not support still counts.
            point_negative = [0.0 if d else w for d, w in zip(discredited, negative_weights)]
            votes, kept_idx, clusters, verdict = decide(negative_weights, point_negative)
        # 8. the ranked objects, from the last vote.
        t_build = time.perf_counter()
        evidence = votes.positive + votes.negative
        objects = self._build_objects(points, kept_idx, clusters, verdict, votes.ratio, np.flatnonzero(evidence == 0))
        t_end = time.perf_counter()
        stage_s["associate"] += t_end - t_build

        diagnostics = VoteDiagnostics(
            views=len(filtered), masks_in=counts[0], masks_dropped_low_confidence=counts[1],
            masks_dropped_small=counts[2], masks_dropped_off_query=dropped_off_query,
            masks_used=int(sum(w.shape[0] for w in kept_weights)),
            points_seen=int(np.count_nonzero(evidence > 0)),
            points_positive=int(np.count_nonzero(votes.positive > 0)), points_kept=int(kept_idx.shape[0]),
            hypotheses=clusters.num_clusters + clusters.num_discarded, hypotheses_rejected_small=clusters.num_discarded,
            hypotheses_rejected_unsupported=verdict.rejected, views_discredited=int(discredited.sum()),
            objects=len(objects))
        ms = 1000.0
        timings = VoteTimings(filter_ms=(t_filter - t_start) * ms, lift_ms=(t_lift - t_filter) * ms,
                              consistency_ms=stage_s["consistency"] * ms, cluster_ms=stage_s["cluster"] * ms,
                              associate_ms=stage_s["associate"] * ms, total_ms=(t_end - t_start) * ms)
        return VoteResult(objects, query, timings, diagnostics, kept_idx.astype(np.int64))

    def _filter(self, views: Sequence[ViewPredictions], by_id: dict[int, Keyframe]
                ) -> tuple[list[_ViewMasks], tuple[int, int, int]]:
        cfg = self.config
        out: list[_ViewMasks] = []
        masks_in = low_conf = small = 0
        seen_ids: set[int] = set()
        for view in views:
            if view.keyframe_id not in by_id:
                raise InputError(f"predictions for keyframe {view.keyframe_id}, which is not among the keyframes")
            if view.keyframe_id in seen_ids:
                raise InputError(f"two sets of predictions for keyframe {view.keyframe_id}")
            seen_ids.add(view.keyframe_id)
            kf = by_id[view.keyframe_id]
            height, width = kf.depth_m.shape
            min_area = max(cfg.min_mask_area_pixels, cfg.min_mask_area_frac * height * width)
            masks, conf, emb, labels = [], [], [], []
            for pred in view.predictions:
                masks_in += 1
                mask = np.asarray(pred.mask, dtype=bool)
                if mask.shape != (height, width):
                    raise InputError(f"keyframe {view.keyframe_id}: mask is {mask.shape}, image is {(height, width)}")
                if not np.isfinite(pred.confidence) or pred.confidence < cfg.min_mask_confidence:
                    low_conf += 1
                    continue
                if np.count_nonzero(mask) < min_area:
                    small += 1
                    continue
                masks.append(mask)
                conf.append(pred.confidence)
                emb.append(np.asarray(pred.embedding, dtype=np.float32).ravel())
                labels.append(pred.label)
            dims = {e.shape[0] for e in emb}
            if len(dims) > 1:
                raise InputError(f"keyframe {view.keyframe_id}: embeddings of different sizes {sorted(dims)}")
            out.append(_ViewMasks(kf, tuple(masks), np.asarray(conf, dtype=np.float32),
                                  np.stack(emb) if emb else np.zeros((0, 1), np.float32), tuple(labels)))
        dims = {v.embeddings.shape[1] for v in out if v.embeddings.shape[0]}
        if len(dims) > 1:
            raise InputError(f"embeddings of different sizes across views: {sorted(dims)}")
        return out, (masks_in, low_conf, small)

    def _associate(self, points: np.ndarray, kept_idx: np.ndarray, clusters: PointClusters,
                   projections: Sequence[ViewProjection], hits: Sequence[np.ndarray], views: Sequence[_ViewMasks],
                   weights: Sequence[np.ndarray], negative_weights: Sequence[float]) -> _Verdict:
        """Steps 6-7: cross-view association, support counting and hallucination rejection."""
        cfg = self.config
        num_clusters = clusters.num_clusters
        if num_clusters == 0:
            return _Verdict((), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), (), 0,
                            np.zeros(len(views), dtype=bool))
        labels_kept = clusters.labels
        label_of_point = np.full(points.shape[0], -1, dtype=np.int64)
        label_of_point[kept_idx] = labels_kept
        cluster_sizes = np.bincount(labels_kept[labels_kept >= 0], minlength=num_clusters)
        num_views = len(views)
        sees = np.zeros((num_views, num_clusters), dtype=bool)
        covers = []  # per view: (J, C) bool, mask j covers hypothesis c
        held = []  # per view: (J, C) points of hypothesis c inside mask j
        for k, (proj, hit) in enumerate(zip(projections, hits)):
            # 3D overlap decides which hypotheses a mask belongs to: every one it covers enough of. One
            # mask may cover several (an object that voting split into fragments; two objects the model
            # segmented as one); counting it only for the one it covers most starves the others.
            sees[k], cover, points_in = _view_cover(label_of_point[proj.visible_indices], hit, cluster_sizes,
                                                    cfg.min_visible_frac, cfg.min_mask_cover_frac)
            covers.append(cover)
            held.append(points_in)

        # Cross-view association by embedding: each hypothesis's embedding is the weighted mean of the
        # masks assigned to it; a mask that overlaps it in 3D but means something else does not support it.
        dim = next((v.embeddings.shape[1] for v in views if v.embeddings.shape[0]), 1)
        cluster_emb = np.zeros((num_clusters, dim), dtype=np.float64)
        for view, w, cov in zip(views, weights, covers):
            if cov.shape[0]:
                cluster_emb += (cov * w[:, None]).T.astype(np.float64) @ view.embeddings.astype(np.float64)
        cluster_emb /= np.maximum(np.linalg.norm(cluster_emb, axis=1, keepdims=True), 1e-12)
        support_weight = np.zeros((num_views, num_clusters), dtype=np.float64)  # best supporting mask weight
        best_label = [("", 0.0)] * num_clusters
        mask_support: list[list[tuple[int, int]]] = [[] for _ in range(num_clusters)]  # (view, mask) per c
        for k, (view, w, cov) in enumerate(zip(views, weights, covers)):
            for j, c in zip(*np.nonzero(cov)):
                if float(view.embeddings[j] @ cluster_emb[c]) < cfg.min_association_similarity:
                    continue
                mask_support[c].append((k, int(j)))
                support_weight[k, c] = max(support_weight[k, c], float(w[j]))
                if w[j] > best_label[c][1]:
                    best_label[c] = (view.labels[j], float(w[j]))

        neg_w = np.asarray(negative_weights, dtype=np.float64)[:, None]
        supporting = (support_weight > 0) & sees
        n_support = supporting.sum(axis=0)
        n_visible = sees.sum(axis=0)
        support_ratio = np.divide(n_support, n_visible, out=np.zeros(num_clusters), where=n_visible > 0)
        # Confidence: supporting weight over all weight that could have confirmed it, shrunk by a prior
        # so that evidence from several views outranks a single unopposed view.
        support_sum = np.where(supporting, support_weight, 0.0).sum(axis=0)
        seeing_sum = np.where(sees, np.maximum(neg_w, support_weight), 0.0).sum(axis=0)
        confidence = support_sum / (seeing_sum + cfg.confidence_prior_weight)
        weighted_ratio = np.divide(support_sum, seeing_sum, out=np.zeros(num_clusters), where=seeing_sum > 0)
        min_views = max(1, min(cfg.min_supporting_views, num_views))
        lone_ok = ((n_support >= 1) & (n_visible >= 2) & (cfg.lone_support_min_weighted_ratio < 1.0)
                   & (weighted_ratio >= cfg.lone_support_min_weighted_ratio))
        accepted = ((n_support >= min_views) | lone_ok) & (np.maximum(support_ratio, weighted_ratio) >= cfg.min_support_ratio)
        rejected = int(num_clusters - accepted.sum())
        discredited = (sees[:, accepted].any(axis=1) & ~supporting[:, accepted].any(axis=1))
        ranked = [int(c) for c in np.argsort(-confidence, kind="stable") if accepted[c]]
        if cfg.drop_borrowed_support:
            ranked = _own_support(ranked, mask_support, held, min_views)
        order = tuple(ranked[: cfg.max_objects])
        return _Verdict(order, confidence, n_support, n_visible, tuple(lab for lab, _ in best_label), rejected,
                        discredited)

    def _build_objects(self, points: np.ndarray, kept_idx: np.ndarray, clusters: PointClusters, verdict: _Verdict,
                       ratio: np.ndarray, unseen_idx: np.ndarray) -> tuple[Object3D, ...]:
        """Step 8: each accepted hypothesis without its support surface, completed, best first."""
        cfg = self.config
        objects = []
        for c in verdict.order:
            idx = kept_idx[clusters.labels == c].astype(np.int64)
            if cfg.strip_support:
                idx = strip_support_surface(points, idx, cfg.cluster_voxel_size_m, cfg.support_ring_m,
                                            cfg.support_min_frac, cfg.min_cluster_points)
            point_conf = ratio[idx].astype(np.float32)
            added = complete_object(points, idx, unseen_idx, cfg.cluster_voxel_size_m, cfg.completion_margin_m,
                                    cfg.support_ring_m, cfg.support_min_frac)
            if added.shape[0]:
                idx = np.concatenate([idx, added])
                point_conf = np.concatenate([point_conf, np.full(added.shape[0], cfg.completion_point_confidence,
                                                                 np.float32)])
            objects.append(Object3D(point_indices=idx, point_confidence=point_conf,
                                    box=oriented_box(points[idx]), confidence=float(verdict.confidence[c]),
                                    supporting_views=int(verdict.n_support[c]), visible_views=int(verdict.n_visible[c]),
                                    label=verdict.labels[c]))
        return tuple(objects)
