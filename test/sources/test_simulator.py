"""Procedural rooms and their rendering: determinism, geometry, ground truth, noise, trajectory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.geometry import check_pose, transform_points, unproject_depth
from mllm3d_ros.sources.simulator import (
    STRUCTURE_ID, InstanceInfo, Primitive, Room, Shape, SimConfig, Simulator, Texture, generate_room,
    instance_points, look_at, trajectory)

SEEDS = range(12)
LABELS = {"Chair", "Table", "Desk", "Sofa", "Shelf", "Computer monitor", "Computer keyboard", "Computer mouse",
          "Laptop", "Mug", "Coffee cup", "Bottle", "Book", "Box"}


def _corners(info: InstanceInfo, shrink: float = 0.0) -> np.ndarray:
    c, s = math.cos(info.yaw_rad), math.sin(info.yaw_rad)
    hx, hy = info.size_m[0] / 2 - shrink, info.size_m[1] / 2 - shrink
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    return local @ np.array([[c, s], [-s, c]]) + info.center_world_m[:2]


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quads."""
    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            axis = np.array([-edge[1], edge[0]])
            if (a @ axis).max() <= (b @ axis).min() or (b @ axis).max() <= (a @ axis).min():
                return False
    return True


def _inside_box(info: InstanceInfo, points: np.ndarray, tol: float) -> np.ndarray:
    c, s = math.cos(info.yaw_rad), math.sin(info.yaw_rad)
    rel = points - np.array(info.center_world_m)
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
    return np.all(np.abs(local) <= np.array(info.size_m) / 2 + tol, axis=1)


@pytest.fixture(scope="module")
def room() -> Room:
    return generate_room(3)


@pytest.fixture(scope="module")
def sim_frames(room: Room):
    sim = Simulator(room)
    poses = trajectory(room, 4)
    return sim, [sim.render(p, stamp_ns=k) for k, p in enumerate(poses)]


def test_room_generation_is_seeded() -> None:
    a, b, c = generate_room(7), generate_room(7), generate_room(8)
    assert a.primitives == b.primitives and a.instances == b.instances
    assert a.primitives != c.primitives


def test_rooms_have_plausible_contents() -> None:
    for seed in SEEDS:
        room = generate_room(seed)
        labels = [info.label for info in room.instances]
        assert set(labels) <= LABELS
        assert "Table" in labels and labels.count("Chair") >= 1
        assert [info.instance_id for info in room.instances] == list(range(1, len(labels) + 1))
        assert all(p.instance_id in room.labels or p.instance_id == STRUCTURE_ID for p in room.primitives)
        for info in room.instances:
            if info.label == "Chair":
                assert 0.75 < info.size_m[2] < 1.05 and 0.38 < info.size_m[0] < 0.55
            if info.label in ("Table", "Desk") and info.size_m[2] > 0.6:
                assert 0.7 < info.size_m[2] < 0.8
            if info.label == "Mug":
                assert 0.08 < info.size_m[2] < 0.11


def test_floor_furniture_does_not_intersect() -> None:
    for seed in SEEDS:
        room = generate_room(seed)
        floor = [i for i in room.instances if i.support_id == STRUCTURE_ID]
        half = np.array(room.size_m) / 2
        for k, a in enumerate(floor):
            quad = _corners(a, shrink=0.001)
            assert np.all(np.abs(quad) <= half), (seed, a.label)
            assert abs(a.center_world_m[2] - a.size_m[2] / 2) < 1e-6, (seed, a.label)  # stands on the floor
            for b in floor[k + 1:]:
                assert not _overlap(quad, _corners(b, shrink=0.001)), (seed, a.label, b.label)


def test_small_objects_rest_on_their_support() -> None:
    supported = 0
    for seed in SEEDS:
        room = generate_room(seed)
        for info in room.instances:
            if info.support_id == STRUCTURE_ID:
                continue
            support = room.instance(info.support_id)
            bottom = info.center_world_m[2] - info.size_m[2] / 2
            center = np.array([[*info.center_world_m[:2], support.center_world_m[2]]])
            assert _inside_box(support, center, 0.0)[0], (seed, info.label, support.label)
            if support.label in ("Table", "Desk", "Box"):
                top = support.center_world_m[2] + support.size_m[2] / 2
                assert bottom == pytest.approx(top, abs=2e-3), (seed, info.label, support.label)
                supported += 1
            else:  # books standing on a shelf board
                assert support.label == "Shelf" and info.label == "Book"
    assert supported > 3 * len(SEEDS)


