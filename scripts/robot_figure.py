"""Draw the floor-grid picture of docs/benchmarks.md: a simulated room's floor grid with a query's box and its approach pose.

    python scripts/robot_figure.py [--seed 0] [--instruction "the chair"] [--out docs/images/approach_grid.png]

The room is rendered along one lap of `trajectory` at 320x240, fused by the product's Mapper, its object
memory built from the simulated proposer (ground-truth masks with noise: the picture is about the grid and
the pose, not the detector), then the product's QueryPipeline answers and `plan_approach` places the robot,
which stands at the camera's last position.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--instruction", default="the chair")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--out", default="docs/images/approach_grid.png")
    ns = ap.parse_args(argv)

    from benchmarks.robot import SIM
    from benchmarks.spatial import _proposer, _unavailable
    from mllm3d_ros.core.approach import camera_height_above_floor, plan_approach
    from mllm3d_ros.core.keyframes import KeyframeConfig
    from mllm3d_ros.core.mapper import Mapper
    from mllm3d_ros.core.memory_query import MemoryResolver
    from mllm3d_ros.core.occupancy import build_occupancy_grid
    from mllm3d_ros.core.pipeline import QueryConfig, QueryPipeline
    from mllm3d_ros.core.tsdf_map import TsdfMapConfig
    from mllm3d_ros.eval.sim_segmenter import SimSegmenterConfig
    from mllm3d_ros.offline_segment import build_memory
    from mllm3d_ros.render import render_grid
    from mllm3d_ros.sources.simulator import Simulator, generate_room, trajectory

    room = generate_room(ns.seed)
    sim = Simulator(room, SIM)
    mapper = Mapper(TsdfMapConfig(), KeyframeConfig(image_scale=1.0))
    poses = trajectory(room, ns.frames)
    for k, pose in enumerate(poses):
        mapper.process(sim.render(pose, stamp_ns=k * 33_333_333).frame)
    proposer = _proposer(room, SIM, SimSegmenterConfig(hallucination_rate=0.3), ns.seed)
    memory = build_memory(mapper, proposer)
    result = QueryPipeline(mapper, _unavailable, QueryConfig(),
                           resolver=MemoryResolver(memory, proposer.encode_text)).run(ns.instruction)
    if not result.objects:
        print(f"error: '{ns.instruction}' found nothing: {result.message}", file=sys.stderr)
        return 1
    grid = build_occupancy_grid(result.snapshot)
    keyframes = mapper.keyframes()
    cams = np.array([kf.world_T_camera[:3, 3] for kf in keyframes])
    robot = tuple(poses[-1][:2, 3])
    approach = plan_approach(result.objects[0].box, grid, result.snapshot, camera_height_above_floor(cams, grid.floor_z_m),
                             robot, keyframes=keyframes)
    print(approach.message)
    counts = grid.counts()
    render_grid(ns.out, grid, [(result.objects[0].box, f"'{ns.instruction}'")], approach,
                f"simulated room {ns.seed}: floor grid ({counts['free']} free, {counts['occupied']} occupied, "
                f"{counts['unknown']} unknown cells of 5 cm)\nbox of '{ns.instruction}' and its approach pose "
                f"(blue: pose, heading, {approach.clearance_m:.2f} m clearance)", robot)
    print(f"wrote {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
