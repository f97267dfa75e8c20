"""ros2 launch mllm3d_ros perception.launch.py [camera:=realsense] [source:=simulator] [preset:=gpu] ...

The node list comes from mllm3d_ros.launch_spec, the same one `mllm3d launch` uses on pip-only
set-ups, so both start the same processes with the same parameters file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mllm3d_ros.launch_spec import LAUNCH_ARGUMENTS, NAMESPACE, node_specs, params_files


def _nodes(context):
    args = {name: LaunchConfiguration(name).perform(context) for name, _, _ in LAUNCH_ARGUMENTS}
    # params_file (default: the package's config/perception.yaml), then the preset's overlay: later files win.
    files = [str(f) for f in params_files(args)]
    actions = []
    for spec in node_specs(args):
        overrides = {k: (v.lower() == "true" if v.lower() in ("true", "false") else v) for k, v in spec.parameters}
        actions.append(Node(package="mllm3d_ros", executable=spec.executable, namespace=NAMESPACE, output="screen",
                            parameters=[*files, overrides], remappings=list(spec.remappings)))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
