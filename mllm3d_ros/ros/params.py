"""Declare node parameters in one place, with descriptors, ranges and validation.

Each node lists its parameters as `ParamSpec`s; `declare_and_read` declares them (ranges go into
the ParameterDescriptor so `ros2 param set` is refused out of range too), then validates the
values from the YAML and raises ParameterError naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node


class ParameterError(ValueError):
    """A parameter value is refused; the message names the parameter and the allowed values."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True


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
    """Raise ParameterError unless `value` fits the spec's type, range and choices."""
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ParameterError(f"parameter '{spec.name}' must be {expected.__name__}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ParameterError(f"parameter '{spec.name}' must be one of {list(spec.choices)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
            raise ParameterError(f"parameter '{spec.name}' must be in [{spec.low}, {spec.high}], got {value!r}")


def declare_and_read(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on `node`, validate the values, and return them by name."""
    values: dict[str, Any] = {}
    for spec in specs:
        try:
            node.declare_parameter(spec.name, spec.default, _descriptor(spec))
        except InvalidParameterValueException as exc:
            raise ParameterError(f"parameter '{spec.name}' refused: {exc}") from None
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