def _single_box_room() -> Room:
    """A 6 x 6 x 3 m room with one grey 1 m cube centred at (2, 0, 0.5)."""
    structure = [Primitive(Shape.BOX, (0, 0, -0.05), (6.2, 6.2, 0.1), (150, 150, 150), Texture.PLAIN, 0),
                 Primitive(Shape.BOX, (0, 0, 3.05), (6.2, 6.2, 0.1), (250, 250, 250), Texture.PLAIN, 0)]
    for sign in (-1, 1):
        structure.append(Primitive(Shape.BOX, (sign * 3.05, 0, 1.5), (0.1, 6.2, 3), (220, 220, 220), Texture.MOTTLE, 0))
        structure.append(Primitive(Shape.BOX, (0, sign * 3.05, 1.5), (6, 0.1, 3), (220, 220, 220), Texture.MOTTLE, 0))
    cube = Primitive(Shape.BOX, (2.0, 0.0, 0.5), (1.0, 1.0, 1.0), (180, 120, 60), Texture.WOOD, 1)
    info = InstanceInfo(1, "Box", (2.0, 0.0, 0.5), (1.0, 1.0, 1.0), 0.0, (180, 120, 60))
    return Room(0, (6.0, 6.0), 3.0, (*structure, cube), (info,))


def test_depth_of_a_known_face() -> None:
    room = _single_box_room()
    # camera at x = -1 looking along +x at the cube's face x = 1.5: depth 2.5 m on the face
    pose = look_at(np.array([-1.0, 0.0, 0.5]), np.array([2.0, 0.0, 0.5]))
    exact = Simulator(room, SimConfig(noise=False)).render(pose)
    noisy = Simulator(room, SimConfig()).render(pose)
    face = exact.instance_ids == 1
    assert face[240, 320] and face.mean() > 0.05
    np.testing.assert_allclose(exact.depth_exact_m[face], 2.5, atol=1e-4)
    np.testing.assert_array_equal(exact.frame.depth_m[face], exact.depth_exact_m[face])
    values = noisy.frame.depth_m[face]
    values = values[values > 0]
    sigma = 0.0015 * 2.5 ** 2  # the z^2 noise model at 2.5 m
    assert abs(np.median(values) - 2.5) < 0.003
    assert 0.5 * sigma < values.std() < 2.0 * sigma
    # the face is lit and textured: not one flat colour
    assert noisy.frame.color_rgb[face].std(axis=0).mean() > 2.0


def test_render_shapes_dtypes_and_pose(sim_frames) -> None:
    sim, frames = sim_frames
    for k, sf in enumerate(frames):
        f = sf.frame
        assert f.stamp_ns == k
        assert f.color_rgb.shape == (480, 640, 3) and f.color_rgb.dtype == np.uint8
        assert f.depth_m.shape == (480, 640) and f.depth_m.dtype == np.float32
        assert sf.instance_ids.shape == (480, 640) and sf.instance_ids.dtype == np.int32
        assert sf.depth_exact_m.dtype == np.float32 and np.all(sf.depth_exact_m > 0)  # closed room
        assert f.intrinsics == SimConfig().intrinsics
        check_pose(f.world_T_camera)
        assert f.color_rgb.std() > 20  # not a blank image


def test_instance_ids_match_geometry(room: Room, sim_frames) -> None:
    sim, frames = sim_frames
    checked = 0
    for sf in frames:
        for iid in np.unique(sf.instance_ids):
            if iid == STRUCTURE_ID:
                continue
            mask = sf.instance_ids == iid
            pts_cam, _ = unproject_depth(sf.depth_exact_m, sf.frame.intrinsics, mask=mask)
            pts_world = transform_points(sf.frame.world_T_camera, pts_cam.astype(np.float64))
            assert _inside_box(room.instance(int(iid)), pts_world, tol=0.01).mean() > 0.999, room.labels[int(iid)]
            checked += 1
        # pixels of walls and floor lie on the room's boundary surfaces
        pts_cam, _ = unproject_depth(sf.depth_exact_m, sf.frame.intrinsics, mask=sf.instance_ids == 0, stride=4)
        pts = transform_points(sf.frame.world_T_camera, pts_cam.astype(np.float64))
        on_boundary = (np.abs(pts[:, 2]) < 0.01) | (np.abs(pts[:, 2] - room.height_m) < 0.01) | \
            (np.abs(np.abs(pts[:, 0]) - room.size_m[0] / 2) < 0.01) | (np.abs(np.abs(pts[:, 1]) - room.size_m[1] / 2) < 0.01)
        assert on_boundary.mean() > 0.999
    assert checked >= 8


