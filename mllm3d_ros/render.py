"""PNG renders of a query result for people and docs: the result on the keyframe that sees it best, beside a top view.

One picture per result, the same from `mllm3d segment`, `make demo` and the docs:
- left, the stored keyframe that shows the best object best (`best_keyframe`: only points that pass the
  project's one visibility test, `core.visibility.project_visible`, count, so occluded or out-of-view
  keyframes lose), zoomed in when the object is small, with every returned object it sees filled in (its
  visible points, grown over the pixels whose depth lies on the object), its 3D box's edges and a label
  "1. chair 0.78" (rank, label, confidence; "?" marks a label no model confirmed);
- right, a top view of the map (grey, darker = higher, cut above head height so a ceiling does not hide the
  room) with the objects' points, box footprints, the same labels and the chosen keyframe's camera.
Labels are placed greedily (rank order; candidate offsets around the anchor, the first that stays inside
the panel and clear of the labels and leader lines placed so far), so they never overlap. An empty result
(NOT_FOUND, ...) still renders the map with the status and message.

`render_result` takes plain arrays (any caller: a ROS client, a benchmark); `render_query` takes a
QueryResult with its snapshot and keyframes (what `segment` has).
"""

from __future__ import annotations

import functools
import logging
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
# The Agg canvas and a Figure of our own, not pyplot: headless (robots and CI have no display) and no global
# figure registry, so a node may render from any thread.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from scipy.spatial import cKDTree

from .core.geometry import invert_transform, transform_points
from .core.types import UNLABELLED, Keyframe, MapSnapshot, OrientedBox3D, QueryResult
from .core.visibility import ViewProjection, project_to_view

# Rank colours: saturated, told apart by colour-blind readers (Okabe-Ito order), legible on grey and photos.
COLORS_RGB: tuple[tuple[int, int, int], ...] = ((0, 200, 80), (230, 159, 0), (86, 180, 233), (204, 121, 167),
                                               (240, 228, 66), (213, 94, 0))
# Box edges as pairs of `box_corners` indices (corner k has signs (k >> 2, k >> 1, k) & 1 along x, y, z).
BOX_EDGES = ((0, 1), (0, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 7), (6, 7), (0, 4), (1, 5), (2, 6), (3, 7))
_FIG_W_IN, _FIG_H_IN, _DPI = 14.0, 6.8, 100  # 1400 x 680 px: README width
_VIEW_RECT = (0.01, 0.02, 0.50, 0.81)  # left panel [left, bottom, width, height] in figure fractions
_TOP_RECT = (0.555, 0.075, 0.435, 0.755)
_FONT = 12
_NEAR_M = 0.05  # box edges are clipped at this depth in front of the camera
_UPSAMPLE = 3  # the keyframe image is blended at this many times its stored size (times the zoom)
_ZOOM_FILL, _MAX_ZOOM = 0.4, 2.0  # a small best object is zoomed in on until it spans 40 % of the view, at most 2x


def box_corners(box: OrientedBox3D) -> np.ndarray:
    """(8, 3) corners of an oriented box in the world frame."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    local = signs * (np.asarray(box.size_m) / 2.0)
    return local @ np.asarray(box.world_R_box).T + np.asarray(box.center_world_m)


@dataclass(frozen=True, eq=False)
class RenderObject:
    """One returned object to draw, in rank order: points_world_m (K, 3) map frame, metres; confidence in [0, 1].

    `unconfirmed`: no detector or model confirmed the label (drawn with a "?" and a dashed box)."""

    points_world_m: np.ndarray
    box: OrientedBox3D
    label: str
    confidence: float
    unconfirmed: bool = False

    @property
    def flagged(self) -> bool:
        """Unconfirmed, or a class-agnostic object no one named."""
        return self.unconfirmed or self.label in ("", UNLABELLED)

    def caption(self, rank: int) -> str:
        return f"{rank}. {self.label or UNLABELLED}{'?' if self.flagged else ''} {self.confidence:.2f}"


@dataclass(frozen=True)
class PlacedLabel:
    """A label as drawn: its text, its panel ("view" or "top") and its box in the PNG's pixels (x right, y down)."""

    text: str
    panel: str
    box_px: tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True)
