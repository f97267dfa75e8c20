"""The object memory saved beside its map, and read back with the same guarantees as the map.

A map folder written by `Mapper.save` holds `map.json` with a `map_uid` (a fresh id per save). The memory
of that map is written into the same folder: `memory.json` (format name and version, the build that
wrote it, the `map_uid` it belongs to, the memory's config, counters, instance and support metadata, the
keyframes folded in) and `memory.npz` (each instance's voxel keys and evidence, each support surface's
cells). `read_memory` validates everything before anything is replaced, so the caller can fall back
(the memory node re-proposes every keyframe) or refuse (`mllm3d segment`): the format version (an older
or newer one is refused naming it), every zip member's CRC, that the memory belongs to this map (its
`map_uid`), that it was built with this memory config (the first differing field is named), and every
array's dtype and shape.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from ..mapping.mapper import check_zip_crc, package_version, read_format_json
from .object_memory import ObjectMemory, ObjectMemoryConfig
from ..mapping.tsdf_map import MapFileError

MEMORY_FORMAT = "mllm3d_ros.object_memory"
MEMORY_FORMAT_VERSION = 1
MEMORY_META, MEMORY_ARRAYS = "memory.json", "memory.npz"


class MemoryFileError(MapFileError):
    """A saved memory cannot be used with this map or this build (missing, corrupt, another map's, another
    config's, another version's); the message says which."""


@dataclasses.dataclass(frozen=True, eq=False)
class SavedMemory:
    """A memory read and checked by `read_memory`, ready for `ObjectMemory.restore_state`."""

    meta: dict
    arrays: dict[str, np.ndarray]

    @property
    def instances(self) -> int:
        return len(self.meta["instances"])

    @property
    def keyframe_ids(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.meta["keyframe_ids"])


def _config_dict(config: ObjectMemoryConfig) -> dict:
    # Through JSON once, so that a config read back compares equal to the running one (tuples become lists).
    return json.loads(json.dumps(dataclasses.asdict(config)))


def has_memory(folder: str | Path) -> bool:
    """Whether a map folder holds a saved memory (its metadata file)."""
    return (Path(folder) / MEMORY_META).is_file()


def save_memory(memory: ObjectMemory, folder: str | Path, map_uid: str) -> None:
    """Write the memory into the map folder `folder` (being written by `Mapper.save`: the caller makes the
    folder appear whole or not at all), bound to the map `map_uid`."""
    folder = Path(folder)
    meta, arrays = memory.export_state()
    meta.update({"format": MEMORY_FORMAT, "version": MEMORY_FORMAT_VERSION,
                 "written_by": f"mllm3d_ros {package_version()}", "map_uid": map_uid,
                 "config": _config_dict(memory.config)})
    np.savez(folder / MEMORY_ARRAYS, **arrays)
    (folder / MEMORY_META).write_text(json.dumps(meta, indent=1))


def read_memory(folder: str | Path, config: ObjectMemoryConfig, map_uid: str | None) -> SavedMemory:
    """The memory saved in the map folder `folder`, checked against this build, this memory `config` and the
    map it must belong to (`map_uid`, the loaded map's); MemoryFileError says what does not fit."""
    folder = Path(folder)
    meta_path, arrays_path = folder / MEMORY_META, folder / MEMORY_ARRAYS
    meta = read_format_json(meta_path, MEMORY_FORMAT, MEMORY_FORMAT_VERSION, MemoryFileError, "memory")
    if map_uid is None or meta.get("map_uid") != map_uid:
        raise MemoryFileError(f"{meta_path} belongs to another map (map_uid {meta.get('map_uid')!r}, the loaded "
                              f"map's is {map_uid!r}): a memory is only used with the map it was saved with")
    saved, running = meta.get("config"), _config_dict(config)
    if saved != running:
        if not isinstance(saved, dict):
            raise MemoryFileError(f"{meta_path} has no memory config")
        diff = next((k for k in running if saved.get(k) != running[k]), next(iter(saved.keys() - running.keys()), "?"))
        raise MemoryFileError(f"{meta_path} was built with {diff}={saved.get(diff)!r}; this memory uses "
                              f"{running.get(diff)!r}: rebuild the memory (propose the keyframes again)")
    if not arrays_path.is_file():
        raise MemoryFileError(f"saved memory is incomplete: {arrays_path} is missing")
    try:
        check_zip_crc(arrays_path, "memory file")
    except MapFileError as exc:
        raise MemoryFileError(str(exc)) from None
    try:
        with np.load(arrays_path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        # Restored into a scratch memory first: a malformed state raises here and replaces nothing.
        ObjectMemory(config).restore_state(meta, arrays)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise MemoryFileError(f"the memory in {folder} could not be read: {type(exc).__name__}: {exc}") from exc
    return SavedMemory(meta, arrays)


__all__ = ["MEMORY_FORMAT", "MEMORY_FORMAT_VERSION", "MemoryFileError", "SavedMemory", "has_memory", "read_memory",
           "save_memory"]