def test_noise_holes_and_exact_mode(sim_frames) -> None:
    _, frames = sim_frames
    sf = frames[0]
    exact, depth = sf.depth_exact_m, sf.frame.depth_m
    holes = (depth == 0) & (exact > 0.3) & (exact < 8.0)
    assert 0.002 < holes.mean() < 0.2
    both = depth > 0
    diff = depth[both] - exact[both]
    assert np.abs(diff).max() < 0.1 and diff.std() > 0.001
    assert np.all(np.abs(np.round(depth[both] * 1000) - depth[both] * 1000) < 1e-2)  # millimetre quantised


def test_seeded_render_is_deterministic(room: Room) -> None:
    pose = trajectory(room, 10)[3]
    a = Simulator(room, SimConfig(seed=4)).render(pose)
    b = Simulator(room, SimConfig(seed=4)).render(pose)
    np.testing.assert_array_equal(a.frame.color_rgb, b.frame.color_rgb)
    np.testing.assert_array_equal(a.frame.depth_m, b.frame.depth_m)
    np.testing.assert_array_equal(a.instance_ids, b.instance_ids)


def test_trajectory_inside_room_smooth_and_inward() -> None:
    for seed in (0, 5, 9):
        room = generate_room(seed)
        poses = trajectory(room, 120)
        positions = np.array([p[:3, 3] for p in poses])
        assert np.all(np.abs(positions[:, :2]) < np.array(room.size_m) / 2 - 0.5)
        assert np.all((positions[:, 2] > 1.2) & (positions[:, 2] < 1.5))
        steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        assert steps.max() < 0.15
        for pose in poses:
            check_pose(pose)
            forward = pose[:3, 2]
            to_center = -pose[:3, 3] / np.linalg.norm(pose[:3, 3])
            assert forward @ to_center > 0.7  # looks towards the room centre
            assert pose[2, 1] < 0  # optical y (down) points down in the z-up world
            for info in room.instances:
                assert not _inside_box(info, pose[None, :3, 3], 0.1)[0], info.label


def test_ground_truth_points_and_labels(room: Room) -> None:
    sim = Simulator(room)
    points = instance_points(room, spacing_m=0.02)
    assert set(points) == set(room.labels)
    table = next(i for i in room.instances if i.label == "Table")
    assert _inside_box(table, points[table.instance_id].astype(np.float64), 1e-3).all()
    assert len(points[table.instance_id]) > 2000  # ~ its surface area / (2 cm)^2
    labels = sim.closest_instances(points[table.instance_id])
    assert (labels.instance_ids == table.instance_id).mean() > 0.9
    far = sim.closest_instances(np.array([[0.0, 0.0, 2.0]]), max_distance_m=0.05)
    assert far.instance_ids[0] == STRUCTURE_ID and far.distance_m[0] > 0.05


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="width"):
        SimConfig(width=0)
    with pytest.raises(ConfigError, match="hole_fraction"):
        SimConfig(hole_fraction=0.9)
    with pytest.raises(ConfigError, match="max_depth_m"):
        SimConfig(min_depth_m=2.0, max_depth_m=1.0)
    with pytest.raises(ConfigError, match="wall_clearance_m"):
        trajectory(generate_room(0), 10, wall_clearance_m=3.0)


