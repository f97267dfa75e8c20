"""The result renderer: the object lands where the camera sees it, the keyframe chosen is one that sees it, labels
never overlap, an empty result still renders the map with its message."""

from __future__ import annotations

import itertools

import matplotlib.image as mpimg
import numpy as np
import pytest

from mllm3d_ros.core.types import (CameraIntrinsics, Keyframe, MapSnapshot, Object3D, OrientedBox3D, QueryResult,
                                   QueryStatus, UNLABELLED)
from mllm3d_ros.render import RenderObject, best_keyframe, box_corners, render_query, render_result

K = CameraIntrinsics(160, 120, 120.0, 120.0, 79.5, 59.5)
GREY = 100  # the keyframes' colour image: uniform grey, so any colour in it was drawn by the renderer
# Camera optical frame (x right, y down, z forward) looking along world +x, z up.
LOOK_X = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
WALL_X_M = 3.0


def pose(rotation: np.ndarray, position) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, position
    return out


def keyframe(kid: int, world_T_camera: np.ndarray, depth_m: float, sharpness: float = 0.0) -> Keyframe:
    """A view of flat depth (a wall facing the camera at `depth_m`) with a uniform grey image."""
    color = np.full((K.height, K.width, 3), GREY, np.uint8)
    depth = np.full((K.height, K.width), depth_m, np.float32)
    return Keyframe(kid, kid, world_T_camera, K, color, depth, sharpness)


def patch(center_yz, half_m: float, step_m: float = 0.02) -> np.ndarray:
    """Points on the wall x = WALL_X_M: a square of side 2 * half_m around (y, z)."""
    g = np.arange(-half_m, half_m + 1e-9, step_m)
    yy, zz = np.meshgrid(g + center_yz[0], g + center_yz[1])
    return np.stack([np.full(yy.size, WALL_X_M), yy.ravel(), zz.ravel()], 1).astype(np.float32)


def box(center, size) -> OrientedBox3D:
    return OrientedBox3D(np.asarray(center, float), np.eye(3), np.asarray(size, float))


def room_points() -> np.ndarray:
    """A floor (z = -1.2) in front of the wall and the wall itself: the map the top view draws."""
    g = np.arange(-2.0, 2.0, 0.04)
    xx, yy = np.meshgrid(np.arange(0.0, WALL_X_M, 0.04), g)
    floor = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, -1.2)], 1)
    return np.concatenate([floor, patch((0.0, 0.0), 1.2, 0.04)]).astype(np.float32)


SEES = keyframe(3, pose(LOOK_X, (0.0, 0.0, 0.0)), WALL_X_M)
# Same place, but something stands 1 m in front of the camera: the wall (and the object) are hidden.
OCCLUDED = keyframe(1, pose(LOOK_X, (0.0, 0.0, 0.0)), 1.0, sharpness=100.0)
# Looking the other way (-x): the object is behind it.
AWAY = keyframe(2, pose(LOOK_X @ np.diag([-1.0, 1.0, -1.0]), (0.0, 0.0, 0.0)), WALL_X_M, sharpness=100.0)
# Moved sideways: it sees the whole object, but at the image's right border.
EDGE = keyframe(4, pose(LOOK_X, (0.0, 1.5, 0.0)), WALL_X_M)
OBJECT_PTS = patch((0.0, 0.0), 0.4)
OBJECT_BOX = box((WALL_X_M, 0.0, 0.0), (0.4, 1.2, 1.2))  # larger than the patch: its edges lie apart from it


def to_png(info, u: float, v: float) -> tuple[int, int]:
    """PNG (row, col) of the keyframe pixel centre (u, v), from where the renderer says the image lies."""
    x0, y0, x1, y1 = info.view_box_px
    left, top, right, bottom = info.view_window
    return int(y0 + (v - top) / (bottom - top) * (y1 - y0)), int(x0 + (u - left) / (right - left) * (x1 - x0))


def greenish(rgb: np.ndarray) -> np.ndarray:
    """The rank-1 colour (0, 200, 80) alone or blended into grey: green well above red and blue."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 1] - rgb[..., 0] > 40) & (rgb[..., 1] - rgb[..., 2] > 25)


def project(p_world) -> tuple[float, float]:
    """The test's own pinhole projection into SEES (camera at the origin looking along +x)."""
    x, y, z = p_world
    return K.fx * (-y) / x + K.cx, K.fy * (-z) / x + K.cy


