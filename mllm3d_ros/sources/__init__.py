"""Data sources that yield `RgbdFrame`s, with no ROS dependency.

- `dataset`: replay of dataset folders (7-Scenes/3DMatch and TUM RGB-D layouts).
- `bag`: ROS 2 bags read and written with the pure-Python `rosbags` package.
- `simulator`: procedural indoor rooms rendered with Open3D, with ground truth kept apart.

Modules are imported explicitly (`from mllm3d_ros.sources.dataset import open_dataset`) so that
using one source does not pay for the others' imports (Open3D, rosbags).
"""
