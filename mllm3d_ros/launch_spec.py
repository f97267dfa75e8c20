"""The node list of the perception system, shared by `launch/perception.launch.py` (ROS
distributions) and `mllm3d launch` (pip-only set-ups) so the two cannot drift. No ROS imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .core.config import nearest_hint

NAMESPACE = "mllm3d"

# Topic names of common RGB-D drivers (depth registered to colour). Override any with *_topic.
CAMERA_PRESETS: dict[str, dict[str, str]] = {
    # Our simulator and replay nodes (also the default).
    "simulator": {"color": "camera/color/image_raw", "depth": "camera/depth/image_raw",
                  "info": "camera/color/camera_info", "pose": "camera/pose"},
    # realsense2_camera (ros2 launch realsense2_camera rs_launch.py align_depth.enable:=true)
    "realsense": {"color": "/camera/camera/color/image_raw",
                  "depth": "/camera/camera/aligned_depth_to_color/image_raw",
                  "info": "/camera/camera/color/camera_info", "pose": "/camera/pose"},
    # Azure_Kinect_ROS_Driver (depth_to_rgb: depth registered to the colour camera)
    "azure_kinect": {"color": "/rgb/image_raw", "depth": "/depth_to_rgb/image_raw",
                     "info": "/rgb/camera_info", "pose": "/camera/pose"},
    # zed-ros2-wrapper (its visual odometry publishes the left camera's pose)
    "zed": {"color": "/zed/zed_node/rgb/image_rect_color", "depth": "/zed/zed_node/depth/depth_registered",
            "info": "/zed/zed_node/rgb/camera_info", "pose": "/zed/zed_node/pose"},
}

# Overlays on the parameters file (later files win in ROS): a preset holds only what differs.
PRESETS: dict[str, str] = {
    # transformers backend on one CUDA GPU (24 GB): Qwen2.5-VL-7B + SAM 2.1-large + OWLv2, bfloat16
    "gpu": "perception_gpu.yaml",
}

LAUNCH_ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("camera", "simulator", f"Topic preset: {', '.join(CAMERA_PRESETS)}"),
    ("color_topic", "", "Colour image topic (overrides the preset)"),
    ("depth_topic", "", "Depth image topic, registered to colour (overrides the preset)"),
    ("camera_info_topic", "", "CameraInfo topic (overrides the preset)"),
    ("pose_topic", "", "PoseStamped topic of the camera (overrides the preset)"),
    ("odom_topic", "/odom", "Odometry topic (with the mapping parameter pose_source: odometry)"),
    ("backend", "", "Segmentation backend (offline | transformers); '' = the params file's"),
    ("source", "none", "Also start a data source: none | simulator | replay"),
    ("replay_path", "", "Dataset folder or bag for source:=replay"),
    ("params_file", "", "Parameters YAML; '' = the package's config/perception.yaml"),
    ("preset", "", f"Parameter overlay read after params_file: '' (none) | {' | '.join(PRESETS)}"),
    ("use_sim_time", "false", "Use /clock"),
    ("with_segmentation", "true", "Start the segmentation node here (false when it runs on a GPU host)"),
)


@dataclass(frozen=True)
class NodeSpec:
    """One process of the system: lib/mllm3d_ros/<executable>, node name, remaps, overrides."""

    executable: str
    name: str
    remappings: tuple[tuple[str, str], ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()  # overrides as (name, value string)


def node_specs(args: dict[str, str]) -> tuple[NodeSpec, ...]:
    """The processes to start for the given launch arguments (missing ones take their defaults)."""
    a = {name: default for name, default, _ in LAUNCH_ARGUMENTS}
    for name in sorted(set(args) - set(a)):
        raise ValueError(f"unknown launch argument '{name}'; {nearest_hint(name, a)}")
    a.update(args)
    if a["camera"] not in CAMERA_PRESETS:
        raise ValueError(f"camera must be one of {list(CAMERA_PRESETS)}, got {a['camera']!r}")
    if a["preset"] and a["preset"] not in PRESETS:
        raise ValueError(f"preset must be '' or one of {list(PRESETS)}, got {a['preset']!r}")
    if a["source"] not in ("none", "simulator", "replay"):
        raise ValueError(f"source must be none, simulator or replay, got {a['source']!r}")
    preset = CAMERA_PRESETS[a["camera"]]
    remaps = (
        ("camera/color/image_raw", a["color_topic"] or preset["color"]),
        ("camera/color/image_raw/compressed", (a["color_topic"] or preset["color"]) + "/compressed"),
        ("camera/depth/image_raw", a["depth_topic"] or preset["depth"]),
        ("camera/color/camera_info", a["camera_info_topic"] or preset["info"]),
        ("camera/pose", a["pose_topic"] or preset["pose"]),
        ("odom", a["odom_topic"]),
    )
    sim_time = (("use_sim_time", a["use_sim_time"]),)
    specs = [NodeSpec("perception_node", "mapping", remaps, sim_time)]
    if a["with_segmentation"].lower() == "true":
        seg_params = sim_time + ((("backend", a["backend"]),) if a["backend"] else ())
        specs.append(NodeSpec("segmentation_node", "segmentation", (), seg_params))
    if a["source"] == "simulator":
        specs.append(NodeSpec("simulator_node", "simulator", remaps[:1] + remaps[2:5], sim_time))
    elif a["source"] == "replay":
        if not a["replay_path"]:
            raise ValueError("source:=replay needs replay_path:=PATH")
        specs.append(NodeSpec("replay_node", "replay", remaps[:1] + remaps[2:5],
                              sim_time + (("path", a["replay_path"]),)))
    return tuple(specs)


def default_params_file(name: str = "perception.yaml") -> Path:
    """config/<name> from the installed share dir, else from the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory("mllm3d_ros")) / "config" / name
        if installed.exists():
            return installed
    except (ImportError, LookupError, ValueError):
        pass
    return Path(__file__).resolve().parents[1] / "config" / name


