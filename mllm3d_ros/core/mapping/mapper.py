"""The mapping facade: TSDF map + keyframe store + ingestion worker, seen by queries as a MapSource.

Reset and save/load: `reset()` empties the map, the keyframes and the frame gate, then
calls every reset listener (other map-bound state, e.g. an object memory). `save(path)` writes a
folder: `map.json` (format name and version, the map's voxel size and block resolution, counters,
keyframe metadata), `tsdf.npz` (Open3D's VoxelBlockGrid.save) and `keyframes.npz` (poses and images).
`load(path)` validates all of it before it swaps anything in, so a missing, corrupt or incompatible
file leaves the running map as it was: the format version (a map of another version is refused naming
the version and the build that wrote it), every zip member's CRC (bytes flipped inside an .npz), and
every array's shape and dtype. Both hold the ingestion worker between frames.

State bound to the map may be saved and loaded with it: `add_reset_listener(listener, save=,
load=)`. Every save writes a fresh `map_uid` into map.json and calls `save(folder, map_uid)` while the
folder is still being written (a failing saver fails the save, nothing half-written appears); a load
calls `load(folder, map_uid)` instead of `listener()` (e.g. the object memory read back beside the map,
which falls back to a reset itself when its file does not fit). `map_uid` is None for a map written
before the ids existed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .frame_checks import FrameGate, FrameGateConfig
from ..geometry import check_pose
from .ingest import IngestConfig, IngestWorker, RejectCallback
from .keyframes import KeyframeConfig, KeyframeStore
from .tsdf_map import MapFileError, TsdfMap, TsdfMapConfig
from ..types import CameraIntrinsics, Keyframe, MapSnapshot, RgbdFrame

_LOG = logging.getLogger(__name__)

MAP_FORMAT = "mllm3d_ros.map"
MAP_FORMAT_VERSION = 1
_META, _TSDF, _KEYFRAMES = "map.json", "tsdf.npz", "keyframes.npz"
# State bound to the map, saved into / loaded from its folder: (folder, map_uid).
SaveHook = Callable[[Path, str], None]
LoadHook = Callable[[Path, "str | None"], None]


def package_version() -> str:
    """This build's version (written into map.json as `written_by`)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mllm3d_ros")
    except PackageNotFoundError:
        return "unknown"


