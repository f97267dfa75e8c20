"""Tests of the Mapper facade: reset (with listeners), save and load of the map and keyframes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mllm3d_ros.core.mapping.frame_checks import RejectReason
from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
from mllm3d_ros.core.mapping.mapper import MAP_FORMAT_VERSION, Mapper, read_saved_keyframes
from mllm3d_ros.core.mapping.tsdf_map import MapFileError, TsdfMapConfig
from rgbd_scene import orbit_poses, room_frame

MAP_CFG = TsdfMapConfig(voxel_size_m=0.1, block_budget=4000, depth_max_m=6.0)
KF_CFG = KeyframeConfig(min_translation_m=0.05, min_rotation_deg=5.0, min_novelty=0.0)


def _mapped(n: int = 6) -> Mapper:
    mapper = Mapper(MAP_CFG, KF_CFG)
    for k, pose in enumerate(orbit_poses(n, yaw_step_rad=0.4)):
        assert mapper.process(room_frame(1_000 + k * 100_000_000, pose))
    return mapper


def _state(mapper: Mapper):
    snap = mapper.snapshot()
    order = np.lexsort(snap.points_world_m.T)
    return snap.points_world_m[order], [(kf.keyframe_id, kf.stamp_ns, kf.world_T_camera.copy(), kf.color_rgb.copy(),
                                         kf.depth_m.copy()) for kf in mapper.keyframes()]


def _assert_same(a, b) -> None:
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    assert len(a[1]) == len(b[1])
    for x, y in zip(a[1], b[1]):
        assert x[:2] == y[:2]
        for u, v in zip(x[2:], y[2:]):
            np.testing.assert_array_equal(u, v)


def test_reset_empties_map_keyframes_and_gate_and_calls_listeners():
    mapper = _mapped()
    calls = []
    mapper.add_reset_listener(lambda: calls.append("objects"))
    mapper.add_reset_listener(lambda: 1 / 0)  # a broken listener does not stop the others
    mapper.add_reset_listener(lambda: calls.append("second"))
    assert len(mapper.snapshot().points_world_m) > 0 and len(mapper.keyframes()) >= 2
    generation = mapper.generation
    mapper.reset()
    assert len(mapper.snapshot().points_world_m) == 0 and mapper.keyframes() == ()
    assert calls == ["objects", "second"] and mapper.generation == generation + 1
    # the gate forgot the last stamp and pose: an earlier stamp turned 115 deg away is accepted
    assert mapper.process(room_frame(5, orbit_poses(1)[0]))


def test_save_then_load_restores_map_and_keyframes_exactly(tmp_path):
    mapper = _mapped()
    before = _state(mapper)
    saved = mapper.save(tmp_path / "map")
    assert sorted(p.name for p in saved.iterdir()) == ["keyframes.npz", "map.json", "tsdf.npz"]
    meta = json.loads((saved / "map.json").read_text())
    assert meta["version"] == MAP_FORMAT_VERSION and meta["written_by"].startswith("mllm3d_ros ")
    fresh = Mapper(MAP_CFG, KF_CFG)
    fresh.load(saved)
    _assert_same(_state(fresh), before)
    assert fresh.map.frames_integrated == mapper.map.frames_integrated
    # the loaded map keeps fusing, and new keyframe ids continue after the loaded ones
    next_pose = orbit_poses(8, yaw_step_rad=0.4)[7]
    assert fresh.process(room_frame(2_000_000_000, next_pose))
    ids = [kf.keyframe_id for kf in fresh.keyframes()]
    assert len(ids) == len(set(ids))


def test_saved_keyframes_are_read_back_without_a_mapper(tmp_path):
    mapper = _mapped()
    saved = mapper.save(tmp_path / "map")
    read = read_saved_keyframes(saved)
    assert len(read) == len(mapper.keyframes()) >= 2
    for a, b in zip(read, mapper.keyframes()):
        assert (a.keyframe_id, a.stamp_ns, a.intrinsics) == (b.keyframe_id, b.stamp_ns, b.intrinsics)
        np.testing.assert_array_equal(a.world_T_camera, b.world_T_camera)
        np.testing.assert_array_equal(a.color_rgb, b.color_rgb)
    (saved / "keyframes.npz").unlink()
    with pytest.raises(MapFileError, match="keyframes.npz is missing"):
        read_saved_keyframes(saved)


def test_reset_after_load_and_saving_over_an_existing_folder(tmp_path):
    mapper = _mapped()
    mapper.save(tmp_path / "map")
    mapper.reset()
    mapper.save(tmp_path / "map")  # replaced: now an empty map
    other = _mapped(3)
    other.load(tmp_path / "map")
    assert len(other.snapshot().points_world_m) == 0 and other.keyframes() == ()


def _corrupt(kind: str, folder):
    meta = json.loads((folder / "map.json").read_text())
    if kind == "missing_folder":
        return folder.parent / "nowhere", "map.json is missing"
    if kind == "bad_json":
        (folder / "map.json").write_text("{not json")
        return folder, "not valid JSON"
    if kind == "version":
        meta["version"] = 99
        (folder / "map.json").write_text(json.dumps(meta))
        return folder, "format version 99"
    if kind == "older_version":  # a map of an older build has no `written_by`
        meta["version"] = 0
        del meta["written_by"]
        (folder / "map.json").write_text(json.dumps(meta))
        return folder, r"map format version 0, written by an older mllm3d_ros; this build \(mllm3d_ros .+\) reads " \
                       r"format version 1 only"
    if kind in ("tsdf_flipped", "keyframes_flipped"):  # bytes flipped inside a member: only its CRC tells
        name = "tsdf.npz" if kind == "tsdf_flipped" else "keyframes.npz"
        _flip_member_bytes(folder / name)
        return folder, f"{name} is corrupt: the CRC of '.+' does not match its bytes"
    if kind == "tsdf_shape":  # a well-formed zip whose colour attribute has the wrong shape
        with np.load(folder / "tsdf.npz") as data:
            arrays = {k: data[k] for k in data.files}
        index = int(arrays["attr_name_color"][0])
        arrays[f"value_{index:03d}"] = arrays[f"value_{index:03d}"][..., :2].copy()
        np.savez(folder / "tsdf.npz", **arrays)
        return folder, r"attribute 'color' is \(\d+, 8, 8, 8, 2\) float32, expected \(\d+, 8, 8, 8, 3\)"
    if kind == "voxel_size":
        meta["voxel_size_m"] = 0.02
        (folder / "map.json").write_text(json.dumps(meta))
        return folder, "voxel_size_m=0.02"
    if kind == "tsdf_garbage":
        (folder / "tsdf.npz").write_bytes(b"garbage")
        return folder, "TSDF file"
    if kind == "keyframes_missing":
        (folder / "keyframes.npz").unlink()
        return folder, "keyframes.npz is missing"
    if kind == "keyframes_truncated":
        data = (folder / "keyframes.npz").read_bytes()
        (folder / "keyframes.npz").write_bytes(data[: len(data) // 2])
        return folder, "keyframes file .+ is not a readable .npz"
    raise AssertionError(kind)


def _flip_member_bytes(path) -> None:
    """Invert 64 bytes in the middle of the largest member's data, leaving the zip's structure intact."""
    import zipfile
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    middle = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", ["missing_folder", "bad_json", "version", "older_version", "voxel_size",
                                  "tsdf_garbage", "tsdf_flipped", "tsdf_shape", "keyframes_missing",
                                  "keyframes_truncated", "keyframes_flipped"])
def test_a_failed_load_names_the_problem_and_leaves_the_map_untouched(tmp_path, kind):
    _mapped().save(tmp_path / "map")
    path, message = _corrupt(kind, tmp_path / "map")
    target = _mapped(3)
    before = _state(target)
    with pytest.raises(MapFileError, match=message):
        target.load(path)
    _assert_same(_state(target), before)


def test_save_to_a_file_path_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MapFileError, match="not a folder"):
        _mapped(2).save(tmp_path / "file")


@pytest.mark.parametrize("scale, cause", [
    (1e-3, "depth looks like metres written as uint16, expected millimetres"),  # 1.5 m stored as 1.5 "mm"
    (1e3, "depth looks like millimetres given as metres"),
    (10.0, "every valid pixel is beyond depth_max_m"),
])
def test_a_frame_with_no_depth_in_range_is_rejected_with_its_likely_cause_not_fused(scale, cause):
    # A former bug: such frames fused nothing but were counted as fused and became keyframes.
    rejected = []
    mapper = Mapper(MAP_CFG, KF_CFG, on_reject=lambda _f, exc: rejected.append(str(exc)))
    for k, pose in enumerate(orbit_poses(4, yaw_step_rad=0.4)):
        frame = room_frame(1_000 + k * 100_000_000, pose)
        assert not mapper.process(dataclasses.replace(frame, depth_m=frame.depth_m * np.float32(scale)))
    stats = mapper.worker.stats
    assert stats.fused == 0 and stats.keyframes_added == 0 and mapper.keyframes() == ()
    assert stats.rejected[RejectReason.NO_DEPTH_IN_RANGE] == 4 and mapper.map.num_blocks == 0
    assert len(rejected) == 4 and cause in rejected[0] and f"[{MAP_CFG.depth_min_m:g}, {MAP_CFG.depth_max_m:g}] m" \
        in rejected[0], rejected[0]
    # The same frames in millimetres fuse.
    assert mapper.process(room_frame(2_000_000_000, orbit_poses(1)[0]))
