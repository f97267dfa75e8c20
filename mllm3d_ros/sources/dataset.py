"""Replay of RGB-D dataset folders as `RgbdFrame`s: the 7-Scenes/3DMatch layout and the TUM layout.

7-Scenes / 3DMatch / SUN3D (`frame-NNNNNN.color.jpg|png`, `frame-NNNNNN.depth.png` uint16 mm with
0 and 65535 invalid, `frame-NNNNNN.pose.txt` 4x4 camera-to-world, `camera-intrinsics.txt` 3x3 K in
the folder or a parent; frames optionally under one `seq-XX` subfolder). These files carry no
stamps, so stamps are synthesised from the frame number at the recording rate (30 Hz).

TUM RGB-D (`rgb.txt`, `depth.txt`, `groundtruth.txt` with `t tx ty tz qx qy qz qw`, depth png
scale 5000): colour, depth and pose are associated by nearest stamp within a tolerance, like the
benchmark's `associate.py`; the colour stamp is the frame stamp.

Both layouts give world_T_camera in the camera optical frame (x right, y down, z forward), as
`RgbdFrame` requires. A 7-Scenes/3DMatch world frame is the first camera's, not gravity-aligned;
where the folder (or a parent) has `gravity-direction.txt` (the world's down vector), every pose is
rotated into a z-up world (`Dataset.map_T_world`), as REP-103 map frames and the voting's support
surfaces expect. Files are listed and checked when the dataset is opened; images are decoded
lazily, one frame at a time.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from ..core.config import ConfigError, check_int, check_range
from ..core.geometry import check_pose, gravity_alignment, quaternion_to_matrix
from ..core.types import CameraIntrinsics, InputError, RgbdFrame

SEVEN_SCENES_RATE_HZ = 30.0
SEVEN_SCENES_DEPTH_SCALE = 1000.0  # uint16 units per metre
TUM_DEPTH_SCALE = 5000.0
INTRINSICS_FILE = "camera-intrinsics.txt"
GRAVITY_FILE = "gravity-direction.txt"
_FRAME_DEPTH_RE = re.compile(r"^frame-(\d+)\.depth\.png$")
_COLOR_SUFFIXES = (".color.png", ".color.jpg", ".color.jpeg")

# Colour-camera calibration published with the TUM RGB-D benchmark (depth is registered to colour).
TUM_INTRINSICS: dict[str, CameraIntrinsics] = {
    "freiburg1": CameraIntrinsics(640, 480, 517.3, 516.5, 318.6, 255.3),
    "freiburg2": CameraIntrinsics(640, 480, 520.9, 521.0, 325.1, 249.7),
    "freiburg3": CameraIntrinsics(640, 480, 535.4, 539.2, 320.1, 247.6),
}


class DatasetLayout(enum.Enum):
    """Folder layouts `open_dataset` recognises."""

    SEVEN_SCENES = "7scenes"
    TUM = "tum"


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """One frame's files and pose, listed when the dataset is opened (images not yet decoded)."""

    stamp_ns: int
    color_path: Path
    depth_path: Path
    world_T_camera: np.ndarray


