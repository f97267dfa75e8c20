"""QueryPipeline on the hand-built two-cube scene of test_voting: statuses and the snapshot contract."""

from __future__ import annotations

import dataclasses

import numpy as np

from mllm3d_ros.backends.base import BackendError, BackendUnavailable
from mllm3d_ros.core.query.instruction import parse_instruction
from mllm3d_ros.core.query.pipeline import QueryCanceled, QueryConfig, QueryPipeline
from mllm3d_ros.core.segmentation import ModeUnsupported
from mllm3d_ros.core.types import MapSnapshot, QueryStatus, SegmentationResult, ViewPredictions
from mllm3d_ros.core.query.view_selection import ViewSelectionConfig
from test_voting import BOX_A, EYES, Q, in_box, make_scene, make_views, pred


class GrowingMap:
    """A map source whose map gains points after every snapshot, as a live mapper's would."""

    def __init__(self, snapshot: MapSnapshot, keyframes) -> None:
        self._snapshot, self._keyframes, self.calls = snapshot, tuple(keyframes), 0

    def snapshot(self) -> MapSnapshot:
        current = self._snapshot
        self.calls += 1
        extra = np.full((50, 3), 9.0, np.float32)  # far away: what fusion added meanwhile
        self._snapshot = MapSnapshot(np.concatenate([current.points_world_m, extra]),
                                     np.zeros((current.num_points + 50, 3), np.uint8), None, current.stamp_ns + 1)
        return current

    def keyframes(self):
        return self._keyframes


def _pipeline(segment_fn, snapshot=None, **config):
    keyframes, ids = make_views(EYES)
    source = GrowingMap(snapshot if snapshot is not None else make_scene(), keyframes)
    return QueryPipeline(source, lambda views, text: segment_fn(views, text, ids), QueryConfig(**config),
                         view_selection=ViewSelectionConfig(min_gain_frac=0.0)), source


def _cube_a(views, text, ids):
    return SegmentationResult("cube", Q, tuple(ViewPredictions(v.keyframe_id, (pred(ids[v.keyframe_id] == 0),))
                                                for v in views))


def test_success_carries_the_snapshot_the_indices_refer_to():
    pipeline, source = _pipeline(_cube_a)
    stages = []
    result = pipeline.run("the cube on the left", progress=lambda s, p: stages.append(s))
    assert result.status is QueryStatus.SUCCESS and result.target_phrase == "cube"
    assert source.calls == 1 and result.snapshot is not None
    # The map grew after the query's snapshot: indices must be read against the snapshot returned.
    assert result.snapshot.num_points < source.snapshot().num_points
    obj = result.objects[0]
    assert np.all(in_box(result.snapshot.points_world_m[obj.point_indices], BOX_A, margin=0.05))
    assert stages[0] == "selecting views" and stages[-1] == "done" and "voting" in stages
    assert result.views_used >= 2 and set(result.timings_ms) >= {"select_views_ms", "segment_ms", "vote_ms"}


def test_statuses_for_bad_input_empty_map_cancel_and_backend_failures():
    empty = MapSnapshot(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), None, 0)
    assert _pipeline(_cube_a, snapshot=empty)[0].run("the cube").status is QueryStatus.MAP_EMPTY
    pipeline, _ = _pipeline(_cube_a)
    assert pipeline.run("   ").status is QueryStatus.INVALID_INSTRUCTION
    assert pipeline.run(b"\xff\xfe").status is QueryStatus.INVALID_INSTRUCTION
    assert pipeline.run("the cube", max_views=99).status is QueryStatus.INVALID_GOAL
    assert pipeline.run("the cube", min_confidence=2.0).status is QueryStatus.INVALID_GOAL
    canceled = pipeline.run("the cube", is_canceled=lambda: True)
    assert canceled.status is QueryStatus.CANCELED and canceled.snapshot is None
    # Cancelled while the backend segmented the last first-pass view: no vote, no result.
    calls = []
    pipeline, _ = _pipeline(lambda views, text, ids: (calls.append(1), _cube_a(views, text, ids))[1],
                            default_max_views=2, refine_views=0)
    late = pipeline.run("the cube", is_canceled=lambda: len(calls) >= 2)
    assert late.status is QueryStatus.CANCELED and "before voting" in late.message and late.views_used == 2

    def gone(views, text, ids):
        raise BackendUnavailable("segmentation node is gone")

    def broken(views, text, ids):
        raise BackendError("CUDA out of memory")

    result = _pipeline(gone)[0].run("the cube")
    assert result.status is QueryStatus.BACKEND_UNAVAILABLE and "gone" in result.message
    assert _pipeline(broken)[0].run("the cube").status is QueryStatus.BACKEND_ERROR


