"""One SegmentQuery, end to end, without ROS: select views -> 2D segmentation -> multi-view voting.

The ROS query node and the offline `mllm3d segment` command both run this; they differ only in
how the map is produced and how the backend is reached (`SegmentFn`: a local backend or a ROS
service client).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from ..config import ConfigError, check_int, check_range
from ..geometry import voxel_keys
from .instruction import ParsedInstruction, parse_instruction
from .marks import MarkConfig, candidate_marks, judge_choice, object_name
from .memory_query import MemoryPlan, MemoryResolver
from .open_set import InstructionRecognition, Recognition, RecognitionStatus
from .relations import relation_score
from ..segmentation import BackendError, BackendUnavailable, ModeUnsupported, normalise_instruction
from ..types import (BackendView, GeometryMark, InputError, Keyframe, MapSnapshot, Object3D, QueryResult,
                    QueryStatus, SegmentationResult, keyframe_view)
from .view_selection import ViewSelectionConfig, select_views
from .voting import MultiViewVoter, VotingConfig

SegmentFn = Callable[[Sequence[BackendView], str], SegmentationResult]
ParseFn = Callable[[str], ParsedInstruction]
RecogniseFn = Callable[[str], Recognition]
ProgressFn = Callable[[str, float], None]


class MapSource(Protocol):
    """What the pipeline needs from the mapper: a consistent snapshot and the stored keyframes."""

    def snapshot(self) -> MapSnapshot: ...

    def keyframes(self) -> tuple[Keyframe, ...]: ...


class QueryCanceled(Exception):
    """Raised inside a SegmentFn when the query was cancelled while it waited."""


@dataclass(frozen=True)
class QueryConfig:
    """Defaults and bounds of a query.

    default_max_views: views per query when the goal says 0 (MLLM-For3D's default, 4). [1, 32]
    max_views_limit: upper bound on a goal's max_views. [1, 64]
    default_min_confidence: objects below this confidence are dropped when the goal says 0. [0, 1]
    timeout_s: a query taking longer is aborted with TIMEOUT. (0, 3600]
    region_max_points: map points used to score view coverage (subsampled evenly). [100, 1e6]
    refine_views: after the first vote, up to this many more keyframes are segmented, chosen to
        cover the region of interest (every point that passed the consistency test, in an accepted
        object or not) instead of the whole map, and all views are voted again. The first views
        cover the room, so a target is often seen by only two of them; views aimed at it confirm a
        hypothesis that one view could not, and complete its far side. Costs up to this many more
        2D model calls; 0 disables. [0, 32]
    answer_from_memory: with an object memory, answer without the 2D model when the memory decides the
        whole instruction (a class, a colour, a relation whose anchors it holds); else its candidates
        only choose the views. bool.
    marked_prompts: when the 2D model must decide between the memory's candidates, draw them into each
        view as numbered marks with their metric geometry (`core.query.marks`; for backends that `uses_marks`),
        and check the mark the model picks against the 3D relation. bool.
    """

    default_max_views: int = 4
    max_views_limit: int = 16
    default_min_confidence: float = 0.2
    timeout_s: float = 60.0
    region_max_points: int = 20000
    refine_views: int = 4
    answer_from_memory: bool = True
    marked_prompts: bool = False

    def __post_init__(self) -> None:
        check_int("max_views_limit", self.max_views_limit, 1, 64)
        check_int("default_max_views", self.default_max_views, 1, self.max_views_limit)
        check_range("default_min_confidence", self.default_min_confidence, 0.0, 1.0)
        check_range("timeout_s", self.timeout_s, 0.0, 3600.0, low_inclusive=False)
        check_int("region_max_points", self.region_max_points, 100, 1_000_000)
        check_int("refine_views", self.refine_views, 0, 32)
        for name in ("answer_from_memory", "marked_prompts"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")


def _evenly(points: np.ndarray, max_points: int) -> np.ndarray:
    """Every k-th point, k the smallest integer stride leaving at most about max_points."""
    return points[:: max(1, points.shape[0] // max_points)]


def _merge_embeddings(results: Sequence[SegmentationResult]) -> np.ndarray | None:
    embs = [r.query_embedding for r in results if r.query_embedding is not None and r.query_embedding.size]
    if not embs:
        return None
    q = np.mean(np.stack(embs), axis=0).astype(np.float32)
    n = float(np.linalg.norm(q))
    return q / n if n > 0 else None


def _with_notes(message: str, notes: Sequence[str]) -> str:
    return message + "".join(f"; note: {n}" for n in notes)


def _parse(parse_fn: ParseFn, text: str) -> ParsedInstruction:
    """`parse_fn(text)`, or the grammar's parse when it cannot (silently) or fails (with a note)."""
    if parse_fn is parse_instruction:
        return parse_instruction(text)
    try:
        parsed = parse_fn(text)
    except ModeUnsupported:  # the backend has no parsing mode: not a failure worth a note on every query
        return parse_instruction(text)
    except (BackendError, InputError, TimeoutError) as exc:
        grammar = parse_instruction(text)
        return dataclasses.replace(grammar, notes=(f"the model's parse failed ({exc}), used the grammar",)
                                   + grammar.notes)
    if not isinstance(parsed, ParsedInstruction):
        grammar = parse_instruction(text)
        return dataclasses.replace(grammar, notes=(f"the model's parse returned {type(parsed).__name__}, used the "
                                                   "grammar",) + grammar.notes)
    return parsed


def _recognise(recognise_fn: RecogniseFn | None, parsed: ParsedInstruction) -> tuple[InstructionRecognition, str]:
    """The open-set gate's answers for the instruction's phrases, and a note when the gate could not run
    (the phrases then go on as an open vocabulary's would). BackendUnavailable and QueryCanceled propagate."""
    if recognise_fn is None:
        return InstructionRecognition.of(parsed), ""
    try:
        return InstructionRecognition.of(parsed, recognise_fn), ""
    except ModeUnsupported:  # a backend without a gate (an older segmentation node): open vocabulary
        return InstructionRecognition.of(parsed), ""
    except BackendUnavailable:
        raise
    except (BackendError, InputError, TimeoutError, ValueError) as exc:
        return InstructionRecognition.of(parsed), f"the open-set check failed ({exc}): phrases not checked"


def _follow_plan(objects: tuple[Object3D, ...], snapshot: MapSnapshot, plan: MemoryPlan, relation,
                 world_T_viewer: np.ndarray) -> tuple[Object3D, ...]:
    """Voted objects checked against the memory's plan: the relation to its anchor must hold, and
    objects on the memory's candidates rank first (stable otherwise)."""
    if relation is not None and plan.anchor is not None:
        objects = tuple(o for o in objects
                        if np.isfinite(relation_score(o.box, [plan.anchor.box], relation, world_T_viewer)))
    if not plan.candidates or not objects:
        return objects
    return _on_points_first(objects, snapshot, plan.region_points_world_m)


def _voxels(points_world_m: np.ndarray) -> np.ndarray:
    # 5 cm voxels: a voted object on a memory candidate shares some of them.
    return np.unique(voxel_keys(points_world_m, 0.05))


def _is_on(obj: Object3D, snapshot: MapSnapshot, keys: np.ndarray) -> bool:
    return bool(np.isin(voxel_keys(snapshot.points_world_m[obj.point_indices], 0.05), keys).any())


def _on_points_first(objects: tuple[Object3D, ...], snapshot: MapSnapshot,
                     points_world_m: np.ndarray) -> tuple[Object3D, ...]:
    """`objects` with those on `points_world_m` first (stable otherwise)."""
    keys = _voxels(points_world_m)
    return tuple(sorted(objects, key=lambda o: not _is_on(o, snapshot, keys)))


def _rank_choice(objects: tuple[Object3D, ...], snapshot: MapSnapshot, plan: MemoryPlan, index: int,
                 resolver: MemoryResolver | None, min_confidence: float) -> tuple[Object3D, ...]:
    """The voted objects with the one on candidate `index` first; when no voted object lies on it, the
    memory's own object for that candidate goes first (the memory knows where the chosen instance is)."""
    candidate = plan.candidates[index]
    ranked = _on_points_first(objects, snapshot, candidate.points_world_m)
    if (ranked and _is_on(ranked[0], snapshot, _voxels(candidate.points_world_m))) or resolver is None:
        return ranked
    own = tuple(o for o in resolver.candidate_objects([candidate], snapshot) if o.confidence >= min_confidence)
    return own + ranked


class QueryPipeline:
    """Runs queries against a map source with a segmentation function and a voter."""

    def __init__(self, map_source: MapSource, segment_fn: SegmentFn, config: QueryConfig | None = None,
                 voting: VotingConfig | None = None, view_selection: ViewSelectionConfig | None = None,
                 resolver: MemoryResolver | None = None, parse_fn: ParseFn | None = None,
                 recognise_fn: RecogniseFn | None = None) -> None:
        self.map_source = map_source
        # The open-set gate: a backend's `recognise` (what it can recognise), None for no gate (every phrase
        # passed on, as to an open vocabulary).
        self.recognise_fn = recognise_fn
        # The instruction parser: a backend's `parse` (a model's structured answer) or the grammar.
        self.parse_fn = parse_fn or parse_instruction
        self.resolver = resolver
        self.segment_fn = segment_fn
        self.config = config or QueryConfig()
        self.voter = MultiViewVoter(voting or VotingConfig())
        self.view_selection = view_selection or ViewSelectionConfig()
        self.marks = MarkConfig(depth_tolerance_m=self.view_selection.depth_tolerance_m,
                                depth_tolerance_frac=self.view_selection.depth_tolerance_frac)

    def run(self, instruction: str | bytes, max_views: int = 0, min_confidence: float = 0.0,
            progress: ProgressFn | None = None, is_canceled: Callable[[], bool] | None = None, *,
            segment_fn: SegmentFn | None = None, parse_fn: ParseFn | None = None,
            recognise_fn: RecogniseFn | None = None) -> QueryResult:
        """Answer one instruction. Never raises for bad input or backend failures: the status says what happened.

        `segment_fn`, `parse_fn` and `recognise_fn` replace the pipeline's backend calls for this query only
        (the ROS node binds the goal's own cancel event and deadline to them); a TimeoutError segment_fn
        raises answers TIMEOUT; a parse_fn that fails leaves the instruction to the grammar, with a note.
        A target the backend does not recognise (the open-set gate) is NOT_FOUND with the reason and the
        nearest concepts it knows, unless the object memory names an unlabelled object the instruction
        pins down (flagged unconfirmed); it never goes to the 2D model as its nearest class.
        """
        t0 = time.monotonic()
        segment_fn = segment_fn or self.segment_fn
        progress = progress or (lambda stage, frac: None)
        is_canceled = is_canceled or (lambda: False)
        timings: dict[str, float] = {}

        def done(status: QueryStatus, message: str, **kw) -> QueryResult:
            return QueryResult(status=status, message=message, elapsed_s=time.monotonic() - t0,
                               timings_ms=timings, **kw)

        try:
            text = normalise_instruction(instruction)
        except InputError as exc:
            return done(QueryStatus.INVALID_INSTRUCTION, str(exc))
        if max_views < 0 or max_views > self.config.max_views_limit:
            return done(QueryStatus.INVALID_GOAL,
                        f"max_views must be in [0, {self.config.max_views_limit}] (0 = default), got {max_views}")
        if not (0.0 <= min_confidence <= 1.0) or not np.isfinite(min_confidence):
            return done(QueryStatus.INVALID_GOAL, f"min_confidence must be in [0, 1], got {min_confidence}")
        max_views = max_views or self.config.default_max_views
        min_confidence = min_confidence or self.config.default_min_confidence
        deadline = t0 + self.config.timeout_s

        progress("selecting views", 0.0)
        t = time.monotonic()
        snapshot = self.map_source.snapshot()
        if snapshot.num_points == 0:
            return done(QueryStatus.MAP_EMPTY, "map is empty: no RGB-D frames have been fused yet "
                        "(check the colour, depth, camera_info and pose topics)")
        keyframes = {kf.keyframe_id: kf for kf in self.map_source.keyframes()}
        if not keyframes:
            return done(QueryStatus.NO_VIEWS, "no keyframes stored yet: move the camera to build the map")
        try:
            parsed = _parse(parse_fn or self.parse_fn, text)
        except QueryCanceled:
            return done(QueryStatus.CANCELED, "canceled while the backend was parsing the instruction")
        t_gate = time.monotonic()
        try:
            recognition, gate_note = _recognise(recognise_fn or self.recognise_fn, parsed)
        except QueryCanceled:
            return done(QueryStatus.CANCELED, "canceled while the backend checked the instruction's phrases")
        except BackendUnavailable as exc:
            return done(QueryStatus.BACKEND_UNAVAILABLE, str(exc))
        timings["recognise_ms"] = (time.monotonic() - t_gate) * 1e3
        target = recognition.target
        plan = None
        notes: tuple[str, ...] = parsed.notes + ((gate_note,) if gate_note else ())
        if self.resolver is not None:
            t_mem = time.monotonic()
            try:
                plan = self.resolver.plan(parsed, snapshot, tuple(keyframes.values()), recognition)
            except BackendUnavailable as exc:  # the same backend serves the query-time path: stop now
                return done(QueryStatus.BACKEND_UNAVAILABLE, str(exc))
            except (BackendError, InputError) as exc:  # the text model failed: the query-time path still works
                notes += (f"object memory not used: {exc}",)
            timings["memory_ms"] = (time.monotonic() - t_mem) * 1e3
            if plan is None:
                notes += ("the object memory is empty: views chosen to cover the map",)
            else:
                notes = plan.notes + ((gate_note,) if gate_note else ())
                if plan.refusal:
                    return done(QueryStatus.NOT_FOUND, _with_notes(plan.refusal, notes), target_phrase=parsed.target)
                if plan.unresolved_anchor and not target.open_vocabulary:
                    # A closed-vocabulary model segments the target alone: it cannot check the relation, and
                    # answering without it would hand over an object the instruction did not ask for.
                    return done(QueryStatus.NOT_FOUND, _with_notes(
                        f"'{parsed.text}' not answered: {plan.unresolved_anchor}",
                        [n for n in notes if n != plan.unresolved_anchor]), target_phrase=parsed.target)
                if plan.answer and self.config.answer_from_memory:
                    objects = tuple(o for o in plan.answer if o.confidence >= min_confidence)
                    if objects:
                        progress("done", 1.0)
                        unconfirmed = sum(o.unconfirmed for o in objects)
                        flag = (f" (label unconfirmed for {unconfirmed}: unlabelled object(s) named by their geometry)"
                                if unconfirmed else "")
                        return done(QueryStatus.SUCCESS, _with_notes(
                            f"found {len(objects)} object(s) for '{plan.target_phrase}' in the object memory{flag}",
                            notes), target_phrase=plan.target_phrase, objects=objects, snapshot=snapshot)
        # What the 2D model cannot look for ends here: a target outside a closed vocabulary, or one that names
        # no kind of object, is never sent to the model as its nearest class.
        if target.status is RecognitionStatus.UNKNOWN:
            return done(QueryStatus.NOT_FOUND, _with_notes(target.message(), notes), target_phrase=parsed.target)
        if target.status is RecognitionStatus.GENERIC and not target.open_vocabulary:
            return done(QueryStatus.NOT_FOUND, _with_notes(
                f"'{parsed.target}' names no kind of object and nothing in the object memory fits what the "
                "instruction says of it", notes), target_phrase=parsed.target)
        chosen = self._first_views(keyframes, snapshot, plan, max_views)
        timings["select_views_ms"] = (time.monotonic() - t) * 1e3
        if not chosen:
            return done(QueryStatus.NO_VIEWS, "no keyframe sees the mapped surface")

        results: list[SegmentationResult] = []
        marks_by_view: dict[int, tuple[GeometryMark, ...]] = {}
        use_marks = self.config.marked_prompts and plan is not None and bool(plan.candidates)
        anchors = ((object_name(plan.anchor), plan.anchor.box),) if use_marks and plan.anchor is not None else ()

        def view_of(kf_id: int) -> BackendView:
            """The keyframe as the backend sees it, with the memory's candidates marked when marks are used."""
            if not use_marks:
                return keyframe_view(keyframes[kf_id])
            if kf_id not in marks_by_view:
                t_marks = time.monotonic()
                marks_by_view[kf_id] = candidate_marks(plan.candidates, keyframes[kf_id], anchors, self.marks)
                timings["marks_ms"] = timings.get("marks_ms", 0.0) + (time.monotonic() - t_marks) * 1e3
            return keyframe_view(keyframes[kf_id], marks_by_view[kf_id])

        def segment(kf_ids: Sequence[int], span: tuple[float, float]) -> QueryResult | None:
            """Run the backend on each keyframe, appending to `results`; a QueryResult if the query must stop
            (checked before every view and once more after the last, i.e. before the vote that follows)."""
            t_seg, total = time.monotonic(), len(results) + len(kf_ids)
            try:
                for i, kf_id in enumerate(kf_ids):
                    used = len(results)
                    if is_canceled():
                        return done(QueryStatus.CANCELED, f"canceled after {used} views", views_used=used)
                    if time.monotonic() > deadline:
                        return done(QueryStatus.TIMEOUT, f"timed out after {self.config.timeout_s:.0f} s "
                                    f"({used} views segmented)", views_used=used)
                    progress(f"segmenting view {used + 1}/{total}", span[0] + (span[1] - span[0]) * i / len(kf_ids))
                    results.append(segment_fn([view_of(kf_id)], text))
            except QueryCanceled:
                return done(QueryStatus.CANCELED, "canceled while the backend was segmenting", views_used=len(results))
            except TimeoutError as exc:
                return done(QueryStatus.TIMEOUT, f"backend timed out: {exc}", views_used=len(results))
            except BackendUnavailable as exc:
                return done(QueryStatus.BACKEND_UNAVAILABLE, str(exc), views_used=len(results))
            except InputError as exc:
                return done(QueryStatus.INVALID_INSTRUCTION, str(exc), views_used=len(results))
            except BackendError as exc:
                return done(QueryStatus.BACKEND_ERROR, f"backend failed: {exc}", views_used=len(results))
            finally:
                timings["segment_ms"] = timings.get("segment_ms", 0.0) + (time.monotonic() - t_seg) * 1e3
            if is_canceled():  # a cancel during the last view must not be answered with a vote
                return done(QueryStatus.CANCELED, f"canceled before voting ({len(results)} views segmented)",
                            views_used=len(results))
            return None

        def vote_all(fraction: float):
            progress("voting", fraction)
            return self.voter.vote(snapshot, [keyframes[i] for i in chosen], [v for r in results for v in r.views],
                                   _merge_embeddings(results))

        first_end = 0.45 if self.config.refine_views else 0.85
        stopped = segment(chosen, (0.1, first_end))
        if stopped is not None:
            return stopped
        vote = vote_all(first_end)
        if self.config.refine_views and vote.candidate_indices.shape[0]:
            # Second pass: views aimed at what the first pass found (see QueryConfig.refine_views).
            rest = tuple(kf for kf_id, kf in keyframes.items() if kf_id not in chosen)
            candidates = _evenly(snapshot.points_world_m[vote.candidate_indices], self.config.region_max_points)
            extra = select_views(rest, candidates,
                                 dataclasses.replace(self.view_selection, max_views=self.config.refine_views))
            if extra:
                stopped = segment(extra, (first_end, 0.85))
                if stopped is not None:
                    return stopped
                chosen = chosen + tuple(extra)
                timings["first_vote_ms"] = vote.timings.total_ms
                vote = vote_all(0.85)
        timings["vote_ms"] = vote.timings.total_ms

        phrase = next((r.target_phrase for r in results if r.target_phrase), text)
        objects = tuple(o for o in vote.objects if o.confidence >= min_confidence)
        if plan is not None:
            viewer = tuple(keyframes.values())[-1].world_T_camera
            objects = _follow_plan(objects, snapshot, plan, parsed.relation, viewer)
            choice = (judge_choice([v for r in results for v in r.views], marks_by_view, plan.candidates,
                                   parsed.relation, plan.anchor, viewer, self.marks) if use_marks else None)
            if choice is not None:
                notes = tuple(notes) + (choice.message,)
                if choice.preferred_index is not None:
                    objects = _rank_choice(objects, snapshot, plan, choice.preferred_index, self.resolver,
                                           min_confidence)
        progress("done", 1.0)
        if not objects:
            d = vote.diagnostics
            return done(QueryStatus.NOT_FOUND, _with_notes(
                        f"no object matching '{phrase}' is consistent across views: {d.masks_in} masks in "
                        f"{len(chosen)} views, {d.masks_used} used, {d.hypotheses} 3D hypotheses, "
                        f"{d.hypotheses_rejected_unsupported} rejected as unsupported by the views that see them",
                        notes), target_phrase=phrase, views_used=len(chosen))
        return done(QueryStatus.SUCCESS, _with_notes(f"found {len(objects)} object(s) for '{phrase}'", notes),
                    target_phrase=phrase, objects=objects, views_used=len(chosen), snapshot=snapshot)

    def _first_views(self, keyframes: dict[int, Keyframe], snapshot: MapSnapshot, plan: MemoryPlan | None,
                     max_views: int) -> tuple[int, ...]:
        """The memory candidates' best keyframes, then views covering them; without candidates, the map."""
        if plan is None or not plan.candidates:
            region = _evenly(snapshot.points_world_m, self.config.region_max_points)
            return tuple(select_views(tuple(keyframes.values()), region,
                                      dataclasses.replace(self.view_selection, max_views=max_views)))
        preferred = tuple(k for k in plan.keyframe_ids if k in keyframes)[:max_views]
        rest = tuple(kf for kf_id, kf in keyframes.items() if kf_id not in preferred)
        more = ()
        if len(preferred) < max_views and rest:
            region = _evenly(plan.region_points_world_m, self.config.region_max_points)
            more = tuple(select_views(rest, region, dataclasses.replace(self.view_selection,
                                                                        max_views=max_views - len(preferred))))
        return preferred + more
