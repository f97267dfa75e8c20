"""Real 7-Scenes RedKitchen frames and the object boxes marked on them by hand (pixels, x0 y0 x1 y1).

Marked by looking at the colour images: what a person calls the table, a chair, a cup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class MarkedObject:
    frame: int
    kind: str  # "table", "chair" or "cup"
    box_xyxy: tuple[float, float, float, float]


MARKED = (
    MarkedObject(84, "chair", (340, 122, 520, 450)),
    MarkedObject(320, "table", (0, 185, 640, 480)),
    MarkedObject(740, "cup", (463, 338, 553, 428)),
    MarkedObject(796, "cup", (200, 392, 285, 480)),
    MarkedObject(796, "table", (90, 205, 640, 480)),
)

# Detector labels a person would accept for each kind (Open Images has both Mug and Coffee cup).
ACCEPTED_LABELS = {"table": {"Table"}, "chair": {"Chair"}, "cup": {"Coffee cup", "Mug"}}


def load_frame(folder: Path, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """color_rgb (480, 640, 3) uint8, depth_m (480, 640) float32 (0 invalid), world_T_camera (4, 4)."""
    stem = folder / f"frame-{frame:06d}"
    color = cv2.cvtColor(cv2.imread(f"{stem}.color.jpg", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    depth_mm = cv2.imread(f"{stem}.depth.png", cv2.IMREAD_UNCHANGED)
    depth_m = np.where(depth_mm == 65535, 0, depth_mm).astype(np.float32) / 1000.0  # 65535 marks invalid
    return color, depth_m, np.loadtxt(f"{stem}.pose.txt")


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
