"""Dense captions of the object memory: one short description per object (GAP-MLLM's 3D dense captioning,
from explicit geometry rather than a model): class, colour, size, position, and its relation to the
nearest neighbour ("a white mug, 0.10 x 0.08 x 0.10 m, at (0.21, 1.80, -0.72) m, on the table #3").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .instruction import Relation
from .memory_query import colour_name
from .object_memory import MemoryObject
from .relations import box_gap_m, BoxGeometry, relation_score


@dataclass(frozen=True)
class ObjectCaption:
    """A memory object with its caption; `relation` and `neighbour_id` are '' / -1 when none applies."""

    instance_id: int
    label: str
    text: str
    relation: str
    neighbour_id: int


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def describe_objects(objects: Sequence[MemoryObject], near_m: float = 0.3) -> tuple[ObjectCaption, ...]:
    """Captions of `objects`, in their order. The relation named is ON when the object rests on another,
    else NEAR for the closest other object within `near_m`."""
    out = []
    for obj in objects:
        colour = colour_name(obj.mean_color_rgb)
        label = obj.label.lower()
        size = obj.box.size_m
        c = obj.box.center_world_m
        text = (f"{_article(colour)} {colour} {label}, {size[0]:.2f} x {size[1]:.2f} x {size[2]:.2f} m, "
                f"at ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) m")
        relation, neighbour = "", -1
        others = [o for o in objects if o.instance_id != obj.instance_id]
        supports = [o for o in others if np.isfinite(relation_score(obj.box, [o.box], Relation.ON))
                    and float(np.prod(o.box.size_m)) > float(np.prod(obj.box.size_m))]
        if supports:
            support = min(supports, key=lambda o: abs(BoxGeometry.of(obj.box).lo[2] - BoxGeometry.of(o.box).hi[2]))
            relation, neighbour = "on", support.instance_id
            text += f", on the {support.label.lower()} #{support.instance_id}"
        elif others:
            gaps = [box_gap_m(BoxGeometry.of(obj.box), BoxGeometry.of(o.box)) for o in others]
            k = int(np.argmin(gaps))
            if gaps[k] <= near_m:
                relation, neighbour = "next to", others[k].instance_id
                text += f", next to the {others[k].label.lower()} #{others[k].instance_id}"
        out.append(ObjectCaption(obj.instance_id, obj.label, text, relation, neighbour))
    return tuple(out)