class RenderInfo:
    """What was drawn where: the file, the keyframe shown (None: none sees the best object), the labels, where the
    keyframe image lies in the PNG (x0, y0, x1, y1 pixels) and which part of it (left, top, right, bottom in the
    keyframe's pixel coordinates, centres at integers; the whole image or a zoom on a small object)."""

    path: Path
    keyframe_id: int | None
    labels: tuple[PlacedLabel, ...]
    view_box_px: tuple[float, float, float, float] | None
    view_window: tuple[float, float, float, float] | None  # the part of the keyframe shown there: its pixel coords
    size_px: tuple[int, int]  # width, height
    title: str  # the title and the line under it, as drawn


def best_keyframe(points_world_m: np.ndarray, keyframes: Sequence[Keyframe], depth_tolerance_m: float = 0.05,
                  depth_tolerance_frac: float = 0.03) -> tuple[Keyframe | None, ViewProjection | None]:
    """The keyframe that shows the points best, with its projection; (None, None) when none sees any.

    A point counts only where project_visible says the view sees it (in the frustum, not occluded). Score: the
    fraction of the points seen times the square root of the pixels they cover, so a view that sees all of a mug
    from close by beats one that sees it as a few pixels from across the room, and a close view that sees half
    of a table does not beat one that sees all of it (the square root: area grows with the square of closeness);
    times a factor that falls from 1 as the object's centre nears the image's border.
    """
    pts = np.asarray(points_world_m, np.float32).reshape(-1, 3)
    best, best_proj, best_score = None, None, 0.0
    for kf in keyframes:
        proj = project_to_view(pts, kf, depth_tolerance_m, depth_tolerance_frac)
        if proj.visible_indices.size == 0:
            continue
        pixels = np.unique(proj.pixel_index)
        rows, cols = np.divmod(pixels, kf.intrinsics.width)
        # An object at the image's edge is half out of the picture: keep it a fifth of the image from the border.
        border_px = min(rows.mean(), cols.mean(), kf.intrinsics.height - 1 - rows.mean(),
                        kf.intrinsics.width - 1 - cols.mean())
        centred = np.clip(border_px / (0.2 * min(kf.intrinsics.width, kf.intrinsics.height)), 0.25, 1.0)
        score = proj.visible_indices.size / len(pts) * np.sqrt(pixels.size) * centred
        if score > best_score:
            best, best_proj, best_score = kf, proj, score
    return best, best_proj


def objects_of(result: QueryResult, snapshot: MapSnapshot) -> list[RenderObject]:
    """The result's objects with their points taken from the snapshot their indices refer to."""
    pts = snapshot.points_world_m
    # `unconfirmed`: the flag an Object3D may carry (an open-set label no model confirmed); absent, the label decides.
    return [RenderObject(pts[o.point_indices], o.box, o.label, o.confidence,
                         unconfirmed=bool(getattr(o, "unconfirmed", False))) for o in result.objects]


def render_query(path: str | Path, instruction: str, result: QueryResult, snapshot: MapSnapshot,
                 keyframes: Sequence[Keyframe], note: str = "") -> RenderInfo:
    """`render_result` for a QueryResult; `snapshot` is the map its point indices refer to."""
    snapshot = result.snapshot or snapshot
    return render_result(path, snapshot.points_world_m, objects_of(result, snapshot), keyframes,
                         instruction=instruction, status=result.status.name, target_phrase=result.target_phrase,
                         message=result.message, note=note)


