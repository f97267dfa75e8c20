"""The shared config checks: a refused value raises ConfigError naming the field, the range and the value."""

from __future__ import annotations

import math

import pytest

from mllm3d_ros.core.config import ConfigError, check_choice, check_int, check_range


def _refusal(check, *args, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        check(*args, **kw)
    return str(info.value)


def test_check_range_accepts_the_bounds_and_names_field_range_and_value():
    check_range("voxel_size_m", 0.005, 0.005, 0.5)
    check_range("voxel_size_m", 0.5, 0.005, 0.5)
    message = _refusal(check_range, "voxel_size_m", 0.6, 0.005, 0.5)
    assert "voxel_size_m" in message and "[0.005, 0.5]" in message and message.endswith("0.6")
    check_range("x", 1e-9, 0, low_inclusive=False)
    assert _refusal(check_range, "x", 0, 0, low_inclusive=False).endswith("got 0")  # an open bound excludes it
    assert _refusal(check_range, "y", 1.0, None, 1, high_inclusive=False).endswith("got 1.0")
    check_range("z", -1e9)  # no bounds: any finite number


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "0.1", None])
def test_check_range_refuses_what_is_not_a_finite_number(bad):
    message = _refusal(check_range, "f", bad, 0, 1)
    assert "f" in message and message.endswith(f"got {bad!r}")


def test_check_int_and_check_choice():
    check_int("n", 3, 1, 3)
    assert _refusal(check_int, "n", 2.0, 1, 3).endswith("got 2.0")
    assert _refusal(check_int, "n", False).endswith("got False")
    message = _refusal(check_int, "n", 4, 1, 3)
    assert "[1, 3]" in message and message.endswith("got 4")
    check_choice("device", "cpu", ("cpu", "cuda"))
    message = _refusal(check_choice, "device", "tpu", iter(("cpu", "cuda")))
    assert "device" in message and "['cpu', 'cuda']" in message and message.endswith("'tpu'")
