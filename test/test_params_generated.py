"""One declaration per parameter: the generated files, the nodes' specs and the core configs cannot drift.

`scripts/gen_params.py` regenerates config/perception.yaml and docs/parameters.md in memory here; any difference
from the committed files fails. Every ROS ParamSpec's default, range and unit is its core field's (scaled for the
s <-> ns pairs), a parameter that fills several configs (depth_tolerance_m, max_stamp_jump_s) has one declaration
for all of them, and the YAML's values are the declared defaults.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from mllm3d_ros.core.config import METADATA_KEY, SHARED_PARAMS, ConfigError, declared
from mllm3d_ros.node_params import NODES, configs_from_values, configs_from_yaml, node_specs

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_params", ROOT / "scripts" / "gen_params.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_yaml_and_docs_are_what_the_declarations_generate():
    gen = _gen()
    assert (ROOT / "config" / "perception.yaml").read_text() == gen.yaml_text(), \
        "config/perception.yaml drifted: run scripts/gen_params.py"
    assert (ROOT / "docs" / "parameters.md").read_text() == gen.docs_text(), \
        "docs/parameters.md drifted: run scripts/gen_params.py"
    assert gen.main(["--check"]) == 0


@pytest.mark.parametrize("node", sorted(NODES))
def test_every_spec_is_its_core_fields_declaration(node):
    specs = {s.name: s for s in node_specs(node)}
    assert len(specs) == len(NODES[node]), "a parameter is bound twice"
    for bind in NODES[node]:
        spec = specs[bind.name]
        for cls, field in bind.targets:
            decl = declared(cls)[field]
            default = next(f.default for f in dataclasses.fields(cls) if f.name == field)
            assert decl.default == default
            if bind.scale == 1.0:
                assert (spec.default, spec.low, spec.high, spec.choices, spec.unit) == \
                    (decl.default, decl.low, decl.high, decl.choices, decl.unit), (node, bind.name, cls.__name__)
                assert type(spec.default) is decl.type
            else:  # s <-> ns
                assert spec.default == pytest.approx(decl.default * bind.scale), (node, bind.name, cls.__name__)
                for ros, core in ((spec.low, decl.low), (spec.high, decl.high)):
                    assert (ros is None and core is None) or ros == pytest.approx(core * bind.scale)
            assert spec.description == declared(bind.targets[0][0])[bind.targets[0][1]].doc and spec.description


def test_a_parameter_several_configs_read_is_declared_once():
    # Every config field named like a shared parameter takes that one declaration (depth_tolerance_m in the
    # keyframe store, voting, view selection, the object memory and the marks).
    from mllm3d_ros.core.mapping import keyframes
    from mllm3d_ros.core.query import marks, view_selection, voting
    from mllm3d_ros.core.memory import object_memory
    holders = [keyframes.KeyframeConfig, voting.VotingConfig, view_selection.ViewSelectionConfig,
               object_memory.ObjectMemoryConfig, marks.MarkConfig]
    decls = {(d.default, d.low, d.high, d.unit) for cls in holders for n, d in declared(cls).items()
             if n == "depth_tolerance_m"}
    assert len(decls) == 1 and all("depth_tolerance_m" in declared(cls) for cls in holders)
    assert decls == {(SHARED_PARAMS["depth_tolerance_m"]["default"], *SHARED_PARAMS["depth_tolerance_m"]["range"],
                      "m")}
    # Every node that reads map_frame declares the one map_frame.
    for node, binds in NODES.items():
        for bind in binds:
            if bind.name in SHARED_PARAMS:
                cls, field = bind.targets[0]
                assert declared(cls)[field].default == SHARED_PARAMS[bind.name]["default"], (node, bind.name)
    assert sum(any(b.name == "map_frame" for b in binds) for binds in NODES.values()) == 5


@pytest.mark.parametrize("node", sorted(NODES))
def test_the_yaml_holds_the_declared_defaults(node):
    from_yaml = configs_from_yaml(ROOT / "config" / "perception.yaml", node)  # the repo's, not an installed copy
    assert from_yaml == configs_from_values(node, {})
    for cls, config in from_yaml.items():
        assert config == cls(), cls.__name__  # the configs' own defaults: the YAML restates nothing else


def test_every_declared_default_fits_its_declaration():
    for binds in NODES.values():
        for bind in binds:
            for cls, field in bind.targets:
                f = next(f for f in dataclasses.fields(cls) if f.name == field)
                assert METADATA_KEY in f.metadata
                cls()  # builds with every default (validate_fields in __post_init__)


def test_configs_from_values_refuses_in_the_one_wording():
    with pytest.raises(ConfigError) as info:
        configs_from_values("mapping", {"voxl_size_m": 0.02})
    assert str(info.value) == "unknown parameter 'voxl_size_m' for node mapping; did you mean 'voxel_size_m'?"
    with pytest.raises(ConfigError) as info:
        configs_from_values("mapping", {"max_stamp_skew_s": 20.0})
    assert str(info.value) == "parameter 'max_stamp_skew_s': expected float in [0.0, 10.0] s, got 20.0"