def _quiet_glyphs(fn):
    """Run a render without "Glyph ... missing from font(s)" lines on the user's terminal: an instruction in a
    script the font lacks (Chinese, an emoji) draws boxes, which is no reason to warn."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        font_log = logging.getLogger("matplotlib.font_manager")
        level = font_log.level
        font_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing")
                return fn(*args, **kwargs)
        finally:
            font_log.setLevel(level)
    return wrapper


@_quiet_glyphs
def render_result(path: str | Path, map_points_m: np.ndarray, objects: Sequence[RenderObject],
                  keyframes: Sequence[Keyframe] = (), *, instruction: str, status: str, target_phrase: str = "",
                  message: str = "", note: str = "", max_objects: int = 6, depth_tolerance_m: float = 0.05,
                  depth_tolerance_frac: float = 0.03, cut_above_floor_m: float = 1.9) -> RenderInfo:
    """Write the PNG (1400 x 680 px) and say what was drawn where.

    Args:
        map_points_m: (N, 3) map points, map frame (z up), metres.
        objects: best first; the first `max_objects` are drawn, the title counts the others.
        keyframes: the stored views to choose from (any pose in the map frame, images at keyframe scale).
        instruction, status, target_phrase, message, note: the title (note: e.g. a score the caller adds).
        cut_above_floor_m: the top view drops map points this far above the floor (1st percentile of z).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    map_points_m = np.asarray(map_points_m, dtype=np.float32).reshape(-1, 3)
    shown = list(objects[:max_objects])
    colors = [np.array(COLORS_RGB[k % len(COLORS_RGB)]) / 255.0 for k in range(len(shown))]
    captions = [o.caption(k + 1) for k, o in enumerate(shown)]
    keyframe, _ = (best_keyframe(shown[0].points_world_m, keyframes, depth_tolerance_m, depth_tolerance_frac)
                   if shown and len(shown[0].points_world_m) else (None, None))

    fig = Figure(figsize=(_FIG_W_IN, _FIG_H_IN), dpi=_DPI)
    FigureCanvasAgg(fig)
    title = _title(instruction, status, target_phrase, len(objects), len(shown))
    # The status message and the caller's note, at most two lines under the title.
    subtitle = "\n".join(textwrap.wrap("; ".join(s for s in (message, note) if s), 170, max_lines=2,
                                        placeholder=" [...]"))
    fig.suptitle(title, fontsize=15, y=0.985, va="top")
    if subtitle:
        fig.text(0.5, 0.925, subtitle, ha="center", va="top", fontsize=10.5, color="0.25", linespacing=1.3)
    ax_view = fig.add_axes(_VIEW_RECT)
    ax_top = fig.add_axes(_TOP_RECT)
    renderer = fig.canvas.get_renderer()
    placed: list = []  # (_Pending, its annotation artist)
    window = None
    if keyframe is not None:
        window = _draw_view(ax_view, keyframe, shown, colors, captions, depth_tolerance_m, depth_tolerance_frac,
                            renderer, placed)
    else:
        _draw_message(ax_view, status, bool(shown))
    _draw_top(ax_top, map_points_m, shown, colors, captions, keyframe, cut_above_floor_m, renderer, placed)
    fig.canvas.draw()
    height_px = int(round(_FIG_H_IN * _DPI))
    labels = tuple(PlacedLabel(p.text, p.panel, _to_png(art.get_bbox_patch().get_window_extent(renderer),
                                                        height_px))
                   for p, art in placed)
    view_px = _to_png(ax_view.get_window_extent(renderer), height_px) if window else None
    # The canvas is drawn once (the labels' extents above need it); savefig would draw it all again.
    rgba = np.asarray(fig.canvas.buffer_rgba())
    if not cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]):
        raise OSError(f"could not write the PNG {path}")
    return RenderInfo(path, None if keyframe is None else keyframe.keyframe_id, labels, view_px, window,
                      (int(round(_FIG_W_IN * _DPI)), height_px), f"{title}\n{subtitle}".strip())


# --- title and message ---------------------------------------------------------------------------
def _title(instruction: str, status: str, target_phrase: str, n_objects: int, n_shown: int) -> str:
    target = f" (target: {target_phrase})" if target_phrase else ""
    found = f": {n_objects} object{'s' * (n_objects != 1)}" if n_objects else ""
    more = f", best {n_shown} drawn" if n_objects > n_shown else ""
    return f"\u201c{textwrap.shorten(instruction, 70)}\u201d \u2192 {status}{target}{found}{more}"


def _draw_message(ax, status: str, found: bool) -> None:
    why = "no stored keyframe sees the best object" if found else "no object to show in a camera view"
    ax.text(0.5, 0.55, status, ha="center", va="center", fontsize=22, weight="bold", color="0.2",
            transform=ax.transAxes)
    ax.text(0.5, 0.45, f"({why}; the map is on the right)", ha="center", va="top", fontsize=12, color="0.3",
            transform=ax.transAxes)
    ax.set_facecolor("0.96")
    ax.set_xticks([])
    ax.set_yticks([])


