"""Captions of memory objects: class, colour, size, position and the relation to a neighbour."""

from __future__ import annotations

import numpy as np

from mllm3d_ros.core.describe import describe_objects
from mllm3d_ros.core.object_memory import MemoryObject
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
