"""ROS-free core: types, geometry, mapping, keyframes, voting. Never imports rclpy or messages."""
