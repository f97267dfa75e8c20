"""Hand-made 3D ground truth of a real recording: gravity-aligned oriented boxes, one per object instance.

EVALUATION ONLY (benchmarks.real, scripts/annotate_real.py); nothing in the product reads it.

The JSON (benchmarks/annotations/*.json) holds, per instance, an id, a class, a box or a list of boxes
(centre and size in metres, yaw in degrees about the world's z axis; the box's x axis is the world x
axis turned by the yaw) and a note saying how it was checked; at the top level, the dataset, the frame the boxes are in,
and `map_T_world`: the rotation the dataset loader applied to the recording's poses when the boxes were
made (the gravity alignment of `open_dataset`). Loading against a dataset whose loader applies another
alignment re-expresses the boxes in the new frame, as long as the two frames differ by a rotation about
z and a translation (boxes stay gravity-aligned); anything else is refused.

GT points of an instance (`gt_masks`): the map points inside its boxes. Boxes of objects that stand on
something (a mug on the table, a chair on the floor) start a little above the support's surface, so
the support's points are not in them; a point inside several boxes belongs to the smallest (the mug,
not the table under it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mllm3d_ros.core.types import InputError, OrientedBox3D

ANNOTATIONS_DIR = Path(__file__).resolve().parent / "annotations"
REDKITCHEN_JSON = ANNOTATIONS_DIR / "redkitchen.json"


@dataclass(frozen=True)
class GtBox:
    """A gravity-aligned box: centre and size (m, size along the box's own axes), yaw (deg) about z."""

    center_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    yaw_deg: float

    @property
    def world_R_box(self) -> np.ndarray:
        c, s = math.cos(math.radians(self.yaw_deg)), math.sin(math.radians(self.yaw_deg))
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def box(self) -> OrientedBox3D:
        return OrientedBox3D(np.array(self.center_m, dtype=np.float64), self.world_R_box,
                             np.array(self.size_m, dtype=np.float64))

    @property
    def volume_m3(self) -> float:
        return float(np.prod(self.size_m))

    def contains(self, points_world_m: np.ndarray) -> np.ndarray:
        """(N,) bool: which of the points (N, 3) lie inside the box (faces included)."""
        local = (np.asarray(points_world_m, dtype=np.float64) - np.array(self.center_m)) @ self.world_R_box
        return np.all(np.abs(local) <= np.array(self.size_m) / 2.0, axis=1)


@dataclass(frozen=True)
class GtInstance:
    """One annotated object: id (e.g. "chair_left"), class label, and its box, or boxes when one box
    cannot hold it without its neighbours (a chair pushed under the table: the part below the table top,
    and the backrest beside it)."""

    instance_id: str
    label: str
    boxes: tuple[GtBox, ...]
    note: str = ""

    @property
    def center_m(self) -> tuple[float, float, float]:
        """Centre of the largest box (where a label is drawn)."""
        return max(self.boxes, key=lambda b: b.volume_m3).center_m

    def contains(self, points_world_m: np.ndarray) -> np.ndarray:
        """(N,) bool: inside any of its boxes."""
        return np.any([b.contains(points_world_m) for b in self.boxes], axis=0)


@dataclass(frozen=True, eq=False)
class Annotations:
    """All instances of one recording, in the frame named by `frame` (map_T_world: see the module doc)."""

    dataset: str
    frame: str
    map_T_world: np.ndarray
    instances: tuple[GtInstance, ...]

    def by_label(self, label: str) -> tuple[GtInstance, ...]:
        return tuple(i for i in self.instances if i.label == label)

    def instance(self, instance_id: str) -> GtInstance:
        for i in self.instances:
            if i.instance_id == instance_id:
                return i
        raise KeyError(f"no annotated instance {instance_id!r}; have {[i.instance_id for i in self.instances]}")


def _vector(name: str, value, length: int, positive: bool = False) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of {length} numbers, got {value!r}") from None
    if len(out) != length or not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be {length} finite numbers, got {value!r}")
    if positive and min(out) <= 0.0:
        raise InputError(f"{name} must be > 0 in every axis, got {value!r}")
    return out


def parse_annotations(data: dict, source: str = "annotations") -> Annotations:
    """Validate a decoded annotation JSON; errors name the instance and the field."""
    try:
        map_T_world = np.array(data["map_T_world"], dtype=np.float64)
        raw_instances = data["instances"]
        dataset, frame = str(data["dataset"]), str(data["frame"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: needs dataset, frame, map_T_world (4x4) and instances ({exc})") from None
    if map_T_world.shape != (4, 4) or not np.all(np.isfinite(map_T_world)):
        raise InputError(f"{source}: map_T_world must be a finite 4x4 matrix")
    instances, seen = [], set()
    for k, item in enumerate(raw_instances):
        where = f"{source}: instance {k}"
        try:
            iid, label = str(item["id"]), str(item["class"])
            raw_boxes = item["boxes"] if "boxes" in item else [item["box"]]
        except (KeyError, TypeError) as exc:
            raise InputError(f"{where}: needs id, class and box (or boxes) ({exc!r})") from None
        if not iid or not label:
            raise InputError(f"{where}: id and class must be non-empty")
        if iid in seen:
            raise InputError(f"{where}: duplicate id {iid!r}")
        seen.add(iid)
        if not raw_boxes:
            raise InputError(f"{where} ({iid}): no box")
        boxes = []
        for j, box in enumerate(raw_boxes):
            at = f"{where} ({iid}) box {j}"
            try:
                center, size, yaw_deg = box["center_m"], box["size_m"], float(box["yaw_deg"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{at}: needs center_m, size_m and yaw_deg ({exc!r})") from None
            if not -180.0 <= yaw_deg <= 180.0:
                raise InputError(f"{at}: yaw_deg must be in [-180, 180], got {yaw_deg!r}")
            boxes.append(GtBox(_vector(f"{at}: center_m", center, 3), _vector(f"{at}: size_m", size, 3, positive=True),
                               yaw_deg))
        instances.append(GtInstance(iid, label, tuple(boxes), str(item.get("note", ""))))
    if not instances:
        raise InputError(f"{source}: no instances")
    return Annotations(dataset, frame, map_T_world, tuple(instances))


def load_annotations(path: str | Path = REDKITCHEN_JSON, map_T_world: np.ndarray | None = None) -> Annotations:
    """Read and validate an annotation file; with `map_T_world` (the loader's alignment now) the boxes
    are re-expressed in that frame if it differs from the one they were made in."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read annotations {path}: {exc}") from None
    annotations = parse_annotations(data, str(path))
    return annotations if map_T_world is None else reexpress(annotations, map_T_world)


def reexpress(annotations: Annotations, map_T_world: np.ndarray) -> Annotations:
    """The same boxes in the frame map_T_world makes of the recording's original world frame."""
    new_T_old = np.asarray(map_T_world, dtype=np.float64) @ np.linalg.inv(annotations.map_T_world)
    if np.allclose(new_T_old, np.eye(4), atol=1e-6):
        return annotations
    rot = new_T_old[:3, :3]
    if abs(rot[2, 2] - 1.0) > 1e-6:
        raise InputError("the dataset's map_T_world differs from the annotations' by more than a turn about z "
                         "and a translation: the boxes would no longer be gravity-aligned; re-annotate")
    dyaw = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    moved = []
    for inst in annotations.instances:
        boxes = tuple(GtBox(tuple(float(v) for v in rot @ np.array(b.center_m) + new_T_old[:3, 3]), b.size_m,
                            (b.yaw_deg + dyaw + 180.0) % 360.0 - 180.0) for b in inst.boxes)
        moved.append(GtInstance(inst.instance_id, inst.label, boxes, inst.note))
    return Annotations(annotations.dataset, annotations.frame, np.asarray(map_T_world, dtype=np.float64),
                       tuple(moved))


def gt_masks(points_world_m: np.ndarray, instances: tuple[GtInstance, ...]) -> dict[str, np.ndarray]:
    """instance id -> (N,) bool over the points: inside one of its boxes, and not inside a smaller box."""
    points = np.asarray(points_world_m, dtype=np.float64).reshape(-1, 3)
    owner = np.full(points.shape[0], -1, dtype=np.int64)
    boxes = [(box, k) for k, inst in enumerate(instances) for box in inst.boxes]
    # Largest first, so that a smaller box overwrites: the object on top wins over its support.
    for box, k in sorted(boxes, key=lambda bk: -bk[0].volume_m3):
        owner[box.contains(points)] = k
    return {inst.instance_id: owner == k for k, inst in enumerate(instances)}
