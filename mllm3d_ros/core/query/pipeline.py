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

from ..config import ConfigError, check_int, param, validate_fields
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

    default_max_views: int = param(4, range=(1, 64), doc="Views per query when the goal says 0 (MLLM-For3D's "
                                   "default); at most max_views_limit.")
    max_views_limit: int = param(16, range=(1, 64), doc="Largest max_views a goal may ask for.")
    default_min_confidence: float = param(0.2, range=(0.0, 1.0), doc="Objects below this confidence are dropped "
                                          "(goal 0 = this).")
    timeout_s: float = param(60.0, range=(1.0, 3600.0), unit="s", doc="A query running longer is aborted with TIMEOUT.")
    region_max_points: int = 20000
    refine_views: int = param(4, range=(0, 32), doc="Second pass: up to this many more views, aimed at what the first "
                              "vote found, are segmented and all views voted again (0 = off).")
    answer_from_memory: bool = True
    # True: what the nodes always ran; a backend without marks (`uses_marks` False) ignores them.
    marked_prompts: bool = param(True, doc="When the object memory's candidates need the 2D model, send them as "
                                 "numbered marks with their metric geometry; the backend's pick is checked in 3D.")

    def __post_init__(self) -> None:
        validate_fields(self)
        check_int("default_max_views", self.default_max_views, 1, self.max_views_limit)
        check_int("region_max_points", self.region_max_points, 100, 1_000_000)
        check_int("refine_views", self.refine_views, 0, 32)
        for name in ("answer_from_memory",):
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


