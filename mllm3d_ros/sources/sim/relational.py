"""Relational rooms (`generate_relational_room`): layouts whose relational instructions ("the mug on the
box", "the second mug from the left") have one answer each from the construction, seen from a stated
viewer, and the dolly shot that keeps its orientation (`relational_trajectory`); the spatial benchmark's rooms.

Part of the simulator (`mllm3d_ros.sources.simulator` re-exports the public names)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...core.config import check_int, check_range
from .rooms import _RoomBuilder
from .scene import Room
from .trajectories import look_at

# --- relational layouts ----------------------------------------------------------------------

@dataclass(frozen=True)
class RelationalQuery:
    """An instruction whose answer depends only on geometry, and that answer's instance id (ground truth)."""

    instruction: str
    answer_id: int
    kind: str  # the case it tests: "on", "under", "near", "left of", "nth", "biggest", "not", ...


@dataclass(frozen=True, eq=False)
class RelationalRoom:
    """A room laid out so that relational instructions have one geometric answer each.

    viewer_world_T_camera: the stated viewpoint of "left / right / in front / behind": 1.6 m in front of
    the table, looking along +y (right = +x). `relational_trajectory` keeps its orientation, so the
    latest keyframe, the viewer the resolver takes (`relations.viewer_axes`), looks the same way; every
    answer also holds for any viewer yaw within 30 degrees of it. `queries` are ground truth, for
    evaluation only.
    """

    room: Room
    viewer_world_T_camera: np.ndarray
    look_at_world_m: np.ndarray
    queries: tuple[RelationalQuery, ...]


