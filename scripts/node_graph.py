"""Draw the node graph of the README (docs/images/node_graph.png): processes, nodes, topics, services, action.

    .venv/bin/python scripts/node_graph.py [--out docs/images/node_graph.png]

The names are those the nodes create (`mllm3d_ros/ros/*_node.py`) under the launch file's namespace
`/mllm3d`; camera inputs are shown with the simulator's names, which `camera:=` presets remap. Keep this
in step with docs/nodes.md when a node gains or loses a topic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# (x, y, width, height) in axes units 0..100; face colour; title; body lines.
BOXES = {
    "camera": ((1, 62, 22, 26), "#e8f1fb", "RGB-D camera driver\nor simulator_node / replay_node",
               ["camera/color/image_raw", "camera/depth/image_raw", "camera/color/camera_info",
                "camera/pose  (or odom, or TF)"]),
    "tf": ((1, 40, 22, 14), "#e8f1fb", "TF", ["/tf, /tf_static", "map → odom → base_link", "→ camera optical frame"]),
    "user": ((1, 6, 22, 24), "#fdf3e1", "user / robot task",
             ["mllm3d query \"...\"", "ros2 action send_goal", "~/instruction (speech-to-text)", "mllm3d describe"]),
    "perception": ((30, 4, 40, 90), "#f4f4f4", "perception_node  (one process: the map stays in memory)", []),
    "mapping": ((33, 58, 34, 28), "#ffffff", "mapping",
                ["TSDF map + keyframes", "pub ~/map_cloud, ~/keyframes,", "     ~/occupancy_grid  (latched)",
                 "srv ~/reset, ~/save_map, ~/load_map,", "     ~/save_grid"]),
    "memory": ((33, 33, 34, 20), "#ffffff", "memory",
               ["object memory (proposals per keyframe)", "pub ~/objects  (latched)", "srv ~/describe_scene"]),
    "query": ((33, 7, 34, 21), "#ffffff", "query",
              ["action segment_query (SegmentQuery)", "sub ~/instruction", "pub ~/segmented_cloud, ~/markers,",
               "     ~/result"]),
    "segmentation": ((76, 30, 23, 34), "#eaf6ea", "segmentation_node\n(lifecycle; may run on a GPU host)",
                     ["srv ~/segment_views", "     (SegmentViews)", "pub ~/heartbeat  (2 Hz)", "backend: offline",
                      "  or transformers"]),
    "rviz": ((76, 70, 23, 24), "#fdf3e1", "RViz / Nav2",
             ["rviz/mllm3d.rviz shows", "mapping/map_cloud, keyframes", "memory/objects",
              "query/segmented_cloud, markers", "Nav2: mapping/occupancy_grid"]),
}

# (start xy, end xy, label, label xy, arrow style, dashed): explicit, so that no label sits on a box.
ARROWS = [
    ((23, 75), (33, 75), "sensor QoS\n(best effort)", (28, 79), "-|>", False),
    ((23, 49), (33, 62), "pose_source: tf", (27.5, 57), "-|>", False),
    ((23, 43), (33, 23), "target_frame,\nrobot_frame", (27.5, 36), "-|>", False),
    ((23, 16), (33, 16), "goal, feedback,\nresult", (28, 11), "<|-|>", False),
    ((50, 58), (50, 53), "keyframes, map", (57, 55.5), "-|>", False),
    ((50, 33), (50, 28), "candidates", (57, 30.5), "-|>", False),
    ((67, 45), (76, 54), "PROPOSE, ENCODE_TEXT,\nCAPTION", (71.5, 42), "<|-|>", False),
    ((67, 22), (76, 38), "SEGMENT, RECOGNISE,\nPARSE, ENCODE_TEXT", (71.5, 26), "<|-|>", False),
    ((84, 30), (67, 10), "~/heartbeat", (78.5, 18), "-|>", True),
    ((67, 80), (76, 80), "latched", (71.5, 82.5), "-|>", False),
]


def draw(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(13, 8.2), dpi=100)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.axis("off")
    for name, ((x, y, w, h), face, title, lines) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.3,rounding_size=1.2", fc=face,
                                    ec="#555555", lw=1.4 if name != "perception" else 1.0,
                                    ls="-" if name != "perception" else "--"))
        ax.text(x + w / 2, y + h - 1.2, title, ha="center", va="top", fontsize=9.5, weight="bold")
        ax.text(x + 1.2, y + h - (7.5 if "\n" in title else 5.0), "\n".join(lines), ha="left", va="top",
                fontsize=8.2, family="monospace")
    for p, q, label, at, style, dashed in ARROWS:
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle=style, mutation_scale=14, lw=1.3, color="#2b5d8a",
                                     ls="--" if dashed else "-", shrinkA=1, shrinkB=1))
        ax.text(at[0], at[1], label, ha="center", va="center", fontsize=7.5, color="#2b5d8a",
                bbox=dict(fc="white", ec="none", alpha=0.9, pad=0.6))
    ax.text(50, 98.5, "namespace /mllm3d:  ~/x of node n is /mllm3d/n/x;  the action is /mllm3d/segment_query;  "
            "the segmentation service is /mllm3d/segmentation/segment_views", ha="center", va="top", fontsize=8.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "node_graph.png"))
    args = parser.parse_args(argv)
    print(f"wrote {draw(Path(args.out))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
