"""Tests of the ingestion worker: bounded queue policy, rejection accounting, fusion in the worker."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from rgbd_scene import orbit_poses, room_frame

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.mapping.frame_checks import FrameRejected, RejectReason
from mllm3d_ros.core.mapping.ingest import IngestConfig, IngestWorker
from mllm3d_ros.core.mapping.keyframes import KeyframeStore
from mllm3d_ros.core.mapping.tsdf_map import TsdfMap, TsdfMapConfig
from mllm3d_ros.core.types import RgbdFrame


def _frames(n):
    return [room_frame((i + 1) * 33_000_000, pose) for i, pose in enumerate(orbit_poses(n, yaw_step_rad=0.3))]


def test_queue_full_drops_the_oldest_and_counts():
    worker = IngestWorker(TsdfMap(), config=IngestConfig(queue_size=2))  # not started: nothing consumes
    frames = _frames(5)
    assert [worker.submit(f) for f in frames] == [True, True, False, False, False]
    stats = worker.stats
    assert stats.received == 5 and stats.dropped_queue_full == 3 and stats.queued == 2
    worker.start()
    assert worker.wait_idle(30.0)
    assert worker.map.snapshot().stamp_ns == frames[-1].stamp_ns  # newest wins: the last two were fused
    assert worker.stats.fused == 2
    worker.stop()


def test_worker_fuses_offers_keyframes_and_stops_cleanly():
    worker = IngestWorker(TsdfMap(TsdfMapConfig(voxel_size_m=0.05)), KeyframeStore(), config=IngestConfig(queue_size=64))
    worker.start()
    assert worker.running
    for frame in _frames(12):
        worker.submit(frame)
    assert worker.wait_idle(30.0)
    stats = worker.stats
    assert stats.fused == 12 and stats.dropped_queue_full == 0 and stats.rejected_total == 0
    assert stats.keyframes_added >= 2 and len(worker.keyframes) == stats.keyframes_added
    assert stats.last_update_ms > 0 and worker.map.frames_integrated == 12
    worker.stop()
    assert not worker.running
    worker.stop()  # idempotent


def test_each_bad_frame_rejected_with_its_reason_and_map_unchanged():
    rejected: list[tuple[int, RejectReason]] = []
    worker = IngestWorker(TsdfMap(), on_reject=lambda frame, exc: rejected.append((frame.stamp_ns, exc.reason)))
    good = _frames(2)
    assert worker.process(good[0])
    before = worker.map.snapshot()
    base = good[1]

    def variant(stamp, **kw):
        fields = dict(color_rgb=base.color_rgb, depth_m=base.depth_m, intrinsics=base.intrinsics,
                      world_T_camera=base.world_T_camera)
        fields.update(kw)
        return RgbdFrame(stamp, **fields)

    skewed = base.world_T_camera.copy()
    skewed[0, 1] += 0.2
    jumped = base.world_T_camera.copy()
    jumped[:3, 3] += [5.0, 0.0, 0.0]
    cases = [
        (variant(good[0].stamp_ns), RejectReason.STAMP_OUT_OF_ORDER),
        (variant(base.stamp_ns, color_rgb=base.color_rgb[:60]), RejectReason.SIZE_MISMATCH),
        (variant(base.stamp_ns, depth_m=np.full_like(base.depth_m, np.nan)), RejectReason.NO_VALID_DEPTH),
        (variant(base.stamp_ns, world_T_camera=skewed), RejectReason.BAD_POSE),
        (variant(base.stamp_ns, world_T_camera=jumped), RejectReason.POSE_JUMP),
        (variant(base.stamp_ns, intrinsics=None), RejectReason.BAD_INTRINSICS),
    ]
    for frame, _ in cases:
        assert not worker.process(frame)
    assert [r for _, r in rejected] == [reason for _, reason in cases]
    after = worker.map.snapshot()
    np.testing.assert_array_equal(after.points_world_m, before.points_world_m)
    assert worker.map.frames_integrated == 1
    stats = worker.stats
    assert stats.rejected_total == len(cases) and stats.rejected[RejectReason.POSE_JUMP] == 1
    assert not worker.process(base, pose_stamp_ns=base.stamp_ns + 10**9)  # pose far from the images
    assert worker.stats.rejected[RejectReason.STAMPS_APART] == 1
    assert worker.process(base)  # a good frame still goes through


def test_a_failing_reject_callback_does_not_kill_the_worker():
    def boom(frame, exc: FrameRejected):
        raise RuntimeError("logging failed")

    worker = IngestWorker(TsdfMap(), on_reject=boom)
    worker.start()
    bad = _frames(1)[0]
    worker.submit(RgbdFrame(1, bad.color_rgb, np.zeros_like(bad.depth_m), bad.intrinsics, bad.world_T_camera))
    worker.submit(_frames(1)[0])
    assert worker.wait_idle(30.0)
    assert worker.stats.fused == 1 and worker.stats.rejected[RejectReason.NO_VALID_DEPTH] == 1
    worker.stop()


def test_concurrent_submitters_never_exceed_the_bound():
    worker = IngestWorker(TsdfMap(), config=IngestConfig(queue_size=3))
    frames = _frames(4)
    threads = [threading.Thread(target=lambda: [worker.submit(f) for f in frames]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = worker.stats
    assert stats.received == 16 and stats.queued == 3 and stats.dropped_queue_full == 13


def test_config_validation():
    with pytest.raises(ConfigError, match="queue_size"):
        IngestConfig(queue_size=0)
