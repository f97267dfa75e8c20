"""Typed data passed between the core components.

Conventions (REP-103/105): the map/world frame is z-up metres; camera poses are
`world_T_camera`, a 4x4 float64 transform taking points from the camera *optical* frame
(x right, y down, z forward) to the world frame. Images are row-major (H, W[, C]).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .query.approach import ApproachPose


class InputError(ValueError):
    """An input (frame, instruction, image) is malformed; the message says exactly how."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image of `width` x `height` pixels (no distortion)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"intrinsics: image size must be positive, got {self.width}x{self.height}")
        vals = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if not np.all(np.isfinite(vals)):
            raise InputError(f"intrinsics: non-finite values fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise InputError(f"intrinsics: focal lengths must be > 0, got fx={self.fx} fy={self.fy}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, scale: float) -> "CameraIntrinsics":
        """Intrinsics of the same camera with the image resized by `scale` (pixel-centre aware)."""
        w = max(1, int(round(self.width * scale)))
        h = max(1, int(round(self.height * scale)))
        sx, sy = w / self.width, h / self.height
        return CameraIntrinsics(w, h, self.fx * sx, self.fy * sy,
                                (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5)


@dataclass(frozen=True, eq=False)
class RgbdFrame:
    """One registered colour + depth image with its pose.

    color_rgb: (H, W, 3) uint8 RGB. depth_m: (H, W) float32 metres, 0 where invalid.
    world_T_camera: (4, 4) float64, camera optical frame -> world.
    """

    stamp_ns: int
    color_rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: CameraIntrinsics
    world_T_camera: np.ndarray
    frame_id: str = "camera_color_optical_frame"


@dataclass(frozen=True, eq=False)
class Keyframe:
    """A stored view: images downsampled together with their intrinsics.

    color_rgb (h, w, 3) uint8, depth_m (h, w) float32 metres (0 invalid), intrinsics at (w, h).
    """

    keyframe_id: int
    stamp_ns: int
    world_T_camera: np.ndarray
    intrinsics: CameraIntrinsics
    color_rgb: np.ndarray
    depth_m: np.ndarray
    sharpness: float = 0.0

    @property
    def nbytes(self) -> int:
        return int(self.color_rgb.nbytes + self.depth_m.nbytes + self.world_T_camera.nbytes)


@dataclass(frozen=True, eq=False)
class MapSnapshot:
    """A consistent copy of the map's surface points, safe to use while ingestion goes on.

    points_world_m (N, 3) float32, colors_rgb (N, 3) uint8, normals_world (N, 3) float32 or None.
    """

    points_world_m: np.ndarray
    colors_rgb: np.ndarray
    normals_world: np.ndarray | None
    stamp_ns: int
    frame_id: str = "map"

    @property
    def num_points(self) -> int:
        return int(self.points_world_m.shape[0])


@dataclass(frozen=True, eq=False)
class Prediction2D:
    """One 2D reasoning-segmentation prediction in one view.

    mask (h, w) bool at the view's image resolution; confidence alpha in [0, 1];
    embedding (D,) float32 L2-normalised (the segmentation token's embedding e_i);
    box_xyxy in pixels or None; mark_id: the view's GeometryMark the model chose for it, None if none.
    A class-agnostic proposal (SAM's masks, objects from the map) has label UNLABELLED; its embedding is
    not used. geometric: the mask was rendered from the map's 3D objects with a depth test (it holds no
    spill onto the support or the background to strip).
    """

    mask: np.ndarray
    confidence: float
    embedding: np.ndarray
    label: str = ""
    box_xyxy: tuple[float, float, float, float] | None = None
    mark_id: int | None = None
    geometric: bool = False


@dataclass(frozen=True, eq=False)
class ViewPredictions:
    """All predictions of a backend for one keyframe; `supports`: the support surfaces a proposer found in
    the view (`core.memory.supports.SupportSurface`, from the map's class-agnostic proposer), for the memory."""

    keyframe_id: int
    predictions: tuple[Prediction2D, ...] = ()
    supports: tuple = ()


@dataclass(frozen=True, eq=False)
class BackendView:
    """What a backend receives per view: the keyframe's images and geometry.

    depth_m and world_T_camera let backends refine masks with depth and draw geometry-aware
    prompts (GAP-MLLM); `marks` are candidate objects of the 3D map projected into this view.
    """

    keyframe_id: int
    color_rgb: np.ndarray
    depth_m: np.ndarray | None
    intrinsics: CameraIntrinsics
    world_T_camera: np.ndarray
    marks: tuple["GeometryMark", ...] = ()


def keyframe_view(keyframe: Keyframe, marks: tuple["GeometryMark", ...] = ()) -> BackendView:
    """What a backend receives for a stored keyframe."""
    return BackendView(keyframe_id=keyframe.keyframe_id, color_rgb=keyframe.color_rgb, depth_m=keyframe.depth_m,
                       intrinsics=keyframe.intrinsics, world_T_camera=keyframe.world_T_camera, marks=marks)


@dataclass(frozen=True)
class GeometryMark:
    """A numbered candidate object drawn into a view, with its metric geometry (GAP-MLLM prompting).

    pixel_xy: (x, y) pixels of the view's image, on the object; center_world_m / size_m: its gravity-aligned
    box (map frame, z up); distance_m: box centre to the camera centre; anchor_distances_m: (anchor name,
    gap between the two boxes in metres) for each anchor the instruction names (the gap the 3D relations use).
    """

    mark_id: int
    pixel_xy: tuple[float, float]
    center_world_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    distance_m: float
    label: str = ""
    anchor_distances_m: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """A backend's answer to one instruction over a set of views."""

    target_phrase: str
    query_embedding: np.ndarray
    views: tuple[ViewPredictions, ...]
    forward_ms: float = 0.0


@dataclass(frozen=True, eq=False)
class OrientedBox3D:
    """An oriented box in the world frame: centre (3,), world_R_box (3, 3), size_m (3,) along box axes."""

    center_world_m: np.ndarray
    world_R_box: np.ndarray
    size_m: np.ndarray


@dataclass(frozen=True, eq=False)
class Object3D:
    """One 3D object hypothesis that survived multi-view voting (or an object of the memory).

    point_indices (K,) int64 into the MapSnapshot; point_confidence (K,) float32 in [0, 1].
    unconfirmed: no detector or model named it as the asked class (an unlabelled object named by what the
    memory could check: support, relation, colour, shape); detail: what the memory knows of it (colours,
    shape, why the label is unconfirmed), '' when nothing.
    """

    point_indices: np.ndarray
    point_confidence: np.ndarray
    box: OrientedBox3D
    confidence: float
    supporting_views: int
    visible_views: int
    label: str = ""
    unconfirmed: bool = False
    detail: str = ""


class QueryStatus(enum.IntEnum):
    """Outcome of a segmentation query; values match SegmentQuery.action's result codes."""

    SUCCESS = 0
    MAP_EMPTY = 1
    INVALID_INSTRUCTION = 2
    NO_VIEWS = 3
    BACKEND_UNAVAILABLE = 4
    BACKEND_ERROR = 5
    NOT_FOUND = 6
    CANCELED = 7
    TIMEOUT = 8
    BUSY = 9
    INVALID_GOAL = 10


@dataclass(frozen=True, eq=False)
class QueryResult:
    """What a query returns: status, the model's phrase, ranked objects, timings.

    `snapshot` is the map the objects' point indices refer to (None when no object was found).
    `approach`: where a robot can stand to reach objects[0], when it was planned.
    """

    status: QueryStatus
    message: str
    target_phrase: str = ""
    objects: tuple[Object3D, ...] = ()
    views_used: int = 0
    elapsed_s: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)
    snapshot: MapSnapshot | None = None
    approach: "ApproachPose | None" = None


# Label of an object that no detector or model has named (a class-agnostic object from the map):
# it may answer only an instruction that pins it down by what the memory can check, flagged unconfirmed.
UNLABELLED = "object"


class SupportKind(str, enum.Enum):
    """What an object stands on (DESIGN.md, "Objects before labels")."""

    FLOOR = "floor"
    ELEVATED = "elevated"  # a horizontal surface above the floor: table top, counter, shelf, seat


@dataclass(frozen=True)
class SupportRef:
    """The support surface an object stands on: the memory's id of the surface, its kind and its height
    (z of the plane in the gravity-aligned map frame, m)."""

    support_id: int
    kind: SupportKind
    height_m: float

