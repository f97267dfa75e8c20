"""The shared config checks: every error names the field, the range and the value."""

from __future__ import annotations

import math

import pytest

from mllm3d_ros.core.config import ConfigError, check_choice, check_int, check_range


def test_check_range_accepts_the_bounds_and_names_field_range_and_value():
    check_range("voxel_size_m", 0.005, 0.005, 0.5)
    check_range("voxel_size_m", 0.5, 0.005, 0.5)
    with pytest.raises(ConfigError, match=r"^voxel_size_m must be in \[0.005, 0.5\], got 0.6$"):
        check_range("voxel_size_m", 0.6, 0.005, 0.5)
    with pytest.raises(ConfigError, match=r"^x must be in \(0, inf\], got 0$"):
        check_range("x", 0, 0, low_inclusive=False)
    with pytest.raises(ConfigError, match=r"^y must be in \[-inf, 1\), got 1.0$"):
        check_range("y", 1.0, None, 1, high_inclusive=False)


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "0.1", None])
def test_check_range_refuses_what_is_not_a_finite_number(bad):
    with pytest.raises(ConfigError, match=r"^f must be a finite number, got "):
        check_range("f", bad, 0, 1)


def test_check_int_and_check_choice():
    check_int("n", 3, 1, 3)
    with pytest.raises(ConfigError, match=r"^n must be an integer, got 2.0$"):
        check_int("n", 2.0, 1, 3)
    with pytest.raises(ConfigError, match=r"^n must be an integer, got False$"):
        check_int("n", False)
    with pytest.raises(ConfigError, match=r"^n must be in \[1, 3\], got 4$"):
        check_int("n", 4, 1, 3)
    check_choice("device", "cpu", ("cpu", "cuda"))
    with pytest.raises(ConfigError, match=r"^device must be one of \['cpu', 'cuda'\], got 'tpu'$"):
        check_choice("device", "tpu", iter(("cpu", "cuda")))
