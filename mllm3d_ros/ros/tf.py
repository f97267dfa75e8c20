"""TF for the nodes: tf2_ros where installed (ROS distributions), the core's TransformBuffer otherwise.

Pip-only set-ups have neither tf2_ros nor tf2_msgs. There the package builds its own
`mllm3d_ros/msg/TFMessage` (same definition as tf2_msgs/TFMessage) and `TfListener` feeds /tf and
/tf_static into a core TransformBuffer. DDS matches topics by type name, so this listener hears
publishers of that same type (other pip-only processes, `mllm3d_ros.ros.tf.TfPublisher`), not a
robot's tf2_msgs publishers; on a ROS distribution tf2_ros is used and hears everything.
Either way `TfLookup.lookup` raises only TransformUnavailable, which the mapping node turns into a
counted NO_TRANSFORM rejection.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from ..core.geometry import matrix_to_quaternion, rigid_transform
from ..core.mapping.tf_buffer import TfBufferConfig, TransformBuffer, TransformUnavailable
from .conversions import make_header, stamp_to_ns
from .qos import TF_QOS, TF_STATIC_QOS

try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # pip-only: the wire-identical definition built by this package
    from ..msg import TFMessage

try:
    import tf2_ros
except ImportError:
    tf2_ros = None


class TfListener:
    """Subscribes to /tf and /tf_static and fills a TransformBuffer (pip-only stand-in for tf2_ros)."""

    def __init__(self, node: Node, buffer: TransformBuffer) -> None:
        self.buffer = buffer
        self._node = node
        group = ReentrantCallbackGroup()  # lookups may wait in other callbacks for these to arrive
        node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS, callback_group=group)
        node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), TF_STATIC_QOS,
                                 callback_group=group)

    def _on_tf(self, msg, static: bool) -> None:
        for tf in msg.transforms:
            t, q = tf.transform.translation, tf.transform.rotation
            try:
                self.buffer.set_transform(tf.header.frame_id, tf.child_frame_id, stamp_to_ns(tf.header.stamp),
                                          (t.x, t.y, t.z), (q.x, q.y, q.z, q.w), static=static)
            except ValueError as exc:
                self._node.get_logger().warning(f"ignoring a bad transform on {'/tf_static' if static else '/tf'}: "
                                                f"{exc}", throttle_duration_sec=5.0)


class TfLookup:
    """`lookup(target, source, stamp_ns, timeout_s)` -> target_T_source (4x4) with either TF back end."""

    def __init__(self, node: Node, cache_s: float = 10.0) -> None:
        if tf2_ros is not None:
            from rclpy.duration import Duration

            self.backend = "tf2_ros"
            self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_s))
            self._listener = tf2_ros.TransformListener(self._buffer, node)
        else:
            self.backend = "mllm3d_ros"
            self._buffer = TransformBuffer(TfBufferConfig(cache_duration_ns=int(cache_s * 1e9)))
            self._listener = TfListener(node, self._buffer)

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int, timeout_s: float = 0.0) -> np.ndarray:
        if tf2_ros is None:
            return self._buffer.lookup(target_frame, source_frame, stamp_ns, timeout_s)
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            tf = self._buffer.lookup_transform(target_frame, source_frame, Time(nanoseconds=int(stamp_ns)),
                                               timeout=Duration(nanoseconds=int(timeout_s * 1e9)))
        except tf2_ros.TransformException as exc:
            raise TransformUnavailable(f"{type(exc).__name__}: {exc}") from None
        t, q = tf.transform.translation, tf.transform.rotation
        return rigid_transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def transform_msg(parent_frame: str, child_frame: str, stamp_ns: int, parent_T_child: np.ndarray) -> TransformStamped:
    """A TransformStamped from a 4x4 matrix."""
    m = np.asarray(parent_T_child, dtype=np.float64)
    out = TransformStamped(header=make_header(parent_frame, stamp_ns), child_frame_id=child_frame)
    out.transform.translation.x, out.transform.translation.y, out.transform.translation.z = (float(v) for v in m[:3, 3])
    r = out.transform.rotation
    r.x, r.y, r.z, r.w = matrix_to_quaternion(m[:3, :3])
    return out


class TfPublisher:
    """Publishes transforms on /tf and /tf_static with the tf2 QoS (tests, simulator, pip-only tools)."""

    def __init__(self, node: Node) -> None:
        self._pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
        self._static_pub = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)

    def send(self, transforms: list[TransformStamped], static: bool = False) -> None:
        (self._static_pub if static else self._pub).publish(TFMessage(transforms=list(transforms)))
