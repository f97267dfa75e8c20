"""Dataset replay: 7-Scenes on real frames, SUN3D/3DMatch, TUM from tiny files, and bad folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.types import CameraIntrinsics, InputError, RgbdFrame
from mllm3d_ros.sources.dataset import (
    DatasetLayout, TUM_INTRINSICS, open_dataset, pose_from_tum, write_7scenes)


def _assert_rigid(pose: np.ndarray) -> None:
    assert pose.shape == (4, 4) and pose.dtype == np.float64
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-3)  # KinectFusion poses drift ~1e-4 from orthonormal
    np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
    assert np.linalg.det(pose[:3, :3]) > 0


def test_redkitchen_listing_and_intrinsics(redkitchen_dir: Path) -> None:
    ds = open_dataset(redkitchen_dir)
    assert ds.layout is DatasetLayout.SEVEN_SCENES
    assert len(ds) == 250
    assert ds.intrinsics == CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    # Every 4th frame of a 30 Hz recording: stamps 4/30 s apart.
    stamps = ds.stamps_ns
    assert stamps[0] == 0 and np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(np.diff(stamps), 4e9 / 30, atol=1)
    for record in ds.records:
        _assert_rigid(record.world_T_camera)


def test_redkitchen_frames_decode(redkitchen_dir: Path) -> None:
    ds = open_dataset(redkitchen_dir, stride=50)
    assert len(ds) == 5
    frames = list(ds)
    for frame in frames:
        assert isinstance(frame, RgbdFrame)
        assert frame.color_rgb.shape == (480, 640, 3) and frame.color_rgb.dtype == np.uint8
        assert frame.depth_m.shape == (480, 640) and frame.depth_m.dtype == np.float32
        valid = frame.depth_m > 0
        # A Kinect v1 in a kitchen: most pixels valid, some holes (0), depths in metres.
        assert 0.5 < valid.mean() < 1.0 and (~valid).any()
        assert 0.3 < np.median(frame.depth_m[valid]) < 5.0 and frame.depth_m.max() < 10.0
        _assert_rigid(frame.world_T_camera)
    first_pose = np.loadtxt(redkitchen_dir / "frame-000000.pose.txt")
    # The kitchen has gravity-direction.txt: poses come rotated into a z-up world.
    np.testing.assert_allclose(frames[0].world_T_camera, ds.map_T_world @ first_pose, atol=1e-12)
    assert abs(ds.map_T_world[2, 2]) < 0.95
    raw = cv2.imread(str(redkitchen_dir / "frame-000000.depth.png"), cv2.IMREAD_UNCHANGED)
    expected = np.where(raw == 65535, 0, raw).astype(np.float32) / 1000.0
    np.testing.assert_array_equal(frames[0].depth_m, expected)


def test_redkitchen_max_frames_and_stride(redkitchen_dir: Path) -> None:
    ds = open_dataset(redkitchen_dir, stride=3, max_frames=7)
    assert len(ds) == 7
    np.testing.assert_allclose(np.diff(ds.stamps_ns), 12e9 / 30, atol=1)


def test_studyroom_sequence_folder_and_parent_intrinsics(studyroom_dir: Path) -> None:
    # camera-intrinsics.txt sits beside seq-01/; opening either folder finds it.
    for path in (studyroom_dir, studyroom_dir.parent):
        ds = open_dataset(path)
        assert len(ds) == 5
        assert ds.intrinsics.fx == pytest.approx(570.342205) and ds.intrinsics.cx == 320.0
        # Stamps follow the frame numbers (000000, 000001, 000002, 000116, 000422) at 30 Hz.
        np.testing.assert_array_equal(ds.stamps_ns, np.round(np.array([0, 1, 2, 116, 422]) * 1e9 / 30))
    frame = ds[4]
    assert frame.depth_m.dtype == np.float32 and (frame.depth_m > 0).mean() > 0.5
    _assert_rigid(frame.world_T_camera)


def _frame(stamp_ns: int, seed: int) -> RgbdFrame:
    rng = np.random.default_rng(seed)
    color = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    depth = (rng.integers(300, 5000, (12, 16)) / 1000.0).astype(np.float32)
    depth[0, :3] = 0.0
    pose = pose_from_tum([0.1 * seed, 0.2, 1.0, 0.0, 0.0, np.sin(0.1 * seed), np.cos(0.1 * seed)])
    return RgbdFrame(stamp_ns, color, depth, CameraIntrinsics(16, 12, 20.0, 21.0, 7.5, 5.5), pose)


def test_write_7scenes_round_trip(tmp_path: Path) -> None:
    frames = [_frame(i, i) for i in range(3)]
    write_7scenes(frames, tmp_path / "scene")
    ds = open_dataset(tmp_path / "scene")
    assert ds.intrinsics == frames[0].intrinsics
    for got, want in zip(ds, frames):
        np.testing.assert_array_equal(got.color_rgb, want.color_rgb)
        np.testing.assert_allclose(got.depth_m, want.depth_m, atol=1e-6)
        np.testing.assert_allclose(got.world_T_camera, want.world_T_camera, atol=1e-12)
    np.testing.assert_array_equal(ds.stamps_ns, [0, 33333333, 66666667])


def test_7scenes_seq_subfolder_and_ambiguity(tmp_path: Path) -> None:
    write_7scenes([_frame(0, 1)], tmp_path / "scene" / "seq-01")
    assert len(open_dataset(tmp_path / "scene")) == 1
    write_7scenes([_frame(0, 2), _frame(0, 3)], tmp_path / "scene" / "seq-02")
    with pytest.raises(InputError, match="several sequences"):
        open_dataset(tmp_path / "scene")
    assert len(open_dataset(tmp_path / "scene", sequence="seq-02")) == 2


def test_7scenes_invalid_depth_65535_is_zero(tmp_path: Path) -> None:
    write_7scenes([_frame(0, 1)], tmp_path)
    raw = cv2.imread(str(tmp_path / "frame-000000.depth.png"), cv2.IMREAD_UNCHANGED)
    raw[5, 5] = 65535
    cv2.imwrite(str(tmp_path / "frame-000000.depth.png"), raw)
    depth = open_dataset(tmp_path)[0].depth_m
    assert depth[5, 5] == 0.0 and depth[0, 0] == 0.0 and depth[6, 6] > 0


@pytest.mark.parametrize(("remove", "message"), [
    ("frame-000001.pose.txt", "frame-000001 has no pose"),
    ("frame-000001.depth.png", "frame-000001 has no depth"),
    ("frame-000001.color.png", "frame-000001 has no colour"),
    ("camera-intrinsics.txt", "missing camera-intrinsics.txt"),
])
def test_7scenes_missing_files(tmp_path: Path, remove: str, message: str) -> None:
    write_7scenes([_frame(0, 1), _frame(0, 2)], tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(InputError, match=message):
        open_dataset(tmp_path)


def test_7scenes_missing_intrinsics_override(tmp_path: Path) -> None:
    write_7scenes([_frame(0, 1)], tmp_path)
    (tmp_path / "camera-intrinsics.txt").unlink()
    k = CameraIntrinsics(16, 12, 30.0, 30.0, 8.0, 6.0)
    assert open_dataset(tmp_path, intrinsics=k).intrinsics == k


def test_7scenes_bad_pose_rejected(tmp_path: Path) -> None:
    write_7scenes([_frame(0, 1)], tmp_path)
    pose = np.eye(4)
    pose[0, 0] = 2.0
    np.savetxt(tmp_path / "frame-000000.pose.txt", pose)
    with pytest.raises(InputError, match="not orthonormal"):
        open_dataset(tmp_path)


def test_bad_paths_and_options(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(InputError, match="unknown dataset layout"):
        open_dataset(tmp_path)
    with pytest.raises(ConfigError, match="stride"):
        open_dataset(tmp_path, stride=0)
    with pytest.raises(ConfigError, match="max_frames"):
        open_dataset(tmp_path, max_frames=0)


# --- TUM RGB-D -------------------------------------------------------------------------------

def _write_tum(root: Path) -> None:
    """Three colour frames at ~30 Hz, depth 3-4 ms off, ground truth at 100 Hz; the 3rd lacks depth."""
    root.mkdir(parents=True)
    (root / "rgb").mkdir()
    (root / "depth").mkdir()
    rgb_stamps = ["1305031102.175304", "1305031102.211214", "1305031102.275000"]
    depth_stamps = ["1305031102.160407", "1305031102.226738", "1305031102.300000"]
    for i, stamp in enumerate(rgb_stamps):
        cv2.imwrite(str(root / "rgb" / f"{stamp}.png"), np.full((480, 640, 3), (10 * i, 20, 30), np.uint8))
    for i, stamp in enumerate(depth_stamps):
        depth = np.full((480, 640), 5000 * (i + 1), np.uint16)  # 1 m, 2 m, 3 m
        depth[0, 0] = 0
        cv2.imwrite(str(root / "depth" / f"{stamp}.png"), depth)
    header = "# color images\n# file: 'x.bag'\n# timestamp filename\n"
    (root / "rgb.txt").write_text(header + "".join(f"{s} rgb/{s}.png\n" for s in rgb_stamps))
    (root / "depth.txt").write_text(header + "".join(f"{s} depth/{s}.png\n" for s in depth_stamps))
    gt = ["# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n"]
    for k in range(15):
        gt.append(f"1305031102.{16 + k:02d} {0.1 * k:.4f} 0.0 1.5 0.0 0.0 0.0 1.0\n")
    (root / "groundtruth.txt").write_text("".join(gt))


def test_tum_association_and_values(tmp_path: Path) -> None:
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    _write_tum(root)
    ds = open_dataset(root)
    assert ds.layout is DatasetLayout.TUM
    assert ds.intrinsics == TUM_INTRINSICS["freiburg1"]
    # 3rd colour frame: nearest depth is 25 ms away, beyond the 20 ms tolerance.
    assert len(ds) == 2 and ds.num_unmatched == 1
    np.testing.assert_array_equal(ds.stamps_ns, [1305031102175304000, 1305031102211214000])
    frames = list(ds)
    assert frames[0].depth_m[1, 1] == pytest.approx(1.0) and frames[0].depth_m[0, 0] == 0.0
    assert frames[1].depth_m[1, 1] == pytest.approx(2.0)
    np.testing.assert_array_equal(frames[1].color_rgb[0, 0], [30, 20, 10])  # written BGR -> read RGB
    # Nearest ground truth to .175304 is .18 (k=2) and to .211214 is .21 (k=5).
    np.testing.assert_allclose(frames[0].world_T_camera[:3, 3], [0.2, 0.0, 1.5])
    np.testing.assert_allclose(frames[1].world_T_camera[:3, 3], [0.5, 0.0, 1.5])
    np.testing.assert_allclose(frames[0].world_T_camera[:3, :3], np.eye(3))


def test_tum_tolerance_and_intrinsics(tmp_path: Path) -> None:
    root = tmp_path / "rgbd_dataset_freiburg3_office"
    _write_tum(root)
    assert open_dataset(root).intrinsics == TUM_INTRINSICS["freiburg3"]
    assert len(open_dataset(root, tum_max_dt_s=0.1)) == 3
    other = tmp_path / "my_recording"
    _write_tum(other)
    with pytest.raises(InputError, match="freiburg1/2/3"):
        open_dataset(other)
    k = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
    assert open_dataset(other, intrinsics=k).intrinsics == k


def test_tum_missing_groundtruth(tmp_path: Path) -> None:
    root = tmp_path / "freiburg2_desk"
    _write_tum(root)
    (root / "groundtruth.txt").unlink()
    with pytest.raises(InputError, match="groundtruth.txt"):
        open_dataset(root)


def test_pose_from_tum_rotation() -> None:
    # 90 degrees about z: x axis -> y axis.
    pose = pose_from_tum([1, 2, 3, 0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    np.testing.assert_allclose(pose[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], [1, 2, 3])


def test_gravity_file_rotates_the_world_to_z_up(tmp_path):
    from mllm3d_ros.core.geometry import gravity_alignment
    g = np.array([-0.0089, 0.9044, 0.4265])  # the real kitchen's: down is mostly +y
    map_T_world = gravity_alignment(g)
    np.testing.assert_allclose(map_T_world[:3, :3] @ (-g / np.linalg.norm(g)), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(map_T_world[:3, :3] @ map_T_world[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(gravity_alignment([0, 0, -9.81]), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(gravity_alignment([0, 0, 1.0])[:3, :3] @ [0, 0, -1.0], [0, 0, 1], atol=1e-12)
    with pytest.raises(InputError, match="gravity"):
        gravity_alignment([0, 0, 0])


def test_dataset_with_gravity_gives_z_up_poses(studyroom_dir, tmp_path):
    import shutil
    from mllm3d_ros.sources.dataset import GRAVITY_FILE, open_dataset
    for f in studyroom_dir.parent.glob("camera-intrinsics.txt"):
        shutil.copy(f, tmp_path)
    for f in studyroom_dir.glob("frame-00000[01].*"):
        shutil.copy(f, tmp_path)
    plain = open_dataset(tmp_path)
    np.savetxt(tmp_path / GRAVITY_FILE, [0.0, 1.0, 0.0])  # down along the first camera's +y
    aligned = open_dataset(tmp_path)
    np.testing.assert_allclose(aligned.map_T_world @ plain.records[0].world_T_camera,
                               aligned.records[0].world_T_camera, atol=1e-12)
    # The first camera's optical y (down in the image) now points down the world's z.
    assert aligned.records[0].world_T_camera[:3, 1] @ plain.records[0].world_T_camera[:3, 1] < 1.0
    np.testing.assert_allclose(aligned.map_T_world[:3, :3] @ [0, -1.0, 0], [0, 0, 1], atol=1e-12)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_or_garbage_images_raise_input_error(tmp_path, suffix):
    import cv2

    from mllm3d_ros.sources.dataset import read_color, read_depth
    path = tmp_path / f"frame.{suffix}"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="cannot read colour image"):
        read_color(path)
    garbage = tmp_path / "depth.png"
    garbage.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="cannot read depth image"):
        read_depth(garbage, 1000.0)
    with pytest.raises(InputError, match="cannot read depth image"):
        read_depth(tmp_path / "missing.png", 1000.0)
