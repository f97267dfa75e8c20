"""ros/params.py in process: an int for a float is accepted, wrong types name the parameter and the
expected type, unknown override names are refused with the closest known name."""

from __future__ import annotations

import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from mllm3d_ros.ros.mapping_node import MAPPING_PARAMS
from mllm3d_ros.ros.params import ParameterError, check_overrides, declare_and_read
from mllm3d_ros.ros.query_node import QUERY_PARAMS

pytestmark = pytest.mark.ros


@pytest.fixture
def make_node():
    context = Context()
    rclpy.init(context=context)
    nodes = []

    def make(name: str, **overrides) -> Node:
        nodes.append(Node(name, context=context, parameter_overrides=[Parameter(k, value=v)
                                                                      for k, v in overrides.items()]))
        return nodes[-1]

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_int_for_a_float_parameter_is_accepted_as_float(make_node):
    node = make_node("mapping", depth_max_m=4, voxel_size_m=0.05)
    values = declare_and_read(node, MAPPING_PARAMS)
    assert values["depth_max_m"] == 4.0 and isinstance(values["depth_max_m"], float)
    assert node.get_parameter("depth_max_m").value == 4.0
    assert node.get_parameter("depth_max_m").type_ is Parameter.Type.DOUBLE  # still a float parameter


@pytest.mark.parametrize("name, value, expected", [
    ("queue_size", "four", "parameter 'queue_size' must be an integer, got 'four' (str)"),
    ("queue_size", 4.5, "parameter 'queue_size' must be an integer, got 4.5 (float)"),
    ("depth_max_m", "far", "parameter 'depth_max_m' must be a number (float), got 'far' (str)"),
    ("map_frame", 3, "parameter 'map_frame' must be a string, got 3 (int)"),
    ("depth_max_m", 100, "parameter 'depth_max_m' must be in [0.1, 60.0], got 100.0"),
])
def test_wrong_type_or_range_names_the_parameter_and_the_expectation(make_node, name, value, expected):
    with pytest.raises(ParameterError) as info:
        declare_and_read(make_node("mapping", **{name: value}), MAPPING_PARAMS)
    assert str(info.value) == expected


def test_unknown_override_is_refused_with_the_closest_name(make_node):
    mapping = make_node("mapping", depth_max=4.0)
    query = make_node("query", depth_max=4.0)
    declare_and_read(mapping, MAPPING_PARAMS)
    declare_and_read(query, QUERY_PARAMS)
    with pytest.raises(ParameterError, match=r"unknown parameter 'depth_max' for node 'mapping': "
                                             r"did you mean 'depth_max_m'\?"):
        check_overrides([mapping, query])


def test_override_known_to_another_node_of_the_process_is_accepted(make_node):
    # `-p timeout_s:=30.0` reaches both nodes of perception_node; only the query node declares it.
    mapping = make_node("mapping", timeout_s=30.0)
    query = make_node("query", timeout_s=30.0)
    declare_and_read(mapping, MAPPING_PARAMS)
    declare_and_read(query, QUERY_PARAMS)
    check_overrides([mapping, query])
    assert query.get_parameter("timeout_s").value == 30.0
