"""ros/params.py in process: an int for a float is accepted, wrong types name the parameter and the
expected type, unknown override names are refused with the closest known name."""

from __future__ import annotations

import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from mllm3d_ros.ros.mapping_node import MAPPING_PARAMS
from mllm3d_ros.ros.memory_node import MEMORY_PARAMS
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
    ("queue_size", "four", "parameter 'queue_size': expected int in [1, 1000], got 'four'"),
    ("queue_size", 4.5, "parameter 'queue_size': expected int in [1, 1000], got 4.5"),
    ("depth_max_m", "far", "parameter 'depth_max_m': expected float in [0.1, 60.0] m, got 'far'"),
    ("map_frame", 3, "parameter 'map_frame': expected str, got 3"),
    ("depth_max_m", 100, "parameter 'depth_max_m': expected float in [0.1, 60.0] m, got 100"),
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
    with pytest.raises(ParameterError, match=r"unknown parameter 'depth_max' for node mapping; "
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


@pytest.mark.parametrize("name, value", [("voxel_size_m", 2.0), ("queue_size", 4.5), ("device", "gpu"),
                                         ("depth_max_m", "far")])
def test_ros_ros_args_and_yaml_refuse_in_identical_words(make_node, tmp_path, name, value):
    # `--ros-args -p name:=value` (an override) and the same value in the YAML read by `mllm3d segment`.
    import yaml

    from mllm3d_ros.core.config import ConfigError
    from mllm3d_ros.launch_spec import default_params_file
    from mllm3d_ros.node_params import configs_from_yaml
    with pytest.raises(ParameterError) as ros:
        declare_and_read(make_node("mapping", **{name: value}), MAPPING_PARAMS)
    data = yaml.safe_load(default_params_file().read_text())
    data["/**/mapping"]["ros__parameters"][name] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as from_yaml:
        configs_from_yaml(path, "mapping")
    assert str(ros.value) == str(from_yaml.value)


def test_the_node_builds_the_configs_the_cli_builds_from_one_yaml(make_node, tmp_path):
    # The node's ParamSpecs path (declare, read, configs_from_values) and `mllm3d segment`'s (session_configs)
    # give equal config objects from one YAML.
    import yaml

    from mllm3d_ros.core.query.pipeline import QueryConfig
    from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig
    from mllm3d_ros.core.query.voting import VotingConfig
    from mllm3d_ros.launch_spec import default_params_file
    from mllm3d_ros.node_params import configs_from_values
    from mllm3d_ros.offline_segment import session_configs
    data = yaml.safe_load(default_params_file().read_text())
    mapping = {"voxel_size_m": 0.03, "depth_min_m": 0.3, "block_budget": 15000, "depth_max_m": 5}
    query = {"default_max_views": 4, "min_support_ratio": 0.6, "depth_tolerance_m": 0.07}
    data["/**/mapping"]["ros__parameters"].update(mapping)
    data["/**/query"]["ros__parameters"].update(query)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    via_ros = {}
    via_ros.update(configs_from_values("mapping", declare_and_read(make_node("mapping", **mapping), MAPPING_PARAMS)))
    via_ros.update(configs_from_values("query", declare_and_read(make_node("query", **query), QUERY_PARAMS)))
    via_cli = session_configs(views=4, params_file=path)
    for cls in (TsdfMapConfig, QueryConfig, VotingConfig):
        assert via_ros[cls] == via_cli[cls], cls.__name__
    assert via_cli[TsdfMapConfig].depth_max_m == 5.0 and via_cli[VotingConfig].depth_tolerance_m == 0.07


def test_nodes_sharing_one_map_must_agree_on_its_frame(make_node):
    from mllm3d_ros.ros.params import check_agreement
    mapping = declare_and_read(make_node("mapping"), MAPPING_PARAMS)
    query = declare_and_read(make_node("query", map_frame="world"), QUERY_PARAMS)
    with pytest.raises(ParameterError) as info:
        check_agreement("query", query, "mapping", mapping)
    assert str(info.value) == ("parameter 'map_frame': node query has 'world' but node mapping has 'map'; nodes "
                               "that share one map must agree")
    check_agreement("query", declare_and_read(make_node("query"), QUERY_PARAMS), "mapping", mapping)
    # A shared declaration that is each node's own business (its stats period, its depth tolerance) may differ.
    mapping_1s = declare_and_read(make_node("mapping", stats_period_s=1.0, depth_tolerance_m=0.02), MAPPING_PARAMS)
    check_agreement("memory", declare_and_read(make_node("memory"), MEMORY_PARAMS), "mapping", mapping_1s)