# --- left: the keyframe --------------------------------------------------------------------------
def _draw_view(ax, keyframe: Keyframe, objects: Sequence[RenderObject], colors, captions, tol_m: float,
               tol_frac: float, renderer, placed: list) -> tuple[float, float, float, float]:
    """Each object's visible points as a filled mask with its outline, its box's edges and its label; returns the
    part of the keyframe shown (left, top, right, bottom, in its pixel coordinates: centres at integers)."""
    intr = keyframe.intrinsics
    h, w = intr.height, intr.width
    masks = [_object_mask(o.points_world_m, keyframe, tol_m, tol_frac) for o in objects]
    window = _zoom_window(masks[0], w, h)
    zoom = w / (window[2] - window[0])
    # Keyframes are stored downsampled (keyframe_image_scale): blend at a finer scale so that outlines are smooth
    # at README size; the axes keep the keyframe's own pixel coordinates.
    # Only the shown part of the image is blended.
    up = int(round(_UPSAMPLE * zoom))
    c0, r0 = max(0, int(np.floor(window[0] + 0.5))), max(0, int(np.floor(window[1] + 0.5)))
    c1, r1 = min(w, int(np.ceil(window[2] + 0.5))), min(h, int(np.ceil(window[3] + 0.5)))
    size = ((c1 - c0) * up, (r1 - r0) * up)
    image = cv2.resize(keyframe.color_rgb[r0:r1, c0:c1], size, interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    fine = [cv2.resize(m[r0:r1, c0:c1].astype(np.float32), size, interpolation=cv2.INTER_LINEAR) >= 0.5
            for m in masks]
    any_mask = np.zeros(image.shape[:2], bool)
    for m in fine:
        any_mask |= m
    image[~any_mask] *= 0.72  # dim what is not a result, so the result stands out at thumbnail size
    for m, c in zip(fine[::-1], colors[::-1]):  # the best object is painted last, on top
        image[m] = 0.5 * image[m] + 0.5 * c
    extent = (c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5)  # data coordinates = pixel centres, as project_visible rounds
    ax.imshow(np.clip(image, 0, 1), extent=extent, interpolation="antialiased")
    ax.set_xlim(window[0], window[2])
    ax.set_ylim(window[3], window[1])
    ax.set_xticks([])
    ax.set_yticks([])
    zoomed = f", zoomed {zoom:.1f}x" if zoom > 1.01 else ""
    ax.set_title(f"keyframe {keyframe.keyframe_id}{zoomed} (black wedge in the top view)", fontsize=11, color="0.3")
    items = []
    for k in range(len(objects) - 1, -1, -1):  # the best object's lines on top
        obj, m, c = objects[k], fine[k], colors[k]
        for contour in cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
            xy = (contour[:, 0, :].astype(np.float64) + 0.5) / up - 0.5 + (c0, r0)
            ax.add_patch(Polygon(xy, closed=True, fill=False, ec=c, lw=2.0, zorder=3 + (k == 0)))
        # The best object's box in full, the others' fainter: six boxes at full strength hide the image.
        for seg in _box_edges_px(obj.box, keyframe):
            ax.plot(seg[:, 0], seg[:, 1], color=c, lw=2.0 if k == 0 else 1.0, alpha=1.0 if k == 0 else 0.6,
                    ls="--" if obj.flagged else "-", zorder=4 + (k == 0), solid_capstyle="round")
    for k, m in enumerate(masks):
        anchor = _mask_anchor(m) if m.any() else None
        if anchor is not None and window[0] <= anchor[0] <= window[2] and window[1] <= anchor[1] <= window[3]:
            items.append((anchor, captions[k], colors[k]))
    ax.apply_aspect()
    _place_labels(ax, items, renderer, placed, "view")
    return window


def _zoom_window(mask: np.ndarray, w: int, h: int) -> tuple[float, float, float, float]:
    """The part of the keyframe to show: all of it, or, when the best object spans less than _ZOOM_FILL of the
    image, a crop of the same aspect around it, magnified up to _MAX_ZOOM x (more would only show blur)."""
    full = (-0.5, -0.5, w - 0.5, h - 0.5)
    if not mask.any():
        return full
    rows, cols = np.nonzero(mask)
    extent = max((cols.max() - cols.min() + 1) / w, (rows.max() - rows.min() + 1) / h)
    zoom = float(np.clip(_ZOOM_FILL / extent, 1.0, _MAX_ZOOM))
    if zoom <= 1.0:
        return full
    half_w, half_h = w / zoom / 2, h / zoom / 2
    cx = float(np.clip((cols.min() + cols.max()) / 2, half_w - 0.5, w - 0.5 - half_w))
    cy = float(np.clip((rows.min() + rows.max()) / 2, half_h - 0.5, h - 0.5 - half_h))
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _object_mask(points_world_m: np.ndarray, keyframe: Keyframe, tol_m: float, tol_frac: float) -> np.ndarray:
    """(h, w) bool: the pixels that see the object.

    The object's visible points (project_visible) land a few pixels apart; around them, a pixel belongs to the
    object when the surface its own depth observed lies within a point spacing of the object's points. So the
    mask is dense, follows the object's outline in the image, and an occluder in front of it stays unpainted."""
    intr = keyframe.intrinsics
    h, w = intr.height, intr.width
    mask = np.zeros(h * w, bool)
    pts = np.asarray(points_world_m, np.float64).reshape(-1, 3)
    if len(pts) == 0:
        return mask.reshape(h, w)
    proj = project_to_view(pts, keyframe, tol_m, tol_frac)
    mask[proj.pixel_index] = True
    mask = mask.reshape(h, w)
    if proj.visible_indices.size < 2:
        return mask
    tree = cKDTree(pts)
    seen = pts[proj.visible_indices]
    spacing_m = float(np.median(tree.query(seen, k=2)[0][:, 1]))
    depth_m = float(np.median(transform_points(invert_transform(keyframe.world_T_camera), seen)[:, 2]))
    gap_px = int(np.clip(np.ceil(intr.fx * spacing_m / max(depth_m, 1e-3)), 1, 15))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap_px + 1, 2 * gap_px + 1))
    near = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    rows, cols = np.nonzero(near)
    z = keyframe.depth_m[rows, cols].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    rows, cols, z = rows[valid], cols[valid], z[valid]
    camera_pts = np.stack([(cols - intr.cx) / intr.fx * z, (rows - intr.cy) / intr.fy * z, z], 1)
    dist, _ = tree.query(transform_points(keyframe.world_T_camera, camera_pts), distance_upper_bound=spacing_m)
    mask[rows[np.isfinite(dist)], cols[np.isfinite(dist)]] = True
    # Pixels without depth inside the object (specular, too close) are closed over, not left as holes.
    small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, small).astype(bool)


