"""Tests of visible_mask, keyframe selection/eviction and visibility queries."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from rgbd_scene import INTRINSICS, look_at, room_frame

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.mapping.keyframes import KeyframeConfig, KeyframeDecision, KeyframeStore
from mllm3d_ros.core.visibility import visible_mask
from mllm3d_ros.core.types import CameraIntrinsics, InputError, Keyframe, RgbdFrame

K = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
EYE = np.array([0.5, 0.0, 1.4])


def _view(yaw_deg: float, eye=EYE) -> np.ndarray:
    yaw = math.radians(yaw_deg)
    return look_at(eye, eye + [math.cos(yaw), math.sin(yaw), 0.0])


def test_visible_mask_frustum_occlusion_and_invalid_depth():
    depth = np.full((48, 64), 2.0, np.float32)
    depth[:, :16] = 1.0  # an occluder on the left quarter
    depth[40:, :] = 0.0  # a hole at the bottom
    pts = np.array([
        [0.0, 0.0, 2.0],    # on the observed surface
        [0.0, 0.0, 2.04],   # within 5 cm
        [0.0, 0.0, 3.0],    # behind the surface: occluded
        [0.0, 0.0, 1.0],    # in front of the surface: the view sees through it
        [-1.0, 0.0, 2.0],   # behind the occluder (u = 6.5)
        [-0.5, 0.0, 1.0],   # on the occluder itself (u = 6.5)
        [10.0, 0.0, 2.0],   # outside the image
        [0.0, 0.0, -2.0],   # behind the camera
        [0.0, 0.8, 2.0],    # lands in the depth hole (v = 43.5)
    ])
    mask = visible_mask(pts, np.eye(4), K, depth)
    assert mask.dtype == bool and mask.shape == (9,)
    np.testing.assert_array_equal(mask, [True, True, False, False, False, True, False, False, False])


def test_visible_mask_relative_tolerance_world_pose_and_keyframe_form():
    depth = np.full((48, 64), 4.0, np.float32)
    world_T_camera = np.eye(4)
    world_T_camera[:3, 3] = [1.0, 2.0, 3.0]
    pts_camera = np.array([[0.0, 0.0, 4.1], [0.0, 0.0, 4.2]])  # 3 % of 4 m is 12 cm
    pts_world = pts_camera + world_T_camera[:3, 3]
    np.testing.assert_array_equal(visible_mask(pts_world, world_T_camera, K, depth), [True, False])
    kf = Keyframe(0, 0, world_T_camera, K, np.zeros((48, 64, 3), np.uint8), depth)
    np.testing.assert_array_equal(visible_mask(pts_world, kf, depth_tolerance_frac=0.0), [False, False])
    assert visible_mask(np.zeros((0, 3)), kf).shape == (0,)
    with pytest.raises(InputError, match="intrinsics"):
        visible_mask(pts_world, world_T_camera)
    with pytest.raises(InputError, match="depth_m"):
        visible_mask(pts_world, world_T_camera, K, np.zeros((10, 10), np.float32))


def test_selection_by_motion_novelty_and_downsampling():
    store = KeyframeStore(KeyframeConfig(min_translation_m=0.3, min_rotation_deg=20.0, min_novelty=0.2))
    first = store.offer(room_frame(1, _view(0)))
    assert first.decision is KeyframeDecision.ADDED and first.keyframe_id == 0
    kf = store.get(0)
    assert kf.color_rgb.shape == (60, 80, 3) and kf.depth_m.shape == (60, 80)
    assert kf.intrinsics == INTRINSICS.scaled(0.5)
    assert store.offer(room_frame(2, _view(5))).decision is KeyframeDecision.REJECTED_NO_MOTION
    turned = store.offer(room_frame(3, _view(60)))
    assert turned.decision is KeyframeDecision.ADDED and turned.novelty > 0.5
    # back where the first keyframe was: motion from the last keyframe, but nothing new to see
    back = store.offer(room_frame(4, _view(2)))
    assert back.decision is KeyframeDecision.REJECTED_NOT_NOVEL and back.novelty < 0.2
    assert len(store) == 2


def test_blurred_frames_are_rejected_relative_to_running_median():
    store = KeyframeStore(KeyframeConfig(sharpness_ratio=0.5))
    for i in range(6):
        store.offer(room_frame(i + 1, _view(0)))
    frame = room_frame(10, _view(90))
    blurred = RgbdFrame(10, cv2.GaussianBlur(frame.color_rgb, (0, 0), 3.0), frame.depth_m, frame.intrinsics,
                        frame.world_T_camera)
    result = store.offer(blurred)
    assert result.decision is KeyframeDecision.REJECTED_BLURRED
    assert store.offer(room_frame(11, _view(90))).decision is KeyframeDecision.ADDED


def test_eviction_removes_the_most_redundant_view_not_the_oldest():
    store = KeyframeStore(KeyframeConfig(max_keyframes=3, min_novelty=0.0, min_rotation_deg=5.0))
    ids = {}
    for stamp, yaw in enumerate((0, 90, 10, 180)):
        result = store.offer(room_frame(stamp + 1, _view(yaw)))
        assert result.decision is KeyframeDecision.ADDED
        ids[yaw] = result.keyframe_id
    kept = {kf.keyframe_id for kf in store.keyframes}
    assert len(kept) == 3 and ids[90] in kept and ids[180] in kept
    assert len({ids[0], ids[10]} & kept) == 1  # one of the two overlapping views went
    assert result.evicted_ids and result.evicted_ids[0] in (ids[0], ids[10])


def test_byte_cap():
    probe = KeyframeStore()
    assert probe.offer(room_frame(1, _view(0))).decision is KeyframeDecision.ADDED
    per_kf = probe.nbytes
    store = KeyframeStore(KeyframeConfig(max_bytes=2 * per_kf + 10, min_novelty=0.0))
    for stamp, yaw in enumerate((0, 90, 180, 270)):
        store.offer(room_frame(stamp + 1, _view(yaw)))
    assert len(store) == 2 and store.nbytes <= 2 * per_kf + 10


def test_visibility_table_and_ranking():
    store = KeyframeStore(KeyframeConfig(min_novelty=0.0))
    for stamp, yaw in enumerate((0, 180, 20)):
        store.offer(room_frame(stamp + 1, _view(yaw)))
    ys, zs = np.meshgrid(np.linspace(-0.3, 0.3, 5), np.linspace(1.2, 1.6, 5))
    wall_pts = np.stack([np.full(ys.size, 3.0), ys.ravel(), zs.ravel()], axis=1)  # on the +x wall
    table = store.visibility(wall_pts)
    assert table.visible.shape == (3, 25)
    np.testing.assert_array_equal(table.keyframe_ids, [0, 1, 2])
    assert table.views[0].num_visible == 25 and table.views[1].num_visible == 0
    assert table.views[0].mean_distance_m == pytest.approx(2.5, abs=0.1)
    ranked = store.keyframes_seeing(wall_pts)
    assert [v.keyframe.keyframe_id for v in ranked] == [0, 2]  # centred in view beats 20 deg off-axis
    assert ranked[0].score > ranked[1].score > 0
    # with normals the angle is the incidence on the surface: same eye, same incidence, same score
    normals = np.tile([-1.0, 0.0, 0.0], (25, 1))
    with_normals = store.keyframes_seeing(wall_pts, normals_world=normals)
    assert with_normals[0].score == pytest.approx(with_normals[1].score)
    assert store.keyframes_seeing(wall_pts, max_views=1)[0].keyframe.keyframe_id == 0


@pytest.mark.parametrize("field, value", [("image_scale", 0.0), ("max_keyframes", 0), ("min_novelty", 1.5)])
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=field):
        KeyframeConfig(**{field: value})


# --- scene changes: a frame that shows an object moved is a keyframe even when not novel -------------------

_CK = CameraIntrinsics(160, 120, 146.25, 146.25, 79.5, 59.5)


def _wall_frame(stamp: int, pose: np.ndarray, patch: bool = False) -> RgbdFrame:
    """A textured wall 3.01 m ahead along world +x (depth per pixel from the pose), optionally a 24 x 18 px patch
    1.2 m in front of the camera (a small object: ~2 % of the samples, under min_novelty; in world terms it
    moves with the camera, which only matters for the last frame, where it is still seen by a keyframe)."""
    rows, cols = np.mgrid[0:120, 0:160]
    rays = np.stack([(cols - _CK.cx) / _CK.fx, (rows - _CK.cy) / _CK.fy, np.ones(cols.shape)], -1) @ pose[:3, :3].T
    depth = ((3.01 - pose[0, 3]) / rays[..., 0]).astype(np.float32)
    if patch:
        depth[50:68, 70:94] = 1.2
    rng = np.random.default_rng(0)  # texture, so that no frame is rejected as blurred
    color = np.repeat(rng.integers(0, 255, (120, 160, 1), dtype=np.uint8), 3, axis=2)
    return RgbdFrame(stamp, color, depth, _CK, pose)


def test_a_small_change_makes_a_keyframe_and_a_static_scene_does_not():
    store = KeyframeStore(KeyframeConfig(image_scale=1.0))
    poses = [look_at([0.0, y, 1.4], [1.0, y, 1.4]) for y in (0.0, 0.12, 0.24, 0.36, 0.48)]
    assert store.offer(_wall_frame(0, poses[0])).decision is KeyframeDecision.ADDED
    first = store.offer(_wall_frame(1, poses[2]))  # 24 cm to the side: novel enough at the edge
    assert first.decision is KeyframeDecision.ADDED, first
    # Back between them: seen by both keyframes, nothing changed.
    still = store.offer(_wall_frame(2, poses[1]))
    assert still.decision is KeyframeDecision.REJECTED_NOT_NOVEL and still.changed_samples == 0
    # The same place with a small object that appeared: both keyframes saw the wall behind it.
    appeared = store.offer(_wall_frame(3, poses[1], patch=True))
    assert appeared.novelty < 0.05 and appeared.changed_samples >= 8
    assert appeared.decision is KeyframeDecision.ADDED
    # Once that keyframe is kept, the object seen again (from 12 cm aside) is no change worth a keyframe.
    again = store.offer(_wall_frame(4, poses[0], patch=True))
    assert again.decision is KeyframeDecision.REJECTED_NOT_NOVEL and again.changed_samples < 8


def test_change_keyframes_can_be_turned_off():
    store = KeyframeStore(KeyframeConfig(image_scale=1.0, min_change_samples=0))
    poses = [look_at([0.0, y, 1.4], [1.0, y, 1.4]) for y in (0.0, 0.12, 0.24)]
    store.offer(_wall_frame(0, poses[0]))
    store.offer(_wall_frame(1, poses[2]))
    assert store.offer(_wall_frame(3, poses[1], patch=True)).decision is KeyframeDecision.REJECTED_NOT_NOVEL