class Dataset:
    """A replayable RGB-D sequence: `len()`, iteration in stamp order, and random access."""

    def __init__(self, root: Path, layout: DatasetLayout, intrinsics: CameraIntrinsics,
                 records: Iterable[FrameRecord], depth_scale: float, num_unmatched: int = 0,
                 map_T_world: np.ndarray | None = None) -> None:
        self.root = root
        # The rotation already applied to every pose (identity unless the dataset gave gravity).
        self.map_T_world = np.eye(4) if map_T_world is None else map_T_world
        self.layout = layout
        self.intrinsics = intrinsics
        self.records = tuple(records)
        self.depth_scale = depth_scale
        # TUM colour frames dropped because no depth or pose lay within the tolerance.
        self.num_unmatched = num_unmatched

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[RgbdFrame]:
        for index in range(len(self.records)):
            yield self[index]

    def __getitem__(self, index: int) -> RgbdFrame:
        """Decode frame `index` (depth in metres, 0 where invalid)."""
        record = self.records[index]
        color_rgb = read_color(record.color_path)
        depth_m = read_depth(record.depth_path, self.depth_scale)
        size = (self.intrinsics.height, self.intrinsics.width)
        if depth_m.shape != size or color_rgb.shape[:2] != size:
            raise InputError(
                f"{record.color_path.name}: colour {color_rgb.shape[1]}x{color_rgb.shape[0]} / depth "
                f"{depth_m.shape[1]}x{depth_m.shape[0]} do not match the intrinsics' "
                f"{self.intrinsics.width}x{self.intrinsics.height}")
        return RgbdFrame(stamp_ns=record.stamp_ns, color_rgb=color_rgb, depth_m=depth_m,
                         intrinsics=self.intrinsics, world_T_camera=record.world_T_camera.copy())

    @property
    def stamps_ns(self) -> np.ndarray:
        """(N,) int64 frame stamps in nanoseconds."""
        return np.array([r.stamp_ns for r in self.records], dtype=np.int64)

    def __repr__(self) -> str:
        return f"Dataset({self.layout.value}, {len(self)} frames, root={str(self.root)!r})"


def open_dataset(path: str | Path, *, stride: int = 1, max_frames: int | None = None,
                 intrinsics: CameraIntrinsics | None = None, layout: DatasetLayout | None = None,
                 sequence: str | None = None, tum_max_dt_s: float = 0.02,
                 frame_rate_hz: float = SEVEN_SCENES_RATE_HZ) -> Dataset:
    """Open a dataset folder, detecting its layout, and list its frames.

    stride keeps every stride-th frame; max_frames caps the count after striding. `intrinsics`
    overrides the file (7-Scenes) or the freiburg default (TUM). `sequence` picks a `seq-XX`
    subfolder when there are several. tum_max_dt_s is the association tolerance for TUM;
    frame_rate_hz the recording rate used to synthesise 7-Scenes stamps.
    """
    check_int("stride", stride, 1)
    if max_frames is not None:
        check_int("max_frames", max_frames, 1)
    check_range("tum_max_dt_s", tum_max_dt_s, 0.0, 1.0, low_inclusive=False)
    check_range("frame_rate_hz", frame_rate_hz, 0.0, None, low_inclusive=False)
    root = Path(path)
    if not root.exists():
        raise InputError(f"dataset path does not exist: {root}")
    if not root.is_dir():
        raise InputError(f"dataset path is not a folder: {root}")
    if layout is None:
        layout = detect_layout(root)
    if layout is DatasetLayout.SEVEN_SCENES:
        dataset = _open_7scenes(root, intrinsics, sequence, frame_rate_hz)
    elif layout is DatasetLayout.TUM:
        dataset = _open_tum(root, intrinsics, tum_max_dt_s)
    else:
        raise ConfigError(f"layout must be a DatasetLayout, got {layout!r}")
    records = dataset.records[::stride][:max_frames]
    if not records:
        raise InputError(f"{root}: no frames found")
    return Dataset(dataset.root, dataset.layout, dataset.intrinsics, records, dataset.depth_scale,
                   dataset.num_unmatched, dataset.map_T_world)


def detect_layout(root: Path) -> DatasetLayout:
    """Tell the layout of a folder from the files it holds."""
    if (root / "rgb.txt").is_file() and (root / "depth.txt").is_file():
        return DatasetLayout.TUM
    if _has_7scenes_frames(root) or any(_has_7scenes_frames(d) for d in _seq_dirs(root)):
        return DatasetLayout.SEVEN_SCENES
    raise InputError(
        f"{root}: unknown dataset layout; expected 7-Scenes/3DMatch (frame-NNNNNN.depth.png, "
        f".color.jpg|png, .pose.txt, camera-intrinsics.txt, optionally under seq-XX/) or TUM RGB-D "
        f"(rgb.txt, depth.txt, groundtruth.txt)")


