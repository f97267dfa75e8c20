"""Input checks for RGB-D frames and ROS-free decoders of raw image buffers.

Policy: NaN, inf and negative depth become invalid (0) pixels; a depth image with no valid pixel is
rejected. Everything else that is malformed (encodings, sizes, intrinsics, poses, stamps, pose
jumps) rejects the whole frame with a `FrameRejected` carrying a `RejectReason`, so the map never
sees it and the node can count and log it.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import param, validate_fields
from ..geometry import check_pose, rotation_angle_rad
from ..types import CameraIntrinsics, InputError, RgbdFrame

_LOG = logging.getLogger(__name__)

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
_COLOR_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class RejectReason(enum.Enum):
    """Why a frame was rejected; one counter per reason."""

    BAD_ENCODING = "bad_encoding"
    BAD_IMAGE = "bad_image"
    SIZE_MISMATCH = "size_mismatch"
    NO_VALID_DEPTH = "no_valid_depth"
    NO_DEPTH_IN_RANGE = "no_depth_in_range"
    BAD_INTRINSICS = "bad_intrinsics"
    BAD_POSE = "bad_pose"
    STAMP_OUT_OF_ORDER = "stamp_out_of_order"
    STAMPS_APART = "stamps_apart"
    POSE_JUMP = "pose_jump"
    STAMP_JUMP = "stamp_jump"
    STAMP_OFF_CLOCK = "stamp_off_clock"
    NO_TRANSFORM = "no_transform"


class FrameRejected(InputError):
    """A frame failed a check; `reason` says which."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


def _check_buffer(data: bytes, width: int, height: int, step: int, bytes_per_pixel: int, what: str) -> np.ndarray:
    if width <= 0 or height <= 0:
        raise FrameRejected(RejectReason.BAD_IMAGE, f"{what}: image size must be positive, got {width}x{height}")
    if step < width * bytes_per_pixel:
        raise FrameRejected(RejectReason.BAD_IMAGE,
                            f"{what}: step {step} < width {width} x {bytes_per_pixel} bytes per pixel")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * height:
        raise FrameRejected(RejectReason.BAD_IMAGE,
                            f"{what}: buffer has {buf.size} bytes, step {step} x height {height} needs {step * height}")
    # Row padding (`step` > packed row) is dropped here, the only place that knows about it.
    return buf[:step * height].reshape(height, step)[:, :width * bytes_per_pixel]