def test_best_keyframe_is_the_one_that_sees_the_object() -> None:
    chosen, proj = best_keyframe(OBJECT_PTS, [OCCLUDED, AWAY, SEES])
    assert chosen is SEES and proj.visible_indices.size == len(OBJECT_PTS)
    assert best_keyframe(OBJECT_PTS, [OCCLUDED, AWAY]) == (None, None)
    # Of two views that see it, the one with the object in the middle is shown.
    assert best_keyframe(OBJECT_PTS, [EDGE])[0] is EDGE and best_keyframe(OBJECT_PTS, [EDGE, SEES])[0] is SEES


def test_object_and_box_are_drawn_where_the_keyframe_sees_them(tmp_path) -> None:
    obj = RenderObject(OBJECT_PTS, OBJECT_BOX, "chair", 0.78)
    info = render_result(tmp_path / "r.png", room_points(), [obj], [OCCLUDED, AWAY, SEES],
                         instruction="the chair", status="SUCCESS", target_phrase="chair")
    assert info.path.is_file() and info.keyframe_id == SEES.keyframe_id
    png = (mpimg.imread(info.path)[..., :3] * 255).round().astype(np.uint8)
    assert png.shape[:2] == (info.size_px[1], info.size_px[0]) and info.size_px[0] >= 1400
    # The image lies where the renderer says: just inside its corners the dimmed grey, just outside white.
    x0, y0, x1, y1 = (int(round(c)) for c in info.view_box_px)
    dimmed = round(GREY * 0.72)
    for r, c in ((y0 + 2, x0 + 2), (y1 - 3, x1 - 3)):
        assert np.all(np.abs(png[r, c].astype(int) - dimmed) <= 2), png[r, c]
    assert np.all(png[y0 - 3, (x0 + x1) // 2] >= 250)
    # The object's colour at its projected centre and over its projected extent...
    u, v = project((WALL_X_M, 0.0, 0.0))
    assert greenish(png[to_png(info, u, v)])
    u_edge, _ = project((WALL_X_M, -0.35, 0.0))
    assert greenish(png[to_png(info, u_edge, v)])
    # ... on the projected box edge, outside the object (the near top edge, x = 2.8 m, z = 0.6 m) ...
    ub, vb = project((2.8, -0.1, 0.6))
    r, c = to_png(info, ub, vb)
    assert greenish(png[r - 3:r + 4, c - 3:c + 4]).any()
    # ... and nowhere else in the image: away from the object, its box and its label, the image is grey.
    u_free, v_free = project((WALL_X_M, -0.5, 0.0))  # between the patch (0.4, + a point spacing) and the box (0.6)
    assert not greenish(png[to_png(info, u_free, v_free)])
    rr, cc = np.mgrid[y0 + 1:y1 - 1, x0 + 1:x1 - 1]
    green = greenish(png[y0 + 1:y1 - 1, x0 + 1:x1 - 1])
    near_box = np.zeros_like(green)
    corners_px = [to_png(info, *project(p)) for p in box_corners(OBJECT_BOX)]
    rows_c, cols_c = zip(*corners_px)
    near_box[(rr >= min(rows_c) - 4) & (rr <= max(rows_c) + 4) & (cc >= min(cols_c) - 4) & (cc <= max(cols_c) + 4)] = 1
    for label in info.labels:
        if label.panel == "view":
            lx0, ly0, lx1, ly1 = label.box_px
            near_box[(rr >= ly0 - 2) & (rr <= ly1 + 2) & (cc >= lx0 - 2) & (cc <= lx1 + 2)] = 1
    assert green.any() and not (green & ~near_box).any()
    assert [lab.text for lab in info.labels] == ["1. chair 0.78", "1. chair 0.78"]
    assert {lab.panel for lab in info.labels} == {"view", "top"}


def test_labels_do_not_overlap_each_other_or_leave_the_picture(tmp_path) -> None:
    # Six objects a few centimetres apart: every anchor competes for the same spot.
    objects = [RenderObject(patch((0.05 * k - 0.1, 0.04 * k), 0.06), box((WALL_X_M, 0.05 * k - 0.1, 0.04 * k),
                                                                         (0.1, 0.12, 0.12)),
                            label, 0.9 - 0.1 * k)
               for k, label in enumerate(["chair", "table", "coffee cup", "sofa", "shelf", "desk"])]
    info = render_result(tmp_path / "many.png", room_points(), objects, [SEES], instruction="something to sit on",
                         status="SUCCESS")
    assert info.keyframe_id == SEES.keyframe_id
    width, height = info.size_px
    view = [lab for lab in info.labels if lab.panel == "view"]
    top = [lab for lab in info.labels if lab.panel == "top"]
    assert len(view) == 6 and len(top) == 6
    for labels in (view, top):
        for a, b in itertools.combinations(labels, 2):
            ax0, ay0, ax1, ay1 = a.box_px
            bx0, by0, bx1, by1 = b.box_px
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (a, b)
    for lab in view:  # inside the keyframe image
        x0, y0, x1, y1 = info.view_box_px
        assert x0 <= lab.box_px[0] and lab.box_px[2] <= x1 and y0 <= lab.box_px[1] and lab.box_px[3] <= y1, lab
    for lab in info.labels:
        assert 0 <= lab.box_px[0] and lab.box_px[2] <= width and 0 <= lab.box_px[1] and lab.box_px[3] <= height
    assert view[0].text == "1. chair 0.90" and view[5].text == "6. desk 0.40"


def test_empty_result_renders_the_map_and_the_message(tmp_path) -> None:
    info = render_result(tmp_path / "none.png", room_points(), [], [SEES], instruction="the unicorn",
                         status="NOT_FOUND", message="no object matches 'unicorn'")
    assert info.path.is_file() and info.keyframe_id is None and info.labels == () and info.view_box_px is None
    assert "NOT_FOUND" in info.title and "the unicorn" in info.title and "no object matches 'unicorn'" in info.title
    png = (mpimg.imread(info.path)[..., :3] * 255).round().astype(np.uint8)
    right = png[:, png.shape[1] // 2 + 60:]
    # The map is drawn: the floor's light grey fills a large part of the top view.
    floor_grey = np.all(np.abs(right.astype(int) - round(0.88 * 255)) <= 3, axis=-1)
    assert floor_grey.mean() > 0.15


def test_render_query_takes_points_from_the_snapshot_and_flags_unconfirmed_labels(tmp_path) -> None:
    room = room_points()
    snapshot = MapSnapshot(np.concatenate([room, OBJECT_PTS]), np.zeros((len(room) + len(OBJECT_PTS), 3), np.uint8),
                           None, 0)
    idx = np.arange(len(room), len(room) + len(OBJECT_PTS))
    result = QueryResult(QueryStatus.SUCCESS, "found", "thing",
                         (Object3D(idx, np.ones(idx.size, np.float32), OBJECT_BOX, 0.41, 3, 4, UNLABELLED),),
                         snapshot=snapshot)
    info = render_query(tmp_path / "q.png", "the thing on the wall", result, snapshot, [AWAY, SEES])
    assert info.keyframe_id == SEES.keyframe_id
    assert [lab.text for lab in info.labels] == [f"1. {UNLABELLED}? 0.41"] * 2
    png = (mpimg.imread(info.path)[..., :3] * 255).round().astype(np.uint8)
    u, v = project((WALL_X_M, 0.0, 0.0))
    assert greenish(png[to_png(info, u, v)])


def test_a_png_that_cannot_be_written_raises(tmp_path) -> None:
    (tmp_path / "taken.png").mkdir()  # a folder where the file should go
    with pytest.raises(OSError, match="taken.png"):
        render_result(tmp_path / "taken.png", room_points(), [], [], instruction="x", status="NOT_FOUND")


def test_an_instruction_the_font_cannot_draw_gives_no_glyph_warning(tmp_path) -> None:
    # A former bug: "Glyph ... missing from font(s)" lines on stderr for an instruction in Chinese or with an emoji.
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = render_result(tmp_path / "cjk.png", room_points(), [], [SEES], instruction="找到杯子 🍵",
                             status="NOT_FOUND", message="no object matches '杯子'")
    assert info.path.is_file()
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
