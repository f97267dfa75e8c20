"""Marked prompts: memory candidates as numbered marks, and the VLM's pick checked against the 3D geometry."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.query.instruction import Relation
from mllm3d_ros.core.query.marks import MarkConfig, candidate_marks, judge_choice
from mllm3d_ros.core.query.memory_query import MemoryResolver
from mllm3d_ros.core.memory.object_memory import ObjectMemory
from mllm3d_ros.core.query.pipeline import QueryConfig, QueryPipeline
from mllm3d_ros.core.query.relations import BoxGeometry, box_gap_m
from mllm3d_ros.core.types import Prediction2D, QueryStatus, SegmentationResult, ViewPredictions
from test_object_memory import EYES, proposal, view
from test_voting import BOX_A, BOX_B, ORTHO, Q, in_box, make_scene

# Two cubes and a crate: cube B (y 0.2..0.6) is 0.4 m from the crate, cube A (y -0.6..-0.2) 1.2 m.
BOX_C = (np.array([0.8, 1.0, 0.0]), np.array([1.2, 1.3, 0.3]))
BOXES = (BOX_A, BOX_B, BOX_C)
PHRASES = {"cube": Q, "plastic cube": Q, "crate": ORTHO}
INSTRUCTION = "the plastic cube nearest to the crate"  # "plastic": the memory cannot check it, the VLM must


def encode(texts):
    return np.stack([PHRASES.get(t, np.eye(8, dtype=np.float32)[7]) for t in texts])


class Source:
    def __init__(self, keyframes):
        self._snapshot, self._keyframes = make_scene(BOXES), tuple(keyframes)

    def snapshot(self):
        return self._snapshot

    def keyframes(self):
        return self._keyframes


@pytest.fixture(scope="module")
def scene():
    """(memory, keyframes, per-keyframe box index images: 0 cube A, 1 cube B, 2 crate, -1 floor)."""
    memory, keyframes, ids = ObjectMemory(), [], {}
    for k, eye in enumerate(EYES):
        kf, box_id = view(k, eye, boxes=BOXES)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "cube", Q),
                              proposal(box_id == 2, "crate", ORTHO)])
        keyframes.append(kf)
        ids[k] = box_id
    return memory, keyframes, ids


def _plan(scene):
    from mllm3d_ros.core.query.instruction import parse_instruction

    memory, keyframes, _ = scene
    return MemoryResolver(memory, encode).plan(parse_instruction(INSTRUCTION), Source(keyframes).snapshot(), keyframes)


def test_candidates_become_numbered_marks_on_their_objects(scene):
    memory, keyframes, ids = scene
    plan = _plan(scene)
    assert [c.label for c in plan.candidates] == ["cube", "cube"] and plan.anchor.label == "crate"
    assert plan.answer is None  # the attribute is left to the 2D model
    # Ranked by the relation: the cube nearer the crate (B) is mark 1.
    assert in_box(plan.candidates[0].box.center_world_m[None], BOX_B, 0.05).all()
    kf = keyframes[0]
    marks = candidate_marks(plan.candidates, kf, (("crate #2", plan.anchor.box),))
    assert [m.mark_id for m in marks] == [1, 2]
    for m, box_index, c in zip(marks, (1, 0), plan.candidates):
        x, y = m.pixel_xy
        assert ids[0][int(y), int(x)] == box_index  # the mark sits on its object
        assert m.label == "cube" and m.size_m == pytest.approx(tuple(c.box.size_m))
        centre = np.asarray(m.center_world_m)
        assert centre == pytest.approx(np.asarray(c.box.center_world_m))
        assert m.distance_m == pytest.approx(float(np.linalg.norm(centre - kf.world_T_camera[:3, 3])))
    (name_b, gap_b), (name_a, gap_a) = marks[0].anchor_distances_m[0], marks[1].anchor_distances_m[0]
    assert name_a == name_b == "crate #2"
    gap = lambda c: box_gap_m(BoxGeometry.of(c.box), BoxGeometry.of(plan.anchor.box))  # noqa: E731
    assert gap_b == pytest.approx(gap(plan.candidates[0])) and gap_a == pytest.approx(gap(plan.candidates[1]))
    assert 0.2 < gap_b < 0.45 and 1.0 < gap_a < 1.25  # the boxes are 0.4 m and 1.2 m apart (memory boxes are fuller)


def test_a_view_that_does_not_see_a_candidate_does_not_mark_it(scene):
    plan = _plan(scene)
    kf, _ = view(9, EYES[0], boxes=(BOX_A,))  # cube B is gone from this view: it sees the floor through it
    marks = candidate_marks(plan.candidates, kf)
    assert [m.mark_id for m in marks] == [2] and marks[0].anchor_distances_m == ()
    assert candidate_marks(plan.candidates, kf, config=MarkConfig(min_visible_points=100000)) == ()


def _picks(*pairs):
    """ViewPredictions whose first prediction names mark `m` in keyframe `k` (None: no mark)."""
    mask = np.zeros((2, 2), bool)
    return [ViewPredictions(k, (Prediction2D(mask, 0.9, Q, mark_id=m),)) for k, m in pairs]


def test_judge_choice_right_wrong_and_missing_marks(scene):
    memory, keyframes, _ = scene
    plan = _plan(scene)
    drawn = {k: candidate_marks(plan.candidates, kf) for k, kf in enumerate(keyframes)}
    viewer = keyframes[-1].world_T_camera

    def judge(*pairs, relation=Relation.NEAREST_TO):
        return judge_choice(_picks(*pairs), drawn, plan.candidates, relation, plan.anchor, viewer)

    right = judge((0, 1), (1, 1), (2, 2))
    assert right.chosen_index == right.preferred_index == 0 and not right.contradicts
    assert "picked mark 1" in right.message and "2 of 3" in right.message and "mark 2 x1" in right.message
    assert "consistent with 'nearest to' the crate #" in right.message
    wrong = judge((0, 2), (1, 2))
    assert wrong.chosen_index == 1 and wrong.preferred_index == 0 and wrong.contradicts
    assert "contradicts the 3D geometry" in wrong.message and "ranked the geometric best, mark 1" in wrong.message
    # "farthest from" makes the same pick right.
    assert not judge((0, 2), relation=Relation.FARTHEST_FROM).contradicts
    # A mark that was never drawn is ignored and named; no pick at all gives no choice.
    ghost = judge((0, 7))
    assert ghost.chosen_index is None and "not drawn (7 in keyframe 0)" in ghost.message
    assert judge((0, None)) is None
    between = judge((0, 2), relation=Relation.BETWEEN)
    assert between.preferred_index == 1 and "not checked" in between.message


def _marking_backend(ids, pick, seen):
    """A fake VLM: records the marks it is shown and masks the object under the mark `pick` chooses."""

    def segment(views, text):
        out = []
        for v in views:
            seen.append(v.marks)
            mark = pick(v.marks)
            if mark is None:
                out.append(ViewPredictions(v.keyframe_id, ()))
                continue
            x, y = mark.pixel_xy
            box_index = ids[v.keyframe_id][int(y), int(x)]
            mask = ids[v.keyframe_id] == box_index
            out.append(ViewPredictions(v.keyframe_id, (Prediction2D(mask, 0.9, Q, "cube", mark_id=mark.mark_id),)))
        return SegmentationResult("cube", Q, tuple(out))

    return segment


def _run(scene, pick, marked=True):
    memory, keyframes, ids = scene
    seen = []
    source = Source(keyframes)
    pipeline = QueryPipeline(source, _marking_backend(ids, pick, seen),
                             QueryConfig(marked_prompts=marked, refine_views=0),
                             resolver=MemoryResolver(memory, encode))
    return pipeline.run(INSTRUCTION), seen, source.snapshot()


def _nearest(marks):
    return min(marks, key=lambda m: m.anchor_distances_m[0][1]) if marks else None


def _farthest(marks):
    return max(marks, key=lambda m: m.anchor_distances_m[0][1]) if marks else None


def test_the_pipeline_marks_candidates_and_keeps_a_pick_that_fits_the_geometry(scene):
    result, seen, snapshot = _run(scene, _nearest)
    assert result.status is QueryStatus.SUCCESS and result.views_used == len(seen) > 0
    assert all(m.label == "cube" and m.anchor_distances_m[0][0].startswith("crate #") for ms in seen for m in ms)
    assert "picked mark 1" in result.message and "consistent with 'nearest to'" in result.message
    pts = snapshot.points_world_m[result.objects[0].point_indices]
    assert in_box(pts, BOX_B, 0.05).mean() > 0.9


def test_a_pick_that_contradicts_the_geometry_is_reported_and_the_geometric_best_ranks_first(scene):
    result, seen, snapshot = _run(scene, _farthest)
    assert result.status is QueryStatus.SUCCESS
    assert "picked mark 2" in result.message and "contradicts the 3D geometry" in result.message
    first = snapshot.points_world_m[result.objects[0].point_indices]
    assert in_box(first, BOX_B, 0.05).mean() > 0.9  # the memory's cube B, though the VLM masked cube A
    assert any(in_box(snapshot.points_world_m[o.point_indices], BOX_A, 0.05).mean() > 0.9 for o in result.objects[1:])


def test_without_marked_prompts_views_carry_no_marks(scene):
    result, seen, _ = _run(scene, _nearest, marked=False)
    assert seen and all(ms == () for ms in seen) and "picked mark" not in result.message


@pytest.mark.parametrize("field, value", [("min_visible_points", 0), ("contradiction_margin_m", -1.0),
                                          ("depth_tolerance_m", 0.0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        MarkConfig(**{field: value})
    with pytest.raises(ConfigError, match="marked_prompts"):
        QueryConfig(marked_prompts=1)
