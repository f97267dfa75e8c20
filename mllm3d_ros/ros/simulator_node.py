"""Simulator node: a procedural room rendered as an RGB-D camera moving along a smooth loop.

It is a camera, not an oracle: ground truth (instance table) goes only to `ground_truth_path`
for evaluation, never to a topic the product reads.

Published (sensor-data QoS): camera/color/image_raw, camera/depth/image_raw (16UC1),
  camera/color/camera_info, camera/pose (geometry_msgs/PoseStamped in map_frame).
Parameters: seed (int, 0), rate_hz (float, 10.0), num_frames (int, 240: one loop), loop (bool, true),
  noise (bool, true), camera_frame (str, camera_color_optical_frame), map_frame (str, map),
  ground_truth_path (str, "": where to write the instance table as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from ..sources.simulator import SimConfig, Simulator, generate_room, trajectory
from .camera_publisher import CameraPublisher
from ..node_params import node_specs
from .params import declare_and_read

SIMULATOR_PARAMS = node_specs("simulator")  # generated from the declarations in node_params


def write_ground_truth(path: Path, seed: int, room) -> None:
    """Instance table for evaluation (the demo's IoU); never read by the product."""
    data = {"seed": seed, "instances": [
        {"id": i.instance_id, "label": i.label, "center_m": list(i.center_world_m), "size_m": list(i.size_m),
         "yaw_rad": i.yaw_rad} for i in room.instances]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


class SimulatorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("simulator", **kwargs)
        p = declare_and_read(self, SIMULATOR_PARAMS)
        self._p = p
        self._room = generate_room(p["seed"])
        self._sim = Simulator(self._room, SimConfig(noise=p["noise"], seed=p["seed"]))
        self._poses = trajectory(self._room, p["num_frames"])
        self._index = 0
        self.frames_published = 0
        if p["ground_truth_path"]:
            write_ground_truth(Path(p["ground_truth_path"]), p["seed"], self._room)
        self._camera = CameraPublisher(self, p["camera_frame"], p["map_frame"])
        self._timer = self.create_timer(1.0 / p["rate_hz"], self._tick,
                                        callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"simulating room seed {p['seed']} ({len(self._room.instances)} objects), "
                               f"{p['num_frames']} frames at {p['rate_hz']} Hz")

    def _tick(self) -> None:
        if self._index >= len(self._poses):
            if not self._p["loop"]:
                self._timer.cancel()
                self.get_logger().info(f"trajectory finished after {self.frames_published} frames")
                return
            self._index = 0
        sim_frame = self._sim.render(self._poses[self._index])
        self._index += 1
        try:
            self._camera.publish(sim_frame.frame, self.get_clock().now().nanoseconds)
        except Exception:  # noqa: BLE001 -- Ctrl-C shut the context down during this tick: end quietly
            if rclpy.ok():
                raise
            return
        self.frames_published += 1


def main(args: list[str] | None = None, signal_exit_codes: bool = False) -> int:
    from .runner import run_nodes
    return run_nodes([SimulatorNode], args, num_threads=2, signal_exit_codes=signal_exit_codes)


if __name__ == "__main__":
    import sys
    sys.exit(main())
