"""Queries planned from the object memory, and the pipeline answering from it (or falling back)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mllm3d_ros.core.query.instruction import parse_instruction
from mllm3d_ros.core.query.memory_query import MemoryQueryConfig, MemoryResolver, colour_name
from mllm3d_ros.core.memory.object_memory import ObjectMemory
from mllm3d_ros.core.query.pipeline import QueryPipeline
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
        from mllm3d_ros.core.memory.object_memory import ObjectMemoryConfig

        self._objects, self.config, self.version = tuple(objects), ObjectMemoryConfig(), 0

    def objects(self):
        return self._objects


def _object(instance_id, label, center, size):
    from mllm3d_ros.core.memory.object_memory import MemoryObject
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
    from mllm3d_ros.core.memory.object_memory import MemoryObject

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


# --- open set, naming by geometry, colours, lists -------------------------------------------------------
from mllm3d_ros.core.query.open_set import InstructionRecognition, Recognition, RecognitionStatus  # noqa: E402
from mllm3d_ros.core.types import MapSnapshot, OrientedBox3D  # noqa: E402

KNOWN, UNKNOWN, GENERIC = RecognitionStatus.KNOWN, RecognitionStatus.UNKNOWN, RecognitionStatus.GENERIC


def _solid(instance_id, label, lo, hi, colour=(200, 200, 200), labels=None, unlabelled=False, detections=10,
           step=0.03):
    """A memory object filling the box lo..hi with voxel centres (a solid block), and its map points."""
    from mllm3d_ros.core.memory.object_memory import MemoryObject

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    axes = [np.arange(a + step / 2, b, step) for a, b in zip(lo, hi)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    box = OrientedBox3D((lo + hi) / 2, np.eye(3), hi - lo)
    obj = MemoryObject(instance_id, label, tuple(labels or ((label, 1.0),)), encode([label])[0], pts, box,
                       tuple(float(c) for c in colour), detections, detections, 0.8, (), 0, unlabelled=unlabelled)
    return obj, np.tile(np.asarray(colour, np.uint8), (pts.shape[0], 1))


def _scene(*made):
    objects = [m[0] for m in made]
    snapshot = MapSnapshot(np.concatenate([o.points_world_m for o in objects]),
                           np.concatenate([m[1] for m in made]), None, 0)
    return objects, snapshot


def _rec(target, *anchors):
    return InstructionRecognition(target, tuple(anchors))


def _known(phrase, *concepts, shape=""):
    return Recognition(KNOWN, phrase, concepts, model="the test model", shape=shape)


def _unknown(phrase):
    return Recognition(UNKNOWN, phrase, (), ("Table", "Mug"), model="the test model")


def _generic(phrase):
    return Recognition(GENERIC, phrase, model="the test model")


TABLE_TOP = ((0.0, 0.0, 0.70), (1.2, 0.8, 0.76))


def _kitchen():
    """A free-standing table (a top), a counter (a solid block) the detector also called "table", a mug and an
    unlabelled red box on the table, an unlabelled flat magazine on the table, an unlabelled chair-sized thing on
    the floor."""
    return _scene(_solid(1, "Table", *TABLE_TOP, colour=(194, 176, 158), detections=30),
                  _solid(2, "Table", (2.0, 0.0, 0.0), (3.5, 0.6, 0.9), colour=(113, 62, 63), detections=30),
                  _solid(3, "Mug", (0.1, 0.1, 0.76), (0.19, 0.19, 0.88), colour=(225, 225, 225), detections=8),
                  _solid(4, "object", (0.5, 0.2, 0.76), (0.8, 0.44, 0.97), colour=(200, 30, 30), unlabelled=True),
                  _solid(5, "object", (0.85, 0.3, 0.76), (1.15, 0.6, 0.78), colour=(30, 60, 220), unlabelled=True),
                  _solid(6, "object", (-1.0, 0.0, 0.0), (-0.55, 0.45, 0.5), colour=(90, 90, 90), unlabelled=True))


def _ask(text, rec, made=None):
    objects, snapshot = made or _kitchen()
    return MemoryResolver(_Objects(objects), encode).plan(parse_instruction(text), snapshot, (), rec)


def test_an_answer_rests_on_evidence_for_the_asked_class_not_the_nearest():
    # "the cup" is a Mug: the mug answers; a Table with a tenth of its labels "Mug" does not.
    mixed = _solid(7, "Table", (1.5, 2.0, 0.0), (2.0, 2.5, 0.7), labels=(("Table", 0.9), ("Mug", 0.1)))
    plan = _ask("the cup", _rec(_known("cup", "Mug")), _scene(*_kitchen_made(), mixed))
    assert [c.instance_id for c in plan.candidates] == [3] and plan.answer and not plan.answer[0].unconfirmed
    # A known class the memory does not hold is no answer from the memory (the 2D model may look for it).
    plan = _ask("the laptop", _rec(_known("laptop", "Laptop")))
    assert plan.candidates == () and plan.answer is None and not plan.refusal
    assert "no laptop in the object memory" in plan.notes


def _kitchen_made():
    objects, snapshot = _kitchen()
    sizes = [o.points_world_m.shape[0] for o in objects]
    colours = np.split(snapshot.colors_rgb, np.cumsum(sizes)[:-1])
    return list(zip(objects, colours))


def test_an_unknown_target_is_refused_unless_the_instruction_pins_an_unlabelled_object():
    plan = _ask("the umbrella", _rec(_unknown("umbrella")))
    assert plan.refusal.startswith("'umbrella' is not something the test model recognises; nearest known: table, mug")
    assert plan.answer is None and plan.candidates == ()
    # Pinned by a relation to a known anchor and a colour: only unlabelled objects, flagged unconfirmed.
    plan = _ask("the red umbrella on the table", _rec(_unknown("umbrella"), _known("table", "Table")))
    assert [c.instance_id for c in plan.candidates] == [4] and plan.unconfirmed
    (obj,) = plan.answer
    assert obj.unconfirmed and obj.confidence == pytest.approx(0.8 * 0.5) and "label unconfirmed" in obj.detail
    assert "red" in obj.detail


def test_generic_targets_are_named_by_relation_colour_size_and_shape():
    on_table = _rec(_generic("thing"), _known("table", "Table"))
    plan = _ask("the thing on the table", on_table)
    assert {c.instance_id for c in plan.candidates} == {3, 4, 5}  # the mug (labelled) and two unlabelled
    assert {o.unconfirmed for o in plan.answer} == {True, False}
    assert [c.instance_id for c in _ask("the red object on the table", on_table).candidates] == [4]
    assert [c.instance_id for c in _ask("the biggest object on the table", on_table).candidates] == [4]
    assert [c.instance_id for c in _ask("the flat object on the table", on_table).candidates] == [5]
    assert [c.instance_id for c in _ask("the box-shaped one on the table", on_table).candidates] == [4]
    # Nothing that pins it: refused, with what to say instead.
    plan = _ask("the object", _rec(_generic("object")))
    assert "names no kind of object" in plan.refusal and plan.answer is None
    # Pins that fit nothing: refused, never the nearest object.
    assert _ask("the green object on the table", on_table).refusal


def test_a_known_class_may_be_an_unlabelled_object_of_its_shape_flagged():
    box = _known("plastic box", "Box", shape="box-shaped")
    plan = _ask("the plastic box on the table", _rec(box, _known("table", "Table")))
    assert [c.instance_id for c in plan.candidates] == [4] and plan.answer[0].unconfirmed
    assert any("'plastic'" in n and "not checked" in n for n in plan.notes)
    # Without a pin the class's shape alone is not enough (benchmarks.shape_nouns: box-shaped box-sized unlabelled
    # objects are mostly mugs and clutter): the memory has no box.
    assert _ask("the box", _rec(box)).candidates == ()


def test_an_unknown_or_absent_anchor_is_said_never_substituted():
    plan = _ask("the mug near the window", _rec(_known("mug", "Mug"), _unknown("window")))
    assert plan.anchor is None and plan.answer is None  # the relation is left undecided, not applied to a table
    assert any("the anchor 'window' is not something the test model recognises" in n for n in plan.notes)
    assert "relation 'near' not applied" in plan.unresolved_anchor
    # No bottle was detected and no unlabelled object has a bottle's size (tall and narrow): said, not replaced.
    plan = _ask("the mug near the bottle", _rec(_known("mug", "Mug"), _known("bottle", "Bottle")))
    assert plan.anchor is None and any("no bottle in the object memory" in n for n in plan.notes)
    # An unlabelled object of a laptop's size may be the anchor "laptop", and the result says so.
    plan = _ask("the mug near the laptop", _rec(_known("mug", "Mug"), _known("laptop", "Laptop")))
    assert plan.anchor.instance_id == 4 and any("anchor 'laptop' is an unlabelled object" in n for n in plan.notes)
    # A generic target pinned only by an unknown anchor is refused.
    assert _ask("the thing near the window", _rec(_generic("thing"), _unknown("window"))).refusal


def test_the_list_holds_only_free_standing_tables():
    plan = _ask("the table", _rec(_known("table", "Table")))
    assert [c.instance_id for c in plan.candidates] == [1]  # the counter (a solid block) is dropped
    assert any("not free-standing" in n and "#2" in n for n in plan.notes)
    # As an anchor too: "on the table" is decided against the table, not the counter.
    plan = _ask("the mug on the table", _rec(_known("mug", "Mug"), _known("table", "Table")))
    assert plan.anchor.instance_id == 1


def test_the_list_drops_a_top_too_low_for_a_dining_table_and_too_long_for_a_coffee_table():
    # Seats round a table that the detector called "table": their densest layer, 0.45 m up, over 2.2 m. A coffee
    # table at the same height but 1.2 m long stays, as does the dining table (0.76 m).
    seats = _solid(7, "Table", (-3.0, 2.0, 0.42), (-0.8, 3.3, 0.48), detections=30)
    coffee = _solid(8, "Table", (1.5, 2.0, 0.40), (2.7, 2.6, 0.46), detections=30)
    plan = _ask("the table", _rec(_known("table", "Table")), _scene(*_kitchen_made(), seats, coffee))
    assert sorted(c.instance_id for c in plan.candidates) == [1, 8]
    assert any("neither a dining nor a coffee table: #7" in n for n in plan.notes)


def test_a_fragment_inside_a_better_candidate_is_dropped_from_the_list():
    chair = _solid(1, "Chair", (0, 0, 0), (0.5, 0.5, 0.9), detections=20)
    back = _solid(2, "Chair", (0.05, 0.4, 0.6), (0.45, 0.5, 0.9), detections=6)
    other = _solid(3, "Chair", (2, 0, 0), (2.5, 0.5, 0.9), detections=12)
    plan = _ask("the chair", _rec(_known("chair", "Chair")), _scene(chair, back, other))
    assert [c.instance_id for c in plan.candidates] == [1, 3]


def test_colours_of_labelled_objects_come_from_the_fused_map():
    plan = _ask("the white mug", _rec(_known("mug", "Mug")))
    assert [c.instance_id for c in plan.candidates] == [3]
    plan = _ask("the red mug", _rec(_known("mug", "Mug")))  # no red mug: kept, and said
    assert [c.instance_id for c in plan.candidates] == [3] and any("looks red" in n for n in plan.notes)


def test_the_pipeline_says_not_found_for_an_unknown_target_without_asking_the_2d_model():
    memory, keyframes = built_memory()

    def never(views, text):
        raise AssertionError("the 2D model must not be asked about what the backend does not recognise")

    def recognise(phrase):
        return _unknown(phrase) if phrase == "umbrella" else Recognition(RecognitionStatus.OPEN, phrase)

    pipeline = QueryPipeline(Source(keyframes), never, resolver=MemoryResolver(memory, encode), recognise_fn=recognise)
    result = pipeline.run("bring me the umbrella")
    assert result.status is QueryStatus.NOT_FOUND and result.objects == ()
    assert result.message.startswith("'umbrella' is not something the test model recognises; nearest known: ")
    # Without a memory as well.
    result = QueryPipeline(Source(keyframes), never, recognise_fn=recognise).run("the umbrella")
    assert result.status is QueryStatus.NOT_FOUND and "umbrella" in result.message


def test_the_pipeline_does_not_answer_a_relation_it_cannot_check():
    """A closed-vocabulary model segments the target alone: with the anchor unknown the relation cannot be
    checked, so the mug is not handed over as "the mug next to the umbrella"."""
    memory, keyframes = built_memory()

    def never(views, text):
        raise AssertionError("the 2D model cannot check the relation")

    def recognise(phrase):
        return _unknown(phrase) if phrase == "umbrella" else Recognition(KNOWN, phrase, ("cube",), model="m")

    pipeline = QueryPipeline(Source(keyframes), never, resolver=MemoryResolver(memory, encode), recognise_fn=recognise)
    result = pipeline.run("the cube next to the umbrella")
    assert result.status is QueryStatus.NOT_FOUND and result.objects == ()
    assert "not answered: the anchor 'umbrella' is not something the test model recognises" in result.message
    assert pipeline.run("the cube").status is QueryStatus.SUCCESS


# --- evidence by geometry, stand-ins by size, support surfaces as anchors ----------------------------------
from mllm3d_ros.core.memory.supports import SupportSurface, cell_keys  # noqa: E402
from mllm3d_ros.core.types import SupportKind, SupportRef  # noqa: E402


class _WithSupports(_Objects):
    """A memory that knows support surfaces (the map's proposer ran)."""

    def __init__(self, objects, surfaces):
        super().__init__(objects)
        self._surfaces = tuple(surfaces)

    def supports(self):
        return self._surfaces


def _surface(support_id, kind, height, lo_xy, hi_xy, cell=0.05):
    xs, ys = np.arange(lo_xy[0] + cell / 2, hi_xy[0], cell), np.arange(lo_xy[1] + cell / 2, hi_xy[1], cell)
    xy = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    return SupportSurface(support_id, kind, height, cell, np.unique(cell_keys(xy, cell)))


FLOOR = _surface(0, SupportKind.FLOOR, 0.0, (-3.0, -3.0), (4.0, 3.0))
TABLE_SURFACE = _surface(1, SupportKind.ELEVATED, 0.76, (0.0, 0.0), (1.2, 0.8))
COUNTER = _surface(2, SupportKind.ELEVATED, 0.90, (2.0, 0.0), (3.5, 0.6))


def _on(made, surface):
    obj, colours = made
    return dataclasses.replace(obj, support=SupportRef(surface.support_id, surface.kind, surface.height_m)), colours


def _ask_supported(text, rec, made):
    objects, snapshot = _scene(*made)
    memory = _WithSupports(objects, (FLOOR, TABLE_SURFACE, COUNTER))
    return MemoryResolver(memory, encode).plan(parse_instruction(text), snapshot, (), rec)


def _box_scene(box_support=True):
    """The table, a labelled "Box" floating at a chair's back height (on no support), a flat unlabelled
    box-sized object on the table, a mug-sized unlabelled object on the table and a labelled mug on the
    counter (1.5 m away); `box_support`: the labelled box stands on the counter instead (a real box)."""
    ghost = _solid(7, "Box", (-1.0, 1.0, 0.55), (-0.5, 1.19, 0.94), detections=6)
    return [_on(_solid(1, "Table", *TABLE_TOP, detections=30), FLOOR),
            _on(ghost, COUNTER) if box_support else ghost,
            _on(_solid(4, "object", (0.4, 0.2, 0.76), (0.82, 0.53, 0.85), unlabelled=True), TABLE_SURFACE),
            _on(_solid(5, "object", (0.15, 0.2, 0.76), (0.3, 0.35, 0.88), unlabelled=True), TABLE_SURFACE),
            _on(_solid(3, "Mug", (2.2, 0.2, 0.9), (2.29, 0.29, 1.0), detections=8), COUNTER)]


def test_a_label_must_rest_on_geometry_of_its_class_else_a_pinned_unlabelled_object_answers():
    box = _known("box", "Box", shape="box-shaped")
    table = _known("table", "Table")
    # A "Box" standing on nothing (a chair's back) is no box: the bare noun finds nothing in the memory.
    plan = _ask_supported("the box", _rec(box), _box_scene(box_support=False))
    assert plan.candidates == () and any("#7" in n and "stands on no support surface" in n for n in plan.notes)
    # Pinned by "on the table": the box-sized unlabelled object on the table, flagged, at half confidence.
    plan = _ask_supported("the box on the table", _rec(box, table), _box_scene(box_support=False))
    assert [c.instance_id for c in plan.candidates] == [4] and plan.unconfirmed
    assert plan.answer[0].unconfirmed and plan.answer[0].confidence == pytest.approx(0.4)
    # The same box standing on the counter is a box: the label answers, confirmed.
    plan = _ask_supported("the box", _rec(box), _box_scene(box_support=True))
    assert [c.instance_id for c in plan.candidates] == [7] and not plan.unconfirmed
    # A labelled box that does not hold the relation gives way to the pinned stand-in.
    plan = _ask_supported("the box on the table", _rec(box, table), _box_scene(box_support=True))
    assert [c.instance_id for c in plan.candidates] == [4] and plan.unconfirmed


def test_a_mug_sized_unlabelled_object_answers_only_when_pinned():
    mug, box = _known("mug", "Mug"), _known("box", "Box", shape="box-shaped")
    scene = _box_scene(box_support=False)  # the only "Box" is the ghost: the anchor is the box-sized object
    # Bare: the labelled mug. Pinned by "next to the box": the labelled mug is 1.4 m away, not next to it;
    # the mug-sized unlabelled object beside the box answers, flagged.
    assert [c.instance_id for c in _ask_supported("the mug", _rec(mug), scene).candidates] == [3]
    plan = _ask_supported("the mug next to the box", _rec(mug, box), scene)
    assert [c.instance_id for c in plan.candidates][:1] == [5] and plan.answer[0].unconfirmed
    # A labelled mug next to the anchor keeps the answer.
    near = _on(_solid(8, "Mug", (0.83, 0.2, 0.76), (0.92, 0.29, 0.86), detections=8), TABLE_SURFACE)
    plan = _ask_supported("the mug next to the box", _rec(mug, box), [*scene, near])
    assert plan.candidates[0].instance_id == 8 and not plan.answer[0].unconfirmed


def test_support_surfaces_are_anchors_a_counter_by_its_height():
    chair = _known("chair", "Chair")
    unknown_counter = _unknown("counter")  # the offline model has no counter class: the map's surfaces do
    made = [_on(_solid(1, "Chair", (2.3, 0.7, 0.0), (2.8, 1.2, 0.9), detections=12), FLOOR),  # by the counter
            _on(_solid(2, "Chair", (0.3, -0.7, 0.0), (0.8, -0.2, 0.9), detections=20), FLOOR)]  # by the table
    plan = _ask_supported("the chair by the counter", _rec(chair, unknown_counter), made)
    assert plan.candidates[0].instance_id == 1 and plan.anchor.label == "counter" and plan.answer is not None
    assert any("'counter' is the map's counter surface(s) (#2 at 0.90 m" in n for n in plan.notes)
    # The table top (0.76 m) is no counter: with only the table, "the counter" is said to be absent.
    objects, snapshot = _scene(*made)
    memory = _WithSupports(objects, (FLOOR, TABLE_SURFACE))
    plan = MemoryResolver(memory, encode).plan(parse_instruction("the chair by the counter"), snapshot, (),
                                               _rec(chair, unknown_counter))
    assert plan.answer is None and "no counter among the map's support surfaces" in plan.unresolved_anchor
    # "on the floor": the floor surface.
    plan = _ask_supported("the chair on the floor", _rec(chair, _unknown("floor")), made)
    assert {c.instance_id for c in plan.candidates} == {1, 2} and plan.anchor.label == "floor"


def test_an_exclusion_pins_unlabelled_stand_ins():
    mug = _known("mug", "Mug")
    table = _known("table", "Table")
    scene = [m for m in _box_scene(box_support=False) if m[0].label != "Mug"]  # no mug was detected
    other = _on(_solid(9, "object", (2.2, 0.2, 0.9), (2.3, 0.3, 1.0), unlabelled=True), COUNTER)
    rec = InstructionRecognition(mug, (), excluded=table)
    plan = _ask_supported("the mug, not the one on the table", rec, [*scene, other])
    assert [c.instance_id for c in plan.candidates] == [9] and plan.answer[0].unconfirmed
    # The bare noun: nothing pins a mug-sized object down.
    assert _ask_supported("the mug", _rec(mug), [*scene, other]).candidates == ()


def _book(instance_id, x0, apart=()):
    """A 2 cm thick book standing 20 cm tall at x0 (its voxel centres every centimetre: a dense face)."""
    from mllm3d_ros.core.memory.object_memory import MemoryObject
    from mllm3d_ros.core.types import OrientedBox3D

    g = np.mgrid[x0 + 0.005:x0 + 0.02:0.01, 0.0:0.15:0.01, 0.3:0.5:0.01].reshape(3, -1).T.astype(np.float32)
    return MemoryObject(instance_id, "object", (("object", 1.0),), np.zeros(0, np.float32), g,
                        OrientedBox3D(g.mean(axis=0), np.eye(3), np.ptp(g, axis=0)), (200.0, 200.0, 200.0), 3, 3, 0.5,
                        (), 0, unlabelled=True, apart_ids=frozenset(apart))


def test_an_answer_grown_around_a_book_stops_at_the_book_held_apart_beside_it():
    from mllm3d_ros.core.types import MapSnapshot

    # Two books side by side, 2 cm each, on a 3 cm memory voxel grid: one voxel grown around the first covers the
    # second. Held apart (separate masks of one view), the second's own voxels are not the first's answer.
    alone = [_book(1, 0.0), _book(2, 0.02)]
    apart = [_book(1, 0.0, apart=(2,)), _book(2, 0.02, apart=(1,))]
    cloud = np.concatenate([o.points_world_m for o in alone])
    snapshot = MapSnapshot(cloud, np.zeros(cloud.shape, np.uint8), None, 0)
    first = np.arange(alone[0].points_world_m.shape[0])
    second = np.arange(first.shape[0], cloud.shape[0])
    grown, = MemoryResolver(_Objects(alone), encode).candidate_objects(alone[:1], snapshot)
    assert np.isin(second, grown.point_indices).mean() > 0.5  # the blur this test is about
    held, = MemoryResolver(_Objects(apart), encode).candidate_objects(apart[:1], snapshot)
    assert np.isin(first, held.point_indices).all()  # its own points all stay
    # Of the second book it keeps only what lies in the first book's own voxels (the 3 cm voxel they share).
    own = np.unique(np.floor(cloud[first] / 0.03).astype(np.int64), axis=0)
    taken = np.floor(cloud[np.intersect1d(held.point_indices, second)] / 0.03).astype(np.int64)
    assert (taken[:, None, :] == own[None]).all(axis=2).any(axis=1).all()
    assert np.isin(second, held.point_indices).mean() <= 0.5 < np.isin(second, grown.point_indices).mean()


# --- relations against the anchor's top surface; a counter is a worktop --------------------------------------
def _joined(instance_id, label, *parts, detections=30):
    """One memory object made of several solids (a table instance that took in what its masks spilled onto)."""
    from mllm3d_ros.core.memory.object_memory import MemoryObject

    objs = [p[0] for p in parts]
    points = np.concatenate([o.points_world_m for o in objs])
    lo, hi = points.min(axis=0) - 0.015, points.max(axis=0) + 0.015
    box = OrientedBox3D((lo + hi) / 2, np.eye(3), hi - lo)
    obj = MemoryObject(instance_id, label, ((label, 1.0),), encode([label])[0], points, box, objs[0].mean_color_rgb,
                       detections, detections, 0.8, (), 0)
    return obj, np.concatenate([p[1] for p in parts])


def _table_with(*extra):
    """A table top (2.0 x 1.0 m at 0.70-0.76 m) on four legs, as one instance with `extra` solids taken in."""
    legs = [_solid(0, "Table", (x, y, 0.0), (x + 0.06, y + 0.06, 0.70)) for x in (0.0, 1.94) for y in (0.0, 0.94)]
    return _joined(1, "Table", _solid(0, "Table", (0.0, 0.0, 0.70), (2.0, 1.0, 0.76)), *legs, *extra)


def test_on_is_decided_against_the_top_surface_not_a_box_lifted_by_what_stands_on_it():
    # The table instance took in a 0.2 m high box standing on it: its box ends 0.96 m high, 0.2 m above the top.
    table = _table_with(_solid(0, "Table", (1.2, 0.3, 0.76), (1.6, 0.7, 0.96)))
    controller = _solid(2, "object", (0.3, 0.3, 0.76), (0.48, 0.48, 0.79), colour=(160, 50, 50), unlabelled=True)
    # A red chair pushed under the table, its back up at the top's height inside the top's footprint: through the
    # top, not on it.
    back = _solid(3, "Chair", (0.8, 0.05, 0.66), (1.0, 0.15, 0.96), colour=(160, 50, 50))
    plan = _ask("the red object on the table", _rec(_generic("object"), _known("table", "Table")),
                _scene(table, controller, back))
    assert [c.instance_id for c in plan.candidates] == [2] and plan.anchor.instance_id == 1 and plan.answer


def test_at_the_end_of_is_decided_against_the_top_not_a_box_stretched_by_a_chair():
    # The detector called the end chair "table" in some views: the table instance holds its seat and legs (below the
    # top), and its box is 2.6 m long; the top is still 2.0 m, and the mug 0.2 m from its end is at the end.
    chair = _solid(0, "Table", (-0.6, 0.3, 0.0), (-0.1, 0.7, 0.45))
    mug = _solid(3, "Mug", (0.15, 0.45, 0.76), (0.24, 0.54, 0.86), detections=8)
    middle = _solid(4, "Mug", (0.95, 0.45, 0.76), (1.04, 0.54, 0.86), detections=8)
    plan = _ask("the mug at the end of the table", _rec(_known("mug", "Mug"), _known("table", "Table")),
                _scene(_table_with(chair), mug, middle))
    assert [c.instance_id for c in plan.candidates] == [3] and plan.answer


def test_a_surface_narrower_than_a_top_is_no_counter():
    # A chair's backrest top at a worktop's height (0.88 m), 0.15 x 0.2 m, next to the chair at the table: no counter;
    # the chair by the real counter answers.
    backrest = _surface(3, SupportKind.ELEVATED, 0.88, (0.35, -0.75), (0.5, -0.55))
    made = [_on(_solid(1, "Chair", (2.3, 0.7, 0.0), (2.8, 1.2, 0.9), detections=12), FLOOR),
            _on(_solid(2, "Chair", (0.3, -0.7, 0.0), (0.8, -0.2, 0.9), detections=20), FLOOR)]
    objects, snapshot = _scene(*made)
    memory = _WithSupports(objects, (FLOOR, TABLE_SURFACE, COUNTER, backrest))
    plan = MemoryResolver(memory, encode).plan(parse_instruction("the chair by the counter"), snapshot, (),
                                               _rec(_known("chair", "Chair"), _unknown("counter")))
    assert plan.candidates[0].instance_id == 1 and plan.anchor.label == "counter"
    assert any("(#2 at 0.90 m above the floor)" in n for n in plan.notes)


def test_next_to_an_unlabelled_anchor_means_beside_it_not_below_the_table_top():
    # No box was detected. A box-sized object on the floor under the table lies 0.31 m straight below the labelled mug;
    # the box-sized object on the table is 0.8 m from it, with a mug-sized unlabelled object beside it: that one is
    # the mug next to the box (flagged), not the labelled mug "next to" the thing under the table.
    mug, box = _known("mug", "Mug"), _known("box", "Box", shape="box-shaped")
    made = [_on(_solid(1, "Table", *TABLE_TOP, detections=30), FLOOR),
            _on(_solid(2, "object", (0.0, 0.0, 0.0), (0.4, 0.3, 0.45), unlabelled=True), FLOOR),
            _on(_solid(3, "Mug", (0.1, 0.1, 0.76), (0.19, 0.19, 0.86), detections=8), TABLE_SURFACE),
            _on(_solid(4, "object", (0.7, 0.4, 0.76), (1.1, 0.72, 0.85), unlabelled=True), TABLE_SURFACE),
            _on(_solid(5, "object", (1.11, 0.45, 0.76), (1.2, 0.54, 0.86), unlabelled=True), TABLE_SURFACE)]
    plan = _ask_supported("the mug next to the box", _rec(mug, box), made)
    assert plan.candidates[0].instance_id == 5 and plan.anchor.instance_id == 4 and plan.answer[0].unconfirmed


def test_next_to_gaps_under_a_voxel_are_touching_and_the_candidates_ranking_decides():
    # Two mug-sized stand-ins, each beside a box-sized object: one of a mug's typical size 2.1 cm from its box, one
    # larger whose box touches its box. Under a voxel (3 cm) both touch: the more typical mug answers.
    mug, box = _known("mug", "Mug"), _known("box", "Box", shape="box-shaped")
    made = [_on(_solid(1, "Table", (0.0, 0.0, 0.70), (2.0, 1.0, 0.76), detections=30), FLOOR),
            _on(_solid(2, "object", (0.1, 0.1, 0.76), (0.5, 0.4, 0.85), unlabelled=True), TABLE_SURFACE),
            _on(_solid(3, "object", (0.521, 0.1, 0.76), (0.611, 0.19, 0.86), unlabelled=True), TABLE_SURFACE),
            _on(_solid(4, "object", (1.3, 0.5, 0.76), (1.7, 0.8, 0.85), unlabelled=True), TABLE_SURFACE),
            _on(_solid(5, "object", (1.7, 0.5, 0.76), (1.85, 0.62, 0.88), unlabelled=True), TABLE_SURFACE)]
    plan = _ask_supported("the mug next to the box", _rec(mug, box), made)
    assert plan.candidates[0].instance_id == 3 and plan.anchor.instance_id == 2


def test_the_top_is_used_for_at_the_end_of_only_where_something_stretched_the_box():
    # A book overhanging the top's end by 5 cm (within the relation's slack): the box and the top are the same table,
    # and a chair along the side, at the end zone's border of the top but not of the box, is not at the end.
    table = _table_with(_solid(0, "Table", (1.9, 0.4, 0.76), (2.05, 0.6, 0.8)))
    chair = _solid(2, "Chair", (1.42, 0.86, 0.0), (1.82, 1.26, 0.9), detections=12)
    plan = _ask("the chair at the end of the table", _rec(_known("chair", "Chair"), _known("table", "Table")),
                _scene(table, chair))
    assert plan.answer is None and "no 'chair' in the memory is at the end of a 'table'" in plan.notes
