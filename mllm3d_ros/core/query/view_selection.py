"""Choose the keyframes a query runs the 2D model on: the ones that best see the map (or a region).

MLLM-For3D (arXiv 2503.18135) runs its 2D MLLM on 4 views per query by default; 8 doubled the cost
without a consistent gain. Which 4 matters: spatial consistency can only judge a point that at least
two selected views see, so the selection maximises *2-coverage* (each point counts until it is seen
by `observations_per_point` chosen views), greedily, which is within (1 - 1/e) of the best for this
submodular objective, and penalises near-duplicate poses that would add the same evidence twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..config import check_int, check_range
from ..geometry import rotation_angle_rad, transform_points, unproject_depth
from ..types import InputError, Keyframe
from ..visibility import project_to_view


@dataclass(frozen=True)
class ViewSelectionConfig:
    """Thresholds of view selection, validated at construction.

    Attributes:
        max_views: at most this many keyframes are chosen (the paper's default is 4). [1, 64], default 4.
        observations_per_point: a point stops adding coverage once this many chosen views see it;
            2 is the least that lets voting check a point for consistency. [1, 8], default 2.
        max_points: coverage is measured on at most this many points (an even, deterministic
            subsample of the region), which bounds the cost. >= 100, default 20000.
        depth_tolerance_m, depth_tolerance_frac: visibility test, as in `VotingConfig`
            (a point is seen when |z - depth| <= max(depth_tolerance_m, depth_tolerance_frac * depth)).
            > 0 and [0, 1], defaults 0.05 and 0.03.
        duplicate_distance_m: two poses closer than this (camera centres, metres) ...
            >= 0, default 0.3.
        duplicate_angle_deg: ... and whose orientations differ by less than this angle (degrees)
            are near duplicates. [0, 180], default 20.
        duplicate_penalty: a candidate that nearly duplicates a chosen view has its coverage gain
            multiplied by (1 - duplicate_penalty). [0, 1], default 0.75.
        min_gain_frac: selection stops early when the best remaining gain is below this fraction of
            the region's points (more views would add cost, not evidence). [0, 1], default 0.01.
        region_stride_px: when no region is given, the region is the keyframes' own depth,
            back-projected every this many pixels. >= 1, default 8.
    """

    max_views: int = 4
    observations_per_point: int = 2
    max_points: int = 20000
    depth_tolerance_m: float = 0.05
    depth_tolerance_frac: float = 0.03
    duplicate_distance_m: float = 0.3
    duplicate_angle_deg: float = 20.0
    duplicate_penalty: float = 0.75
    min_gain_frac: float = 0.01
    region_stride_px: int = 8

    def __post_init__(self) -> None:
        check_int("max_views", self.max_views, 1, 64)
        check_int("observations_per_point", self.observations_per_point, 1, 8)
        check_int("max_points", self.max_points, 100)
        check_range("depth_tolerance_m", self.depth_tolerance_m, 0.0, low_inclusive=False)
        check_range("depth_tolerance_frac", self.depth_tolerance_frac, 0.0, 1.0)
        check_range("duplicate_distance_m", self.duplicate_distance_m, 0.0)
        check_range("duplicate_angle_deg", self.duplicate_angle_deg, 0.0, 180.0)
        check_range("duplicate_penalty", self.duplicate_penalty, 0.0, 1.0)
        check_range("min_gain_frac", self.min_gain_frac, 0.0, 1.0)
        check_int("region_stride_px", self.region_stride_px, 1)


def _region_from_keyframes(keyframes: Sequence[Keyframe], stride_px: int) -> np.ndarray:
    """The keyframes' own surfaces as world points (N, 3) float32."""
    parts = []
    for kf in keyframes:
        pts_camera, _ = unproject_depth(kf.depth_m, kf.intrinsics, stride=stride_px)
        parts.append(transform_points(kf.world_T_camera, pts_camera))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 3), np.float32)


def _near_duplicate(a: Keyframe, b: Keyframe, config: ViewSelectionConfig) -> bool:
    distance_m = float(np.linalg.norm(a.world_T_camera[:3, 3] - b.world_T_camera[:3, 3]))
    angle_deg = np.degrees(rotation_angle_rad(a.world_T_camera[:3, :3].T @ b.world_T_camera[:3, :3]))
    return distance_m < config.duplicate_distance_m and angle_deg < config.duplicate_angle_deg


def select_views(keyframes: Sequence[Keyframe], region_points_world_m: np.ndarray | None = None,
                 config: ViewSelectionConfig = ViewSelectionConfig()) -> tuple[int, ...]:
    """Keyframe ids, in the order chosen, that best cover the region with diverse viewpoints.

    region_points_world_m: (N, 3) world points to cover (the map snapshot's points, or the points of a
    region of interest); None covers the keyframes' own surfaces. Returns at most `config.max_views`
    ids; fewer when more views would add (almost) nothing; () when no keyframe sees the region.
    """
    if not keyframes:
        return ()
    if region_points_world_m is None:
        region = _region_from_keyframes(keyframes, config.region_stride_px)
    else:
        region = np.asarray(region_points_world_m, dtype=np.float32)
        if region.ndim != 2 or region.shape[1] != 3:
            raise InputError(f"region_points_world_m must be (N, 3), got {region.shape}")
    if region.shape[0] == 0:
        return ()
    if region.shape[0] > config.max_points:
        region = region[:: int(np.ceil(region.shape[0] / config.max_points))]

    seen = [project_to_view(region, kf, config.depth_tolerance_m, config.depth_tolerance_frac).visible_indices
            for kf in keyframes]
    observations = np.zeros(region.shape[0], dtype=np.int64)
    chosen: list[int] = []
    min_gain = config.min_gain_frac * region.shape[0]
    while len(chosen) < min(config.max_views, len(keyframes)):
        best, best_gain = -1, 0.0
        for k, idx in enumerate(seen):
            if k in chosen:
                continue
            gain = float(np.count_nonzero(observations[idx] < config.observations_per_point))
            if any(_near_duplicate(keyframes[k], keyframes[c], config) for c in chosen):
                gain *= 1.0 - config.duplicate_penalty
            # ties go to the sharper image (less motion blur for the 2D model)
            if gain > best_gain or (gain == best_gain and best >= 0 and keyframes[k].sharpness > keyframes[best].sharpness):
                best, best_gain = k, gain
        if best < 0 or best_gain <= 0.0 or best_gain < min_gain:
            break
        chosen.append(best)
        observations[seen[best]] += 1
    return tuple(keyframes[k].keyframe_id for k in chosen)
