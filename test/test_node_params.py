"""node_params: configs built from one YAML the same way by every entry point, and bad input refused in one
wording (a wrong type, out of range, an unknown name) whichever way it came: the YAML, a CLI flag, a config
built in code. The node paths (`--ros-args -p`, the launcher) are checked in test/ros/test_params.py,
test/ros/test_parameters.py and test/ros/test_launcher_refusals.py with the same strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.mapping.keyframes import KeyframeConfig
from mllm3d_ros.core.memory.object_memory import ObjectMemoryConfig
from mllm3d_ros.core.query.pipeline import QueryConfig
from mllm3d_ros.core.mapping.tsdf_map import TsdfMapConfig
from mllm3d_ros.core.query.voting import VotingConfig
from mllm3d_ros.node_params import check_flag, configs_from_values, configs_from_yaml, yaml_values


def default_params_file() -> Path:
    return Path(__file__).resolve().parents[1] / "config" / "perception.yaml"  # the repo's, not an installed copy


# (node, parameter, value, the one line)
BAD = [
    ("mapping", "voxel_size_m", 2.0, "parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 2.0"),
    ("mapping", "voxel_size_m", "fine", "parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 'fine'"),
    ("mapping", "queue_size", 4.5, "parameter 'queue_size': expected int in [1, 1000], got 4.5"),
    ("mapping", "device", "gpu", "parameter 'device': expected one of ['cpu', 'cuda', 'auto'], got 'gpu'"),
    ("query", "default_max_views", 100, "parameter 'default_max_views': expected int in [1, 64], got 100"),
    ("query", "marked_prompts", "yes", "parameter 'marked_prompts': expected bool (true | false), got 'yes'"),
    ("memory", "voxel_size_m", 0.0, "parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 0.0"),
    ("mapping", "voxl_size_m", 0.02, "unknown parameter 'voxl_size_m' for node mapping; did you mean 'voxel_size_m'?"),
    ("query", "max_view", 4, "unknown parameter 'max_view' for node query; did you mean 'max_views_limit'?"),
]


def _yaml_with(tmp_path: Path, node: str, name: str, value) -> Path:
    import yaml
    data = yaml.safe_load(default_params_file().read_text())
    data[f"/**/{node}"]["ros__parameters"][name] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("node, name, value, line", BAD)
def test_bad_value_in_the_yaml_is_one_line(tmp_path, node, name, value, line):
    with pytest.raises(ConfigError) as info:
        configs_from_yaml(_yaml_with(tmp_path, node, name, value), node)
    assert str(info.value) == line


@pytest.mark.parametrize("node, name, value, line", [b for b in BAD if not b[3].startswith("unknown")])
def test_bad_value_as_a_cli_flag_or_in_code_is_the_same_line(node, name, value, line):
    with pytest.raises(ConfigError) as info:
        check_flag("--flag", name, node, value)
    assert str(info.value) == f"--flag: {line}"
    with pytest.raises(ConfigError) as info:  # CLI overrides on top of the YAML
        configs_from_yaml(default_params_file(), node, {name: value})
    assert str(info.value) == line


def test_a_config_built_in_code_says_the_same():
    with pytest.raises(ConfigError) as info:
        TsdfMapConfig(voxel_size_m=2.0)
    assert str(info.value) == "parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 2.0"


def test_an_int_for_a_float_is_that_float():
    configs = configs_from_values("mapping", {"depth_max_m": 4, "voxel_size_m": 0.02})
    assert configs[TsdfMapConfig].depth_max_m == 4.0 and isinstance(configs[TsdfMapConfig].depth_max_m, float)
    assert TsdfMapConfig(depth_max_m=4) == TsdfMapConfig(depth_max_m=4.0)


def test_seconds_reach_the_nanosecond_fields():
    from mllm3d_ros.core.mapping.frame_checks import FrameGateConfig
    from mllm3d_ros.core.mapping.sync import SyncConfig
    c = configs_from_values("mapping", {"max_stamp_jump_s": 2.5, "sync_slop_s": 0.03})
    assert c[FrameGateConfig].max_stamp_jump_ns == c[SyncConfig].max_stamp_jump_ns == 2_500_000_000
    assert c[SyncConfig].slop_ns == 30_000_000


def test_one_parameter_reaches_every_config_that_reads_it():
    from mllm3d_ros.core.query.view_selection import ViewSelectionConfig
    q = configs_from_values("query", {"depth_tolerance_m": 0.08})
    assert q[VotingConfig].depth_tolerance_m == q[ViewSelectionConfig].depth_tolerance_m == 0.08
    assert configs_from_values("mapping", {"depth_tolerance_m": 0.08})[KeyframeConfig].depth_tolerance_m == 0.08
    assert configs_from_values("memory", {"depth_tolerance_m": 0.08})[ObjectMemoryConfig].depth_tolerance_m == 0.08


def test_segment_builds_the_nodes_configs_from_the_same_yaml(tmp_path):
    # `mllm3d segment` (session_configs) and the nodes (configs_from_values of the declared parameters) build
    # equal configs from one YAML; segment fuses with the mapping node's depth cut-off and block budget.
    from mllm3d_ros.offline_segment import session_configs
    path = _yaml_with(tmp_path, "mapping", "depth_min_m", 0.35)
    import yaml
    data = yaml.safe_load(path.read_text())
    data["/**/mapping"]["ros__parameters"].update(block_budget=12345, voxel_size_m=0.03)
    data["/**/query"]["ros__parameters"].update(min_support_ratio=0.6, refine_views=2)
    data["/**/memory"]["ros__parameters"].update(min_detections=3)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    seg = session_configs(views=4, voxel_size_m=None, params_file=path)
    nodes = {}
    for node in ("mapping", "query", "memory"):
        nodes.update(configs_from_values(node, yaml_values(path, node)))
    for cls in (TsdfMapConfig, KeyframeConfig, QueryConfig, VotingConfig, ObjectMemoryConfig):
        assert seg[cls] == nodes[cls], cls.__name__
    assert (seg[TsdfMapConfig].depth_min_m, seg[TsdfMapConfig].block_budget, seg[TsdfMapConfig].voxel_size_m) == \
        (0.35, 12345, 0.03)
    # A flag overrides the YAML, checked as the parameter is.
    assert session_configs(views=6, voxel_size_m=0.05, params_file=path)[TsdfMapConfig].voxel_size_m == 0.05
    assert session_configs(views=6, params_file=path)[QueryConfig].default_max_views == 6


def test_the_demo_reads_the_package_yaml_with_its_simulator_settings_on_top(tmp_path):
    # One block per node (a second `/**/simulator` key would be a YAML duplicate): the demo's settings replace
    # the generated simulator block's, everything else is the package's YAML.
    import yaml

    from mllm3d_ros.demo import _demo_params
    from mllm3d_ros.node_params import ReplayNodeConfig, SimulatorNodeConfig
    path = _demo_params(tmp_path, seed=5, frames=60)
    assert path.read_text().count("/**/simulator:") == 1
    sim = configs_from_yaml(path, "simulator")[SimulatorNodeConfig]
    assert (sim.seed, sim.num_frames, sim.loop, sim.rate_hz) == (5, 60, False, 8.0)
    assert sim.ground_truth_path == str(tmp_path / "ground_truth.json")
    for node in ("mapping", "query", "memory", "segmentation"):
        assert configs_from_yaml(path, node) == configs_from_yaml(default_params_file(), node)
    assert configs_from_yaml(path, "replay")[ReplayNodeConfig] == ReplayNodeConfig()
    assert yaml.safe_load(path.read_text())["/**/mapping"] == yaml.safe_load(default_params_file().read_text())["/**/mapping"]