def _decode_image(path: Path, flags: int, what: str) -> np.ndarray:
    """Decode an image file or raise InputError (unreadable, undecodable, or a JPEG cut short)."""
    try:
        data = path.read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    except (OSError, cv2.error) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    if image is None:
        raise InputError(f"cannot read {what} {path}")
    # libjpeg decodes a truncated file into a partly grey image with only a warning: check the end marker.
    if path.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        raise InputError(f"cannot read {what} {path}: truncated JPEG (no end-of-image marker)")
    return image


def read_color(path: Path) -> np.ndarray:
    """Read a colour image as (H, W, 3) uint8 RGB."""
    return cv2.cvtColor(_decode_image(path, cv2.IMREAD_COLOR, "colour image"), cv2.COLOR_BGR2RGB)


def read_depth(path: Path, depth_scale: float) -> np.ndarray:
    """Read a uint16 depth png as (H, W) float32 metres; 0 and 65535 (sensor 'no return') become 0."""
    raw = _decode_image(path, cv2.IMREAD_UNCHANGED, "depth image")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise InputError(f"{path}: depth must be single-channel uint16, got {raw.dtype} with shape {raw.shape}")
    depth_m = raw.astype(np.float32) / np.float32(depth_scale)
    depth_m[raw == np.iinfo(np.uint16).max] = 0.0
    return depth_m


def read_intrinsics_file(path: Path, width: int, height: int) -> CameraIntrinsics:
    """Parse a 3x3 K text file into intrinsics for a width x height image."""
    try:
        k = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: not a 3x3 matrix of numbers ({exc})") from None
    if k.shape != (3, 3):
        raise InputError(f"{path}: expected a 3x3 camera matrix, got shape {k.shape}")
    return CameraIntrinsics(width, height, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))


def write_7scenes(frames: Iterable[RgbdFrame], path: str | Path, *, color_format: str = "png") -> Path:
    """Write frames as a 7-Scenes folder (frame-000000...; intrinsics of the first frame). Returns the folder.

    Depth is stored as uint16 millimetres (0 invalid; beyond 65.534 m clipped), so a round trip
    is exact to 1 mm. color_format is "png" (lossless) or "jpg".
    """
    if color_format not in ("png", "jpg"):
        raise ConfigError(f"color_format must be one of ['png', 'jpg'], got {color_format!r}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    intrinsics = None
    for index, frame in enumerate(frames):
        if intrinsics is None:
            intrinsics = frame.intrinsics
            np.savetxt(root / INTRINSICS_FILE, intrinsics.matrix)
        stem = root / f"frame-{index:06d}"
        cv2.imwrite(f"{stem}.color.{color_format}", cv2.cvtColor(frame.color_rgb, cv2.COLOR_RGB2BGR))
        depth = np.nan_to_num(frame.depth_m, nan=0.0, posinf=0.0, neginf=0.0)
        depth_mm = np.clip(np.round(depth * SEVEN_SCENES_DEPTH_SCALE), 0, 65534).astype(np.uint16)
        cv2.imwrite(f"{stem}.depth.png", depth_mm)
        np.savetxt(f"{stem}.pose.txt", frame.world_T_camera)
    if intrinsics is None:
        raise InputError("write_7scenes: no frames given")
    return root


def _seq_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.glob("seq-*") if d.is_dir())


def _has_7scenes_frames(folder: Path) -> bool:
    return any(folder.glob("frame-*.depth.png"))


def _find_upwards(folder: Path, name: str, levels: int = 2) -> Path | None:
    """`folder/name` or the same name in up to `levels` parents (3DMatch keeps K beside seq-XX/)."""
    for candidate in [folder, *folder.parents][: levels + 1]:
        if (candidate / name).is_file():
            return candidate / name
    return None