def test_relational_rooms_state_their_answers_and_mirror_by_seed():
    from mllm3d_ros.sources.simulator import generate_relational_room

    a, b, again = generate_relational_room(0), generate_relational_room(1), generate_relational_room(0)
    assert [q.answer_id for q in a.queries] == [q.answer_id for q in again.queries]
    for layout in (a, b):
        labels = layout.room.labels
        assert len(layout.queries) == 16
        for q in layout.queries:
            # the answer is an instance of the class the instruction names
            noun = q.instruction.split(",")[0].split()[-1] if q.kind == "not" else None
            assert labels[q.answer_id].lower() in q.instruction or (noun and noun in labels[q.answer_id].lower())
        by_kind = {q.instruction: q.answer_id for q in layout.queries}
        mugs = sorted((i for i in layout.room.instances if i.label == "Mug"), key=lambda i: i.center_world_m[0])
        assert by_kind["the leftmost mug"] == mugs[0].instance_id
        assert by_kind["the rightmost mug"] == mugs[-1].instance_id
        on_box = layout.room.instance(by_kind["the mug on the box"])
        assert layout.room.instance(on_box.support_id).label == "Box"
        assert by_kind["the box under the mug"] == on_box.support_id
    # seed 0 has the mug box on the viewer's right, seed 1 on the left
    assert a.room.instance(next(q.answer_id for q in a.queries if q.kind == "under")).center_world_m[0] > 0.5
    assert b.room.instance(next(q.answer_id for q in b.queries if q.kind == "under")).center_world_m[0] < -0.5


def test_relational_trajectory_keeps_the_stated_viewer_and_sees_every_object():
    from mllm3d_ros.sources.simulator import generate_relational_room, relational_trajectory

    layout = generate_relational_room(2)
    poses = relational_trajectory(layout, 30)
    np.testing.assert_allclose(poses[-1], layout.viewer_world_T_camera)
    for pose in poses:
        np.testing.assert_allclose(pose[:3, :3], layout.viewer_world_T_camera[:3, :3])
    # every instance's centre projects into the stated viewer's 320x240, fx 205 image
    viewer = layout.viewer_world_T_camera
    for info in layout.room.instances:
        p = viewer[:3, :3].T @ (np.asarray(info.center_world_m) - viewer[:3, 3])
        u, v = 205.0 * p[0] / p[2] + 159.5, 205.0 * p[1] / p[2] + 119.5
        assert p[2] > 0.5 and 0 <= u < 320 and 0 <= v < 240, info


def test_scene_events_move_or_remove_an_object_and_what_rests_on_it(room: Room) -> None:
    from mllm3d_ros.sources.simulator import EventKind, SceneEvent, apply_event, render_with_events, rooms_over_time

    table = next(i for i in room.instances if i.label == "Table")
    on_table = {i.instance_id for i in room.instances if i.support_id == table.instance_id}
    assert on_table
    move = SceneEvent(2, table.instance_id, EventKind.MOVE, (0.3, -0.2, 0.0), math.pi / 2)
    moved = apply_event(room, move)
    new = moved.instance(table.instance_id)
    np.testing.assert_allclose(new.center_world_m, np.add(table.center_world_m, (0.3, -0.2, 0.0)), atol=1e-9)
    assert new.yaw_rad == pytest.approx(table.yaw_rad + math.pi / 2)
    for iid in on_table:  # carried along: the same place relative to the table's centre, turned with it
        before = np.subtract(room.instance(iid).center_world_m, table.center_world_m)
        after = np.subtract(moved.instance(iid).center_world_m, new.center_world_m)
        np.testing.assert_allclose(after, [-before[1], before[0], before[2]], atol=1e-9)
    others = [i for i in room.instances if i.instance_id not in on_table | {table.instance_id}]
    assert all(moved.instance(i.instance_id) == i for i in others)
    removed = apply_event(room, SceneEvent(1, table.instance_id, EventKind.REMOVE))
    gone = on_table | {table.instance_id}
    assert not any(i.instance_id in gone for i in removed.instances)
    assert not any(p.instance_id in gone for p in removed.primitives)
    # Rendered: the table's pixels are there before the event's frame and moved after it.
    cfg = SimConfig(width=80, height=60, fx=65.6, fy=65.6, cx=39.5, cy=29.5, noise=False, nthreads=1)
    pose = look_at(np.array([table.center_world_m[0] - 2.0, table.center_world_m[1], 1.4]), table.center_world_m)
    frames = list(render_with_events(room, [pose] * 4, [move], cfg))
    assert [s is room for _, s in frames] == [True, True, False, False]
    assert not np.array_equal(frames[1][0].instance_ids, frames[2][0].instance_ids)
    assert len(rooms_over_time(room, [move, SceneEvent(3, table.instance_id, EventKind.REMOVE)])) == 3
    with pytest.raises(ConfigError):
        SceneEvent(0, STRUCTURE_ID)
    with pytest.raises(KeyError):
        apply_event(room, SceneEvent(0, 9999))