def _mask_anchor(mask: np.ndarray) -> tuple[float, float]:
    """The mask pixel nearest to its centroid (x, y): on the object even when it is not convex."""
    rows, cols = np.nonzero(mask)
    cy, cx = rows.mean(), cols.mean()
    k = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
    return float(cols[k]), float(rows[k])


def _box_edges_px(box: OrientedBox3D, keyframe: Keyframe) -> list[np.ndarray]:
    """The box's edges as (2, 2) pixel segments, clipped at the near plane.

    Edges are drawn whole (the picture shows the box, not what of it is visible) and may leave the image, so
    this is a plain pinhole projection, not the visibility test, which keeps only points seen in the image."""
    camera_T_world = invert_transform(keyframe.world_T_camera)
    corners = transform_points(camera_T_world, box_corners(box))
    k = keyframe.intrinsics.matrix
    segments = []
    for a, b in BOX_EDGES:
        pa, pb = corners[a].copy(), corners[b].copy()
        if pa[2] < _NEAR_M and pb[2] < _NEAR_M:
            continue
        if pa[2] < _NEAR_M or pb[2] < _NEAR_M:  # move the point behind the near plane onto it
            t = (_NEAR_M - pa[2]) / (pb[2] - pa[2])
            cut = pa + t * (pb - pa)
            pa, pb = (cut, pb) if pa[2] < _NEAR_M else (pa, cut)
        uv = (k @ np.stack([pa, pb]).T).T
        segments.append(uv[:, :2] / uv[:, 2:3])
    return segments


