"""PNG renders of a result for people and docs: map in grey, objects in colour, their boxes."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: robots and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .core.types import OrientedBox3D  # noqa: E402

_COLORS = ["#22dd44", "#ff9900", "#3380ff", "#e633cc", "#e6e61a"]


def box_corners(box: OrientedBox3D) -> np.ndarray:
    """(8, 3) corners of an oriented box in the world frame."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    local = signs * (np.asarray(box.size_m) / 2.0)
    return local @ np.asarray(box.world_R_box).T + np.asarray(box.center_world_m)


def render_result(path: str | Path, map_points_m: np.ndarray, objects: Sequence[tuple[np.ndarray, OrientedBox3D, str]],
                  title: str, max_map_points: int = 60000) -> Path:
    """Top-down and oblique views. `objects`: (points (K, 3), box, label) per object, best first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stride = max(1, len(map_points_m) // max_map_points)
    bg = map_points_m[::stride]
    fig = plt.figure(figsize=(12, 5.5))
    ax_top = fig.add_subplot(1, 2, 1)
    ax_3d = fig.add_subplot(1, 2, 2, projection="3d")
    ax_top.scatter(bg[:, 0], bg[:, 1], s=0.2, c="0.7", linewidths=0)
    ax_3d.scatter(bg[:, 0], bg[:, 1], bg[:, 2], s=0.2, c="0.7", linewidths=0, alpha=0.5)
    edges = [(0, 1), (0, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 7), (6, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    for rank, (pts, box, label) in enumerate(objects):
        color = _COLORS[rank % len(_COLORS)]
        ax_top.scatter(pts[:, 0], pts[:, 1], s=1.0, c=color, linewidths=0)
        ax_3d.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=1.0, c=color, linewidths=0)
        corners = box_corners(box)
        for a, b in edges:
            ax_3d.plot(*zip(corners[a], corners[b]), c=color, lw=1.2)
        ring = corners[[0, 2, 6, 4, 0]]
        ax_top.plot(ring[:, 0], ring[:, 1], c=color, lw=1.5)
        ax_top.text(box.center_world_m[0], box.center_world_m[1], f" {rank + 1}. {label}", color=color, fontsize=9)
    ax_top.set_aspect("equal")
    ax_top.set_xlabel("x [m]")
    ax_top.set_ylabel("y [m]")
    ax_top.set_title("top view (map frame)")
    ax_3d.view_init(elev=35, azim=-60)
    ax_3d.set_title("oblique view")
    fig.suptitle(title)
    try:
        # A title or label in a script the font lacks (an instruction in Chinese, an emoji) draws boxes; that
        # is no reason for "Glyph ... missing from font(s)" lines on the user's terminal.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing")
            font_log = logging.getLogger("matplotlib.font_manager")
            level = font_log.level
            font_log.setLevel(logging.ERROR)
            try:
                fig.tight_layout()
                fig.savefig(path, dpi=110)
            finally:
                font_log.setLevel(level)
    finally:
        plt.close(fig)
    return path