def params_files(args: dict[str, str]) -> tuple[Path, ...]:
    """The parameters files every node reads, in order: params_file (or the default), then the preset's."""
    base = Path(args["params_file"]) if args.get("params_file") else default_params_file()
    preset = args.get("preset", "")
    if preset and preset not in PRESETS:
        raise ValueError(f"preset must be '' or one of {list(PRESETS)}, got {preset!r}")
    return (base,) + ((default_params_file(PRESETS[preset]),) if preset else ())


def local_dds_env(environ: dict[str, str]) -> dict[str, str]:
    """Environment for processes on this machine: discovery on localhost only, and the Fast DDS
    profile for large messages (config/fastdds_local.xml) unless the user set a profile."""
    env = dict(environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if not env.get("FASTDDS_DEFAULT_PROFILES_FILE") and not env.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        profile = default_params_file().parent / "fastdds_local.xml"
        if profile.exists():
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env


def check_params_file(path: str | Path) -> str | None:
    """Why `path` is not a usable ROS 2 parameters file (one line), or None: missing, not YAML (with the
    line and column of the syntax error), or not `node_name: {ros__parameters: {...}}` blocks. rcl's own
    parser says only "Couldn't parse params file"."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"parameters file not found: {path}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"parameters file {path} cannot be read: {exc}"
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"parameters file {path}: YAML syntax error{where}: {exc.problem or exc.context}"
    except yaml.YAMLError as exc:
        return f"parameters file {path}: not YAML: {' '.join(str(exc).split())}"
    if not isinstance(data, dict) or not data:
        return f"parameters file {path}: expected 'node_name: {{ros__parameters: {{...}}}}' blocks, got " \
               f"{type(data).__name__}"

    def problem(block, where: str) -> str | None:
        if not isinstance(block, dict):
            return f"parameters file {path}: '{where}' must be a mapping, got {type(block).__name__}"
        if "ros__parameters" in block:
            if not isinstance(block["ros__parameters"], dict):
                return f"parameters file {path}: '{where}.ros__parameters' must be a mapping of parameters"
            return None
        for key, sub in block.items():  # a namespace level ('/**', 'mllm3d') above the node's block
            found = problem(sub, f"{where}.{key}")
            if found:
                return found
        return None if block else f"parameters file {path}: '{where}' has no ros__parameters"

    for key, block in data.items():
        found = problem(block, str(key))
        if found:
            return found
    return None
