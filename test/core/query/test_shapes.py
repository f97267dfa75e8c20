"""Shape words on gravity-aligned boxes and points (core/query/shapes.py)."""

from __future__ import annotations

import numpy as np

from mllm3d_ros.core.memory.object_geometry import oriented_box
from mllm3d_ros.core.query.shapes import canonical_shape, shape_words


def _surface(size, step=0.01, round_=False):
    """Points on the surface of a box (or of a vertical cylinder of diameter size[0]) standing at the origin."""
    sx, sy, sz = size
    xs, ys, zs = (np.arange(0, s + 1e-9, step) for s in size)
    pts = []
    if round_:
        r = sx / 2
        for z in zs:
            for a in np.linspace(0, 2 * np.pi, 60, endpoint=False):
                pts.append((r * np.cos(a), r * np.sin(a), z))
        for x in xs - r:
            for y in ys - r:
                if x * x + y * y <= r * r:
                    pts.append((x, y, sz))
        return np.array(pts, np.float32)
    for x in xs:
        for y in ys:
            pts += [(x, y, 0.0), (x, y, sz)]
    for z in zs:
        for x in xs:
            pts += [(x, 0.0, z), (x, sy, z)]
        for y in ys:
            pts += [(0.0, y, z), (sx, y, z)]
    return np.array(pts, np.float32)


def _words(points):
    return shape_words(oriented_box(points), points, 0.03)


def test_flat_tall_and_box_shaped():
    assert _words(_surface((0.30, 0.22, 0.02))) == {"flat"}  # a magazine
    assert _words(_surface((0.08, 0.08, 0.30))) == {"tall"}  # a bottle
    assert _words(_surface((0.40, 0.30, 0.25))) == {"box-shaped"}  # a storage box


def test_a_cylinder_is_round_not_box_shaped_and_a_cube_is_not_round():
    assert "round" in _words(_surface((0.30, 0.30, 0.25), round_=True))
    assert "round" not in _words(_surface((0.30, 0.30, 0.25)))


def test_an_open_top_is_not_box_shaped():
    pts = _surface((0.40, 0.30, 0.25))
    ring = pts[(pts[:, 2] < 0.25) | (np.abs(pts[:, 0] - 0.2) > 0.18) | (np.abs(pts[:, 1] - 0.15) > 0.13)]
    assert "box-shaped" not in _words(ring)  # a crate without its lid: the top covers a rim only


def test_shape_words_have_one_canonical_form():
    assert canonical_shape("boxy") == canonical_shape("cuboid") == "box-shaped"
    assert canonical_shape("cylindrical") == "round" and canonical_shape("wooden") is None
