"""The object memory saved beside its map and read back (core/memory_file.py, Mapper's save/load hooks): the same
objects (ids, labels, points), the same state (a keyframe integrated after the load changes both alike), and
every file that does not fit refused naming why, leaving the running memory as it was."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mllm3d_ros.core.mapper import Mapper
from mllm3d_ros.core.memory_file import (MEMORY_FORMAT_VERSION, MemoryFileError, has_memory, read_memory,
                                         save_memory)
from mllm3d_ros.core.object_memory import ObjectMemory, ObjectMemoryConfig
from rgbd_scene import orbit_poses, room_frame
from test_mapper import _flip_member_bytes
from test_object_memory import EYES, ORTHO, Q, _floor_surface, agnostic, proposal, view


def _memory() -> ObjectMemory:
    """Two labelled cubes, an unlabelled object from class-agnostic masks, and the floor as a support."""
    memory = ObjectMemory()
    floor = _floor_surface()
    for k, eye in enumerate(EYES[:4]):
        kf, box_id = view(k, eye)
        preds = [proposal(box_id == 0, "cube", Q), agnostic(box_id == 1)]
        if k < 3:
            preds.append(proposal(box_id == 1, "crate", ORTHO))
        memory.integrate(kf, preds, floor)
    return memory


def _objects(memory: ObjectMemory):
    return [(o.instance_id, o.label, o.label_scores, o.points_world_m.shape[0], o.detections, o.views_seen,
             round(o.confidence, 9), o.best_keyframe_ids, o.support, o.label_hints) for o in memory.objects()]


def _saved(tmp_path, memory: ObjectMemory, uid: str = "map-1"):
    folder = tmp_path / "map"
    folder.mkdir(exist_ok=True)
    save_memory(memory, folder, uid)
    return folder


def test_a_saved_memory_reads_back_as_the_same_objects_and_goes_on_alike(tmp_path):
    memory = _memory()
    assert len(memory.objects()) >= 2 and memory.stats.supports == 1
    folder = _saved(tmp_path, memory)
    restored = ObjectMemory()
    saved = read_memory(folder, restored.config, "map-1")
    restored.restore_state(saved.meta, saved.arrays)
    assert _objects(restored) == _objects(memory)
    for a, b in zip(restored.objects(), memory.objects()):
        np.testing.assert_array_equal(a.points_world_m, b.points_world_m)
        np.testing.assert_array_equal(a.embedding, b.embedding)
    assert restored.keyframe_ids == memory.keyframe_ids == frozenset(range(4)) == frozenset(saved.keyframe_ids)
    assert restored.stats == memory.stats and restored.supports()[0].height_m == memory.supports()[0].height_m
    # The whole state came back (evidence, ids, counters): one more keyframe changes both the same way.
    for m in (memory, restored):
        kf, box_id = view(4, EYES[4])
        m.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
    assert _objects(restored) == _objects(memory) and restored.stats == memory.stats


@pytest.mark.parametrize("kind, message", [
    ("missing", "memory.json is missing"),
    ("other map", "belongs to another map"),
    ("older version", f"memory format version {MEMORY_FORMAT_VERSION - 1}, written by mllm3d_ros 0.0.1"),
    ("other config", "was built with voxel_size_m=0.03; this memory uses 0.05"),
    ("flipped bytes", "CRC"),
    ("array shape", "could not be read"),
    ("not json", "is not valid JSON"),
])
def test_a_memory_file_that_does_not_fit_is_refused_naming_why(tmp_path, kind, message):
    folder = _saved(tmp_path, _memory())
    meta_path = folder / "memory.json"
    meta = json.loads(meta_path.read_text())
    uid, config = "map-1", ObjectMemoryConfig()
    if kind == "missing":
        shutil.rmtree(folder)
        folder.mkdir()
    elif kind == "other map":
        uid = "map-2"
    elif kind == "older version":
        meta.update(version=MEMORY_FORMAT_VERSION - 1, written_by="mllm3d_ros 0.0.1")
    elif kind == "other config":
        config = ObjectMemoryConfig(voxel_size_m=0.05)
    elif kind == "flipped bytes":
        _flip_member_bytes(folder / "memory.npz")
    elif kind == "array shape":
        arrays = dict(np.load(folder / "memory.npz"))
        arrays["inst_0_hits"] = arrays["inst_0_hits"][:-1]
        np.savez(folder / "memory.npz", **arrays)
    elif kind == "not json":
        meta_path.write_text("{")
    if kind not in ("missing", "not json"):
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(MemoryFileError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_memory(folder, config, uid)


def _mapper_with_memory(n: int = 5):
    """A mapper of the synthetic room whose memory is bound to it as the memory node binds it."""
    mapper = Mapper()
    for k, pose in enumerate(orbit_poses(n)):
        assert mapper.process(room_frame((k + 1) * 100_000_000, pose))
    memory = ObjectMemory()
    restored = []

    def load(folder, uid):
        try:
            saved = read_memory(folder, memory.config, uid)
        except MemoryFileError as exc:
            restored.append(str(exc))
            memory.reset()
            return
        memory.reset()
        memory.restore_state(saved.meta, saved.arrays)
        restored.append("restored")

    mapper.add_reset_listener(memory.reset, save=lambda folder, uid: save_memory(memory, folder, uid), load=load)
    return mapper, memory, restored


def test_the_mapper_saves_bound_state_into_the_map_folder_and_loads_it_instead_of_resetting(tmp_path):
    mapper, memory, restored = _mapper_with_memory()
    for k, eye in enumerate(EYES[:3]):  # (objects of another scene: the memory only has to come back whole)
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q)])
    before = _objects(memory)
    assert before
    folder = mapper.save(tmp_path / "map")
    assert has_memory(folder) and not (tmp_path / "map.partial").exists()
    uid = json.loads((folder / "map.json").read_text())["map_uid"]
    assert mapper.map_uid == uid and json.loads((folder / "memory.json").read_text())["map_uid"] == uid
    mapper.reset()  # the listener: the memory is dropped
    assert memory.objects() == () and restored == []
    assert mapper.load(folder) == uid
    assert restored == ["restored"] and _objects(memory) == before
    # A memory file of another save of the map is refused: the load drops the memory (re-propose).
    other = mapper.save(tmp_path / "other")
    shutil.copy(other / "memory.json", folder / "memory.json")
    mapper.load(folder)
    assert "belongs to another map" in restored[-1] and memory.objects() == ()


def test_a_failing_bound_saver_fails_the_save_and_writes_nothing(tmp_path):
    mapper, _, _ = _mapper_with_memory(3)

    def broken(folder, uid):
        raise OSError("disk full")

    mapper.add_reset_listener(lambda: None, save=broken)
    with pytest.raises(OSError, match="disk full"):
        mapper.save(tmp_path / "map")
    assert not (tmp_path / "map").exists() and not (tmp_path / "map.partial").exists()
