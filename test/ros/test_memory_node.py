"""ros/memory_node.py in process: its parameters reach the object memory's config and the map's proposer."""

from __future__ import annotations

import pytest
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter

from mllm3d_ros.core.mapping.mapper import Mapper
from mllm3d_ros.core.memory.object_memory import ObjectMemoryConfig
from mllm3d_ros.ros.memory_node import MemoryNode

pytestmark = pytest.mark.ros


def _memory_config(**overrides) -> tuple[ObjectMemoryConfig, bool]:
    """The memory's config, and whether the map's class-agnostic proposer is on."""
    context = Context()
    rclpy.init(context=context)
    try:
        node = MemoryNode(Mapper(), context=context, namespace="/memtest",
                          parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        try:
            return node.memory.config, node.map_objects is not None
        finally:
            node.shutdown_core()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_memory_parameters_reach_the_object_memory():
    default, map_objects = _memory_config()
    assert default.keep_apart is True and default.min_detections == 2 and default.voxel_size_m == 0.03 and map_objects
    config, map_objects = _memory_config(keep_apart=False, min_detections=3, voxel_size_m=0.05, max_instances=50,
                                         map_objects=False)
    assert (config.keep_apart, config.min_detections, config.voxel_size_m, config.max_instances) == (False, 3, 0.05, 50)
    assert not map_objects


def test_describe_after_a_map_reset_reports_the_current_memory():
    # A former bug: after ~/reset, describe said "0 of 0 confirmed objects (100 keyframes in the memory)".
    import sys
    from pathlib import Path
    sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "core" / stage) for stage in ("mapping", "memory", "query")]
    from test_object_memory import EYES, proposal, view

    from mllm3d_ros.srv import DescribeScene

    context = Context()
    rclpy.init(context=context)
    mapper = Mapper()
    node = MemoryNode(mapper, context=context, namespace="/memtest",
                      parameter_overrides=[Parameter("model_captions", value=False)])
    try:
        for k in range(3):
            keyframe, box_id = view(k, EYES[k])
            node.memory.integrate(keyframe, (proposal(box_id == 0),))
        before = node._on_describe(DescribeScene.Request(), DescribeScene.Response()).message
        assert "(3 keyframes in the memory)" in before and before.startswith("1 of 1 confirmed"), before
        mapper.reset()  # what ~/reset does; the memory node listens
        after = node._on_describe(DescribeScene.Request(), DescribeScene.Response()).message
        assert after == "0 of 0 confirmed objects (0 keyframes in the memory)", after
        assert "keyframes=0 " in node.log_stats()
    finally:
        node.shutdown_core()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