@dataclass(eq=False)
class _Query:
    """One query's state, handed from step to step of `QueryPipeline.run` (each step fills its part)."""

    t0: float
    segment_fn: SegmentFn
    progress: ProgressFn
    is_canceled: Callable[[], bool]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    # _check_goal
    text: str = ""
    max_views: int = 0
    min_confidence: float = 0.0
    deadline: float = 0.0
    # _read_map (t_select: when view selection started, for select_views_ms)
    t_select: float = 0.0
    snapshot: MapSnapshot | None = None
    keyframes: dict[int, Keyframe] = dataclasses.field(default_factory=dict)
    # _understand
    parsed: ParsedInstruction | None = None
    notes: tuple[str, ...] = ()
    plan: MemoryPlan | None = None
    # _choose_views, _segment_and_vote
    chosen: tuple[int, ...] = ()
    use_marks: bool = False
    anchors: tuple = ()
    marks_by_view: dict[int, tuple[GeometryMark, ...]] = dataclasses.field(default_factory=dict)
    results: list[SegmentationResult] = dataclasses.field(default_factory=list)
    vote: object = None

    def done(self, status: QueryStatus, message: str, **kw) -> QueryResult:
        return QueryResult(status=status, message=message, elapsed_s=time.monotonic() - self.t0,
                           timings_ms=self.timings, **kw)


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

        The steps, each of which may end the query with its answer: check the goal, read the map, understand
        the instruction (parse, open-set gate, object memory), choose the first views, segment them and vote
        (with a second pass of views aimed at what the first found), then answer.
        """
        q = _Query(t0=time.monotonic(), segment_fn=segment_fn or self.segment_fn,
                   progress=progress or (lambda stage, frac: None), is_canceled=is_canceled or (lambda: False))
        stopped = (self._check_goal(q, instruction, max_views, min_confidence) or self._read_map(q)
                   or self._understand(q, parse_fn or self.parse_fn, recognise_fn or self.recognise_fn)
                   or self._choose_views(q) or self._segment_and_vote(q))
        return stopped or self._answer(q)

    def _check_goal(self, q: _Query, instruction: str | bytes, max_views: int,
                    min_confidence: float) -> QueryResult | None:
        """The instruction's text and the goal's view budget and confidence floor (0 = the configured default)."""
        try:
            q.text = normalise_instruction(instruction)
        except InputError as exc:
            return q.done(QueryStatus.INVALID_INSTRUCTION, str(exc))
        if max_views < 0 or max_views > self.config.max_views_limit:
            return q.done(QueryStatus.INVALID_GOAL,
                          f"max_views must be in [0, {self.config.max_views_limit}] (0 = default), got {max_views}")
        if not (0.0 <= min_confidence <= 1.0) or not np.isfinite(min_confidence):
            return q.done(QueryStatus.INVALID_GOAL, f"min_confidence must be in [0, 1], got {min_confidence}")
        q.max_views = max_views or self.config.default_max_views
        q.min_confidence = min_confidence or self.config.default_min_confidence
        q.deadline = q.t0 + self.config.timeout_s
        return None

    def _read_map(self, q: _Query) -> QueryResult | None:
        """One snapshot of the map and its keyframes for the whole query."""
        q.progress("selecting views", 0.0)
        q.t_select = time.monotonic()
        q.snapshot = self.map_source.snapshot()
        if q.snapshot.num_points == 0:
            return q.done(QueryStatus.MAP_EMPTY, "map is empty: no RGB-D frames have been fused yet "
                          "(check the colour, depth, camera_info and pose topics)")
        q.keyframes = {kf.keyframe_id: kf for kf in self.map_source.keyframes()}
        if not q.keyframes:
            return q.done(QueryStatus.NO_VIEWS, "no keyframes stored yet: move the camera to build the map")
        return None

    def _understand(self, q: _Query, parse_fn: ParseFn, recognise_fn: RecogniseFn | None) -> QueryResult | None:
        """Parse, the open-set gate, the object memory's plan: answers from the memory, refusals, or on."""
        try:
            q.parsed = parsed = _parse(parse_fn, q.text)
        except QueryCanceled:
            return q.done(QueryStatus.CANCELED, "canceled while the backend was parsing the instruction")
        t_gate = time.monotonic()
        try:
            recognition, gate_note = _recognise(recognise_fn, parsed)
        except QueryCanceled:
            return q.done(QueryStatus.CANCELED, "canceled while the backend checked the instruction's phrases")
        except BackendUnavailable as exc:
            return q.done(QueryStatus.BACKEND_UNAVAILABLE, str(exc))
        q.timings["recognise_ms"] = (time.monotonic() - t_gate) * 1e3
        target = recognition.target
        q.notes = parsed.notes + ((gate_note,) if gate_note else ())
        if self.resolver is not None:
            t_mem = time.monotonic()
            try:
                q.plan = self.resolver.plan(parsed, q.snapshot, tuple(q.keyframes.values()), recognition)
            except BackendUnavailable as exc:  # the same backend serves the query-time path: stop now
                return q.done(QueryStatus.BACKEND_UNAVAILABLE, str(exc))
            except (BackendError, InputError) as exc:  # the text model failed: the query-time path still works
                q.notes += (f"object memory not used: {exc}",)
            q.timings["memory_ms"] = (time.monotonic() - t_mem) * 1e3
            plan = q.plan
            if plan is None:
                q.notes += ("the object memory is empty: views chosen to cover the map",)
            else:
                q.notes = notes = plan.notes + ((gate_note,) if gate_note else ())
                if plan.refusal:
                    return q.done(QueryStatus.NOT_FOUND, _with_notes(plan.refusal, notes), target_phrase=parsed.target)
                if plan.unresolved_anchor and not target.open_vocabulary:
                    # A closed-vocabulary model segments the target alone: it cannot check the relation, and
                    # answering without it would hand over an object the instruction did not ask for.
                    return q.done(QueryStatus.NOT_FOUND, _with_notes(
                        f"'{parsed.text}' not answered: {plan.unresolved_anchor}",
                        [n for n in notes if n != plan.unresolved_anchor]), target_phrase=parsed.target)
                if plan.answer and self.config.answer_from_memory:
                    objects = tuple(o for o in plan.answer if o.confidence >= q.min_confidence)
                    if objects:
                        q.progress("done", 1.0)
                        unconfirmed = sum(o.unconfirmed for o in objects)
                        flag = (f" (label unconfirmed for {unconfirmed}: unlabelled object(s) named by their geometry)"
                                if unconfirmed else "")
                        return q.done(QueryStatus.SUCCESS, _with_notes(
                            f"found {len(objects)} object(s) for '{plan.target_phrase}' in the object memory{flag}",
                            notes), target_phrase=plan.target_phrase, objects=objects, snapshot=q.snapshot)
        # What the 2D model cannot look for ends here: a target outside a closed vocabulary, or one that names
        # no kind of object, is never sent to the model as its nearest class.
        if target.status is RecognitionStatus.UNKNOWN:
            return q.done(QueryStatus.NOT_FOUND, _with_notes(target.message(), q.notes), target_phrase=parsed.target)
        if target.status is RecognitionStatus.GENERIC and not target.open_vocabulary:
            return q.done(QueryStatus.NOT_FOUND, _with_notes(
                f"'{parsed.target}' names no kind of object and nothing in the object memory fits what the "
                "instruction says of it", q.notes), target_phrase=parsed.target)
        return None

    def _choose_views(self, q: _Query) -> QueryResult | None:
        """The first pass's keyframes, and whether (and around which anchor) the memory's candidates are marked."""
        q.chosen = self._first_views(q.keyframes, q.snapshot, q.plan, q.max_views)
        q.timings["select_views_ms"] = (time.monotonic() - q.t_select) * 1e3
        if not q.chosen:
            return q.done(QueryStatus.NO_VIEWS, "no keyframe sees the mapped surface")
        plan = q.plan
        q.use_marks = self.config.marked_prompts and plan is not None and bool(plan.candidates)
        q.anchors = ((object_name(plan.anchor), plan.anchor.box),) if q.use_marks and plan.anchor is not None else ()
        return None

    def _view_of(self, q: _Query, kf_id: int) -> BackendView:
        """The keyframe as the backend sees it, with the memory's candidates marked when marks are used."""
        if not q.use_marks:
            return keyframe_view(q.keyframes[kf_id])
        if kf_id not in q.marks_by_view:
            t_marks = time.monotonic()
            q.marks_by_view[kf_id] = candidate_marks(q.plan.candidates, q.keyframes[kf_id], q.anchors, self.marks)
            q.timings["marks_ms"] = q.timings.get("marks_ms", 0.0) + (time.monotonic() - t_marks) * 1e3
        return keyframe_view(q.keyframes[kf_id], q.marks_by_view[kf_id])

    def _segment(self, q: _Query, kf_ids: Sequence[int], span: tuple[float, float]) -> QueryResult | None:
        """Run the backend on each keyframe, appending to `q.results`; a QueryResult if the query must stop
        (checked before every view and once more after the last, i.e. before the vote that follows)."""
        results = q.results
        t_seg, total = time.monotonic(), len(results) + len(kf_ids)
        try:
            for i, kf_id in enumerate(kf_ids):
                used = len(results)
                if q.is_canceled():
                    return q.done(QueryStatus.CANCELED, f"canceled after {used} views", views_used=used)
                if time.monotonic() > q.deadline:
                    return q.done(QueryStatus.TIMEOUT, f"timed out after {self.config.timeout_s:.0f} s "
                                  f"({used} views segmented)", views_used=used)
                q.progress(f"segmenting view {used + 1}/{total}", span[0] + (span[1] - span[0]) * i / len(kf_ids))
                results.append(q.segment_fn([self._view_of(q, kf_id)], q.text))
        except QueryCanceled:
            return q.done(QueryStatus.CANCELED, "canceled while the backend was segmenting", views_used=len(results))
        except TimeoutError as exc:
            return q.done(QueryStatus.TIMEOUT, f"backend timed out: {exc}", views_used=len(results))
        except BackendUnavailable as exc:
            return q.done(QueryStatus.BACKEND_UNAVAILABLE, str(exc), views_used=len(results))
        except InputError as exc:
            return q.done(QueryStatus.INVALID_INSTRUCTION, str(exc), views_used=len(results))
        except BackendError as exc:
            return q.done(QueryStatus.BACKEND_ERROR, f"backend failed: {exc}", views_used=len(results))
        finally:
            q.timings["segment_ms"] = q.timings.get("segment_ms", 0.0) + (time.monotonic() - t_seg) * 1e3
        if q.is_canceled():  # a cancel during the last view must not be answered with a vote
            return q.done(QueryStatus.CANCELED, f"canceled before voting ({len(results)} views segmented)",
                          views_used=len(results))
        return None

    def _vote_all(self, q: _Query, fraction: float):
        q.progress("voting", fraction)
        return self.voter.vote(q.snapshot, [q.keyframes[i] for i in q.chosen], [v for r in q.results for v in r.views],
                               _merge_embeddings(q.results))

    def _segment_and_vote(self, q: _Query) -> QueryResult | None:
        """Segment the first views and vote; then, with `refine_views`, views aimed at what the vote found."""
        first_end = 0.45 if self.config.refine_views else 0.85
        stopped = self._segment(q, q.chosen, (0.1, first_end))
        if stopped is not None:
            return stopped
        vote = self._vote_all(q, first_end)
        if self.config.refine_views and vote.candidate_indices.shape[0]:
            # Second pass: views aimed at what the first pass found (see QueryConfig.refine_views).
            rest = tuple(kf for kf_id, kf in q.keyframes.items() if kf_id not in q.chosen)
            candidates = _evenly(q.snapshot.points_world_m[vote.candidate_indices], self.config.region_max_points)
            extra = select_views(rest, candidates,
                                 dataclasses.replace(self.view_selection, max_views=self.config.refine_views))
            if extra:
                stopped = self._segment(q, extra, (first_end, 0.85))
                if stopped is not None:
                    return stopped
                q.chosen = q.chosen + tuple(extra)
                q.timings["first_vote_ms"] = vote.timings.total_ms
                vote = self._vote_all(q, 0.85)
        q.timings["vote_ms"] = vote.timings.total_ms
        q.vote = vote
        return None

    def _answer(self, q: _Query) -> QueryResult:
        """The vote's objects above the confidence floor, ordered by the memory's plan and the model's mark."""
        vote, plan, results, notes = q.vote, q.plan, q.results, q.notes
        phrase = next((r.target_phrase for r in results if r.target_phrase), q.text)
        objects = tuple(o for o in vote.objects if o.confidence >= q.min_confidence)
        if plan is not None:
            viewer = tuple(q.keyframes.values())[-1].world_T_camera
            objects = _follow_plan(objects, q.snapshot, plan, q.parsed.relation, viewer)
            choice = (judge_choice([v for r in results for v in r.views], q.marks_by_view, plan.candidates,
                                   q.parsed.relation, plan.anchor, viewer, self.marks) if q.use_marks else None)
            if choice is not None:
                notes = tuple(notes) + (choice.message,)
                if choice.preferred_index is not None:
                    objects = _rank_choice(objects, q.snapshot, plan, choice.preferred_index, self.resolver,
                                           q.min_confidence)
        q.progress("done", 1.0)
        if not objects:
            d = vote.diagnostics
            return q.done(QueryStatus.NOT_FOUND, _with_notes(
                          f"no object matching '{phrase}' is consistent across views: {d.masks_in} masks in "
                          f"{len(q.chosen)} views, {d.masks_used} used, {d.hypotheses} 3D hypotheses, "
                          f"{d.hypotheses_rejected_unsupported} rejected as unsupported by the views that see them",
                          notes), target_phrase=phrase, views_used=len(q.chosen))
        return q.done(QueryStatus.SUCCESS, _with_notes(f"found {len(objects)} object(s) for '{phrase}'", notes),
                      target_phrase=phrase, objects=objects, views_used=len(q.chosen), snapshot=q.snapshot)

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
