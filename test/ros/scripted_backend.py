"""A scripted segmentation node as a process of its own (tests that kill and restart the backend).

    python scripted_backend.py NAMESPACE INSTANCE [--load-s S] [--mode cube|empty|block]

It serves SegmentViews like querygraph.ScriptedSegmentation (the two-cube scene), beats
"scripted <state> INSTANCE" and prints "request <mode>" for every request as it arrives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor  # noqa: E402

from querygraph import SceneMap, ScriptedSegmentation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("namespace")
    parser.add_argument("instance")
    parser.add_argument("--load-s", type=float, default=0.0)
    parser.add_argument("--mode", default="cube")
    ns = parser.parse_args()
    rclpy.init()
    node = ScriptedSegmentation(SceneMap().box_ids, instance=ns.instance, load_s=ns.load_s, namespace=ns.namespace)
    node.mode, node.block_s = ns.mode, 3600.0
    node.on_request = lambda mode: print(f"request {mode}", flush=True)
    print("started", flush=True)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release.set()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
