"""One declaration per parameter, and the validation every component config shares.

A config field is declared once, in the core config dataclass it belongs to, with `param(...)`: its
default, type (the default's, or `type=` when the default is None), range or choices or pattern,
unit and one line of description. `validate_fields(config)` (called first in each config's
`__post_init__`) checks every declared field; the ROS parameter declarations (`mllm3d_ros.node_params`
-> `ros/params.py`), `config/perception.yaml` and `docs/parameters.md` (`scripts/gen_params.py`) are
generated from these declarations, and `test/test_params_generated.py` fails on any drift.

PickNik's generate_parameter_library does the same for ROS 2 (one YAML declaration, generated
validation and docs), but it generates C++/Python through CMake at build time and cannot be
pip-installed for the pip-only set-ups this package supports (no colcon build), so this is the small
in-house equivalent.

Every refusal has one wording, whichever entry point the value came through (YAML, `--ros-args -p`,
the launcher, a CLI flag, a config built in code):
    parameter 'voxel_size_m': expected float in [0.005, 0.5] m, got 2.0
    unknown parameter 'voxl_size_m' for node mapping; did you mean 'voxel_size_m'?
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

METADATA_KEY = "mllm3d_param"
_TYPES = (bool, int, float, str)


class ConfigError(ValueError):
    """A configuration field holds a value outside its allowed range."""


@dataclass(frozen=True)
class ParamDecl:
    """What `param()` records about one field: everything a ROS descriptor, the YAML and the docs need."""

    default: Any
    type: type
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple = ()
    pattern: str = ""
    unit: str = ""
    doc: str = ""
    optional: bool = False  # None is allowed (then the default applies, e.g. sdf_trunc_m = 4 voxels)

    def expected(self) -> str:
        """'float in [0.005, 0.5] m', "one of ['cpu', 'cuda']", 'bool (true | false)', ..."""
        if self.type is bool:
            return "bool (true | false)"
        if self.choices:  # with a pattern, the choices name its families (cuda:N)
            return f"one of {list(self.choices)}"
        text = self.type.__name__
        if self.pattern:
            text += f" matching {self.pattern!r}"
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else _num(self.low)
            hi = "inf" if self.high is None else _num(self.high)
            text += f" in {'[' if self.low_inclusive else '('}{lo}, {hi}{']' if self.high_inclusive else ')'}"
        if self.unit:
            text += f" {self.unit}"
        if self.optional:
            text += " or null"
        return text

    def coerce(self, value: Any) -> Any:
        """An int given for a float (YAML `depth_max_m: 4`) is that float; nothing else is converted."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def problem(self, value: Any) -> str | None:
        """None when `value` fits; else what is expected (for `refusal`)."""
        if value is None:
            return None if self.optional else self.expected()
        value = self.coerce(value)
        if not isinstance(value, self.type) or (self.type is not bool and isinstance(value, bool)):
            return self.expected()
        if self.type is float and not math.isfinite(value):
            return self.expected()
        if self.pattern:
            if re.fullmatch(self.pattern, value) is None:
                return self.expected()
        elif self.choices and value not in self.choices:
            return self.expected()
        if self.type in (int, float):
            lo_ok = self.low is None or (value >= self.low if self.low_inclusive else value > self.low)
            hi_ok = self.high is None or (value <= self.high if self.high_inclusive else value < self.high)
            if not (lo_ok and hi_ok):
                return self.expected()
        return None

    def check(self, name: str, value: Any) -> Any:
        """The value (an int taken as a float where a float is declared), or ConfigError in the one wording."""
        problem = self.problem(value)
        if problem is not None:
            raise ConfigError(refusal(name, problem, value))
        return self.coerce(value)


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, int) else repr(float(x))


def refusal(name: str, expected: str, value: Any) -> str:
    """The one wording of a refused value: "parameter 'x': expected float in [0, 1] m, got 2.0"."""
    return f"parameter '{name}': expected {expected}, got {value!r}"


