"""Box -> mask: the dominant surface inside a detection box, found with depth, then refined with colour.

Method (all on a crop of the box plus a margin, downscaled so its longer side is at most `work_px`):
1. Depth: pixels of valid depth are split at depth discontinuities (a neighbour differs by more than
   `depth_jump_rel` x depth, which follows the Kinect/ToF noise growing with range); of the connected
   surfaces inside the box, keep the one covering most of the box's central region (the object a
   detector centres its box on), which removes the wall or floor seen around and through it. A
   surface smaller than `min_surface_fraction` of the box is treated as no depth (step 3).
2. Colour: `cv2.grabCut` initialised from that mask (outside the box: background; the depth surface:
   probable foreground, its eroded core: foreground; the rest of the box: probable background)
   separates what depth cannot, e.g. a cup from the table it stands on (Rother et al., "GrabCut",
   SIGGRAPH 2004). If GrabCut collapses, the depth mask is kept.
3. Where depth is missing at the box's centre (no depth image, or Kinect holes on small shiny objects
   such as cups), GrabCut runs on colour alone from the box (inside: probable foreground, the margin
   around it: background). If that collapses too, the mask is the box shrunk towards its centre,
   since boxes include background at their borders.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np


class MaskMethod(enum.Enum):
    """How a mask was obtained."""

    DEPTH_AND_COLOUR = "depth_and_colour"
    DEPTH = "depth"
    COLOUR = "colour"
    SHRUNKEN_BOX = "shrunken_box"


@dataclass(frozen=True)
class MaskConfig:
    """work_px >= 16 (GrabCut's cost grows with its square: ~6 ms at 64, ~35 ms at 128 on one core);
    depth_jump_rel > 0; min_valid_fraction, min_surface_fraction,
    shrink_fraction, central_fraction in (0, 1); grabcut_iterations >= 0.
    """

    work_px: int = 80
    depth_jump_rel: float = 0.06
    min_valid_fraction: float = 0.3
    min_surface_fraction: float = 0.25
    shrink_fraction: float = 0.15
    grabcut_iterations: int = 2
    central_fraction: float = 0.4


@dataclass(frozen=True, eq=False)
class RefinedMask:
    """mask (H, W) bool at the image's resolution, inside the box; how it was made."""

    mask: np.ndarray
    method: MaskMethod


def _int_box(box_xyxy: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box_xyxy
    x0 = int(np.clip(np.floor(x0), 0, width - 1))
    y0 = int(np.clip(np.floor(y0), 0, height - 1))
    x1 = int(np.clip(np.ceil(x1), x0 + 1, width))
    y1 = int(np.clip(np.ceil(y1), y0 + 1, height))
    return x0, y0, x1, y1


def shrunken_box_mask(height: int, width: int, box: tuple[int, int, int, int], shrink_fraction: float) -> np.ndarray:
    """The box shrunk by `shrink_fraction` of its size on each side (at least one pixel)."""
    x0, y0, x1, y1 = box
    dx, dy = int((x1 - x0) * shrink_fraction), int((y1 - y0) * shrink_fraction)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 + dy:max(y1 - dy, y0 + dy + 1), x0 + dx:max(x1 - dx, x0 + dx + 1)] = True
    return mask


def depth_surface(depth_m: np.ndarray, inside: np.ndarray, centre: np.ndarray, jump_rel: float) -> np.ndarray:
    """The connected smooth-depth surface (4-connected, split at relative depth jumps) covering most of `centre`.

    depth_m (h, w) float32 metres (0 invalid); inside, centre (h, w) bool. Returns (h, w) bool, maybe empty.
    """
    valid = (depth_m > 0) & np.isfinite(depth_m) & inside
    smooth = valid.copy()
    # A pixel is cut from both neighbours across a jump, so surfaces separate on both sides of an edge.
    jump_x = np.abs(np.diff(depth_m, axis=1)) > jump_rel * np.minimum(depth_m[:, 1:], depth_m[:, :-1])
    jump_y = np.abs(np.diff(depth_m, axis=0)) > jump_rel * np.minimum(depth_m[1:], depth_m[:-1])
    smooth[:, 1:] &= ~jump_x
    smooth[:, :-1] &= ~jump_x
    smooth[1:] &= ~jump_y
    smooth[:-1] &= ~jump_y
    count, labels = cv2.connectedComponents(smooth.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros_like(valid)
    votes = np.bincount(labels[centre], minlength=count)
    votes[0] = 0
    if votes.max() == 0:  # nothing valid at the centre: fall back to the largest surface in the box
        votes = np.bincount(labels[inside], minlength=count)
        votes[0] = 0
    return labels == int(np.argmax(votes))


def _grabcut(color_rgb: np.ndarray, init: np.ndarray, iterations: int) -> np.ndarray:
    """Foreground of cv2.grabCut run from an initial GC_* label image; empty if the colour models degenerate."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    labels = init.copy()
    # grabCut seeds its k-means from OpenCV's process-global RNG: without a fixed seed the same view
    # gives different masks depending on what ran before in the process.
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(np.ascontiguousarray(color_rgb[..., ::-1]), labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # e.g. a flat crop with no background colour to learn
        return np.zeros(init.shape, dtype=bool)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def refine_box_mask(color_rgb: np.ndarray, depth_m: np.ndarray | None,
                    box_xyxy: tuple[float, float, float, float], config: MaskConfig = MaskConfig()) -> RefinedMask:
    """Mask of the dominant object inside a box.

    color_rgb (H, W, 3) uint8; depth_m (H, W) float32 metres with 0 where invalid, or None;
    box_xyxy in pixels. Returns a mask (H, W) bool contained in the box.
    """
    height, width = color_rgb.shape[:2]
    box = _int_box(box_xyxy, width, height)
    x0, y0, x1, y1 = box
    fallback = RefinedMask(shrunken_box_mask(height, width, box, config.shrink_fraction), MaskMethod.SHRUNKEN_BOX)

    # Crop with a margin (GrabCut learns the background colours there), downscaled to bound the cost.
    bw, bh = x1 - x0, y1 - y0
    mx, my = max(2, bw // 8), max(2, bh // 8)
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)
    scale = min(1.0, config.work_px / max(cx1 - cx0, cy1 - cy0))
    ww, wh = max(1, round((cx1 - cx0) * scale)), max(1, round((cy1 - cy0) * scale))
    if min(ww, wh) < 4:
        return fallback
    color = cv2.resize(color_rgb[cy0:cy1, cx0:cx1], (ww, wh), interpolation=cv2.INTER_AREA)
    bx0, by0 = int((x0 - cx0) * scale), int((y0 - cy0) * scale)
    bx1, by1 = max(bx0 + 1, int(np.ceil((x1 - cx0) * scale))), max(by0 + 1, int(np.ceil((y1 - cy0) * scale)))
    inside = np.zeros((wh, ww), dtype=bool)
    inside[by0:by1, bx0:bx1] = True
    c = (1.0 - config.central_fraction) / 2
    centre = np.zeros_like(inside)
    centre[by0 + int((by1 - by0) * c):max(by0 + 1, by1 - int((by1 - by0) * c)),
           bx0 + int((bx1 - bx0) * c):max(bx0 + 1, bx1 - int((bx1 - bx0) * c))] = True
    box_area = np.count_nonzero(inside)

    surface = np.zeros_like(inside)
    if depth_m is not None:
        # Nearest keeps depth values real (averaging across an edge would invent intermediate surfaces).
        depth = cv2.resize(depth_m[cy0:cy1, cx0:cx1].astype(np.float32), (ww, wh), interpolation=cv2.INTER_NEAREST)
        centre_valid = np.count_nonzero((depth[centre] > 0) & np.isfinite(depth[centre]))
        if centre_valid >= config.min_valid_fraction * np.count_nonzero(centre):
            surface = depth_surface(depth, inside, centre, config.depth_jump_rel)
        # A surface much smaller than the box is a fragment (e.g. the coffee inside a cup whose white
        # walls the sensor missed), not the object: let colour decide then.
        if np.count_nonzero(surface) < config.min_surface_fraction * box_area:
            surface[:] = False

    gc = np.full((wh, ww), cv2.GC_BGD, dtype=np.uint8)
    if surface.any():
        gc[inside] = cv2.GC_PR_BGD
        gc[surface] = cv2.GC_PR_FGD
        core = cv2.erode(surface.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1).astype(bool) & centre
        gc[core] = cv2.GC_FGD
        work_mask, method, reference = surface, MaskMethod.DEPTH, np.count_nonzero(surface)
    else:
        gc[inside] = cv2.GC_PR_FGD
        work_mask, method, reference = None, MaskMethod.COLOUR, box_area
    if config.grabcut_iterations > 0:
        refined = _grabcut(color, gc, config.grabcut_iterations) & inside
        # GrabCut may keep almost nothing (low contrast) or everything (no colour difference): then it
        # told us nothing, and the depth surface (or the shrunken box) is the better guess.
        if 0.2 * reference <= np.count_nonzero(refined) <= 0.95 * box_area or (
                method is MaskMethod.DEPTH and np.count_nonzero(refined) >= 0.2 * reference):
            work_mask = refined
            method = MaskMethod.DEPTH_AND_COLOUR if method is MaskMethod.DEPTH else MaskMethod.COLOUR
    if work_mask is None:
        return fallback

    full = np.zeros((height, width), dtype=bool)
    crop_mask = cv2.resize(work_mask.astype(np.uint8), (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_NEAREST)
    full[cy0:cy1, cx0:cx1] = crop_mask.astype(bool)
    full[:y0] = False
    full[y1:] = False
    full[:, :x0] = False
    full[:, x1:] = False
    return RefinedMask(full, method)