def test_masks_on_nothing_give_not_found():
    def nothing(views, text, ids):
        return SegmentationResult("unicorn", Q, tuple(ViewPredictions(v.keyframe_id) for v in views))

    result = _pipeline(nothing)[0].run("the unicorn")
    assert result.status is QueryStatus.NOT_FOUND and "unicorn" in result.message and not result.objects


def test_refinement_segments_more_views_aimed_at_the_candidate():
    # Pool: the four views of the two-cube scene plus two that look away from cube A, at cube B.
    away = [(1.0, -0.1, 1.0), (0.6, -0.1, 1.0)]
    keyframes, ids = make_views(EYES)
    for k, eye in enumerate(away, start=len(EYES)):
        kf, kf_ids = make_views([eye], target=(1.0, 1.2, 0.0))
        keyframes.append(dataclasses.replace(kf[0], keyframe_id=k))
        ids.append(kf_ids[0])
        assert np.count_nonzero(kf_ids[0] == 0) == 0  # precondition: cube A is out of sight
    asked: list[int] = []

    def cube_a(views, text):
        asked.extend(v.keyframe_id for v in views)
        return _cube_a(views, text, ids)

    def run(refine_views):
        asked.clear()
        source = GrowingMap(make_scene(), keyframes)
        pipeline = QueryPipeline(source, cube_a, QueryConfig(default_max_views=2, refine_views=refine_views),
                                 view_selection=ViewSelectionConfig(min_gain_frac=0.0))
        return pipeline.run("the cube on the left")

    plain = run(0)
    assert plain.status is QueryStatus.SUCCESS and plain.views_used == 2 and len(asked) == 2
    first = list(asked)
    refined = run(2)
    assert refined.status is QueryStatus.SUCCESS and refined.views_used == 4
    assert asked[:2] == first and len(set(asked)) == 4
    # the added views see the candidate (cube A); the views that cannot see it are never asked
    assert all(np.count_nonzero(ids[k] == 0) > 50 for k in asked[2:])
    assert not set(asked) & {len(EYES), len(EYES) + 1}
    assert "first_vote_ms" in refined.timings_ms


class _RecordingResolver:
    """Records the parse the pipeline hands to the object memory (an empty memory: plan None)."""

    def __init__(self) -> None:
        self.parsed = []

    def plan(self, parsed, snapshot, keyframes, recognition=None):
        self.parsed.append(parsed)
        return None


def test_the_parse_fn_decides_the_parse_and_a_failing_one_falls_back_to_the_grammar():
    keyframes, ids = make_views(EYES)
    model_parse = parse_instruction("the cube near the box")  # what a model could answer for another wording
    failures = {"unsupported": ModeUnsupported("no parsing mode"), "broken": BackendError("CUDA out of memory"),
                "slow": TimeoutError("no answer in 3 s")}

    def run(pipeline_parse, **kw):
        resolver = _RecordingResolver()
        pipeline = QueryPipeline(GrowingMap(make_scene(), keyframes), lambda views, text: _cube_a(views, text, ids),
                                 QueryConfig(refine_views=0), view_selection=ViewSelectionConfig(min_gain_frac=0.0),
                                 resolver=resolver, parse_fn=pipeline_parse)
        result = pipeline.run("the cube beside the box", **kw)
        assert result.status is QueryStatus.SUCCESS, result.message
        (parsed,) = resolver.parsed
        return result, parsed

    result, parsed = run(lambda text: model_parse)
    assert parsed is model_parse and "used the grammar" not in result.message
    grammar = parse_instruction("the cube beside the box")
    result, parsed = run(None)
    assert parsed == grammar and "used the grammar" not in result.message
    for name, exc in failures.items():
        def failing(text, exc=exc):
            raise exc
        result, parsed = run(failing)
        assert (parsed.target, parsed.relation, parsed.anchors) == (grammar.target, grammar.relation, grammar.anchors)
        if name == "unsupported":  # "cannot" is not a failure: no note on every query
            assert parsed == grammar and "used the grammar" not in result.message
        else:
            assert f"the model's parse failed ({exc}), used the grammar" in result.message
    # The per-query parse_fn wins over the pipeline's; a cancel while parsing answers CANCELED.
    result, parsed = run(lambda text: grammar, parse_fn=lambda text: model_parse)
    assert parsed is model_parse

    def canceled(text):
        raise QueryCanceled()

    pipeline = QueryPipeline(GrowingMap(make_scene(), keyframes), lambda views, text: _cube_a(views, text, ids),
                             parse_fn=canceled)
    assert pipeline.run("the cube").status is QueryStatus.CANCELED
