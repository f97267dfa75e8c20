"""Tests of the project's own TF buffer (used where tf2_ros is missing)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.geometry import rotation_angle_rad
from mllm3d_ros.core.mapping.tf_buffer import (ExtrapolationError, TfBufferConfig, TransformBuffer, TransformUnavailable,
                                       check_frame_id, slerp)
from mllm3d_ros.core.types import InputError

S = 1_000_000_000


def _yaw(deg: float) -> tuple[float, float, float, float]:
    h = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(h), math.cos(h))


def _robot_tree() -> TransformBuffer:
    tf = TransformBuffer()
    tf.set_transform("map", "odom", 0, (1.0, 0.0, 0.0), _yaw(90), static=True)
    tf.set_transform("odom", "base_link", 10 * S, (0.0, 0.0, 0.0), _yaw(0))
    tf.set_transform("odom", "base_link", 12 * S, (2.0, 0.0, 0.0), _yaw(90))
    # camera 0.5 m up, optical frame (z forward = base x, x right = -base y, y down = -base z)
    optical = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0.5], [0, 0, 0, 1]], float)
    tf.set_matrix("base_link", "camera_optical", 0, optical, static=True)
    return tf


def test_chained_lookup_interpolates_translation_and_slerps_rotation():
    tf = _robot_tree()
    map_T_cam = tf.lookup("map", "camera_optical", 11 * S)
    # at t=11 s base is at odom x=1 m, yawed 45 deg; odom is at map x=1 m, yawed 90 deg
    np.testing.assert_allclose(map_T_cam[:3, 3], [1.0, 1.0, 0.5], atol=1e-9)
    forward_map = map_T_cam[:3, :3] @ [0, 0, 1]  # camera optical z = base x, yawed 135 deg in the map
    np.testing.assert_allclose(forward_map, [math.cos(math.radians(135)), math.sin(math.radians(135)), 0], atol=1e-9)
    # inverse direction and a lookup between two leaves through their common ancestor
    np.testing.assert_allclose(tf.lookup("camera_optical", "map", 11 * S) @ map_T_cam, np.eye(4), atol=1e-9)
    odom_T_cam = tf.lookup("odom", "camera_optical", 10 * S)
    np.testing.assert_allclose(odom_T_cam[:3, 3], [0.0, 0.0, 0.5], atol=1e-9)
    np.testing.assert_allclose(tf.lookup("map", "map", 5 * S), np.eye(4))


def test_slerp_takes_the_short_arc():
    q = slerp(np.array(_yaw(170)), -np.array(_yaw(-170)), 0.5)  # -q is the same rotation
    angle = 2 * math.degrees(math.atan2(q[2], q[3]))
    assert abs(abs(angle) - 180.0) < 1e-6


def test_errors_name_the_missing_frame_the_broken_link_and_extrapolation():
    tf = _robot_tree()
    with pytest.raises(TransformUnavailable, match="'camera_link' does not exist"):
        tf.lookup("map", "camera_link", 11 * S)
    tf.set_transform("world", "gps", 11 * S, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TransformUnavailable, match="not connected.*'map'.*'world'"):
        tf.lookup("gps", "base_link", 11 * S)
    with pytest.raises(ExtrapolationError, match="'odom' -> 'base_link'.*after the newest"):
        tf.lookup("map", "camera_optical", 13 * S)
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        tf.lookup("map", "camera_optical", 9 * S)
    assert isinstance(ExtrapolationError("x"), LookupError)
    with pytest.raises(TransformUnavailable, match="no transform received yet"):
        TransformBuffer().lookup("map", "base_link", 0)


def test_cache_duration_bounds_the_history_and_statics_never_expire():
    tf = TransformBuffer(TfBufferConfig(cache_duration_ns=2 * S))
    tf.set_transform("base_link", "cam", 0, (0, 0, 1), (0, 0, 0, 1), static=True)
    for k in range(100):
        tf.set_transform("odom", "base_link", k * S // 10, (k * 0.1, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ExtrapolationError):  # 9.9 s is newest: anything before 7.9 s is gone
        tf.lookup("odom", "base_link", 7 * S)
    np.testing.assert_allclose(tf.lookup("odom", "cam", 9 * S)[:3, 3], [9.0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(tf.lookup("odom", "cam", 0)[:3, 3], [9.9, 0, 1], atol=1e-9)  # 0 = newest
    tf.clear()
    assert tf.frames == ("base_link", "cam")


def test_lookup_waits_for_a_transform_that_arrives_within_the_timeout():
    tf = TransformBuffer()
    tf.set_transform("odom", "base", 1 * S, (0, 0, 0), (0, 0, 0, 1))
    later = threading.Timer(0.05, lambda: tf.set_transform("odom", "base", 3 * S, (2, 0, 0), _yaw(30)))
    later.start()
    out = tf.lookup("odom", "base", 2 * S, timeout_s=5.0)
    later.join()
    np.testing.assert_allclose(out[:3, 3], [1.0, 0, 0], atol=1e-9)
    assert abs(math.degrees(rotation_angle_rad(out[:3, :3])) - 15.0) < 1e-6


def test_bad_input_is_refused_and_config_validated():
    tf = TransformBuffer()
    with pytest.raises(ValueError, match="no direction"):
        tf.set_transform("a", "b", 1, (0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="non-finite"):
        tf.set_transform("a", "b", 1, (math.nan, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ValueError, match="two different"):
        tf.set_transform("a", "a", 1, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ConfigError, match="cache_duration_ns"):
        TfBufferConfig(cache_duration_ns=0)


@pytest.mark.parametrize("frame_id, problem", [
    ("", "non-empty"), ("base link", "no spaces"), ("base\tlink", "no spaces"), ("base\x00link", "printable"),
    ("b" * 257, "at most 256"),
])
def test_check_frame_id_refuses_unusable_names_and_names_the_field(frame_id, problem):
    with pytest.raises(InputError, match=f"target_frame: .*{problem}"):
        check_frame_id("target_frame", frame_id)


def test_check_frame_id_accepts_tf_names():
    for frame_id in ("base_link", "robot1/camera_color_optical_frame", "b" * 256):
        check_frame_id("target_frame", frame_id)
