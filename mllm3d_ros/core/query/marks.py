"""Marked prompts: the object memory's candidates drawn into a view as numbered marks, and the VLM's pick checked in 3D.

GAP-MLLM (arXiv 2603.16461) shows that a VLM decides spatial relations far better when the geometry
is given to it explicitly. When the memory holds candidates it cannot decide between (an attribute it
cannot check, a relation whose ranking the 2D model must confirm), each candidate visible in a view is
drawn as mark k (k = its rank in the plan + 1, the same number in every view), with its metric
centre, size, distance to the camera and gap to the named anchor (Set-of-Mark prompting). The VLM
answers with the mark it means; `judge_choice` maps that back to the candidate and checks it against
the same 3D relation the memory used: a pick that clearly contradicts the geometry is reported and
the geometric best is ranked first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..config import check_int, check_range
from .instruction import Relation
from ..memory.object_memory import MemoryObject
from .relations import RANKING_RELATIONS, BoxGeometry, box_gap_m, relation_score
from ..types import GeometryMark, Keyframe, OrientedBox3D, ViewPredictions
from ..visibility import project_to_view

@dataclass(frozen=True)
class MarkConfig:
    """min_visible_points: a candidate is marked in a view that sees at least this many of its points, [1, 1e6].
    contradiction_margin_m: for distance relations (near, nearest, farthest), a pick whose gap to the anchor is
    worse than the best candidate's by more than this contradicts the geometry, [0, 10].
    depth_tolerance_m / depth_tolerance_frac: the visibility test (as voting's)."""

    min_visible_points: int = 3
    contradiction_margin_m: float = 0.1
    depth_tolerance_m: float = 0.05
    depth_tolerance_frac: float = 0.03

    def __post_init__(self) -> None:
        check_int("min_visible_points", self.min_visible_points, 1, 1_000_000)
        check_range("contradiction_margin_m", self.contradiction_margin_m, 0.0, 10.0)
        check_range("depth_tolerance_m", self.depth_tolerance_m, 0.0, 1.0, low_inclusive=False)
        check_range("depth_tolerance_frac", self.depth_tolerance_frac, 0.0, 1.0)


def object_name(obj: MemoryObject) -> str:
    """How results and prompts name a memory instance: 'mug #12'."""
    return f"{obj.label or 'object'} #{obj.instance_id}"


def object_mark(mark_id: int, obj: MemoryObject, keyframe: Keyframe,
                anchors: Sequence[tuple[str, OrientedBox3D]] = (), config: MarkConfig = MarkConfig()) -> GeometryMark | None:
    """`obj` as mark `mark_id` in `keyframe`, or None when the view sees fewer than min_visible_points of it.

    The mark sits on the visible pixel nearest the visible pixels' centroid: on the object even when it
    is concave (a chair seen through its legs), where the box centre's projection may fall on the floor.
    """
    seen = project_to_view(obj.points_world_m, keyframe, config.depth_tolerance_m, config.depth_tolerance_frac)
    if seen.visible_indices.shape[0] < config.min_visible_points:
        return None
    width = keyframe.intrinsics.width
    pixels = np.stack([seen.pixel_index % width, seen.pixel_index // width], axis=1).astype(np.float64)
    at = pixels[int(np.argmin(np.linalg.norm(pixels - pixels.mean(axis=0), axis=1)))]
    centre = np.asarray(obj.box.center_world_m, dtype=np.float64)
    size = np.asarray(obj.box.size_m, dtype=np.float64)
    geometry = BoxGeometry.of(obj.box)
    return GeometryMark(
        mark_id=int(mark_id), pixel_xy=(float(at[0]), float(at[1])),
        center_world_m=tuple(float(v) for v in centre), size_m=tuple(float(v) for v in size),
        distance_m=float(np.linalg.norm(centre - np.asarray(keyframe.world_T_camera)[:3, 3])), label=obj.label,
        anchor_distances_m=tuple((name, box_gap_m(geometry, BoxGeometry.of(box))) for name, box in anchors))


def candidate_marks(candidates: Sequence[MemoryObject], keyframe: Keyframe,
                    anchors: Sequence[tuple[str, OrientedBox3D]] = (),
                    config: MarkConfig = MarkConfig()) -> tuple[GeometryMark, ...]:
    """The candidates `keyframe` sees, as marks numbered by their rank (candidate i is mark i + 1 in every view)."""
    marks = (object_mark(i + 1, c, keyframe, anchors, config) for i, c in enumerate(candidates))
    return tuple(m for m in marks if m is not None)


@dataclass(frozen=True)
class MarkChoice:
    """What the VLM picked and what the geometry says about it.

    chosen_index: the candidate (index into the plan's candidates) most views picked, None when no view
    picked a drawn mark. preferred_index: the candidate to rank first: the pick, or the geometric best
    when the pick contradicts the geometry. message: one line for the query result.
    """

    chosen_index: int | None
    preferred_index: int | None
    contradicts: bool
    message: str


def _picks(views: Sequence[ViewPredictions], marks_by_view: Mapping[int, Sequence[GeometryMark]]):
    """(keyframe_id, mark_id) of each view's first prediction that names a mark; and the picks of marks not drawn."""
    picks, invalid = [], []
    for view in views:
        pick = next((p.mark_id for p in view.predictions if p.mark_id is not None), None)
        if pick is None:
            continue
        drawn = {m.mark_id for m in marks_by_view.get(view.keyframe_id, ())}
        (picks if pick in drawn else invalid).append((view.keyframe_id, int(pick)))
    return picks, invalid


def judge_choice(views: Sequence[ViewPredictions], marks_by_view: Mapping[int, Sequence[GeometryMark]],
                 candidates: Sequence[MemoryObject], relation: Relation | None, anchor: MemoryObject | None,
                 world_T_viewer: np.ndarray | None, config: MarkConfig = MarkConfig()) -> MarkChoice | None:
    """The majority pick over the views, checked against `relation` to `anchor`; None when no view picked a mark."""
    picks, invalid = _picks(views, marks_by_view)
    if not picks and not invalid:
        return None
    parts = []
    if invalid:
        parts.append("the model picked mark(s) that were not drawn ("
                     + ", ".join(f"{m} in keyframe {k}" for k, m in invalid) + "): ignored")
    if not picks:
        return MarkChoice(None, None, False, "; ".join(parts))
    counts = Counter(m for _, m in picks)
    mark_id, votes = counts.most_common(1)[0]  # ties: the first view's pick (Counter keeps insertion order)
    chosen = mark_id - 1
    text = f"the model picked mark {mark_id} ({object_name(candidates[chosen])}) in {votes} of {len(picks)} view(s)"
    others = {m: n for m, n in counts.items() if m != mark_id}
    if others:
        text += " (other views: " + ", ".join(f"mark {m} x{n}" for m, n in others.items()) + ")"
    parts.insert(0, text)
    preferred, contradicts = chosen, False
    if relation is not None and anchor is not None and relation is not Relation.BETWEEN:
        scores = np.array([relation_score(c.box, [anchor.box], relation, world_T_viewer) for c in candidates])
        best = int(np.argmax(scores))
        worse_by = float(scores[best] - scores[chosen]) if np.isfinite(scores[chosen]) else np.inf
        contradicts = (not np.isfinite(scores[chosen]) or
                       (relation in RANKING_RELATIONS and worse_by > config.contradiction_margin_m))
        where = f"'{relation.value}' the {object_name(anchor)}"
        if contradicts and np.isfinite(scores[best]):
            preferred = best
            gap = lambda c: box_gap_m(BoxGeometry.of(c.box), BoxGeometry.of(anchor.box))  # noqa: E731
            parts.append(f"this contradicts the 3D geometry of {where} (gap {gap(candidates[chosen]):.2f} m vs "
                         f"{gap(candidates[best]):.2f} m for mark {best + 1}): ranked the geometric best, mark "
                         f"{best + 1} ({object_name(candidates[best])}), first")
        elif contradicts:
            parts.append(f"this contradicts the 3D geometry of {where}, and no candidate fits it: kept the pick")
        else:
            parts.append(f"consistent with {where} in 3D")
    elif relation is Relation.BETWEEN:
        parts.append("not checked in 3D ('between' is checked on both anchors, the plan holds one)")
    return MarkChoice(chosen, preferred, contradicts, "; ".join(parts))