def nearest_hint(name: str, known: Iterable[str]) -> str:
    """"did you mean 'x'?" with the nearest known name (difflib), else the known names."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"


def unknown_parameter_message(name: str, node: str, known: Iterable[str]) -> str:
    """The one wording of an unknown name, with the nearest known one or the known names."""
    return f"unknown parameter '{name}' for node {node}; {nearest_hint(name, known)}"


def param(default: Any, *, range: tuple | None = None, open_low: bool = False, open_high: bool = False,
          choices: Iterable | None = None, pattern: str = "", unit: str = "", doc: str = "", type: type | None = None,
          optional: bool = False):
    """A dataclass field declared once: default, type, range / choices / pattern, unit, one line of doc.

    `range=(lo, hi)` (either may be None), inclusive unless `open_low` / `open_high`; `choices` for a closed
    set; `pattern` (a regular expression the whole string must match) for an open family such as cuda:N
    (`choices` then only list examples). `type` only when the default is None (then `optional` is implied).
    """
    kind = type if type is not None else default.__class__
    if kind not in _TYPES:
        raise TypeError(f"param(): type {kind!r} is not one of {_TYPES}")
    low, high = range if range is not None else (None, None)
    decl = ParamDecl(default=default, type=kind, low=low, high=high, low_inclusive=not open_low,
                     high_inclusive=not open_high, choices=tuple(choices or ()), pattern=pattern, unit=unit,
                     doc=doc, optional=optional or default is None)
    if default is not None and decl.problem(default) is not None:
        raise ConfigError(f"param(): the default {default!r} does not fit its own declaration ({decl.expected()})")
    return dataclasses.field(default=default, metadata={METADATA_KEY: decl})


def declared(cls_or_config) -> dict[str, ParamDecl]:
    """The `param()` declarations of a config class (or instance), by field name, in field order."""
    return {f.name: f.metadata[METADATA_KEY] for f in dataclasses.fields(cls_or_config)
            if METADATA_KEY in f.metadata}


def validate_fields(config) -> None:
    """Check every `param()` field of `config` (first thing in its `__post_init__`). An int given for a float
    field is stored as that float (frozen dataclasses included), so two configs built from `4` and `4.0` are equal."""
    for name, decl in declared(config).items():
        value = getattr(config, name)
        checked = decl.check(name, value)
        if checked is not value:
            object.__setattr__(config, name, checked)


# Parameters several components read, declared once here and shared by every config that needs them. Each
# node keeps its own value (a node's stats period or depth tolerance is its own business), except those of
# MUST_AGREE: nodes that share one map refuse to start when they name different values.
MUST_AGREE = ("map_frame",)
SHARED_PARAMS: dict[str, dict] = {
    "depth_tolerance_m": dict(default=0.05, range=(0.001, 1.0), unit="m",
                              doc="Visibility test: a point is seen by a view when its depth agrees with the "
                                  "view's within max(this, depth_tolerance_frac * depth)."),
    "map_frame": dict(default="map",
                      doc="Fixed frame of the map (REP-105); every node of one map must name the same frame."),
    "segment_service": dict(default="segmentation/segment_views", doc="SegmentViews service of the segmentation node."),
    "heartbeat_topic": dict(default="segmentation/heartbeat", doc="Liveness topic of the segmentation node."),
    "backend_timeout_s": dict(default=3.0, range=(0.5, 60.0), unit="s",
                              doc="The segmentation node counts as gone after this long without a heartbeat."),
    "stats_period_s": dict(default=10.0, range=(0.0, 3600.0), unit="s",
                           doc="Period of the statistics log line (0 = never)."),
}


def shared_param(name: str, **overrides):
    """A field declared by `SHARED_PARAMS[name]` (`overrides`: only `doc`, to say what this node does with it)."""
    return param(**{**SHARED_PARAMS[name], **overrides})


# --- the older point checks (cross-field bounds and undeclared fields), in the same wording -------------------

def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """Raise ConfigError unless `low <= value <= high` (bounds optional, inclusivity selectable)."""
    ParamDecl(default=None, type=float, low=low, high=high, low_inclusive=low_inclusive,
              high_inclusive=high_inclusive).check(name, value)


def check_int(name: str, value: int, low: int | None = None, high: int | None = None) -> None:
    """Raise ConfigError unless `value` is an int within [low, high]."""
    ParamDecl(default=None, type=int, low=low, high=high).check(name, value)


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raise ConfigError unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(refusal(name, f"one of {list(choices)}", value))
