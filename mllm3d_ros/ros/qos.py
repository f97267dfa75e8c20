"""QoS profiles chosen on purpose (see README, Topics)."""

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

# Camera inputs: best effort, shallow; a late frame is worth less than the next one.
SENSOR_QOS = qos_profile_sensor_data

# Latched outputs (map cloud, keyframe poses, last result): a late-joining RViz gets the last one.
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# Commands and results that must not be lost (instructions from speech-to-text).
RELIABLE_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

# TF as tf2_ros publishes and listens: /tf reliable, volatile, deep; /tf_static latched (a listener
# started after the static broadcaster still gets the robot's fixed transforms).
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
