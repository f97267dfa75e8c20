"""Publishes RgbdFrames on the topics a camera driver would (used by the simulator and replay nodes)."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from ..core.types import RgbdFrame
from .conversions import depth_to_image, intrinsics_to_camera_info, make_header, matrix_to_pose, rgb_to_image
from .qos import SENSOR_QOS


class CameraPublisher:
    """camera/color/image_raw (rgb8), camera/depth/image_raw (16UC1 mm, registered to colour),
    camera/color/camera_info, camera/pose (PoseStamped of the optical frame in map_frame)."""

    def __init__(self, node: Node, camera_frame: str, map_frame: str) -> None:
        self._camera_frame = camera_frame
        self._map_frame = map_frame
        self._color = node.create_publisher(Image, "camera/color/image_raw", SENSOR_QOS)
        self._depth = node.create_publisher(Image, "camera/depth/image_raw", SENSOR_QOS)
        self._info = node.create_publisher(CameraInfo, "camera/color/camera_info", SENSOR_QOS)
        self._pose = node.create_publisher(PoseStamped, "camera/pose", SENSOR_QOS)

    def subscriber_count(self) -> int:
        """Subscribers matched on every one of the four topics (the least of the four counts)."""
        return min(p.get_subscription_count() for p in (self._color, self._depth, self._info, self._pose))

    def publish(self, frame: RgbdFrame, stamp_ns: int) -> None:
        header = make_header(self._camera_frame, stamp_ns)
        self._info.publish(intrinsics_to_camera_info(frame.intrinsics, header))
        self._color.publish(rgb_to_image(frame.color_rgb, header))
        self._depth.publish(depth_to_image(np.nan_to_num(frame.depth_m), header, "16UC1"))
        self._pose.publish(PoseStamped(header=make_header(self._map_frame, stamp_ns),
                                       pose=matrix_to_pose(frame.world_T_camera)))
