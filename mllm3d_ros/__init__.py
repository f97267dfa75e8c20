"""mllm3d_ros: 3D reasoning segmentation for ROS 2 (MLLM-For3D + geometry-aware prompting)."""