def _open_7scenes(root: Path, intrinsics: CameraIntrinsics | None, sequence: str | None,
                  frame_rate_hz: float) -> Dataset:
    folder = root
    if sequence is not None:
        folder = root / sequence
        if not _has_7scenes_frames(folder):
            raise InputError(f"{folder}: no frame-NNNNNN.depth.png files in sequence {sequence!r}")
    elif not _has_7scenes_frames(root):
        seqs = [d for d in _seq_dirs(root) if _has_7scenes_frames(d)]
        if len(seqs) > 1:
            raise InputError(f"{root}: several sequences {[d.name for d in seqs]}; pass sequence=NAME")
        if not seqs:
            raise InputError(f"{root}: no frame-NNNNNN.depth.png files here or in a seq-XX subfolder")
        folder = seqs[0]

    numbered = []
    for depth_path in folder.glob("frame-*.depth.png"):
        match = _FRAME_DEPTH_RE.match(depth_path.name)
        if match:
            numbered.append((int(match.group(1)), depth_path))
    numbered.sort()

    records = []
    for number, depth_path in numbered:
        prefix = depth_path.name[: -len(".depth.png")]
        color_path = next((folder / (prefix + s) for s in _COLOR_SUFFIXES if (folder / (prefix + s)).is_file()), None)
        if color_path is None:
            raise InputError(f"{folder}: frame {prefix} has no colour image ({prefix}.color.jpg|png)")
        pose_path = folder / f"{prefix}.pose.txt"
        if not pose_path.is_file():
            raise InputError(f"{folder}: frame {prefix} has no pose ({pose_path.name})")
        try:
            pose = np.loadtxt(pose_path, dtype=np.float64)
        except ValueError as exc:
            raise InputError(f"{pose_path}: not a 4x4 matrix of numbers ({exc})") from None
        pose = check_pose(pose, name=str(pose_path))
        stamp_ns = int(round(number * 1e9 / frame_rate_hz))
        records.append(FrameRecord(stamp_ns, color_path, depth_path, pose))
    # A colour or pose file without depth is a broken frame too; say so rather than skip silently.
    depth_prefixes = {p.name[: -len(".depth.png")] for _, p in numbered}
    for other in folder.glob("frame-*.pose.txt"):
        prefix = other.name[: -len(".pose.txt")]
        if prefix not in depth_prefixes:
            raise InputError(f"{folder}: frame {prefix} has no depth image ({prefix}.depth.png)")

    if intrinsics is None:
        k_path = _find_upwards(folder, INTRINSICS_FILE)
        if k_path is None:
            raise InputError(f"{folder}: missing {INTRINSICS_FILE} (3x3 K) here or in a parent folder; "
                             f"add it or pass intrinsics=CameraIntrinsics(...)")
        height, width = _image_size(records[0].depth_path)
        intrinsics = read_intrinsics_file(k_path, width, height)
    map_T_world = None
    gravity_path = _find_upwards(folder, GRAVITY_FILE)
    if gravity_path is not None:
        try:
            map_T_world = gravity_alignment(np.loadtxt(gravity_path, dtype=np.float64))
        except ValueError as exc:
            raise InputError(f"{gravity_path}: not a 3-vector of numbers ({exc})") from None
        records = [FrameRecord(r.stamp_ns, r.color_path, r.depth_path, map_T_world @ r.world_T_camera) for r in records]
    return Dataset(folder, DatasetLayout.SEVEN_SCENES, intrinsics, records, SEVEN_SCENES_DEPTH_SCALE,
                   map_T_world=map_T_world)


def _image_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot read image {path}")
    return int(image.shape[0]), int(image.shape[1])


