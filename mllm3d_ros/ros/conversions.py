"""Message <-> core-type conversions (numpy only; no cv_bridge, no sensor_msgs_py on pip-only set-ups).

Reading uses `np.frombuffer(msg.data)` and writing `arr.tobytes()`: filling `msg.data` from numpy
arrays is 30-50x slower (ros2-pip pitfall 8).
"""

from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ..core.mapping.frame_checks import decode_color, decode_compressed_color, decode_depth, intrinsics_from_k
from ..core.geometry import matrix_to_quaternion, rigid_transform
from ..core.segmentation import BackendError, ModeUnsupported
from ..core.types import CameraIntrinsics, GeometryMark, InputError, Prediction2D, ViewPredictions
from ..msg import GeometryMark as GeometryMarkMsg
from ..msg import Prediction2D as Prediction2DMsg
from ..srv import SegmentViews

_PC2_FIELDS_XYZ_RGB_CONF = [
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
    PointField(name="confidence", offset=16, datatype=PointField.FLOAT32, count=1),
]
_PC2_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("confidence", "<f4")])


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_header(frame_id: str, stamp_ns: int) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return header


def image_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """Image (rgb8/bgr8/rgba8/bgra8/mono8) or CompressedImage -> (H, W, 3) uint8 RGB."""
    if isinstance(msg, CompressedImage):
        return decode_compressed_color(bytes(msg.data))
    return decode_color(bytes(msg.data), msg.width, msg.height, msg.step, msg.encoding)


def image_to_depth_m(msg: Image) -> np.ndarray:
    """Image (16UC1 mm or 32FC1 m) -> (H, W) float32 metres, invalid = 0."""
    return decode_depth(bytes(msg.data), msg.width, msg.height, msg.step, msg.encoding, bool(msg.is_bigendian))


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3, data=rgb.tobytes())


def depth_to_image(depth_m: np.ndarray, header: Header, encoding: str = "32FC1") -> Image:
    """(H, W) float32 metres -> 32FC1 (metres) or 16UC1 (millimetres) Image."""
    h, w = depth_m.shape
    if encoding == "16UC1":
        data = np.clip(np.round(depth_m * 1000.0), 0, 65535).astype("<u2")
    elif encoding == "32FC1":
        data = np.ascontiguousarray(depth_m, dtype="<f4")
    else:
        raise ValueError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * data.itemsize,
                 data=data.tobytes())


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    data = np.ascontiguousarray(mask, dtype=np.uint8) * np.uint8(255)
    h, w = mask.shape
    return Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w, data=data.tobytes())


def image_to_mask(msg: Image) -> np.ndarray:
    """mono8 mask Image -> (H, W) bool."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ValueError(f"mask encoding must be mono8, got {msg.encoding!r}")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)[:, :msg.width]
    return rows > 127


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    return intrinsics_from_k(msg.width, msg.height, msg.k)


def intrinsics_to_camera_info(intrinsics: CameraIntrinsics, header: Header) -> CameraInfo:
    k = intrinsics.matrix
    p = np.zeros((3, 4))
    p[:3, :3] = k
    return CameraInfo(header=header, width=intrinsics.width, height=intrinsics.height, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=k.ravel().tolist(), r=np.eye(3).ravel().tolist(), p=p.ravel().tolist())


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 float64 transform."""
    p, o = pose.position, pose.orientation
    return rigid_transform((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))


def matrix_to_pose(transform: np.ndarray) -> Pose:
    x, y, z, w = matrix_to_quaternion(transform[:3, :3])
    t = transform[:3, 3]
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])), orientation=Quaternion(x=x, y=y, z=z, w=w))


def pack_rgb(colors_rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) uint32 0x00RRGGBB, reinterpreted as float32 by RViz's 'rgb' field."""
    c = colors_rgb.astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def points_to_cloud(points_m: np.ndarray, header: Header, colors_rgb: np.ndarray | None = None,
                    confidence: np.ndarray | None = None) -> PointCloud2:
    """(N, 3) points [+ (N, 3) uint8 colours, (N,) confidence] -> PointCloud2 (x, y, z, rgb, confidence)."""
    n = int(points_m.shape[0])
    arr = np.zeros(n, dtype=_PC2_DTYPE)
    arr["x"], arr["y"], arr["z"] = points_m[:, 0], points_m[:, 1], points_m[:, 2]
    arr["rgb"] = pack_rgb(colors_rgb) if colors_rgb is not None else 0x00C0C0C0
    arr["confidence"] = confidence if confidence is not None else 1.0
    return PointCloud2(header=header, height=1, width=n, fields=_PC2_FIELDS_XYZ_RGB_CONF, is_bigendian=False,
                       point_step=_PC2_DTYPE.itemsize, row_step=_PC2_DTYPE.itemsize * n, is_dense=True,
                       data=arr.tobytes())


