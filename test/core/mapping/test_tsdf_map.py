"""Tests of the TSDF map: accuracy against an analytic room, block budget eviction, snapshots, real data."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from rgbd_scene import distance_to_room_m, look_at, orbit_poses, room_frame

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.visibility import visible_mask
from mllm3d_ros.core.mapping.tsdf_map import TsdfMap, TsdfMapConfig
from mllm3d_ros.core.types import CameraIntrinsics, RgbdFrame


@pytest.mark.parametrize("field, value", [("voxel_size_m", 0.0), ("block_resolution", 12), ("block_budget", 0),
                                          ("depth_max_m", 0.05), ("device", "tpu"), ("sdf_trunc_m", 0.001)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TsdfMapConfig(**{field: value})


def test_depth_min_above_depth_max_is_reported_as_depth_min():
    with pytest.raises(ConfigError, match=r"^depth_min_m must be below depth_max_m \(4.0\), got 5.0$"):
        TsdfMapConfig(depth_min_m=5.0, depth_max_m=4.0)


def test_config_defaults():
    cfg = TsdfMapConfig()
    assert cfg.voxel_size_m == pytest.approx(0.02)  # holds a mug (README, "Parameters that matter")
    assert cfg.trunc_m == pytest.approx(0.08)  # 4 voxels
    assert cfg.block_size_m == pytest.approx(0.16)  # 8 voxels


def test_cuda_request_without_cuda_is_a_clear_error():
    import open3d.core as o3c

    if o3c.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="device='cuda'"):
        TsdfMap(TsdfMapConfig(device="cuda"))
    assert TsdfMap(TsdfMapConfig(device="auto")).device == "CPU:0"


@pytest.mark.parametrize("voxel_size_m", [0.05, 0.02])
def test_fused_room_matches_true_walls(voxel_size_m):
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=voxel_size_m))
    for i, pose in enumerate(orbit_poses(12, yaw_step_rad=0.5)):
        stats = tsdf.integrate(room_frame(i + 1, pose))
        assert stats.active_blocks == tsdf.num_blocks and stats.evicted_blocks == 0
    snap = tsdf.snapshot()
    assert snap.num_points > 1000
    assert snap.points_world_m.dtype == np.float32 and snap.colors_rgb.dtype == np.uint8
    assert snap.normals_world is not None and snap.normals_world.shape == snap.points_world_m.shape
    assert snap.stamp_ns == 12 and tsdf.frames_integrated == 12
    err_m = distance_to_room_m(snap.points_world_m.astype(np.float64))
    assert np.percentile(err_m, 99) < voxel_size_m
    assert err_m.max() < 2 * voxel_size_m
    # the checker texture survives fusion: both shades are present
    assert snap.colors_rgb[:, 0].min() < 100 < snap.colors_rgb[:, 0].max()


def test_eviction_keeps_the_blocks_nearest_the_camera():
    pose = look_at([0.5, 0.0, 1.4], [3.0, 0.0, 1.0])
    frame = room_frame(1, pose)
    unbounded = TsdfMap(TsdfMapConfig(voxel_size_m=0.05))
    unbounded.integrate(frame)
    bounded = TsdfMap(TsdfMapConfig(voxel_size_m=0.05, block_budget=40, evict_to_fraction=0.9))
    stats = bounded.integrate(frame)
    assert unbounded.num_blocks > 40
    assert stats.active_blocks == 36 and stats.evicted_blocks == unbounded.num_blocks - 36
    all_d = np.linalg.norm(unbounded.block_centers_world_m() - pose[:3, 3], axis=1)
    kept_d = np.linalg.norm(bounded.block_centers_world_m() - pose[:3, 3], axis=1)
    assert np.isclose(np.sort(kept_d), np.sort(all_d)[:36]).all()


def test_budget_holds_and_reused_blocks_are_clean():
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=0.05, block_budget=120))
    evicted = 0
    for i, pose in enumerate(orbit_poses(40, yaw_step_rad=0.35)):  # more than two full turns
        stats = tsdf.integrate(room_frame(i + 1, pose))
        assert stats.active_blocks <= 120
        evicted += stats.evicted_blocks
    assert evicted > 0
    err_m = distance_to_room_m(tsdf.snapshot().points_world_m.astype(np.float64))
    assert err_m.size > 0 and err_m.max() < 0.1  # no stale tsdf left in reused buffers


def test_evict_distance_drops_far_blocks():
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=0.05, evict_distance_m=3.0))
    pose = look_at([0.5, 0.0, 1.4], [3.0, 0.0, 1.0])
    stats = tsdf.integrate(room_frame(1, pose))
    dist_m = np.linalg.norm(tsdf.block_centers_world_m() - pose[:3, 3], axis=1)
    assert stats.evicted_blocks > 0 and dist_m.size > 0
    assert dist_m.max() <= 3.0


def test_frame_with_all_depth_out_of_range_changes_nothing():
    tsdf = TsdfMap(TsdfMapConfig(depth_max_m=1.0))
    stats = tsdf.integrate(room_frame(1, orbit_poses(1)[0]))  # nearest wall is > 1 m away
    assert stats.touched_blocks == 0 and tsdf.num_blocks == 0 and tsdf.snapshot().num_points == 0


def test_reset_and_depth_stride():
    tsdf = TsdfMap(TsdfMapConfig(depth_stride=2))
    for i, pose in enumerate(orbit_poses(3)):
        tsdf.integrate(room_frame(i + 1, pose))
    snap = tsdf.snapshot()
    assert snap.num_points > 0
    assert distance_to_room_m(snap.points_world_m.astype(np.float64)).max() < 0.1
    tsdf.reset()
    assert tsdf.num_blocks == 0 and tsdf.frames_integrated == 0 and tsdf.snapshot().num_points == 0


def test_snapshot_while_integrating_from_another_thread():
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=0.05))
    frames = [room_frame(i + 1, pose) for i, pose in enumerate(orbit_poses(20, yaw_step_rad=0.3))]
    errors: list[BaseException] = []

    def fuse():
        try:
            for frame in frames:
                tsdf.integrate(frame)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=fuse)
    worker.start()
    snaps = []
    while worker.is_alive():
        snaps.append(tsdf.snapshot())
    worker.join()
    assert not errors
    for snap in snaps + [tsdf.snapshot()]:
        assert snap.points_world_m.shape == snap.colors_rgb.shape
        assert np.isfinite(snap.points_world_m).all()
    assert tsdf.frames_integrated == 20


def test_snapshot_after_the_map_grew_is_not_truncated_by_the_previous_estimate():
    poses = orbit_poses(16, yaw_step_rad=0.4)
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=0.05))
    tsdf.integrate(room_frame(1, poses[0]))
    tsdf.integrate(room_frame(2, poses[0]))  # surface points need a weight above 1
    small = tsdf.snapshot().num_points  # primes the estimate for the next extraction
    assert small > 0
    for i, pose in enumerate(poses[1:]):
        tsdf.integrate(room_frame(i + 3, pose))
    grown = tsdf.snapshot().num_points
    counted = tsdf._grid.extract_point_cloud(1.0, -1).point.positions.shape[0]  # Open3D's own count
    assert grown > 2 * small and grown == counted


def test_depth_outside_the_configured_range_is_not_fused():
    pose = orbit_poses(1)[0]
    frame = room_frame(1, pose)
    near = float(np.percentile(frame.depth_m[frame.depth_m > 0], 50))
    clipped = TsdfMap(TsdfMapConfig(voxel_size_m=0.05, depth_min_m=near))
    clipped.integrate(frame)
    clipped.integrate(frame)
    depth_m = np.linalg.norm(clipped.snapshot().points_world_m - pose[:3, 3], axis=1)
    full = TsdfMap(TsdfMapConfig(voxel_size_m=0.05))
    full.integrate(frame)
    assert depth_m.size > 0 and clipped.num_blocks < full.num_blocks
    # ranges are along rays, depth along the optical axis, so ranges are never shorter than depth
    assert depth_m.min() > near - 0.15


def _load_7scenes_frame(folder, index: int, intrinsics: CameraIntrinsics) -> RgbdFrame:
    stem = folder / f"frame-{index:06d}"
    color = cv2.cvtColor(cv2.imread(str(stem) + ".color.jpg", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    depth_mm = cv2.imread(str(stem) + ".depth.png", cv2.IMREAD_UNCHANGED)
    depth_m = np.where(depth_mm == 65535, 0, depth_mm).astype(np.float32) / 1000.0
    pose = np.loadtxt(str(stem) + ".pose.txt")
    return RgbdFrame(index * 33_333_333, color, depth_m, intrinsics, pose)


def test_real_redkitchen_frames_fuse_into_a_bounded_kitchen(redkitchen_dir):
    intrinsics = CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=0.05))
    frames = [_load_7scenes_frame(redkitchen_dir, i, intrinsics) for i in range(0, 30 * 32, 32)]
    for frame in frames:
        tsdf.integrate(frame)
    snap = tsdf.snapshot()
    assert snap.num_points > 5000
    cameras = np.array([f.world_T_camera[:3, 3] for f in frames])
    lo, hi = cameras.min(axis=0) - 4.0, cameras.max(axis=0) + 4.0  # depth_max_m around the trajectory
    assert (snap.points_world_m >= lo).all() and (snap.points_world_m <= hi).all()
    extent_m = np.percentile(snap.points_world_m, 99, axis=0) - np.percentile(snap.points_world_m, 1, axis=0)
    assert (extent_m > 1.0).all() and (extent_m < 8.0).all()  # room-sized, not a blob or an explosion
    # the fused surface agrees with a real depth image where that view sees it
    seen = visible_mask(snap.points_world_m, frames[-1].world_T_camera, intrinsics, frames[-1].depth_m,
                        depth_tolerance_m=0.1)
    assert seen.sum() > 1000


# --- free-space carving: a surface that is gone is erased, what is not seen stays --------------------------

_CARVE_INTR = CameraIntrinsics(160, 120, 146.25, 146.25, 79.5, 59.5)


def _panel_frame(stamp: int, world_T_camera: np.ndarray, panels=((40, 120, 30, 90, 1.51),), wall_m: float = 3.01):
    """A wall `wall_m` in front of the camera and fronto-parallel panels (col0, col1, row0, row1, depth); off the
    voxel grid by 1 cm (a surface exactly on voxel centres has tsdf 0 there and no zero crossing to extract)."""
    depth = np.full((120, 160), wall_m, np.float32)
    for c0, c1, r0, r1, d in panels:
        depth[r0:r1, c0:c1] = d
    return RgbdFrame(stamp, np.full((120, 160, 3), 128, np.uint8), depth, _CARVE_INTR, world_T_camera)


def _points_at_depth(tsdf: TsdfMap, world_T_camera: np.ndarray, depth_m: float, tol_m: float = 0.05) -> int:
    pts = tsdf.snapshot().points_world_m.astype(np.float64)
    z_cam = (pts - world_T_camera[:3, 3]) @ world_T_camera[:3, 2]
    return int(np.count_nonzero(np.abs(z_cam - depth_m) <= tol_m))


@pytest.mark.parametrize("carve", [True, False])
def test_a_panel_taken_away_is_carved_once_the_wall_behind_it_is_seen(carve):
    pose = look_at([0.0, 0.0, 1.4], [1.0, 0.0, 1.4])
    tsdf = TsdfMap(TsdfMapConfig(carve_max_weight=4.0 if carve else 0.0))
    for k in range(12):  # the panel at 1.5 m, seen 12 times (weight 12)
        tsdf.integrate(_panel_frame(k, pose))
    before = _points_at_depth(tsdf, pose, 1.51)
    assert before > 500
    for k in range(12, 20):  # taken away: the wall at 3 m is seen through where it stood
        frame = _panel_frame(k, pose, panels=())
        tsdf.integrate(frame)
        stats = tsdf.carve(frame)
        assert stats.voxels_carved >= 0 and stats.carve_ms >= 0
    after = _points_at_depth(tsdf, pose, 1.51)
    if carve:
        assert after < 0.02 * before and tsdf.carved_voxels > 0
    else:  # Open3D alone never touches the panel's blocks: far from the wall's truncation band
        assert after > 0.9 * before and tsdf.carved_voxels == 0
    assert _points_at_depth(tsdf, pose, 3.01) > 1000  # the wall itself is intact


def test_carving_leaves_what_is_out_of_view_or_hidden_behind_the_observed_surface():
    pose = look_at([0.0, 0.0, 1.4], [1.0, 0.0, 1.4])
    tsdf = TsdfMap(TsdfMapConfig())
    for k in range(6):
        tsdf.integrate(_panel_frame(k, pose))
    before = _points_at_depth(tsdf, pose, 1.51)
    # Turned 90 degrees away: the panel is out of the frustum.
    away = look_at([0.0, 0.0, 1.4], [0.0, 1.0, 1.4])
    for k in range(6, 12):
        frame = _panel_frame(k, away, panels=())
        tsdf.integrate(frame)
        tsdf.carve(frame)
    assert _points_at_depth(tsdf, pose, 1.51) >= 0.98 * before
    # Looking at it again, with a nearer panel in front covering it: it is hidden, not seen through.
    for k in range(12, 18):
        frame = _panel_frame(k, pose, panels=((30, 130, 20, 100, 1.01),))
        tsdf.integrate(frame)
        tsdf.carve(frame)
    assert _points_at_depth(tsdf, pose, 1.51) >= 0.9 * before
