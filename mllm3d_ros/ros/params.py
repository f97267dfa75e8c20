"""Declare a node's parameters (generated `ParamSpec`s, `mllm3d_ros.node_params`), with descriptors and validation.

Each node's `ParamSpec`s come from the one declaration of each parameter (the core configs' `param()` fields);
`declare_and_read` declares them (ranges go into the ParameterDescriptor so `ros2 param set` is refused out of
range too), then validates the values from the YAML and raises ParameterError in the core's one wording
("parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 2.0"). An integer given for a float parameter
(`depth_max_m: 4`) is accepted as that float; rclpy alone refuses it with a type exception. `check_overrides`
refuses override names no node declares, naming the closest known one; `check_agreement` refuses nodes of one
map that disagree on a shared parameter (map_frame).
"""

from __future__ import annotations

from typing import Any, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from ..core.config import MUST_AGREE, ConfigError, unknown_parameter_message
from ..node_params import ParamSpec  # noqa: F401 (re-exported: nodes and tests import it from here)


class ParameterError(ValueError):
    """A parameter value is refused; the message names the parameter and the allowed values."""


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = f"one of {list(spec.choices)}"
    if spec.low is not None and spec.high is not None:
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high),
                                                            step=0.0)]
    return desc


def check_value(spec: ParamSpec, value: Any) -> None:
    """Raise ParameterError unless `value` fits the spec's type, range and choices (the core's one wording)."""
    try:
        spec.check(value)
    except ConfigError as exc:
        raise ParameterError(str(exc)) from None


def declare_and_read(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on `node`, validate the values, and return them by name."""
    values: dict[str, Any] = {}
    overrides = _overrides(node)
    for spec in specs:
        try:
            node.declare_parameter(spec.name, spec.default, _descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            if spec.name not in overrides:
                raise ParameterError(f"parameter '{spec.name}' refused: {exc}") from None
            given = overrides[spec.name].value
            check_value(spec, given)  # the typed message naming the parameter, the type or the range
            if not (isinstance(spec.default, float) and isinstance(given, int)):
                raise ParameterError(f"parameter '{spec.name}' refused: {exc}") from None
            node.declare_parameter(spec.name, float(given), _descriptor(spec), ignore_override=True)
        value = node.get_parameter(spec.name).value
        check_value(spec, value)
        values[spec.name] = float(value) if isinstance(spec.default, float) else value
    by_name = {s.name: s for s in specs}

    def _on_set(params) -> SetParametersResult:
        for param in params:
            spec = by_name.get(param.name)
            if spec is None:
                continue
            try:
                check_value(spec, param.value)
            except ParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_on_set)
    return values


def _overrides(node: Node) -> dict:
    """The node's parameter overrides (params file blocks and `-p`), by name.

    rclpy keeps them in `Node._parameter_overrides` (Humble through Kilted) and has no public
    accessor; a node built without them has none.
    """
    return dict(getattr(node, "_parameter_overrides", {}) or {})


def check_overrides(nodes: Sequence[Node]) -> None:
    """Raise ParameterError for an override that no node of this process declares.

    `-p name:=value` reaches every node of a process (the perception node hosts two), so a name is
    refused only when none of `nodes` has it; `qos_overrides.*` belong to rclpy.
    """
    for node in nodes:
        for name in _overrides(node):
            if name.startswith("qos_overrides.") or any(n.has_parameter(name) for n in nodes):
                continue
            raise ParameterError(unknown_parameter_message(
                name, node.get_name(), node.list_parameters([], 0).names))


def check_agreement(node: str, values: dict[str, Any], other: str, other_values: dict[str, Any] | None) -> None:
    """Raise ParameterError when a parameter nodes of one map must agree on (`core.config.MUST_AGREE`: map_frame)
    differs between two of them (`other_values` None: nothing to check). Other shared declarations (a stats
    period, a depth tolerance) may differ per node."""
    if other_values is None:
        return
    for name in MUST_AGREE:
        if name in values and name in other_values and values[name] != other_values[name]:
            raise ParameterError(f"parameter '{name}': node {node} has {values[name]!r} but node {other} has "
                                 f"{other_values[name]!r}; nodes that share one map must agree")