# --- right: the top view -------------------------------------------------------------------------
def _draw_top(ax, map_points_m: np.ndarray, objects: Sequence[RenderObject], colors, captions,
              keyframe: Keyframe | None, cut_above_floor_m: float, renderer, placed: list) -> None:
    """The map as a height image (grey, darker = higher), objects' points and footprints, labels."""
    ax.set_title("top view (map frame, z up)", fontsize=11, color="0.3")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.tick_params(labelsize=9)
    extents = [p for p in [map_points_m] + [o.points_world_m for o in objects] if len(p)]
    if not extents:
        ax.text(0.5, 0.5, "the map is empty", ha="center", va="center", fontsize=14, transform=ax.transAxes)
        return
    allxy = np.concatenate([p[:, :2] for p in extents])
    lo, hi = allxy.min(0) - 0.15, allxy.max(0) + 0.15
    # Equal scale in x and y: widen the limits to the panel's aspect instead of shrinking the panel.
    bbox = ax.get_window_extent(renderer)
    span = hi - lo
    per_px = max(span[0] / bbox.width, span[1] / bbox.height)
    centre = (lo + hi) / 2
    half = np.array([bbox.width, bbox.height]) * per_px / 2
    lo, hi = centre - half, centre + half
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    cell = _cell_size(map_points_m if len(map_points_m) else np.concatenate(extents), per_px)
    if len(map_points_m):
        ax.imshow(_height_image(map_points_m, lo, hi, cell, cut_above_floor_m), extent=(lo[0], hi[0], lo[1], hi[1]),
                  origin="lower", cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", zorder=1)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    if keyframe is not None:
        _draw_camera(ax, keyframe)
    for k in range(len(objects) - 1, -1, -1):  # best on top
        obj, c = objects[k], colors[k]
        if len(obj.points_world_m):
            ax.imshow(_footprint_image(obj.points_world_m, lo, hi, cell, c), extent=(lo[0], hi[0], lo[1], hi[1]),
                      origin="lower", interpolation="nearest", zorder=3)
        hull = cv2.convexHull(box_corners(obj.box)[:, :2].astype(np.float32))[:, 0, :]  # the box's footprint
        ring = np.vstack([hull, hull[:1]])
        ax.plot(ring[:, 0], ring[:, 1], color="black", lw=3.2, zorder=4)
        ax.plot(ring[:, 0], ring[:, 1], color=c, lw=1.8, ls="--" if obj.flagged else "-", zorder=4)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    items = [(tuple(np.asarray(obj.box.center_world_m[:2], float)), captions[k], colors[k])
             for k, obj in enumerate(objects)]
    _place_labels(ax, items, renderer, placed, "top")


def _cell_size(points_m: np.ndarray, per_px: float) -> float:
    """Top-view cells about one map point apart (a finer grid would show the gaps between points as speckle),
    and never finer than a display pixel."""
    sample = points_m[:: max(1, len(points_m) // 20000)]
    spacing = float(np.median(cKDTree(sample).query(sample, k=2)[0][:, 1])) if len(sample) > 1 else 0.0
    return max(per_px, 1.2 * spacing)


def _cells(points_m: np.ndarray, lo: np.ndarray, hi: np.ndarray, cell: float):
    shape = (max(1, int(np.ceil((hi[1] - lo[1]) / cell))), max(1, int(np.ceil((hi[0] - lo[0]) / cell))))
    cols = np.clip(((points_m[:, 0] - lo[0]) / cell).astype(int), 0, shape[1] - 1)
    rows = np.clip(((points_m[:, 1] - lo[1]) / cell).astype(int), 0, shape[0] - 1)
    return shape, rows, cols


def _height_image(points_m: np.ndarray, lo: np.ndarray, hi: np.ndarray, cell: float,
                  cut_above_floor_m: float) -> np.ndarray:
    """(rows, cols) grey levels of the highest map point per cell below the cut; 1 (white) where empty."""
    z = points_m[:, 2]
    floor = float(np.percentile(z, 1))
    pts = points_m[z <= floor + cut_above_floor_m]
    shape, rows, cols = _cells(pts, lo, hi, cell)
    top = np.full(shape, -np.inf, np.float32)
    np.maximum.at(top, (rows, cols), pts[:, 2])
    filled = np.isfinite(top)
    grey = np.ones(shape, np.float32)
    grey[filled] = 0.88 - 0.55 * np.clip((top[filled] - floor) / cut_above_floor_m, 0.0, 1.0)
    return grey


def _footprint_image(points_m: np.ndarray, lo: np.ndarray, hi: np.ndarray, cell: float, color) -> np.ndarray:
    """(rows, cols, 4) RGBA: the object's colour in the cells its points fall in, transparent elsewhere."""
    shape, rows, cols = _cells(points_m, lo, hi, cell)
    rgba = np.zeros(shape + (4,), np.float32)
    rgba[rows, cols, :3] = color
    rgba[rows, cols, 3] = 0.9
    return rgba


def _draw_camera(ax, keyframe: Keyframe) -> None:
    """The keyframe's camera as a wedge: its position and horizontal field of view, 0.6 m deep."""
    intr = keyframe.intrinsics
    cam = np.array([[0, 0, 0], [(0 - intr.cx) / intr.fx, 0, 1], [(intr.width - intr.cx) / intr.fx, 0, 1]]) * 0.6
    world = transform_points(keyframe.world_T_camera, cam)
    ax.add_patch(Polygon(world[:, :2], closed=True, fc=(0, 0, 0, 0.15), ec="black", lw=1.5, zorder=5))
    ax.plot(*world[0, :2], marker="o", color="black", ms=5, zorder=5)


# --- labels --------------------------------------------------------------------------------------
_DIRECTIONS = ((1, 1), (-1, 1), (1, -1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))
_RADII_PX = (14, 32, 56, 90, 130, 180, 240, 320, 420)


def _place_labels(ax, items, renderer, placed: list, panel: str) -> None:
    """Greedy placement (rank order): for each label, candidate offsets around its anchor at growing radii; the
    first whose box stays inside the panel, clear of the labels placed so far, of their leader lines and of the
    other anchors, and whose own leader line crosses no label, wins (the least bad one when none is free)."""
    panel_box = ax.get_window_extent(renderer)
    pad_px = 0.3 * _FONT * ax.figure.dpi / 72.0
    to_px = ax.transData.transform
    anchors_px = [to_px(np.asarray(anchor, float)) for anchor, _, _ in items]
    taken = [(p.box, p.leader) for p in _boxes_in(placed, panel)]
    for k, (anchor, text, color) in enumerate(items):
        probe = ax.text(0, 0, text, fontsize=_FONT, weight="bold")
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width + 2 * pad_px, ext.height + 2 * pad_px
        a = anchors_px[k]
        others = [(x - 5, y - 5, x + 5, y + 5) for j, (x, y) in enumerate(anchors_px) if j != k]
        best, best_cost = None, np.inf
        for radius in _RADII_PX:
            for dx, dy in _DIRECTIONS:
                cx = a[0] + dx * (radius + w / 2) if dx else a[0]
                cy = a[1] + dy * (radius + h / 2) if dy else a[1]
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                leader = (float(a[0]), float(a[1]), cx, cy)
                cost = (_outside(box, panel_box) * 1e6
                        + sum(_overlap(box, t, 3.0) for t, _ in taken) * 1e3
                        + sum(300.0 for t, seg in taken if _crosses(seg, box) or _crosses(leader, t))
                        + sum(100.0 for _, seg in taken if _segments_cross(seg, leader))
                        + sum(_overlap(box, o, 0.0) for o in others))
                if cost < best_cost:
                    best, best_cost = (box, leader), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        box, leader = best
        centre_px = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        xy_text = ax.transData.inverted().transform(centre_px)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        art = ax.annotate(text, xy=anchor, xytext=tuple(xy_text), textcoords="data", ha="center", va="center",
                          fontsize=_FONT, weight="bold", color="black" if luminance > 0.5 else "white", zorder=7,
                          annotation_clip=False,
                          bbox=dict(boxstyle="round,pad=0.3", fc=color, ec="black", lw=0.8),
                          arrowprops=dict(arrowstyle="-", color="black", lw=1.4, shrinkA=0, shrinkB=0))
        ax.plot(*anchor, marker="o", ms=6, mfc=color, mec="black", mew=1.0, zorder=6)
        taken.append((box, leader))
        placed.append((_Pending(text, panel, box, leader), art))


@dataclass(frozen=True)
class _Pending:
    text: str
    panel: str
    box: tuple[float, float, float, float]  # display pixels (y up), as planned
    leader: tuple[float, float, float, float]  # anchor to label centre, display pixels


def _boxes_in(placed: list, panel: str) -> list:
    return [p for p, _ in placed if p.panel == panel]


def _outside(box, panel_box) -> float:
    """Area of `box` outside the panel (display pixels)."""
    x0, y0, x1, y1 = box
    inner_w = max(0.0, min(x1, panel_box.x1) - max(x0, panel_box.x0))
    inner_h = max(0.0, min(y1, panel_box.y1) - max(y0, panel_box.y0))
    return (x1 - x0) * (y1 - y0) - inner_w * inner_h


def _overlap(a, b, margin: float) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0]) + margin
    h = min(a[3], b[3]) - max(a[1], b[1]) + margin
    return max(0.0, w) * max(0.0, h)


def _crosses(seg, box) -> bool:
    """Whether the segment (x0, y0, x1, y1) passes through the box's interior (Liang-Barsky clipping)."""
    x0, y0, x1, y1 = seg
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 - box[0]), (dx, box[2] - x0), (-dy, y0 - box[1]), (dy, box[3] - y0)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return t1 - t0 > 1e-6