def check_zip_crc(path: Path, what: str) -> None:
    """MapFileError unless every member of the .npz (a zip) at `path` reads back with its CRC: numpy and
    Open3D read arrays without checking it, so flipped bytes would load as a silently different map."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        raise MapFileError(f"{what} {path} is not a readable .npz (zip) file: {exc}") from exc
    if bad is not None:
        raise MapFileError(f"{what} {path} is corrupt: the CRC of '{bad}' does not match its bytes")


class Mapper:
    """Owns the map state; `submit` is cheap (callbacks), fusion runs on the worker thread."""

    def __init__(self, map_config: TsdfMapConfig | None = None, keyframe_config: KeyframeConfig | None = None,
                 gate_config: FrameGateConfig | None = None, ingest_config: IngestConfig | None = None,
                 on_reject: RejectCallback | None = None, now_ns: Callable[[], int] | None = None) -> None:
        self.map = TsdfMap(map_config)
        self.keyframe_store = KeyframeStore(keyframe_config)
        self.gate = FrameGate(gate_config, now_ns=now_ns,
                              depth_range_m=(self.map.config.depth_min_m, self.map.config.depth_max_m))
        self.worker = IngestWorker(self.map, self.keyframe_store, self.gate, ingest_config, on_reject=on_reject)
        # Extracting the surface costs tens of ms at 2 cm: reuse it until the map changes.
        self._snapshot_lock = threading.Lock()
        self._snapshot: MapSnapshot | None = None
        self._snapshot_key: tuple[int, int] | None = None
        self._reset_listeners: list[tuple[Callable[[], None], SaveHook | None, LoadHook | None]] = []
        self.map_uid: str | None = None  # of the map last saved or loaded (None: built here, never saved)
        self._generation = 0  # bumped by reset/load: the snapshot cache key alone could repeat

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def submit(self, frame: RgbdFrame, **stamps_ns: int | None) -> bool:
        """Queue a frame for fusion; False when an older queued frame was dropped to make room."""
        return self.worker.submit(frame, **stamps_ns)

    def process(self, frame: RgbdFrame) -> bool:
        """Validate and fuse a frame in the calling thread (offline tools)."""
        return self.worker.process(frame)

    def snapshot(self) -> MapSnapshot:
        with self._snapshot_lock:
            key = (self._generation, self.map.frames_integrated, self.map.num_blocks, self.map.carved_voxels)
            if self._snapshot is None or key != self._snapshot_key:
                self._snapshot, self._snapshot_key = self.map.snapshot(), key
            return self._snapshot

    def keyframes(self) -> tuple[Keyframe, ...]:
        return self.keyframe_store.keyframes

    @property
    def generation(self) -> int:
        """How many times the map was reset or loaded (a change means: earlier results are void)."""
        with self._snapshot_lock:
            return self._generation

    # --- reset, save, load -----------------------------------------------------------------------
    def add_reset_listener(self, listener: Callable[[], None], save: SaveHook | None = None,
                           load: LoadHook | None = None) -> None:
        """Call `listener()` after every reset or load (state bound to the map must be dropped too). With
        `save`, `save(folder, map_uid)` writes that state into every saved map folder; with `load`, a load
        calls `load(folder, map_uid)` instead of `listener()` (see the module docstring)."""
        self._reset_listeners.append((listener, save, load))

    def _changed(self, loaded: tuple[Path, str | None] | None = None) -> None:
        with self._snapshot_lock:
            self._generation += 1
            self._snapshot = None
        for listener, _, load in list(self._reset_listeners):
            try:
                if loaded is not None and load is not None:
                    load(*loaded)
                else:
                    listener()
            except Exception:  # one broken listener must not leave the others stale
                _LOG.exception("map reset listener %r failed", load if loaded is not None and load else listener)

    def reset(self) -> None:
        """Drop the map, the keyframes and the gate's last stamp and pose; queued frames are kept."""
        with self.worker.paused():
            self.map.reset()
            self.keyframe_store.clear()
            self.gate.reset()
            self._changed()

    def save(self, path: str | os.PathLike, extra: SaveHook | None = None) -> Path:
        """Write the map and keyframes to the folder `path` (replaced if it exists); returns it. The registered
        save hooks, then `extra(folder, map_uid)`, write their state into it before it appears."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise MapFileError(f"cannot save the map to {path}: it exists and is not a folder")
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            with self.worker.paused():
                keyframes = self.keyframe_store.keyframes
                has_blocks = self.map.save(partial / _TSDF)
                map_uid = uuid.uuid4().hex
                meta = {"format": MAP_FORMAT, "version": MAP_FORMAT_VERSION,
                        "written_by": f"mllm3d_ros {package_version()}", "map_uid": map_uid,
                        "voxel_size_m": self.map.config.voxel_size_m,
                        "block_resolution": self.map.config.block_resolution,
                        "frames_integrated": self.map.frames_integrated, "last_stamp_ns": self.map.last_stamp_ns,
                        "tsdf_file": _TSDF if has_blocks else None,
                        "keyframes": [{"id": kf.keyframe_id, "stamp_ns": kf.stamp_ns, "sharpness": kf.sharpness,
                                       "intrinsics": [kf.intrinsics.width, kf.intrinsics.height, kf.intrinsics.fx,
                                                      kf.intrinsics.fy, kf.intrinsics.cx, kf.intrinsics.cy]}
                                      for kf in keyframes]}
            arrays = {}
            for k, kf in enumerate(keyframes):
                arrays[f"pose_{k}"], arrays[f"color_{k}"], arrays[f"depth_{k}"] = (kf.world_T_camera, kf.color_rgb,
                                                                                  kf.depth_m)
            np.savez(partial / _KEYFRAMES, **arrays)
            (partial / _META).write_text(json.dumps(meta, indent=1))
            for save in [h for _, h, _ in self._reset_listeners] + [extra]:
                if save is not None:
                    save(partial, map_uid)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)
        self.map_uid = map_uid
        return path

    def load(self, path: str | os.PathLike) -> str | None:
        """Replace the map and keyframes by the ones saved at `path`; MapFileError leaves them untouched.
        Returns the loaded map's `map_uid` (None for a map saved before the ids existed)."""
        path = Path(path)
        meta = self._read_meta(path)
        for name, what in (((_TSDF, "TSDF file"),) if meta["tsdf_file"] else ()) + ((_KEYFRAMES, "keyframes file"),):
            if (path / name).is_file():  # a missing one is named by the reader below
                check_zip_crc(path / name, what)
        keyframes = _read_keyframes(path / _KEYFRAMES, meta["keyframes"])
        with self.worker.paused():
            self.map.load(path / _TSDF if meta["tsdf_file"] else None,
                          frames_integrated=int(meta.get("frames_integrated", 0)),
                          last_stamp_ns=int(meta.get("last_stamp_ns", 0)))
            self.keyframe_store.replace(keyframes)
            self.gate.reset()
            uid = meta.get("map_uid") if isinstance(meta.get("map_uid"), str) else None
            self.map_uid = uid
            self._changed(loaded=(path, uid))
        return uid

    def _read_meta(self, path: Path) -> dict:
        meta = _read_meta(path)
        meta_path = path / _META
        cfg = self.map.config
        if meta.get("voxel_size_m") != cfg.voxel_size_m or meta.get("block_resolution") != cfg.block_resolution:
            raise MapFileError(f"{path} was saved with voxel_size_m={meta.get('voxel_size_m')} and block_resolution="
                               f"{meta.get('block_resolution')}; this map uses {cfg.voxel_size_m} and "
                               f"{cfg.block_resolution}")
        if meta.get("tsdf_file") not in (_TSDF, None):
            raise MapFileError(f"{meta_path}: tsdf_file must be {_TSDF!r} or null, got {meta.get('tsdf_file')!r}")
        return meta


