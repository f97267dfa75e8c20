"""Tests of frame validation, the stateful FrameGate and the raw buffer decoders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.mapping.frame_checks import (FrameGate, FrameGateConfig, FrameRejected, RejectReason, decode_color,
                                          decode_compressed_color, decode_depth, intrinsics_from_k, sanitize_depth,
                                          validate_frame)
from mllm3d_ros.core.types import CameraIntrinsics, RgbdFrame

K = CameraIntrinsics(8, 6, 10.0, 10.0, 3.5, 2.5)


def _frame(stamp_ns=1, *, color=None, depth=None, intrinsics=K, pose=None) -> RgbdFrame:
    color = np.full((6, 8, 3), 50, np.uint8) if color is None else color
    depth = np.full((6, 8), 1.5, np.float32) if depth is None else depth
    return RgbdFrame(stamp_ns, color, depth, intrinsics, np.eye(4) if pose is None else pose)


def _rejects(reason: RejectReason, frame: RgbdFrame) -> FrameRejected:
    with pytest.raises(FrameRejected) as info:
        validate_frame(frame)
    assert info.value.reason is reason
    return info.value


def test_decode_color_all_encodings_with_row_padding():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = lambda img, ch: np.concatenate([img.reshape(2, 3 * ch), np.full((2, 5), 255, np.uint8)], 1).tobytes()
    np.testing.assert_array_equal(decode_color(padded(rgb, 3), 3, 2, 14, "rgb8"), rgb)
    np.testing.assert_array_equal(decode_color(padded(rgb[:, :, ::-1], 3), 3, 2, 14, "bgr8"), rgb)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], 2)
    np.testing.assert_array_equal(decode_color(padded(rgba, 4), 3, 2, 17, "rgba8"), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((2, 3, 1), 7, np.uint8)], 2)
    np.testing.assert_array_equal(decode_color(padded(bgra, 4), 3, 2, 17, "bgra8"), rgb)
    mono = rgb[:, :, 0]
    out = decode_color(padded(mono, 1), 3, 2, 8, "mono8")
    assert out.shape == (2, 3, 3) and (out == mono[:, :, None]).all()


def test_decode_color_rejects_unknown_encoding_and_short_buffers():
    with pytest.raises(FrameRejected, match="yuv422") as info:
        decode_color(bytes(12), 2, 2, 6, "yuv422")
    assert info.value.reason is RejectReason.BAD_ENCODING and "rgb8" in str(info.value)
    with pytest.raises(FrameRejected, match="needs 12") as info:
        decode_color(bytes(11), 2, 2, 6, "rgb8")
    assert info.value.reason is RejectReason.BAD_IMAGE
    with pytest.raises(FrameRejected, match="step 5"):
        decode_color(bytes(12), 2, 2, 5, "rgb8")


def test_decode_depth_16uc1_mm_and_32fc1_m_with_endianness_and_padding():
    mm = np.array([[0, 1000, 2500], [65000, 1, 300]], dtype="<u2")
    data = np.concatenate([mm.view(np.uint8).reshape(2, 6), np.zeros((2, 2), np.uint8)], 1).tobytes()
    np.testing.assert_allclose(decode_depth(data, 3, 2, 8, "16UC1"), mm / 1000.0, rtol=1e-6)
    big = mm.astype(">u2").tobytes()
    np.testing.assert_allclose(decode_depth(big, 3, 2, 6, "16UC1", big_endian=True), mm / 1000.0, rtol=1e-6)
    metres = np.array([[1.0, np.nan, -2.0], [np.inf, 0.5, 3.0]], dtype="<f4")
    out = decode_depth(metres.tobytes(), 3, 2, 12, "32FC1")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0], [0.0, 0.5, 3.0]])
    with pytest.raises(FrameRejected, match="16UC1") as info:
        decode_depth(bytes(12), 3, 2, 6, "mono16")
    assert info.value.reason is RejectReason.BAD_ENCODING


def test_decode_compressed_color_roundtrip_and_garbage():
    import cv2

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(decode_compressed_color(png.tobytes()), rgb)
    with pytest.raises(FrameRejected) as info:
        decode_compressed_color(b"not an image")
    assert info.value.reason is RejectReason.BAD_ENCODING


def test_intrinsics_from_k():
    intr = intrinsics_from_k(640, 480, [500, 0, 320, 0, 510, 240, 0, 0, 1])
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (500, 510, 320, 240)
    for k, match in [([0.0] * 9, "all zeros"), ([1, 2, 3], "9 values"), ([0, 0, 320, 0, 0, 240, 0, 0, 1], "focal")]:
        with pytest.raises(FrameRejected, match=match) as info:
            intrinsics_from_k(640, 480, k)
        assert info.value.reason is RejectReason.BAD_INTRINSICS


def test_sanitize_depth_policy():
    depth = np.array([[1.0, np.nan], [-1.0, np.inf]], np.float32)
    np.testing.assert_array_equal(sanitize_depth(depth), [[1.0, 0.0], [0.0, 0.0]])
    assert depth[0, 1] != depth[0, 1]  # the input is not modified


def test_validate_frame_accepts_and_sanitises():
    depth = np.full((6, 8), 1.5, np.float32)
    depth[0, 0] = np.nan
    out = validate_frame(_frame(depth=depth))
    assert out.depth_m[0, 0] == 0.0 and out.depth_m[1, 1] == 1.5
    good = _frame()
    assert validate_frame(good) is good


def test_validate_frame_rejects_each_bad_input():
    _rejects(RejectReason.BAD_IMAGE, _frame(color=np.zeros((6, 8, 3), np.float32)))
    _rejects(RejectReason.BAD_IMAGE, _frame(color=np.zeros((6, 8), np.uint8)))
    _rejects(RejectReason.BAD_IMAGE, _frame(depth=np.zeros((6, 8), np.uint16)))
    _rejects(RejectReason.SIZE_MISMATCH, _frame(color=np.zeros((3, 4, 3), np.uint8)))
    _rejects(RejectReason.SIZE_MISMATCH, _frame(intrinsics=CameraIntrinsics(16, 12, 10, 10, 8, 6)))
    _rejects(RejectReason.BAD_INTRINSICS, _frame(intrinsics=None))
    for depth in (np.zeros((6, 8), np.float32), np.full((6, 8), np.nan, np.float32),
                  np.full((6, 8), -1.0, np.float32), np.full((6, 8), np.inf, np.float32)):
        err = _rejects(RejectReason.NO_VALID_DEPTH, _frame(depth=depth))
        assert "no valid pixel" in str(err)
    nan_pose = np.eye(4)
    nan_pose[0, 3] = np.nan
    _rejects(RejectReason.BAD_POSE, _frame(pose=nan_pose))
    skew = np.eye(4)
    skew[0, 1] = 0.3
    assert "orthonormal" in str(_rejects(RejectReason.BAD_POSE, _frame(pose=skew)))
    _rejects(RejectReason.BAD_POSE, _frame(pose=np.diag([1.0, 1.0, -1.0, 1.0])))
    _rejects(RejectReason.BAD_POSE, _frame(pose=np.eye(3)))


def _moved(x_m: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    pose = np.eye(4)
    pose[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    pose[0, 3] = x_m
    return pose


def test_gate_stamps_order_and_skew():
    gate = FrameGate(FrameGateConfig(max_stamp_skew_ns=10_000_000))
    gate.check(_frame(100))
    for stamp in (100, 50):
        with pytest.raises(FrameRejected) as info:
            gate.check(_frame(stamp))
        assert info.value.reason is RejectReason.STAMP_OUT_OF_ORDER
    with pytest.raises(FrameRejected, match="stamps") as info:
        gate.check(_frame(200), color_stamp_ns=200, depth_stamp_ns=200, pose_stamp_ns=200 + 20_000_000)
    assert info.value.reason is RejectReason.STAMPS_APART
    gate.check(_frame(300), color_stamp_ns=300, depth_stamp_ns=305, pose_stamp_ns=300 + 9_000_000)
    counts = gate.rejections
    assert counts[RejectReason.STAMP_OUT_OF_ORDER] == 2 and counts[RejectReason.STAMPS_APART] == 1
    assert gate.accepted == 2 and set(counts) == set(RejectReason)


def _jump_reason(gate: FrameGate, frame: RgbdFrame) -> RejectReason:
    with pytest.raises(FrameRejected) as info:
        gate.check(frame)
    return info.value.reason


def test_gate_pose_jump_translation_rotation():
    gate = FrameGate(FrameGateConfig(max_jump_translation_m=1.0, max_jump_rotation_deg=60.0, jump_reset_frames=3))
    gate.check(_frame(1))
    gate.check(_frame(2, pose=_moved(x_m=0.9)))
    with pytest.raises(FrameRejected, match="pose moved 2.10 m") as info:
        gate.check(_frame(3, pose=_moved(x_m=3.0)))
    assert info.value.reason is RejectReason.POSE_JUMP
    with pytest.raises(FrameRejected, match="deg") as info:
        gate.check(_frame(4, pose=_moved(x_m=0.9, yaw_deg=70.0)))
    assert info.value.reason is RejectReason.POSE_JUMP
    gate.check(_frame(5, pose=_moved(x_m=1.0)))  # back near the trajectory: accepted
    assert gate.rejections[RejectReason.POSE_JUMP] == 2


def test_gate_inconsistent_jumps_are_never_taken_as_a_relocalisation():
    # A former bug: five mutually inconsistent jumps in a row used to accept the fifth.
    gate = FrameGate(FrameGateConfig(max_jump_translation_m=1.0, jump_reset_frames=5))
    gate.check(_frame(1))
    wild = [_moved(x_m=5.0), _moved(x_m=-5.0), _moved(x_m=9.0), _moved(x_m=3.0, yaw_deg=120.0), _moved(x_m=-8.0),
            _moved(x_m=6.5), _moved(x_m=12.0)]
    for k, pose in enumerate(wild):
        assert _jump_reason(gate, _frame(10 + k, pose=pose)) is RejectReason.POSE_JUMP
    assert gate.rejections[RejectReason.POSE_JUMP] == len(wild) and gate.accepted == 1
    gate.check(_frame(50, pose=_moved(x_m=0.5)))  # the old trajectory still holds


def test_gate_consistent_jumps_relocalise_and_reanchor():
    gate = FrameGate(FrameGateConfig(max_jump_translation_m=1.0, jump_reset_frames=3))
    gate.check(_frame(1))
    assert _jump_reason(gate, _frame(2, pose=_moved(x_m=-7.0))) is RejectReason.POSE_JUMP  # an outlier first
    # a coherent new trajectory near x = 5 m: rejected until three of them agree, then accepted
    assert _jump_reason(gate, _frame(3, pose=_moved(x_m=5.0))) is RejectReason.POSE_JUMP
    assert _jump_reason(gate, _frame(4, pose=_moved(x_m=5.2))) is RejectReason.POSE_JUMP
    out = gate.check(_frame(5, pose=_moved(x_m=5.4, yaw_deg=10.0)))
    assert out.world_T_camera[0, 3] == 5.4
    gate.check(_frame(6, pose=_moved(x_m=5.6)))  # re-anchored: measured from the new trajectory
    assert _jump_reason(gate, _frame(7, pose=_moved(x_m=0.0))) is RejectReason.POSE_JUMP
    assert gate.rejections[RejectReason.POSE_JUMP] == 4


S = 1_000_000_000
HOUR = 3600 * S


def test_gate_one_future_stamp_does_not_freeze_the_gate():
    # A former bug: a frame stamped an hour ahead was accepted and every real frame after it refused.
    gate = FrameGate(FrameGateConfig(max_stamp_jump_ns=2 * S, jump_reset_frames=3))
    gate.check(_frame(100 * S))
    with pytest.raises(FrameRejected, match="limit 2 s") as info:
        gate.check(_frame(100 * S + HOUR))
    assert info.value.reason is RejectReason.STAMP_JUMP
    for k in range(1, 20):
        gate.check(_frame(100 * S + k * S // 10))
    assert gate.accepted == 20 and gate.rejections[RejectReason.STAMP_JUMP] == 1


def test_gate_poisoned_first_frame_and_pauses_recover_on_a_coherent_timeline():
    cfg = FrameGateConfig(max_stamp_jump_ns=2 * S, jump_reset_frames=3)
    gate = FrameGate(cfg)  # sim time: no clock to check against
    gate.check(_frame(100 * S + HOUR))  # nothing to compare the very first frame with
    real = [100 * S + k * S // 10 for k in range(6)]
    assert [_jump_reason(gate, _frame(t)) for t in real[:2]] == [RejectReason.STAMP_JUMP] * 2
    for t in real[2:]:  # the third consistent frame re-anchors; later ones follow normally
        gate.check(_frame(t))
    # a pause of a minute, then the stream resumes: a coherent new timeline again
    resumed = [real[-1] + 60 * S + k * S // 10 for k in range(4)]
    assert [_jump_reason(gate, _frame(t)) for t in resumed[:2]] == [RejectReason.STAMP_JUMP] * 2
    gate.check(_frame(resumed[2]))
    # incoherent far stamps (each far from the previous) never re-anchor
    for t in (real[-1] + HOUR, real[-1] + 3 * HOUR, real[-1] + 2 * HOUR, real[-1] + 5 * HOUR):
        assert _jump_reason(gate, _frame(t)) is RejectReason.STAMP_JUMP
    gate.check(_frame(resumed[3]))


def test_gate_with_a_clock_rejects_stamps_far_from_it_even_first():
    now = [500 * S]
    gate = FrameGate(FrameGateConfig(max_clock_offset_ns=3 * S), now_ns=lambda: now[0])
    with pytest.raises(FrameRejected, match="from the clock") as info:
        gate.check(_frame(500 * S + HOUR))
    assert info.value.reason is RejectReason.STAMP_OFF_CLOCK
    assert _jump_reason(gate, _frame(500 * S - HOUR)) is RejectReason.STAMP_OFF_CLOCK
    gate.check(_frame(500 * S - S))  # a second of sensor latency is fine
    now[0] += 30 * S
    assert _jump_reason(gate, _frame(now[0] + 4 * S)) is RejectReason.STAMP_OFF_CLOCK
    assert gate.rejections[RejectReason.STAMP_OFF_CLOCK] == 3 and gate.accepted == 1


def test_gate_counts_per_frame_failures_and_reset():
    gate = FrameGate()
    with pytest.raises(FrameRejected):
        gate.check(_frame(1, depth=np.zeros((6, 8), np.float32)))
    assert gate.rejections[RejectReason.NO_VALID_DEPTH] == 1
    gate.check(_frame(5))
    gate.reset()
    gate.check(_frame(2, pose=_moved(x_m=10.0)))  # after reset neither stamp order nor jumps apply
    assert gate.accepted == 2


@pytest.mark.parametrize("field, value", [("max_stamp_skew_ns", -1), ("max_jump_translation_m", 0.0),
                                          ("max_jump_rotation_deg", 200.0), ("jump_reset_frames", 0),
                                          ("max_stamp_jump_ns", 0), ("max_clock_offset_ns", 0)])
def test_gate_config_validation(field, value):
    with pytest.raises(ConfigError, match=field):
        FrameGateConfig(**{field: value})