def generate_relational_room(seed: int) -> RelationalRoom:
    """A table with a row of mugs, a bottle and a laptop on it, a mug on one of two floor boxes of
    different sizes, a chair in front of the table and one behind it; mirrored left/right by seed.

    Answers come from the construction (which mug was placed where), never from `core.query.relations`, so
    the resolver is checked against them. Spacing leaves margins larger than box noise: the mug meant
    by "next to the laptop" is >= 8 cm nearer to it than any other, the one farthest from the bottle
    >= 40 cm farther than any other; neighbours on the table are >= 12 cm apart; the two boxes differ
    in volume by >= 1.8x. Everything is within 40 degrees of the stated viewer's optical axis.
    """
    check_int("seed", seed, 0)
    rng = np.random.default_rng(10_000 + seed)
    builder = _RoomBuilder(rng, (5.6, 5.6), 2.6)
    builder.add_structure()
    side = 1.0 if seed % 2 == 0 else -1.0  # mirror: the mug box is on the viewer's right for even seeds
    tx, ty = builder.u(-0.1, 0.1), builder.u(0.3, 0.5)
    table = builder.add_table(tx, ty, 0.0, 1.6, 0.8, 0.75)
    top = table.center_world_m[2] + table.size_m[2] / 2

    def on_table(along: float) -> tuple[float, float, float]:
        return (tx + side * (along + builder.u(-0.02, 0.02)), ty + builder.u(-0.08, 0.08), top)

    mug_a = builder.add_mug(on_table(-0.68), builder.u(0, 2 * math.pi), table.instance_id)
    bottle = builder.add_bottle(on_table(-0.45), 0.0, table.instance_id)
    mug_b = builder.add_mug(on_table(-0.2), builder.u(0, 2 * math.pi), table.instance_id)
    laptop = builder.add_laptop(on_table(0.2), builder.u(-0.15, 0.15), table.instance_id)
    mug_c = builder.add_mug(on_table(0.5), builder.u(0, 2 * math.pi), table.instance_id)
    big = (builder.u(0.5, 0.56), builder.u(0.45, 0.5), builder.u(0.42, 0.48))
    small = (builder.u(0.34, 0.38), builder.u(0.32, 0.36), builder.u(0.26, 0.3))
    mug_box_big = bool(rng.random() < 0.5)
    size_1, size_2 = (big, small) if mug_box_big else (small, big)
    box_1 = builder.add_box(tx + side * (0.8 + 0.1 + size_1[0] / 2), ty + builder.u(-0.1, 0.0), 0.0,
                            builder.u(-0.1, 0.1), size_1)
    box_2 = builder.add_box(tx - side * (0.8 + 0.1 + size_2[0] / 2), ty + builder.u(-0.1, 0.0), 0.0,
                            builder.u(-0.1, 0.1), size_2)
    box_top = box_1.center_world_m[2] + box_1.size_m[2] / 2
    mug_d = builder.add_mug((box_1.center_world_m[0], box_1.center_world_m[1], box_top), builder.u(0, 2 * math.pi),
                            box_1.instance_id)
    style = builder.chair_style()
    chair_front = builder.add_chair(tx + side * 0.35, ty - 0.4 - 0.33, builder.u(-0.1, 0.1), style)
    # Behind the table's far corner, not behind its middle, where the table hides all but its backrest.
    chair_back = builder.add_chair(tx - side * 1.2, ty + 0.4 + 0.45, math.pi + builder.u(-0.1, 0.1), style)
    mugs = [mug_a, mug_b, mug_c, mug_d]
    by_x = [m.instance_id for m in sorted(mugs, key=lambda m: m.center_world_m[0])]
    bigger, smaller = (box_1, box_2) if mug_box_big else (box_2, box_1)
    # Left / right of the laptop: its nearer neighbour on that side (mug_b on the bottle's side, mug_c on
    # the other; side = -1 mirrors which one is on the viewer's left).
    left_of_laptop, right_of_laptop = (mug_b, mug_c) if side > 0 else (mug_c, mug_b)
    queries = (
        RelationalQuery("the mug on the box", mug_d.instance_id, "on"),
        RelationalQuery("the box under the mug", box_1.instance_id, "under"),
        RelationalQuery("the mug next to the laptop", mug_c.instance_id, "near"),
        RelationalQuery("the mug to the left of the laptop", left_of_laptop.instance_id, "left of"),
        RelationalQuery("the mug to the right of the laptop", right_of_laptop.instance_id, "right of"),
        RelationalQuery("the mug farthest from the bottle", mug_d.instance_id, "farthest"),
        RelationalQuery("the mug between the bottle and the laptop", mug_b.instance_id, "between"),
        RelationalQuery("the leftmost mug", by_x[0], "leftmost"),
        RelationalQuery("the second mug from the left", by_x[1], "nth"),
        RelationalQuery("the rightmost mug", by_x[-1], "rightmost"),
        RelationalQuery("the chair in front of the table", chair_front.instance_id, "in front of"),
        RelationalQuery("the chair behind the table", chair_back.instance_id, "behind"),
        RelationalQuery("the biggest box", bigger.instance_id, "biggest"),
        RelationalQuery("the smallest box", smaller.instance_id, "smallest"),
        RelationalQuery("the mug, not the one on the table", mug_d.instance_id, "not"),
        RelationalQuery("the chair, not the one behind the table", chair_front.instance_id, "not"),
    )
    del bottle, laptop
    look = np.array([tx, ty, 0.6])
    viewer = look_at(np.array([tx, ty - 1.6, 1.3]), look)
    room = Room(seed, builder.size_m, builder.height_m, tuple(builder.primitives), tuple(builder.instances))
    return RelationalRoom(room, viewer, look, queries)


def relational_trajectory(layout: RelationalRoom, num_frames: int, *, track_m: float = 1.0,
                          bob_m: float = 0.08) -> list[np.ndarray]:
    """A dolly shot: the stated viewer's orientation throughout, its position sliding +-track_m along its
    right axis (out to the right, across to the left, back) and bobbing +-bob_m; the last pose is
    `layout.viewer_world_T_camera`. Keyframes are kept for novelty, so the latest keyframe need not be
    the last pose; with one orientation throughout, whichever it is sees left and right as stated."""
    check_int("num_frames", num_frames, 2)
    check_range("track_m", track_m, 0.0, 2.0)
    check_range("bob_m", bob_m, 0.0, 0.5)
    viewer = layout.viewer_world_T_camera
    right = viewer[:3, 0]
    poses = []
    for k in range(num_frames):
        u = k / (num_frames - 1)
        pose = viewer.copy()
        pose[:3, 3] = viewer[:3, 3] + track_m * math.sin(2 * math.pi * u) * right \
            + np.array([0.0, 0.0, bob_m * math.sin(3 * math.pi * u)])
        poses.append(pose)
    poses[-1] = layout.viewer_world_T_camera.copy()
    return poses
