"""Captions of memory objects: class, colour, size, position and the relation to a neighbour."""

from __future__ import annotations

import numpy as np

from mllm3d_ros.core.query.describe import describe_objects
from mllm3d_ros.core.memory.object_memory import MemoryObject
from mllm3d_ros.core.types import OrientedBox3D


def obj(instance_id, label, center, size, color):
    box = OrientedBox3D(np.array(center, float), np.eye(3), np.array(size, float))
    return MemoryObject(instance_id, label, ((label, 1.0),), np.zeros(4, np.float32), np.zeros((1, 3), np.float32),
                        box, color, 5, 6, 0.8, (1,), 0)


def test_captions_name_class_colour_size_position_and_support():
    table = obj(1, "Table", (0.0, 0.0, 0.375), (1.2, 0.8, 0.75), (150, 100, 60))
    mug = obj(2, "Mug", (0.2, 0.1, 0.80), (0.08, 0.08, 0.1), (240, 240, 240))
    chair = obj(3, "Chair", (0.0, -0.6, 0.45), (0.45, 0.45, 0.9), (30, 30, 30))
    lamp = obj(4, "Lamp", (3.0, 3.0, 0.5), (0.2, 0.2, 1.0), (250, 220, 40))
    table_c, mug_c, chair_c, lamp_c = describe_objects([table, mug, chair, lamp])
    assert mug_c.text == "a white mug, 0.08 x 0.08 x 0.10 m, at (0.20, 0.10, 0.80) m, on the table #1"
    assert (mug_c.relation, mug_c.neighbour_id) == ("on", 1)
    assert chair_c.relation == "next to" and chair_c.neighbour_id == 1 and "black chair" in chair_c.text
    assert lamp_c.relation == "" and lamp_c.neighbour_id == -1 and "yellow lamp" in lamp_c.text
    assert table_c.relation == "next to"  # the chair is 0.0 m from it (touching), and the table is on nothing


def test_model_captions_come_from_each_objects_best_view_with_its_mark():
    from mllm3d_ros.core.segmentation import BackendError, ModeUnsupported
    from test_memory_query import built_memory

    memory, keyframes = built_memory()
    objects = memory.objects()
    by_id = {kf.keyframe_id: kf for kf in keyframes}
    asked = []

    def caption(view, mark):
        asked.append((view.keyframe_id, view.marks, mark))
        return f"  a {mark.label} seen\nfrom {view.keyframe_id} "

    cache = {}
    captions = describe_objects(objects, caption_fn=caption, keyframe_fn=by_id.get, cache=cache)
    for o, c, plain, (kf_id, marks, mark) in zip(objects, captions, describe_objects(objects), asked):
        assert kf_id == o.best_keyframe_ids[0] and marks == (mark,) and mark.label == o.label
        assert c.model_text == f"a {o.label} seen from {kf_id}" and c.note == ""
        assert c.text == f"{c.model_text}; {plain.text}"
    assert len(asked) == len(objects)
    describe_objects(objects, caption_fn=caption, keyframe_fn=by_id.get, cache=cache)
    assert len(asked) == len(objects)  # answered from the cache

    def flaky(view, mark):
        if mark.label == "cube":
            raise BackendError("CUDA out of memory")
        return "a crate"

    cube, crate = describe_objects(objects, caption_fn=flaky, keyframe_fn=by_id.get)
    assert cube.model_text == "" and "model caption failed (CUDA out of memory)" in cube.note
    assert not cube.text.startswith("a crate") and crate.model_text == "a crate"

    calls = []

    def offline(view, mark):
        calls.append(1)
        raise ModeUnsupported("backend 'offline' has no caption mode")

    captions = describe_objects(objects, caption_fn=offline, keyframe_fn=by_id.get)
    assert len(calls) == 1 and all("no caption mode" in c.note and not c.model_text for c in captions)
    gone = describe_objects(objects, caption_fn=caption, keyframe_fn=lambda k: None)
    assert all("none of its stored keyframes sees it" in c.note for c in gone)


def test_an_unlabelled_object_is_described_as_such_with_its_fused_colours_and_shape():
    import dataclasses

    from mllm3d_ros.core.query.colours import colour_profile

    table = obj(1, "Table", (0.0, 0.0, 0.375), (1.2, 0.8, 0.75), (150, 100, 60))
    xs, ys = np.meshgrid(np.arange(-0.14, 0.15, 0.03), np.arange(-0.1, 0.11, 0.03))
    flat_points = np.stack([xs.ravel() + 0.3, ys.ravel(), np.full(xs.size, 0.76)], 1).astype(np.float32)
    magazine = dataclasses.replace(obj(2, "object", (0.3, 0.0, 0.76), (0.3, 0.22, 0.02), (200, 200, 200)),
                                   points_world_m=flat_points, unlabelled=True)
    # The fused map says red and white (its mean colour would be one pink-ish value).
    reds = np.array([[200, 30, 30]] * 60 + [[230, 230, 230]] * 40, np.uint8)
    captions = describe_objects([table, magazine], colour_fn=lambda o: colour_profile(reds if o.unlabelled else
                                                                                        np.array([[150, 100, 60]])))
    text = captions[1].text
    assert text.startswith("an unlabelled object (label unconfirmed), red and white, flat, 0.30 x 0.22 x 0.02 m"), text
    assert text.endswith("on the table #1") and captions[0].text.startswith("a brown table")