def _parse_stamp_ns(text: str, where: str) -> int:
    try:
        # Decimal keeps the microseconds of 10-digit epoch seconds exact; float would not.
        return int(Decimal(text) * 1_000_000_000)
    except InvalidOperation:
        raise InputError(f"{where}: bad timestamp {text!r}") from None


def _read_tum_list(path: Path, num_fields: int) -> list[tuple[int, list[str]]]:
    """Rows of a TUM text file as (stamp_ns, remaining fields), comments and blank lines skipped."""
    if not path.is_file():
        raise InputError(f"TUM dataset: missing {path}")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{path}:{line_no}"
        if len(fields) != num_fields:
            raise InputError(f"{where}: expected {num_fields} fields, got {len(fields)}")
        rows.append((_parse_stamp_ns(fields[0], where), fields[1:]))
    rows.sort(key=lambda row: row[0])
    return rows


def _nearest(stamps_ns: np.ndarray, query_ns: int) -> int:
    """Index of the stamp nearest to query_ns in a sorted array (non-empty)."""
    i = int(np.searchsorted(stamps_ns, query_ns))
    if i == 0:
        return 0
    if i == len(stamps_ns):
        return len(stamps_ns) - 1
    return i if stamps_ns[i] - query_ns < query_ns - stamps_ns[i - 1] else i - 1


def pose_from_tum(values: Iterable[float]) -> np.ndarray:
    """4x4 transform from a TUM row `tx ty tz qx qy qz qw` (quaternion normalised)."""
    tx, ty, tz, qx, qy, qz, qw = (float(v) for v in values)
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(qx, qy, qz, qw)
    pose[:3, 3] = [tx, ty, tz]
    return pose


def _tum_intrinsics(root: Path) -> CameraIntrinsics:
    name = str(root.resolve()).lower()
    for key, value in TUM_INTRINSICS.items():
        if key in name or f"fr{key[-1]}" in name:
            return value
    raise InputError(f"{root}: cannot tell the TUM camera (freiburg1/2/3) from the folder name; "
                     f"pass intrinsics=CameraIntrinsics(...)")


def _open_tum(root: Path, intrinsics: CameraIntrinsics | None, max_dt_s: float) -> Dataset:
    if intrinsics is None:
        intrinsics = _tum_intrinsics(root)
    rgb = _read_tum_list(root / "rgb.txt", 2)
    depth = _read_tum_list(root / "depth.txt", 2)
    poses = _read_tum_list(root / "groundtruth.txt", 8)
    if not rgb or not depth or not poses:
        raise InputError(f"{root}: rgb.txt, depth.txt and groundtruth.txt must each list at least one entry")
    depth_ns = np.array([s for s, _ in depth], dtype=np.int64)
    pose_ns = np.array([s for s, _ in poses], dtype=np.int64)
    max_dt_ns = int(max_dt_s * 1e9)
    records, unmatched = [], 0
    for stamp_ns, (color_name,) in rgb:
        di = _nearest(depth_ns, stamp_ns)
        pi = _nearest(pose_ns, stamp_ns)
        if abs(int(depth_ns[di]) - stamp_ns) > max_dt_ns or abs(int(pose_ns[pi]) - stamp_ns) > max_dt_ns:
            unmatched += 1
            continue
        color_path = root / color_name
        depth_path = root / depth[di][1][0]
        if not color_path.is_file():
            raise InputError(f"{root}: rgb.txt lists {color_name} but the file is missing")
        if not depth_path.is_file():
            raise InputError(f"{root}: depth.txt lists {depth[di][1][0]} but the file is missing")
        pose = check_pose(pose_from_tum(poses[pi][1]), name=f"groundtruth.txt at {poses[pi][0]} ns")
        records.append(FrameRecord(stamp_ns, color_path, depth_path, pose))
    if not records:
        raise InputError(f"{root}: no colour frame has both a depth image and a pose within {max_dt_s} s")
    return Dataset(root, DatasetLayout.TUM, intrinsics, records, TUM_DEPTH_SCALE, unmatched)
