"""Queries planned from the object memory, and the pipeline answering from it (or falling back)."""

from __future__ import annotations

import numpy as np

from mllm3d_ros.core.instruction import parse_instruction
from mllm3d_ros.core.memory_query import MemoryQueryConfig, MemoryResolver, colour_name
from mllm3d_ros.core.object_memory import ObjectMemory
from mllm3d_ros.core.pipeline import QueryPipeline
from mllm3d_ros.core.types import QueryStatus, SegmentationResult, ViewPredictions
from test_object_memory import EYES, proposal, view
from test_voting import BOX_A, BOX_B, ORTHO, Q, make_scene

TABLE = np.eye(8, dtype=np.float32)[3]
PHRASES = {"cube": Q, "crate": ORTHO, "table": TABLE, "plastic cube": Q, "red cube or crate": (Q + ORTHO) / np.sqrt(2)}


def encode(texts):
    return np.stack([PHRASES.get(t, np.eye(8, dtype=np.float32)[7]) for t in texts])


def coloured_scene(colors=((200, 200, 200), (200, 30, 30))):
    """make_scene with the fused colours a map would hold: box A and box B in `colors`, the floor grey."""
    scene = make_scene()
    rgb = np.full(scene.points_world_m.shape, 120, np.uint8)
    for (lo, hi), colour in zip((BOX_A, BOX_B), colors):
        inside = np.all((scene.points_world_m >= np.asarray(lo) - 1e-3) & (scene.points_world_m <= np.asarray(hi) + 1e-3),
                        axis=1)
        rgb[inside] = colour
    return type(scene)(scene.points_world_m, rgb, None, 0)


class Source:
    def __init__(self, keyframes):
        self._snapshot = coloured_scene()
        self._keyframes = tuple(keyframes)

    def snapshot(self):
        return self._snapshot

    def keyframes(self):
        return self._keyframes


def built_memory(colors=((200, 200, 200), (200, 30, 30))):
    memory = ObjectMemory()
    keyframes = []
    for k, eye in enumerate(EYES[:4]):
        kf, box_id = view(k, eye)
        color = kf.color_rgb.copy()
        color[box_id == 0], color[box_id == 1] = colors
        kf = type(kf)(kf.keyframe_id, kf.stamp_ns, kf.world_T_camera, kf.intrinsics, color, kf.depth_m)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
        keyframes.append(kf)
    return memory, keyframes


def test_plan_picks_the_instance_of_the_target_and_maps_it_onto_the_map():
    memory, keyframes = built_memory()
    source = Source(keyframes)
    plan = MemoryResolver(memory, encode).plan(parse_instruction("the crate"), source.snapshot(), keyframes)
    assert [c.label for c in plan.candidates] == ["crate"]
    (obj,) = plan.answer
    pts = source.snapshot().points_world_m[obj.point_indices]
    lo, hi = BOX_B
    assert np.all((pts >= lo - 0.04) & (pts <= hi + 0.04))  # the map's points of cube B, nothing else
    assert obj.point_indices.size > 100 and obj.supporting_views == 4
    # A memory answer carries the same gravity-aligned box as a voted object: yaw only, z up, around its points.
    np.testing.assert_allclose(obj.box.world_R_box[:, 2], [0, 0, 1])
    np.testing.assert_allclose(obj.box.center_world_m[2], (pts[:, 2].min() + pts[:, 2].max()) / 2, atol=1e-6)
    assert set(plan.keyframe_ids) == {0, 1, 2, 3}


def test_colour_attribute_is_checked_on_the_instances():
    assert colour_name((200, 30, 30)) == "red" and colour_name((230, 230, 230)) == "white"
    memory, keyframes = built_memory()
    snapshot = Source(keyframes).snapshot()
    plan = MemoryResolver(memory, encode).plan(parse_instruction("the red cube or crate"), snapshot, keyframes)
    assert [c.label for c in plan.candidates] == ["crate"] and plan.answer is not None


def test_unknown_target_and_missing_anchor_say_so():
    memory, keyframes = built_memory()
    snapshot = Source(keyframes).snapshot()
    resolver = MemoryResolver(memory, encode)
    plan = resolver.plan(parse_instruction("the unicorn"), snapshot, keyframes)
    assert plan.candidates == () and plan.answer is None and "no object in the memory" in plan.notes[0]
    plan = resolver.plan(parse_instruction("the cube on the table"), snapshot, keyframes)
    assert [c.label for c in plan.candidates] == ["cube"] and plan.answer is None  # left to the 2D model
    assert "not in the map" in " ".join(plan.notes)