def read_saved_keyframes(path: str | os.PathLike) -> list[Keyframe]:
    """The keyframes of a map folder written by `Mapper.save`, without its TSDF (tools that draw them)."""
    path = Path(path)
    meta = _read_meta(path)
    if (path / _KEYFRAMES).is_file():
        check_zip_crc(path / _KEYFRAMES, "keyframes file")
    return _read_keyframes(path / _KEYFRAMES, meta["keyframes"])


def read_format_json(meta_path: Path, fmt: str, version: int, error: Callable[[str], Exception], kind: str,
                     advice: str = "") -> dict:
    """A saved folder's JSON metadata (map.json, memory.json, segment.json) checked for its format name and
    version; `error` builds the exception that names what does not fit: a missing or unreadable file, another
    format, another version (with the build that wrote it, so a user knows which build reads it)."""
    if not meta_path.is_file():
        raise error(f"no saved {kind} at {meta_path.parent}: {meta_path.name} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{meta_path} is not a {fmt} file")
    found = meta.get("version")
    if found != version:
        age = ("an older" if isinstance(found, int) and found < version else
               "a newer" if isinstance(found, int) else "an unknown")
        raise error(f"{meta_path} has {kind} format version {found!r}, written by "
                    f"{meta.get('written_by') or f'{age} mllm3d_ros'}; this build (mllm3d_ros "
                    f"{package_version()}) reads format version {version} only{advice}")
    return meta


def _read_meta(path: Path) -> dict:
    """map.json, checked for format, version and a keyframe list."""
    meta = read_format_json(path / _META, MAP_FORMAT, MAP_FORMAT_VERSION, MapFileError, "map",
                            ": build the map again, or load it with the version that wrote it")
    if not isinstance(meta.get("keyframes"), list):
        raise MapFileError(f"{path / _META} has no keyframe list")
    return meta


def _read_keyframes(path: Path, entries: list) -> list[Keyframe]:
    if not path.is_file():
        raise MapFileError(f"saved map is incomplete: {path} is missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = []
            for k, entry in enumerate(entries):
                w, h, fx, fy, cx, cy = entry["intrinsics"]
                intr = CameraIntrinsics(int(w), int(h), float(fx), float(fy), float(cx), float(cy))
                color, depth = data[f"color_{k}"], data[f"depth_{k}"]
                if color.shape != (intr.height, intr.width, 3) or color.dtype != np.uint8 or \
                        depth.shape != (intr.height, intr.width) or depth.dtype != np.float32:
                    raise MapFileError(f"keyframe {k} in {path}: images do not match its intrinsics")
                pose = check_pose(data[f"pose_{k}"])
                out.append(Keyframe(int(entry["id"]), int(entry["stamp_ns"]), pose, intr, color, depth,
                                    float(entry.get("sharpness", 0.0))))
    except MapFileError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise MapFileError(f"keyframes in {path} could not be read: {exc}") from exc
    return out