def cloud_to_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """PointCloud2 -> (points (N, 3) float32, colours (N, 3) uint8 or None, confidence (N,) or None)."""
    offsets = {f.name: f.offset for f in msg.fields}
    n = msg.width * msg.height
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(n, msg.point_step)

    def field(name: str, dtype: str) -> np.ndarray:
        off = offsets[name]
        return np.ascontiguousarray(raw[:, off:off + 4]).view(dtype).ravel()

    points = np.stack([field("x", "<f4"), field("y", "<f4"), field("z", "<f4")], axis=1)
    colors = None
    if "rgb" in offsets:
        packed = field("rgb", "<u4")
        colors = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)
    conf = field("confidence", "<f4") if "confidence" in offsets else None
    return points, colors, conf


def mark_to_msg(mark: GeometryMark, keyframe_id: int) -> GeometryMarkMsg:
    """A core GeometryMark drawn in keyframe `keyframe_id` as a GeometryMark message."""
    (cx, cy, cz), (sx, sy, sz) = mark.center_world_m, mark.size_m
    return GeometryMarkMsg(keyframe_id=int(keyframe_id), mark_id=int(mark.mark_id),
                           pixel_xy=[float(mark.pixel_xy[0]), float(mark.pixel_xy[1])],
                           center=Point(x=float(cx), y=float(cy), z=float(cz)),
                           size=Vector3(x=float(sx), y=float(sy), z=float(sz)), distance_m=float(mark.distance_m),
                           label=mark.label, anchor_names=[name for name, _ in mark.anchor_distances_m],
                           anchor_distances_m=[float(d) for _, d in mark.anchor_distances_m])


def mark_from_msg(msg: GeometryMarkMsg) -> GeometryMark:
    """A GeometryMark message as the core type; InputError for non-finite geometry or unpaired anchors."""
    values = [*msg.pixel_xy, msg.center.x, msg.center.y, msg.center.z, msg.size.x, msg.size.y, msg.size.z,
              msg.distance_m, *msg.anchor_distances_m]
    if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
        raise InputError(f"mark {msg.mark_id}: pixel, centre, size and distances must be finite")
    if len(msg.anchor_names) != len(msg.anchor_distances_m):
        raise InputError(f"mark {msg.mark_id}: {len(msg.anchor_names)} anchor_names but "
                         f"{len(msg.anchor_distances_m)} anchor_distances_m")
    return GeometryMark(mark_id=int(msg.mark_id), pixel_xy=(float(msg.pixel_xy[0]), float(msg.pixel_xy[1])),
                        center_world_m=(float(msg.center.x), float(msg.center.y), float(msg.center.z)),
                        size_m=(float(msg.size.x), float(msg.size.y), float(msg.size.z)),
                        distance_m=float(msg.distance_m), label=msg.label,
                        anchor_distances_m=tuple((str(n), float(d)) for n, d in
                                                 zip(msg.anchor_names, msg.anchor_distances_m)))


def marks_from_request(request) -> dict[int, tuple[GeometryMark, ...]]:
    """A SegmentViews request's marks per keyframe id; InputError for a mark naming a keyframe not in it."""
    asked = {int(k) for k in request.keyframe_ids}
    out: dict[int, list[GeometryMark]] = {}
    for msg in request.marks:
        if int(msg.keyframe_id) not in asked:
            raise InputError(f"mark {msg.mark_id} names keyframe {msg.keyframe_id}, which is not in the request")
        out.setdefault(int(msg.keyframe_id), []).append(mark_from_msg(msg))
    return {k: tuple(v) for k, v in out.items()}


def add_views_to_request(request, views) -> None:
    """Fill a SegmentViews request's per-view lists (and the views' marks) from core BackendViews."""
    header = make_header("camera", 0)
    for view in views:
        request.keyframe_ids.append(int(view.keyframe_id))
        request.images.append(rgb_to_image(view.color_rgb, header))
        if view.depth_m is not None:
            request.depths.append(depth_to_image(view.depth_m, header))
        request.camera_infos.append(intrinsics_to_camera_info(view.intrinsics, header))
        request.world_t_camera.append(matrix_to_pose(view.world_T_camera))
        request.marks.extend(mark_to_msg(m, view.keyframe_id) for m in view.marks)