def test_relation_between_instances_decides_in_3d():
    memory, keyframes = built_memory()
    snapshot = Source(keyframes).snapshot()
    resolver = MemoryResolver(memory, encode, MemoryQueryConfig(min_similarity=0.5))
    plan = resolver.plan(parse_instruction("the cube next to the crate"), snapshot, keyframes)
    assert [c.label for c in plan.candidates] == ["cube"] and plan.anchor.label == "crate"
    assert plan.answer is not None
    # The result names the relation and the anchor it used: its id and box.
    centre = ", ".join(f"{v:.2f}" for v in plan.anchor.box.center_world_m)
    assert any(n.startswith(f"relation 'near' decided in 3D against anchor #{plan.anchor.instance_id} 'crate' "
                            f"(box centre {centre} m") for n in plan.notes)


def test_pipeline_answers_plain_queries_from_memory_without_the_2d_model():
    memory, keyframes = built_memory()

    def never(views, text):
        raise AssertionError("the 2D model must not be called")

    result = QueryPipeline(Source(keyframes), never, resolver=MemoryResolver(memory, encode)).run("the cube")
    assert result.status is QueryStatus.SUCCESS and result.views_used == 0
    assert "object memory" in result.message and result.objects[0].label == "cube"


def test_pipeline_falls_back_to_the_query_time_path_when_the_memory_is_empty():
    _, keyframes = built_memory()
    calls = []

    def segment(views, text):
        calls.append(views[0].keyframe_id)
        return SegmentationResult("cube", Q, (ViewPredictions(views[0].keyframe_id, ()),))

    result = QueryPipeline(Source(keyframes), segment, resolver=MemoryResolver(ObjectMemory(), encode)).run("the cube")
    assert calls and result.status is QueryStatus.NOT_FOUND
    assert "object memory is empty" in result.message


def test_pipeline_aims_the_2d_model_at_the_candidates_best_views():
    memory, keyframes = built_memory()
    calls = []

    def segment(views, text):
        calls.append(views[0].keyframe_id)
        return SegmentationResult("cube", Q, (ViewPredictions(views[0].keyframe_id, ()),))

    # "plastic" cannot be checked by the memory: the 2D model decides, on the cube's best keyframes.
    QueryPipeline(Source(keyframes), segment, resolver=MemoryResolver(memory, encode)).run("the plastic cube", 2)
    best = next(o for o in memory.objects() if o.label == "cube").best_keyframe_ids
    assert calls[:2] == list(best[:2])


def test_a_repeated_query_is_answered_from_the_cache_until_the_memory_changes():
    memory, keyframes = built_memory()
    snapshot = Source(keyframes).snapshot()
    calls = []

    def counting(texts):
        calls.append(tuple(texts))
        return encode(texts)

    resolver = MemoryResolver(memory, counting)
    first = resolver.plan(parse_instruction("the crate"), snapshot, keyframes)
    again = resolver.plan(parse_instruction("the crate"), snapshot, keyframes)
    assert again is first and calls == [("crate",)]
    kf, box_id = view(9, EYES[4])
    memory.integrate(kf, [proposal(box_id == 1, "crate", ORTHO)])
    changed = resolver.plan(parse_instruction("the crate"), snapshot, keyframes)
    assert changed is not first and changed.candidates[0].detections == 5
    assert calls == [("crate",)]  # the phrase's embedding is kept; only the plan was redone


def test_a_backend_gone_while_the_memory_embeds_the_phrase_stops_the_query():
    from mllm3d_ros.core.segmentation import BackendError, BackendUnavailable
    memory, keyframes = built_memory()

    def gone(texts):
        raise BackendUnavailable("segmentation service is not available")

    def never(views, text):
        raise AssertionError("the 2D model must not be called")

    result = QueryPipeline(Source(keyframes), never, resolver=MemoryResolver(memory, gone)).run("the cube")
    assert result.status is QueryStatus.BACKEND_UNAVAILABLE and "not available" in result.message

    def no_text_model(texts):  # a backend without encode_text: the query-time path answers instead
        raise BackendError("backend 'x' cannot embed text")

    calls = []

    def segment(views, text):
        calls.append(views[0].keyframe_id)
        return SegmentationResult("cube", Q, (ViewPredictions(views[0].keyframe_id, ()),))

    result = QueryPipeline(Source(keyframes), segment, resolver=MemoryResolver(memory, no_text_model)).run("the cube")
    assert calls and "object memory not used" in result.message


