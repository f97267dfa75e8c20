"""Input checks for RGB-D frames and ROS-free decoders of raw image buffers (issue 3, "Bad input").

Policy: NaN, inf and negative depth become invalid (0) pixels; a depth image with no valid pixel is
rejected. Everything else that is malformed (encodings, sizes, intrinsics, poses, stamps, pose
jumps) rejects the whole frame with a `FrameRejected` carrying a `RejectReason`, so the map never
sees it and the node can count and log it.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import check_int, check_range
from .geometry import check_pose, rotation_angle_rad
from .types import CameraIntrinsics, InputError, RgbdFrame

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
_COLOR_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class RejectReason(enum.Enum):
    """Why a frame was rejected; one counter per reason."""

    BAD_ENCODING = "bad_encoding"
    BAD_IMAGE = "bad_image"
    SIZE_MISMATCH = "size_mismatch"
    NO_VALID_DEPTH = "no_valid_depth"
    BAD_INTRINSICS = "bad_intrinsics"
    BAD_POSE = "bad_pose"
    STAMP_OUT_OF_ORDER = "stamp_out_of_order"
    STAMPS_APART = "stamps_apart"
    POSE_JUMP = "pose_jump"


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


@dataclass(frozen=True)
class FrameGateConfig:
    """Limits of the stateful checks between consecutive frames."""

    max_stamp_skew_ns: int = 100_000_000
    max_jump_translation_m: float = 1.0
    max_jump_rotation_deg: float = 60.0
    jump_reset_frames: int = 5

    def __post_init__(self) -> None:
        check_int("max_stamp_skew_ns", self.max_stamp_skew_ns, 0)
        check_range("max_jump_translation_m", self.max_jump_translation_m, 0.0, low_inclusive=False)
        check_range("max_jump_rotation_deg", self.max_jump_rotation_deg, 0.0, 180.0, low_inclusive=False)
        check_int("jump_reset_frames", self.jump_reset_frames, 1)


class FrameGate:
    """Validates frames in order: per-frame checks plus stamp order, stamp skew and pose jumps.

    Remembers the last accepted stamp and pose and counts rejections per reason. A pose jump is
    measured against the last *accepted* pose; after `jump_reset_frames` consecutive jump rejections
    the new pose is accepted as a relocalisation, so one bad jump cannot block the map forever.
    Thread-safe.
    """

    def __init__(self, config: FrameGateConfig | None = None) -> None:
        self.config = config or FrameGateConfig()
        self._lock = threading.Lock()
        self._last_stamp_ns: int | None = None
        self._last_pose: np.ndarray | None = None
        self._consecutive_jumps = 0
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

    def _check_locked(self, frame: RgbdFrame, stamps: tuple[int | None, ...]) -> RgbdFrame:
        known = [frame.stamp_ns] + [s for s in stamps if s is not None]
        if max(known) - min(known) > self.config.max_stamp_skew_ns:
            raise FrameRejected(RejectReason.STAMPS_APART,
                                f"colour/depth/pose stamps {stamps} span {(max(known) - min(known)) / 1e6:.1f} ms "
                                f"> {self.config.max_stamp_skew_ns / 1e6:.1f} ms")
        if self._last_stamp_ns is not None and frame.stamp_ns <= self._last_stamp_ns:
            raise FrameRejected(RejectReason.STAMP_OUT_OF_ORDER,
                                f"stamp {frame.stamp_ns} ns is not after the last accepted {self._last_stamp_ns} ns")
        out = validate_frame(frame)
        pose = out.world_T_camera
        if self._last_pose is not None:
            jump_m = float(np.linalg.norm(pose[:3, 3] - self._last_pose[:3, 3]))
            jump_deg = math.degrees(rotation_angle_rad(self._last_pose[:3, :3].T @ pose[:3, :3]))
            jumped = jump_m > self.config.max_jump_translation_m or jump_deg > self.config.max_jump_rotation_deg
            if jumped and self._consecutive_jumps + 1 < self.config.jump_reset_frames:
                self._consecutive_jumps += 1
                raise FrameRejected(RejectReason.POSE_JUMP,
                                    f"pose moved {jump_m:.2f} m / {jump_deg:.1f} deg since the last accepted frame "
                                    f"(limits {self.config.max_jump_translation_m} m / "
                                    f"{self.config.max_jump_rotation_deg} deg)")
        self._consecutive_jumps = 0
        self._last_stamp_ns = frame.stamp_ns
        self._last_pose = pose
        return out

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
            self._consecutive_jumps = 0