def decode_color(data: bytes, width: int, height: int, step: int, encoding: str) -> np.ndarray:
    """Raw colour buffer (sensor_msgs/Image fields) -> (H, W, 3) uint8 RGB."""
    if encoding not in _COLOR_CHANNELS:
        raise FrameRejected(RejectReason.BAD_ENCODING,
                            f"colour encoding {encoding!r} not supported; use one of {list(COLOR_ENCODINGS)}")
    channels = _COLOR_CHANNELS[encoding]
    rows = _check_buffer(data, width, height, step, channels, "colour")
    img = rows.reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(img, 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(img[:, :, 2::-1])
    return np.ascontiguousarray(img[:, :, :3])


def decode_compressed_color(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes (sensor_msgs/CompressedImage) -> (H, W, 3) uint8 RGB."""
    import cv2  # only the compressed path needs OpenCV

    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameRejected(RejectReason.BAD_ENCODING, "compressed colour image could not be decoded")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def decode_depth(data: bytes, width: int, height: int, step: int, encoding: str,
                 big_endian: bool = False) -> np.ndarray:
    """Raw depth buffer -> (H, W) float32 metres; 16UC1 is millimetres, 32FC1 metres; invalid -> 0."""
    if encoding == "16UC1":
        dtype, scale = np.dtype(">u2" if big_endian else "<u2"), 1e-3
    elif encoding == "32FC1":
        dtype, scale = np.dtype(">f4" if big_endian else "<f4"), 1.0
    else:
        raise FrameRejected(RejectReason.BAD_ENCODING,
                            f"depth encoding {encoding!r} not supported; use one of {list(DEPTH_ENCODINGS)}")
    rows = _check_buffer(data, width, height, step, dtype.itemsize, "depth")
    raw = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    depth_m = raw.astype(np.float32) * np.float32(scale)
    return sanitize_depth(depth_m)


def sanitize_depth(depth_m: np.ndarray) -> np.ndarray:
    """Return a float32 copy with NaN, inf and negative values set to 0 (invalid)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    bad = ~np.isfinite(depth) | (depth < 0)
    if not bad.any():
        return depth
    out = depth.copy()
    out[bad] = 0.0
    return out


def intrinsics_from_k(width: int, height: int, k: Sequence[float]) -> CameraIntrinsics:
    """Build intrinsics from a row-major 3x3 K (CameraInfo.k); missing or zero K is rejected."""
    vals = np.asarray(k, dtype=np.float64).ravel()
    if vals.size != 9:
        raise FrameRejected(RejectReason.BAD_INTRINSICS, f"K must have 9 values, got {vals.size}")
    if not np.any(vals):
        raise FrameRejected(RejectReason.BAD_INTRINSICS, "K is all zeros (camera not calibrated)")
    try:
        return CameraIntrinsics(int(width), int(height), float(vals[0]), float(vals[4]), float(vals[2]), float(vals[5]))
    except InputError as exc:
        raise FrameRejected(RejectReason.BAD_INTRINSICS, str(exc)) from exc


def validate_frame(frame: RgbdFrame) -> RgbdFrame:
    """Check one frame on its own (no history); return it with depth sanitised, or raise FrameRejected."""
    color, depth = frame.color_rgb, frame.depth_m
    if not isinstance(color, np.ndarray) or color.ndim != 3 or color.shape[2] != 3 or color.dtype != np.uint8:
        raise FrameRejected(RejectReason.BAD_IMAGE,
                            f"color_rgb must be (H, W, 3) uint8, got {getattr(color, 'shape', None)} "
                            f"{getattr(color, 'dtype', type(color).__name__)}")
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype.kind != "f":
        raise FrameRejected(RejectReason.BAD_IMAGE,
                            f"depth_m must be (H, W) float metres, got {getattr(depth, 'shape', None)} "
                            f"{getattr(depth, 'dtype', type(depth).__name__)}")
    if color.shape[:2] != depth.shape:
        raise FrameRejected(RejectReason.SIZE_MISMATCH,
                            f"colour is {color.shape[1]}x{color.shape[0]} but depth is {depth.shape[1]}x{depth.shape[0]}")
    intr = frame.intrinsics
    if not isinstance(intr, CameraIntrinsics):
        raise FrameRejected(RejectReason.BAD_INTRINSICS, "intrinsics missing")
    if (intr.height, intr.width) != depth.shape:
        raise FrameRejected(RejectReason.SIZE_MISMATCH,
                            f"intrinsics are for {intr.width}x{intr.height} but images are {depth.shape[1]}x{depth.shape[0]}")
    try:
        pose = check_pose(frame.world_T_camera)
    except InputError as exc:
        raise FrameRejected(RejectReason.BAD_POSE, str(exc)) from exc
    depth_m = sanitize_depth(depth)
    if not np.any(depth_m > 0):
        raise FrameRejected(RejectReason.NO_VALID_DEPTH, "depth image has no valid pixel (all 0, NaN, inf or negative)")
    if depth_m is depth and pose is frame.world_T_camera:
        return frame
    return RgbdFrame(frame.stamp_ns, color, depth_m, intr, pose, frame.frame_id)


def check_depth_in_range(depth_m: np.ndarray, depth_min_m: float, depth_max_m: float) -> None:
    """Raise FrameRejected(NO_DEPTH_IN_RANGE) when no pixel lies in [depth_min_m, depth_max_m]: such a frame
    fuses nothing (and must not count as fused or become a keyframe). The message names the likely cause."""
    inside = (depth_m >= depth_min_m) & (depth_m <= depth_max_m)
    if inside.any():
        return
    valid = depth_m[depth_m > 0]
    lo, hi = float(valid.min()), float(valid.max())
    cause = ""
    if hi < depth_min_m and hi <= 0.1:
        # uint16 images hold millimetres (16UC1, 7-Scenes, TUM / 5): 1..4 "mm" are 1..4 m written as such.
        cause = ": depth looks like metres written as uint16, expected millimetres"
    elif hi < depth_min_m:
        cause = ": every valid pixel is nearer than depth_min_m"
    elif lo > depth_max_m and lo >= 100.0:
        cause = ": depth looks like millimetres given as metres (32FC1 depth is in metres)"
    elif lo > depth_max_m:
        cause = ": every valid pixel is beyond depth_max_m"
    raise FrameRejected(RejectReason.NO_DEPTH_IN_RANGE,
                        f"no depth pixel in [{depth_min_m:g}, {depth_max_m:g}] m (valid depth {lo:.3g}..{hi:.3g} m)"
                        f"{cause}")


@dataclass(frozen=True)
class FrameGateConfig:
    """Limits of the stateful checks between consecutive frames.

    `max_stamp_jump_ns`: a stamp further than this from the newest accepted one (either way) is a
    STAMP_JUMP. `max_clock_offset_ns`: with a clock (`FrameGate(now_ns=...)`, i.e. not on sim time)
    a stamp further than this from the clock is STAMP_OFF_CLOCK. `jump_reset_frames`: that many
    consecutive jump rejections that agree with each other (a coherent new trajectory or timeline)
    re-anchor the gate on them.
    """

    max_stamp_skew_ns: int = param(100_000_000, range=(0, 10_000_000_000), unit="ns",
                                   doc="Reject a frame whose colour/depth/pose stamps differ by more.")
    max_jump_translation_m: float = param(1.0, range=(0.01, 100.0), unit="m",
                                          doc="Reject a pose that jumps further than this in one frame.")
    max_jump_rotation_deg: float = param(60.0, range=(1.0, 180.0), unit="deg",
                                         doc="Reject a pose that turns more than this in one frame.")
    jump_reset_frames: int = param(5, range=(1, 1000), doc="Consecutive mutually consistent pose/stamp jumps that "
                                   "are taken as a relocalisation or new timeline.")
    max_stamp_jump_ns: int = param(5_000_000_000, range=(10_000_000, 3600_000_000_000), unit="ns",
                                   doc="Reject a frame stamped further than this from the newest accepted one.")
    max_clock_offset_ns: int = param(10_000_000_000, range=(10_000_000, 86400_000_000_000), unit="ns",
                                     doc="Not on sim time: reject a frame stamped further than this from the node's clock.")

    def __post_init__(self) -> None:
        validate_fields(self)


def _pose_change(a_T: np.ndarray, b_T: np.ndarray) -> tuple[float, float]:
    """Translation (m) and rotation (deg) between two poses."""
    return (float(np.linalg.norm(b_T[:3, 3] - a_T[:3, 3])),
            math.degrees(rotation_angle_rad(a_T[:3, :3].T @ b_T[:3, :3])))


class FrameGate:
    """Validates frames in order: per-frame checks plus stamp order, stamp skew, stamp jumps and pose jumps.

    Remembers the last accepted stamp and pose and counts rejections per reason. Stamp and pose
    jumps are measured against the last *accepted* frame, so one frame stamped an hour ahead or
    posed 5 m outside the room cannot drag the gate along. A real discontinuity (a relocalisation,
    a bag that loops, a camera restarted after a pause) is accepted only when the last
    `jump_reset_frames` rejected frames agree with each other: consecutive stamps increase by at
    most `max_stamp_jump_ns`, consecutive poses move within the jump limits. Then the gate re-anchors
    on the newest of them; inconsistent jumps are all rejected. `now_ns` (a clock, None on sim time)
    adds a check against the clock, which rejects a far-off stamp even as the very first frame.
    Thread-safe.
    """

    def __init__(self, config: FrameGateConfig | None = None, now_ns: Callable[[], int] | None = None,
                 depth_range_m: tuple[float, float] | None = None) -> None:
        """`depth_range_m`: (min, max) of the depth the map fuses; a frame with no pixel in it is NO_DEPTH_IN_RANGE."""
        self.config = config or FrameGateConfig()
        self._now_ns = now_ns
        self._depth_range_m = depth_range_m
        self._lock = threading.Lock()
        self._last_stamp_ns: int | None = None
        self._last_pose: np.ndarray | None = None
        # Recent consecutive jump rejections, the evidence for a re-anchoring.
        self._stamp_jumps: deque[int] = deque(maxlen=self.config.jump_reset_frames)
        self._pose_jumps: deque[np.ndarray] = deque(maxlen=self.config.jump_reset_frames)
        self._counts = {reason: 0 for reason in RejectReason}
        self._accepted = 0

    def check(self, frame: RgbdFrame, *, color_stamp_ns: int | None = None, depth_stamp_ns: int | None = None,
              pose_stamp_ns: int | None = None) -> RgbdFrame:
        """Return the (sanitised) frame if accepted, else count the reason and raise FrameRejected."""
        with self._lock:
            try:
                out = self._check_locked(frame, (color_stamp_ns, depth_stamp_ns, pose_stamp_ns))
            except FrameRejected as exc:
                self._counts[exc.reason] += 1
                raise
            self._accepted += 1
            return out

    def count(self, reason: RejectReason) -> None:
        """Count a rejection decided outside the gate (e.g. no transform for the frame's stamp)."""
        with self._lock:
            self._counts[reason] += 1

    def _check_locked(self, frame: RgbdFrame, stamps: tuple[int | None, ...]) -> RgbdFrame:
        cfg = self.config
        known = [frame.stamp_ns] + [s for s in stamps if s is not None]
        if max(known) - min(known) > cfg.max_stamp_skew_ns:
            raise FrameRejected(RejectReason.STAMPS_APART,
                                f"colour/depth/pose stamps {stamps} span {(max(known) - min(known)) / 1e6:.1f} ms "
                                f"> {cfg.max_stamp_skew_ns / 1e6:.1f} ms")
        if self._now_ns is not None:
            offset_ns = frame.stamp_ns - int(self._now_ns())
            if abs(offset_ns) > cfg.max_clock_offset_ns:
                raise FrameRejected(RejectReason.STAMP_OFF_CLOCK,
                                    f"stamp {frame.stamp_ns} ns is {offset_ns / 1e9:+.3f} s from the clock "
                                    f"(limit {cfg.max_clock_offset_ns / 1e9:g} s); check the sender's clock")
        stamp_reanchor = self._check_stamp_jump_locked(frame.stamp_ns)
        out = validate_frame(frame)
        if self._depth_range_m is not None:
            check_depth_in_range(out.depth_m, *self._depth_range_m)
        pose = out.world_T_camera
        pose_reanchor = False
        if self._last_pose is not None:
            jump_m, jump_deg = _pose_change(self._last_pose, pose)
            if jump_m > cfg.max_jump_translation_m or jump_deg > cfg.max_jump_rotation_deg:
                self._pose_jumps.append(pose)
                if not self._coherent_poses():
                    if stamp_reanchor:
                        self._stamp_jumps.pop()  # this frame is not accepted, so it cannot re-anchor time
                    raise FrameRejected(RejectReason.POSE_JUMP,
                                        f"pose moved {jump_m:.2f} m / {jump_deg:.1f} deg since the last accepted "
                                        f"frame (limits {cfg.max_jump_translation_m} m / "
                                        f"{cfg.max_jump_rotation_deg} deg; {len(self._pose_jumps)} of "
                                        f"{cfg.jump_reset_frames} consistent jumps re-anchor)")
                pose_reanchor = True
        if pose_reanchor or stamp_reanchor:
            _LOG.warning("frame gate re-anchored on a new %s at stamp %d ns after %d consistent rejected frames",
                         "trajectory" if pose_reanchor else "timeline", frame.stamp_ns, cfg.jump_reset_frames)
        self._stamp_jumps.clear()
        self._pose_jumps.clear()
        self._last_stamp_ns = frame.stamp_ns
        self._last_pose = pose
        return out

    def _check_stamp_jump_locked(self, stamp_ns: int) -> bool:
        """Raise unless the stamp follows the last accepted one; True when it re-anchors a new timeline."""
        cfg, last = self.config, self._last_stamp_ns
        if last is None:
            return False
        delta_ns = stamp_ns - last
        if -cfg.max_stamp_jump_ns <= delta_ns <= 0:
            raise FrameRejected(RejectReason.STAMP_OUT_OF_ORDER,
                                f"stamp {stamp_ns} ns is not after the last accepted {last} ns")
        if 0 < delta_ns <= cfg.max_stamp_jump_ns:
            return False
        self._stamp_jumps.append(stamp_ns)
        if self._coherent_stamps():
            return True
        raise FrameRejected(RejectReason.STAMP_JUMP,
                            f"stamp {stamp_ns} ns is {delta_ns / 1e9:+.3f} s from the last accepted one "
                            f"(limit {cfg.max_stamp_jump_ns / 1e9:g} s; {len(self._stamp_jumps)} of "
                            f"{cfg.jump_reset_frames} consistent frames re-anchor)")

    def _coherent_stamps(self) -> bool:
        s = list(self._stamp_jumps)
        return len(s) >= self.config.jump_reset_frames and all(
            0 < b - a <= self.config.max_stamp_jump_ns for a, b in zip(s, s[1:]))

    def _coherent_poses(self) -> bool:
        cfg, p = self.config, list(self._pose_jumps)
        if len(p) < cfg.jump_reset_frames:
            return False
        for a, b in zip(p, p[1:]):
            jump_m, jump_deg = _pose_change(a, b)
            if jump_m > cfg.max_jump_translation_m or jump_deg > cfg.max_jump_rotation_deg:
                return False
        return True

    @property
    def rejections(self) -> dict[RejectReason, int]:
        """A copy of the rejection counters, one per reason."""
        with self._lock:
            return dict(self._counts)

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def reset(self) -> None:
        """Forget the last stamp and pose (e.g. after a map reset); counters are kept."""
        with self._lock:
            self._last_stamp_ns = None
            self._last_pose = None
            self._stamp_jumps.clear()
            self._pose_jumps.clear()