def _segments_cross(a, b) -> bool:
    """Whether two segments (x0, y0, x1, y1) properly cross."""
    def orient(px, py, qx, qy, rx, ry):
        return np.sign((qx - px) * (ry - py) - (qy - py) * (rx - px))
    d1 = orient(a[0], a[1], a[2], a[3], b[0], b[1])
    d2 = orient(a[0], a[1], a[2], a[3], b[2], b[3])
    d3 = orient(b[0], b[1], b[2], b[3], a[0], a[1])
    d4 = orient(b[0], b[1], b[2], b[3], a[2], a[3])
    return bool(d1 * d2 < 0 and d3 * d4 < 0)


def _to_png(bbox, height_px: int) -> tuple[float, float, float, float]:
    """A display bbox (y up) as PNG pixels (x0, y0, x1, y1, y down)."""
    return (float(bbox.x0), float(height_px - bbox.y1), float(bbox.x1), float(height_px - bbox.y0))


@_quiet_glyphs
def render_grid(path: str | Path, grid, objects: Sequence[tuple[OrientedBox3D, str]] = (), approach=None,
                title: str = "", robot_xy_m: tuple[float, float] | None = None) -> Path:
    """Top view of a floor grid (occupancy.OccupancyGrid2D: free white, occupied black, unknown grey) with the
    objects' box footprints, the approach pose (core.query.approach.ApproachPose: a dot, its heading and its
    clearance) and the robot's position."""
    from matplotlib.patches import Circle, FancyArrow

    from .core.mapping.occupancy import FREE, OCCUPIED

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7.0, 6.0), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if not grid.is_empty:
        img = np.full(grid.shape + (3,), 0.62)
        img[grid.data == FREE] = 1.0
        img[grid.data == OCCUPIED] = 0.08
        x0, y0 = grid.origin_xy_m
        ax.imshow(img, origin="lower", interpolation="nearest",
                  extent=(x0, x0 + grid.shape[1] * grid.resolution_m, y0, y0 + grid.shape[0] * grid.resolution_m))
    for rank, (box, label) in enumerate(objects):
        color = np.array(COLORS_RGB[rank % len(COLORS_RGB)]) / 255.0
        ring = box_corners(box)[[0, 2, 6, 4, 0]]
        ax.plot(ring[:, 0], ring[:, 1], color=color, lw=2)
        ax.text(box.center_world_m[0], box.center_world_m[1] + box.size_m[1] / 2 + 0.1, label, color=color,
                fontsize=9, ha="center")
    blue = np.array(COLORS_RGB[2]) / 255.0
    if approach is not None and approach.ok:
        x, y, _ = approach.position_world_m
        ax.add_patch(Circle((x, y), approach.clearance_m, fill=False, ls="--", color=blue))
        ax.add_patch(FancyArrow(x, y, 0.3 * np.cos(approach.yaw_rad), 0.3 * np.sin(approach.yaw_rad), width=0.03,
                                color=blue, length_includes_head=True))
        ax.plot([x], [y], "o", color=blue, ms=5, label="approach pose")
    if robot_xy_m is not None:
        ax.plot([robot_xy_m[0]], [robot_xy_m[1]], "s", color=np.array(COLORS_RGB[5]) / 255.0, ms=7, label="robot")
    ax.set_aspect("equal")
    ax.set_xlabel("x [m] (map)")
    ax.set_ylabel("y [m]")
    if (approach is not None and approach.ok) or robot_xy_m is not None:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "floor grid: free white, occupied black, unknown grey", fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    if not cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]):
        raise OSError(f"could not write the PNG {path}")
    return path
