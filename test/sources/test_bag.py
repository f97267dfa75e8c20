"""ROS 2 bag round trips with rosbags: raw/compressed/bgr8 colour, 16UC1/32FC1 depth, pose/odometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mllm3d_ros.core.types import CameraIntrinsics, InputError, RgbdFrame
from mllm3d_ros.sources.bag import BODY_T_OPTICAL, BagTopics, read_bag, typestore, write_bag
from mllm3d_ros.sources.dataset import pose_from_tum
from rosbags.rosbag2 import Reader, Writer

K = CameraIntrinsics(32, 24, 30.0, 31.0, 15.5, 11.5)


def _frames(count: int = 4) -> list[RgbdFrame]:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        # smooth colour so that jpeg stays close; depth on a mm grid so 16UC1 is exact
        yy, xx = np.mgrid[0:24, 0:32]
        color = np.stack([xx * 8, yy * 10, np.full_like(xx, 40 * i)], -1).astype(np.uint8)
        depth = rng.integers(400, 4000, (24, 32)).astype(np.float32) / 1000.0
        depth[:2, :2] = 0.0
        pose = pose_from_tum([0.1 * i, -0.2, 1.3, 0.1, -0.2, 0.3 * i, 0.9])
        frames.append(RgbdFrame(1_700_000_000_000_000_000 + i * 33_333_333, color, depth, K, pose))
    return frames


def _assert_same(got: list[RgbdFrame], want: list[RgbdFrame], *, color_atol: int = 0) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.stamp_ns == b.stamp_ns
        assert a.intrinsics == b.intrinsics
        assert a.color_rgb.dtype == np.uint8 and a.color_rgb.shape == b.color_rgb.shape
        np.testing.assert_allclose(a.color_rgb.astype(int), b.color_rgb.astype(int), atol=color_atol)
        assert a.depth_m.dtype == np.float32
        np.testing.assert_allclose(a.depth_m, b.depth_m, atol=1e-6)
        np.testing.assert_allclose(a.world_T_camera, b.world_T_camera, atol=1e-9)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip(tmp_path: Path, storage: str) -> None:
    frames = _frames()
    write_bag(tmp_path / "bag", frames, storage=storage)
    replay = read_bag(tmp_path / "bag")
    _assert_same(list(replay), frames)
    assert replay.num_frames == 4 and replay.num_unmatched == 0


def test_bgr8_and_32fc1(tmp_path: Path) -> None:
    frames = _frames()
    write_bag(tmp_path / "bag", frames, color_encoding="bgr8", depth_encoding="32FC1")
    _assert_same(list(read_bag(tmp_path / "bag")), frames)


def test_compressed_color(tmp_path: Path) -> None:
    frames = _frames()
    topics = BagTopics(color="/cam/image")
    write_bag(tmp_path / "png", frames, topics=topics, color_format="png")
    write_bag(tmp_path / "jpg", frames, topics=topics, color_format="jpeg")
    # the reader falls back to image_transport's <topic>/compressed
    _assert_same(list(read_bag(tmp_path / "png", topics=topics)), frames)
    _assert_same(list(read_bag(tmp_path / "jpg", topics=topics)), frames, color_atol=40)


def test_odometry_pose(tmp_path: Path) -> None:
    frames = _frames()
    write_bag(tmp_path / "bag", frames, pose_type="odometry")
    _assert_same(list(read_bag(tmp_path / "bag")), frames)


def test_body_frame_pose_converted(tmp_path: Path) -> None:
    frames = _frames(1)
    write_bag(tmp_path / "bag", frames)
    got = next(iter(read_bag(tmp_path / "bag", pose_is_optical=False)))
    np.testing.assert_allclose(got.world_T_camera, frames[0].world_T_camera @ BODY_T_OPTICAL, atol=1e-9)


def test_missing_topic_is_a_clear_error(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", _frames(1))
    with pytest.raises(InputError, match="topic /nope is not in the bag"):
        read_bag(tmp_path / "bag", topics=BagTopics(pose="/nope"))
    with pytest.raises(InputError, match="does not exist"):
        read_bag(tmp_path / "absent")


def test_intrinsics_override_without_camera_info(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", _frames(2))
    with pytest.raises(InputError, match="camera_info"):
        read_bag(tmp_path / "bag", topics=BagTopics(camera_info="/none"))
    got = list(read_bag(tmp_path / "bag", topics=BagTopics(camera_info="/none"), intrinsics=K))
    assert len(got) == 2


def test_unmatched_stamps_are_dropped(tmp_path: Path) -> None:
    """A pose stream 100 ms late (frames 33 ms apart) matches nothing at 20 ms tolerance, all at 200 ms."""
    frames = _frames(3)
    store = typestore()
    types = store.types
    path = tmp_path / "bag"
    write_bag(path, frames)
    late = tmp_path / "late"
    with Writer(late, version=8) as writer:
        with Reader(path) as reader:
            conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
            for conn, stamp, raw in reader.messages():
                if conn.topic == "/camera/pose":
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    ns = stamp + 100_000_000
                    msg.header.stamp = types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
                    raw = store.serialize_cdr(msg, conn.msgtype)
                writer.write(conns[conn.topic], stamp, raw)
    replay = read_bag(late)
    assert list(replay) == [] and replay.num_unmatched == 3
    assert len(list(read_bag(late, max_dt_s=0.2))) == 3


def test_write_refuses_existing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="already exists"):
        write_bag(tmp_path, _frames(1))
