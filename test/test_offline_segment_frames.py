"""`mllm3d segment` states its output frame and keeps it: a known point of the recording's world
frame, taken into the map frame through the JSON's world_T_map, lands on the pixel where the recording's own
pose file projects it, and the map frame is z up.

The recording is the synthetic room (z up) written with its world tilted by a known rotation and the tilt's
gravity direction beside it, as 7-Scenes' world frames (the first camera's) are tilted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mllm3d_ros.cli import main as mllm3d
from mllm3d_ros.core.mapping.mapper import read_saved_keyframes

sys.path.insert(0, str(Path(__file__).resolve().parent / "core"))
from rgbd_scene import INTRINSICS, orbit_poses, room_frame  # noqa: E402

# world_T_room: the dataset's world is the room turned 35 deg about x and 20 deg about z (not z up).
_ANGLE_X, _ANGLE_Z = np.radians(35.0), np.radians(20.0)
_RX = np.array([[1, 0, 0], [0, np.cos(_ANGLE_X), -np.sin(_ANGLE_X)], [0, np.sin(_ANGLE_X), np.cos(_ANGLE_X)]])
_RZ = np.array([[np.cos(_ANGLE_Z), -np.sin(_ANGLE_Z), 0], [np.sin(_ANGLE_Z), np.cos(_ANGLE_Z), 0], [0, 0, 1]])
WORLD_T_ROOM = np.eye(4)
WORLD_T_ROOM[:3, :3] = _RX @ _RZ


def _tilted_recording(path: Path, n: int = 5) -> Path:
    import dataclasses

    from mllm3d_ros.sources.dataset import write_7scenes
    frames = [room_frame((k + 1) * 33_000_000, pose) for k, pose in enumerate(orbit_poses(n, yaw_step_rad=0.3))]
    frames = [dataclasses.replace(f, world_T_camera=WORLD_T_ROOM @ f.world_T_camera) for f in frames]
    root = write_7scenes(frames, path, color_format="png")
    # The world's down direction, as 7-Scenes' gravity-direction.txt gives it.
    np.savetxt(root / "gravity-direction.txt", (WORLD_T_ROOM[:3, :3] @ [0.0, 0.0, -1.0])[None])
    return root


def _project(camera_T_x: np.ndarray, point: np.ndarray) -> tuple[np.ndarray, float]:
    """Pixel (u, v) and depth of a point through a pinhole (the test's own projection)."""
    p = camera_T_x[:3, :3] @ point + camera_T_x[:3, 3]
    return np.array([INTRINSICS.fx * p[0] / p[2] + INTRINSICS.cx, INTRINSICS.fy * p[1] / p[2] + INTRINSICS.cy]), p[2]


def test_a_world_point_overlays_through_world_T_map_on_the_recordings_own_pose(tmp_path, capsys,
                                                                              offline_detector_assets):
    root = _tilted_recording(tmp_path / "rec")
    out = tmp_path / "out" / "o.ply"
    code = mllm3d(["segment", "--dataset", str(root), "--instruction", "the table", "--out", str(out),
                   "--no-render", "--save-map", str(tmp_path / "map")])
    assert code in (0, 1), capsys.readouterr()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["frame"] == "map" and "z-up" in summary["frame_description"]
    world_T_map = np.asarray(summary["world_T_map"])
    assert world_T_map.shape == (4, 4)
    np.testing.assert_allclose(world_T_map[3], [0, 0, 0, 1])
    np.testing.assert_allclose(world_T_map[:3, :3] @ world_T_map[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.linalg.det(world_T_map[:3, :3]) > 0
    # The PLY says the same in its header.
    header = out.read_bytes().split(b"end_header")[0].decode()
    assert "comment frame map:" in header
    np.testing.assert_allclose(np.array(header.split("comment world_T_map ")[1].split("\n")[0].split(), float),
                               world_T_map.ravel(), atol=1e-8)

    # A known point on the far wall (x = 3 m in the room), in the recording's world frame, seen by frame 0.
    p_room = np.array([3.0, 0.2, 1.1])
    p_world = (WORLD_T_ROOM @ np.append(p_room, 1.0))[:3]
    world_T_camera = np.loadtxt(root / "frame-000000.pose.txt")  # the recording's own pose, read here
    pixel_world, depth_world = _project(np.linalg.inv(world_T_camera), p_world)
    assert 0 <= pixel_world[0] < INTRINSICS.width and 0 <= pixel_world[1] < INTRINSICS.height
    # Where the recording's depth agrees: the point is on the surface this frame sees.
    import cv2
    depth_png = cv2.imread(str(root / "frame-000000.depth.png"), cv2.IMREAD_UNCHANGED) / 1000.0  # mm
    assert abs(depth_png[int(round(pixel_world[1])), int(round(pixel_world[0]))] - depth_world) < 0.02

    # The same point in the map frame, through world_T_map^-1, projects through the map's own keyframe pose
    # (what segment fused, read back from the saved map) onto the same pixel at the same depth.
    p_map = (np.linalg.inv(world_T_map) @ np.append(p_world, 1.0))[:3]
    keyframe = min(read_saved_keyframes(tmp_path / "map"), key=lambda kf: kf.stamp_ns)
    pixel_map, depth_map = _project(np.linalg.inv(keyframe.world_T_camera), p_map)
    np.testing.assert_allclose(pixel_map, pixel_world, atol=1e-6)
    assert abs(depth_map - depth_world) < 1e-9
    # And back: world_T_map takes it to the world point again; the map frame is z up (the room's floor at z 0,
    # the point at its height above the floor).
    np.testing.assert_allclose((world_T_map @ np.append(p_map, 1.0))[:3], p_world, atol=1e-9)
    assert abs(p_map[2] - p_room[2]) < 1e-9
    saved = json.loads((tmp_path / "map" / "segment.json").read_text())
    np.testing.assert_allclose(saved["world_T_map"], world_T_map)


def test_the_kitchens_world_T_map_is_the_inverse_of_its_gravity_alignment(redkitchen_dir):
    from mllm3d_ros.offline_segment import world_T_map_of
    from mllm3d_ros.sources.dataset import open_dataset
    world_T_map = world_T_map_of(open_dataset(redkitchen_dir, max_frames=2))
    rotation = world_T_map[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)  # rigid: a rotation, no scale
    assert np.linalg.det(rotation) > 0 and not np.allclose(rotation, np.eye(3), atol=0.05)  # a real tilt
    np.testing.assert_allclose(world_T_map[3], [0, 0, 0, 1])
    gravity_world = np.loadtxt(redkitchen_dir / "gravity-direction.txt")
    down_map = rotation.T @ (gravity_world / np.linalg.norm(gravity_world))
    np.testing.assert_allclose(down_map, [0, 0, -1], atol=1e-9)  # the map frame's z is up