def prediction_to_msg(keyframe_id: int, pred: Prediction2D, header: Header) -> Prediction2DMsg:
    """A core Prediction2D of keyframe `keyframe_id` as a Prediction2D message (mark_id -1 = none)."""
    msg = Prediction2DMsg(keyframe_id=int(keyframe_id), mask=mask_to_image(pred.mask, header),
                          confidence=float(pred.confidence),
                          embedding=np.asarray(pred.embedding, np.float32).ravel().tolist(), label=pred.label,
                          has_box=pred.box_xyxy is not None,
                          mark_id=int(pred.mark_id) if pred.mark_id is not None else -1)
    if pred.box_xyxy is not None:
        msg.box_xyxy = [float(x) for x in pred.box_xyxy]
    return msg


def predictions_from_response(response, views) -> tuple[ViewPredictions, ...]:
    """A SegmentViews response's Prediction2D messages as one ViewPredictions per asked view (in order)."""
    by_id: dict[int, list[Prediction2D]] = {int(v.keyframe_id): [] for v in views}
    for p in response.predictions:
        by_id.setdefault(int(p.keyframe_id), []).append(Prediction2D(
            mask=image_to_mask(p.mask), confidence=float(p.confidence),
            embedding=np.asarray(p.embedding, dtype=np.float32), label=p.label,
            box_xyxy=tuple(float(x) for x in p.box_xyxy) if p.has_box else None,
            mark_id=int(p.mark_id) if p.mark_id >= 0 else None))
    return tuple(ViewPredictions(k, tuple(v)) for k, v in by_id.items())


def box_to_msg(box) -> tuple[Pose, Vector3]:
    """A core OrientedBox3D as the (centre pose, size) pair of SegmentedObject and box markers."""
    world_T_box = np.eye(4)
    world_T_box[:3, :3], world_T_box[:3, 3] = box.world_R_box, box.center_world_m
    size = box.size_m
    return matrix_to_pose(world_T_box), Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))


def grid_to_msg(grid, header: Header):
    """A core OccupancyGrid2D as nav_msgs/OccupancyGrid (row-major from the origin cell, -1 / 0 / 100)."""
    from nav_msgs.msg import OccupancyGrid

    msg = OccupancyGrid(header=header)
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(grid.resolution_m)
    msg.info.height, msg.info.width = (int(v) for v in grid.shape)
    msg.info.origin.position.x, msg.info.origin.position.y = (float(v) for v in grid.origin_xy_m)
    # The grid lies on the floor: its origin's z is the floor height (0 before a floor is seen).
    msg.info.origin.position.z = float(grid.floor_z_m) if grid.floor_z_m is not None else 0.0
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(grid.data, dtype=np.int8).tobytes())
    return msg


def approach_to_msg(approach, header: Header, frame_T_map: np.ndarray | None = None):
    """(PoseStamped, status, message, reachability checked) of a core ApproachPose (None: no object)."""
    from geometry_msgs.msg import PoseStamped

    from ..core.query.approach import ApproachStatus

    if approach is None:
        return PoseStamped(), int(ApproachStatus.NO_OBJECT), "no object to approach", False
    pose = PoseStamped()
    if approach.ok:
        c, s = np.cos(approach.yaw_rad), np.sin(approach.yaw_rad)
        map_T_pose = np.eye(4)
        map_T_pose[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
        map_T_pose[:3, 3] = approach.position_world_m
        pose = PoseStamped(header=header, pose=matrix_to_pose(map_T_pose if frame_T_map is None
                                                              else frame_T_map @ map_T_pose))
    return pose, int(approach.status), approach.message, bool(approach.reachability_checked)


def checked_response(response):
    """A SegmentViews response once it is OK; else the core error its status stands for (InputError,
    ModeUnsupported, BackendError), with the node's message."""
    if response.status == SegmentViews.Response.INVALID_INPUT:
        raise InputError(response.message)
    if response.status == SegmentViews.Response.UNSUPPORTED:
        raise ModeUnsupported(response.message)
    if response.status != SegmentViews.Response.OK:
        raise BackendError(response.message)
    return response
