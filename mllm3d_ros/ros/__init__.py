"""ROS 2 adapters: thin nodes that convert messages to core types and hand them off."""
