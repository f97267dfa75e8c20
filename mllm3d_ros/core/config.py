"""Validation helpers shared by every component config (errors name the field and the range)."""

from __future__ import annotations

import math
from typing import Iterable


class ConfigError(ValueError):
    """A configuration field holds a value outside its allowed range."""


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """Raise ConfigError unless `low <= value <= high` (bounds optional, inclusivity selectable)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        raise ConfigError(f"{name} must be in {lb}{lo}, {hi}{hb}, got {value!r}")


def check_int(name: str, value: int, low: int | None = None, high: int | None = None) -> None:
    """Raise ConfigError unless `value` is an int within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    check_range(name, value, low, high)


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raise ConfigError unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