class _Objects:
    """An object memory stand-in: fixed MemoryObjects on boxes (what the resolver reads)."""

    def __init__(self, objects):
        from mllm3d_ros.core.object_memory import ObjectMemoryConfig

        self._objects, self.config, self.version = tuple(objects), ObjectMemoryConfig(), 0

    def objects(self):
        return self._objects


def _object(instance_id, label, center, size):
    from mllm3d_ros.core.object_memory import MemoryObject
    from mllm3d_ros.core.types import OrientedBox3D

    center, size = np.asarray(center, float), np.asarray(size, float)
    points = (center + (np.random.default_rng(instance_id).random((200, 3)) - 0.5) * size).astype(np.float32)
    return MemoryObject(instance_id, label, ((label, 1.0),), encode([label])[0], points,
                        OrientedBox3D(center, np.eye(3), size), (200.0, 200.0, 200.0), 10, 10, 0.9, (), 0)


def _plan(objects, text):
    from mllm3d_ros.core.types import MapSnapshot

    cloud = np.concatenate([o.points_world_m for o in objects])
    snapshot = MapSnapshot(cloud, np.zeros(cloud.shape, np.uint8), None, 0)
    return MemoryResolver(_Objects(objects), encode).plan(parse_instruction(text), snapshot, ())


def test_between_tries_every_pair_of_matching_anchors():
    # Two crates: the cube between the table and the *far* crate is the answer, whichever crate embeds best.
    objects = [_object(1, "table", (0, 0, 0.4), (0.6, 0.6, 0.8)), _object(2, "crate", (-1.5, 0, 0.2), (0.4, 0.4, 0.4)),
               _object(3, "crate", (3.0, 0, 0.2), (0.4, 0.4, 0.4)), _object(4, "cube", (1.5, 0.1, 0.1), (0.2,) * 3),
               _object(5, "cube", (0.0, 2.0, 0.1), (0.2, 0.2, 0.2))]
    plan = _plan(objects, "the cube between the table and the crate")
    assert plan.candidates[0].instance_id == 4 and plan.answer is not None


def test_not_the_one_next_to_excludes_the_nearest_candidate_only():
    objects = [_object(1, "table", (0, 0, 0.4), (0.6, 0.6, 0.8)), _object(2, "cube", (0.5, 0, 0.1), (0.2, 0.2, 0.2)),
               _object(3, "cube", (2.0, 0, 0.1), (0.2, 0.2, 0.2))]
    plan = _plan(objects, "the cube, not the one next to the table")
    assert [c.instance_id for c in plan.candidates] == [3]


def test_a_candidate_on_the_voxels_of_a_better_supported_instance_of_another_kind_is_dropped():
    # A "cube" proposal hallucinated on the crate started an instance on the crate's voxels: one object,
    # one class; the crate (detected 10 times to the ghost's 2) keeps them.
    from mllm3d_ros.core.object_memory import MemoryObject

    crate = _object(2, "crate", (1.0, 0, 0.2), (0.4, 0.4, 0.4))
    ghost = MemoryObject(3, "cube", (("cube", 1.0),), encode(["cube"])[0], crate.points_world_m[:120], crate.box,
                         (200.0, 200.0, 200.0), 2, 8, 0.4, (), 0)
    objects = [crate, ghost, _object(4, "cube", (-1.0, 0, 0.1), (0.2, 0.2, 0.2))]
    plan = _plan(objects, "the rightmost cube")
    assert [c.instance_id for c in plan.candidates] == [4] and "on the voxels of #2" in " ".join(plan.notes)
    # A cube inside a bloated crate instance (its mask spilled over the cube) shares the voxels but is
    # not the same object: kept.
    small = MemoryObject(5, "cube", (("cube", 1.0),), encode(["cube"])[0], crate.points_world_m[:30], crate.box,
                         (200.0, 200.0, 200.0), 3, 8, 0.6, (), 0)
    plan = _plan([crate, small], "the cube")
    assert [c.instance_id for c in plan.candidates] == [5]
    # The detector torn between two labels for one object (the crate 10 times, "cube" 6): both answers
    # are fair, the queried one stays.
    torn = MemoryObject(6, "cube", (("cube", 1.0),), encode(["cube"])[0], crate.points_world_m[:120], crate.box,
                        (200.0, 200.0, 200.0), 6, 8, 0.6, (), 0)
    plan = _plan([crate, torn], "the cube")
    assert [c.instance_id for c in plan.candidates] == [6]
