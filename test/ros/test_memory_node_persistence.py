"""ros/memory_node.py in process: the object memory is saved with the map (the mapping node's ~/save_map calls
Mapper.save) and restored by a load (~/load_map), so only the keyframes it had not folded in are proposed
again; a memory file that does not fit is a warning, and every keyframe is proposed again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter

from mllm3d_ros.core.mapping.mapper import Mapper
from mllm3d_ros.ros.memory_node import MemoryNode
from mllm3d_ros.srv import DescribeScene

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "core" / stage) for stage in ("mapping", "memory", "query")]
from rgbd_scene import orbit_poses, room_frame  # noqa: E402
from test_object_memory import EYES, proposal, view  # noqa: E402

pytestmark = pytest.mark.ros


def _objects(memory):
    return [(o.instance_id, o.label, o.points_world_m.shape[0], o.detections) for o in memory.objects()]


def test_a_map_load_restores_the_memory_saved_with_it_and_proposes_only_the_rest(tmp_path):
    context = Context()
    rclpy.init(context=context)
    mapper = Mapper()
    for k, pose in enumerate(orbit_poses(6)):
        mapper.process(room_frame((k + 1) * 100_000_000, pose))
    ids = [kf.keyframe_id for kf in mapper.keyframes()]
    assert len(ids) >= 3
    node = MemoryNode(mapper, context=context, namespace="/memsave",
                      parameter_overrides=[Parameter("model_captions", value=False),
                                           Parameter("map_objects", value=False)])
    try:
        # The memory folded in keyframes 0..2 (objects of the two-cube scene, under those ids).
        for k in range(3):
            keyframe, box_id = view(ids[k], EYES[k])
            node.memory.integrate(keyframe, (proposal(box_id == 0),))
        before = _objects(node.memory)
        assert len(before) == 1
        folder = mapper.save(tmp_path / "map")  # what ~/save_map does
        assert (folder / "memory.json").is_file() and (folder / "memory.npz").is_file()
        mapper.reset()
        assert node.memory.objects() == ()
        mapper.load(folder)  # what ~/load_map does
        assert _objects(node.memory) == before
        message = node._on_describe(DescribeScene.Request(), DescribeScene.Response()).message
        assert message == "1 of 1 confirmed objects (3 keyframes in the memory)", message
        node._poll()  # the timer: only the keyframes the memory had not folded in are proposed
        assert node.worker.stats.submitted == len(ids) - 3

        # A memory file that does not fit: a warning, the memory dropped, every keyframe proposed again.
        (folder / "memory.npz").write_bytes(b"PK not a zip")
        mapper.load(folder)
        assert node.memory.objects() == () and node.worker.stats.queued == 0
        node._poll()
        assert node.worker.stats.submitted == 2 * len(ids) - 3
    finally:
        node.shutdown_core()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
