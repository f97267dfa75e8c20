"""Scripted scene changes (`SceneEvent`: an object moved, removed or added) applied to a room, for the
robot benchmark's moved objects; `simulator.render_with_events` renders a trajectory through them.

Part of the simulator (`mllm3d_ros.sources.simulator` re-exports the public names)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ...core.config import ConfigError, check_int
from .scene import STRUCTURE_ID, Room, _rotation

# --- scene events: objects that move ------------------------------------------------------

class EventKind(enum.Enum):
    MOVE = "move"
    REMOVE = "remove"


@dataclass(frozen=True)
class SceneEvent:
    """At `frame_index` (the first frame rendered after it), an instance is moved or removed.

    MOVE: the instance and everything resting on it (support chain) turn by `yaw_rad` about the
    instance's box centre (world z) and shift by `translation_m`. REMOVE: they disappear. Evaluation
    scripts read the resulting rooms as ground truth; the product only ever sees the rendered frames.
    """

    frame_index: int
    instance_id: int
    kind: EventKind = EventKind.MOVE
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw_rad: float = 0.0

    def __post_init__(self) -> None:
        check_int("frame_index", self.frame_index, 0)
        if self.instance_id == STRUCTURE_ID:
            raise ConfigError("SceneEvent: walls, floor and ceiling (instance 0) cannot move")


def _carried(room: Room, instance_id: int) -> set[int]:
    """The instance and every instance resting on it, directly or not."""
    out, frontier = {instance_id}, [instance_id]
    while frontier:
        parent = frontier.pop()
        for info in room.instances:
            if info.support_id == parent and info.instance_id not in out and info.instance_id != STRUCTURE_ID:
                out.add(info.instance_id)
                frontier.append(info.instance_id)
    return out


def apply_event(room: Room, event: SceneEvent) -> Room:
    """The room after `event` (a new Room; the seed is kept, so textures stay the same)."""
    room.instance(event.instance_id)  # KeyError for an unknown instance
    moving = _carried(room, event.instance_id)
    if event.kind is EventKind.REMOVE:
        prims = tuple(p for p in room.primitives if p.instance_id not in moving)
        infos = tuple(i for i in room.instances if i.instance_id not in moving)
        return Room(room.seed, room.size_m, room.height_m, prims, infos)
    pivot = np.array(room.instance(event.instance_id).center_world_m, dtype=np.float64)
    rot = _rotation(event.yaw_rad)
    shift = np.asarray(event.translation_m, dtype=np.float64)

    def moved(center) -> tuple[float, float, float]:
        out = rot @ (np.asarray(center, dtype=np.float64) - pivot) + pivot + shift
        return tuple(float(v) for v in out)

    prims = tuple(dataclasses.replace(p, center_world_m=moved(p.center_world_m), yaw_rad=p.yaw_rad + event.yaw_rad)
                  if p.instance_id in moving else p for p in room.primitives)
    infos = tuple(dataclasses.replace(i, center_world_m=moved(i.center_world_m), yaw_rad=i.yaw_rad + event.yaw_rad)
                  if i.instance_id in moving else i for i in room.instances)
    return Room(room.seed, room.size_m, room.height_m, prims, infos)


def rooms_over_time(room: Room, events: Iterable[SceneEvent]) -> list[tuple[int, Room]]:
    """[(first frame index, room state)] from frame 0, one entry per event (applied in frame order)."""
    states = [(0, room)]
    for event in sorted(events, key=lambda e: e.frame_index):
        states.append((event.frame_index, apply_event(states[-1][1], event)))
    return states
