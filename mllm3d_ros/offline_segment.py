"""`mllm3d segment`: the whole pipeline on a recording, without a ROS graph.

Fuses the recording into the same Mapper the mapping node uses, runs the same QueryPipeline with a
local backend, and writes the best object's points (PLY, dataset world frame), a JSON summary and
a PNG render.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backends.base import build_backend
from .core.approach import ApproachConfig, approach_summary, camera_height_above_floor, plan_approach
from .core.keyframes import KeyframeConfig
from .core.map_objects import MapObjectProposer, chain_proposers
from .core.mapper import Mapper
from .core.memory_query import MemoryResolver
from .core.occupancy import OccupancyGridSource, build_occupancy_grid, save_map_server
from .core.object_memory import ObjectMemory
from .core.proposal_worker import ProposalWorker
from .core.segmentation import SegmentationBackend
from .core.pipeline import QueryConfig, QueryPipeline
from .core.tsdf_map import TsdfMapConfig
from .core.types import QueryResult, QueryStatus
from .render import render_grid, render_query
from .sources.recording import open_recording


DEFAULT_VOXEL_SIZE_M = TsdfMapConfig.voxel_size_m


@dataclass(frozen=True)
class SegmentOutputs:
    result: QueryResult
    ply_path: Path
    json_path: Path
    png_path: Path
    frames_fused: int
    fuse_s: float


def _write_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Binary little-endian PLY of x y z (float32) and red green blue (uint8); an empty cloud is valid."""
    vertex = np.zeros(points.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                               ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colors[:, i]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {vertex.shape[0]}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    path.write_bytes(header.encode("ascii") + vertex.tobytes())


def build_memory(mapper: Mapper, model, show_progress: bool = False, map_objects: bool = True) -> ObjectMemory:
    """The object memory of a built map: what the live proposal worker does as keyframes arrive, done
    once for every stored keyframe, in order. With `map_objects`, the map's class-agnostic objects are
    proposed with the model's (`MapObjectProposer`, as the memory node does)."""
    memory = ObjectMemory()
    propose = model.propose
    if map_objects:
        propose = chain_proposers(model.propose, MapObjectProposer(mapper.snapshot).propose)
    worker = ProposalWorker(memory, propose, mapper.keyframe_store.get)
    for kf in tqdm(mapper.keyframes(), desc="object memory", unit="keyframe", disable=not show_progress):
        worker.process_one(kf.keyframe_id)
    return memory


class RecordingSession:
    """A recording fused once into the product's Mapper, then any number of queries through the product's
    QueryPipeline with a local backend: what `mllm3d segment` runs, and what benchmarks.real measures."""

    def __init__(self, dataset: str | Path, backend: str | SegmentationBackend = "offline", views: int = 4,
                 stride: int = 1, max_frames: int | None = None, voxel_size_m: float = DEFAULT_VOXEL_SIZE_M,
                 show_progress: bool = True, use_memory: bool = True) -> None:
        """`backend`: a registry name (built here with its defaults, closed by `close`) or a backend already
        built by the caller (benchmarks.gpu: one set of GPU weights for several runs; the caller closes it)."""
        frames = open_recording(dataset, stride, max_frames)
        self.mapper = Mapper(TsdfMapConfig(voxel_size_m=voxel_size_m), KeyframeConfig())
        t0 = time.monotonic()
        self.frames_fused = 0
        # The robot is taken to stand where the recording's camera last was (its approach poses must be
        # reachable from there).
        self.last_world_T_camera = None
        for f in tqdm(frames, desc="fusing", unit="frame", disable=not show_progress):
            if self.mapper.process(f):
                self.frames_fused += 1
                self.last_world_T_camera = f.world_T_camera
        self.occupancy = OccupancyGridSource(self.mapper)
        self.approach_config = ApproachConfig()
        self.fuse_s = time.monotonic() - t0
        self._owns_model = isinstance(backend, str)
        self.model = build_backend(backend) if self._owns_model else backend
        self.memory = None
        self.memory_s = 0.0
        if use_memory:
            t0 = time.monotonic()
            self.memory = build_memory(self.mapper, self.model, show_progress)
            self.memory_s = time.monotonic() - t0
        self.pipeline = QueryPipeline(self.mapper, self.model.segment,
                                      QueryConfig(default_max_views=views, max_views_limit=max(16, views),
                                                  marked_prompts=self.model.uses_marks),
                                      resolver=MemoryResolver(self.memory, self.model.encode_text) if use_memory
                                      else None,
                                      parse_fn=self.model.parse,  # the grammar when the backend cannot parse
                                      recognise_fn=self.model.recognise)  # the backend's open-set gate

    def query(self, instruction: str) -> QueryResult:
        """The pipeline's answer, with the approach pose of its best object when it succeeded."""
        result = self.pipeline.run(instruction)
        if result.status is QueryStatus.SUCCESS and result.objects:
            t0 = time.monotonic()
            grid = self.occupancy.grid(result.snapshot)
            keyframes = self.mapper.keyframes()
            cams = np.array([kf.world_T_camera[:3, 3] for kf in keyframes]).reshape(-1, 3)
            robot = None if self.last_world_T_camera is None else tuple(self.last_world_T_camera[:2, 3])
            approach = plan_approach(result.objects[0].box, grid, result.snapshot,
                                     camera_height_above_floor(cams, grid.floor_z_m), robot, self.approach_config,
                                     "" if robot is not None else "no camera pose: reachability not checked",
                                     self.occupancy.config.min_height_m, keyframes)
            result.timings_ms["approach_ms"] = (time.monotonic() - t0) * 1e3
            result = dataclasses.replace(result, approach=approach)
        return result

    def close(self) -> None:
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> "RecordingSession":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def write_outputs(session: RecordingSession, instruction: str, result: QueryResult, out_ply: str | Path) -> SegmentOutputs:
    """The best object's points (PLY, world frame; empty when nothing was found), a JSON summary and a PNG."""
    out_ply = Path(out_ply)
    out_ply.parent.mkdir(parents=True, exist_ok=True)
    snapshot = result.snapshot or session.mapper.snapshot()
    best = result.objects[0] if result.objects else None
    idx = best.point_indices if best is not None else np.zeros(0, np.int64)
    _write_ply(out_ply, snapshot.points_world_m[idx], snapshot.colors_rgb[idx])
    summary = {
        "instruction": instruction, "status": result.status.name, "message": result.message,
        "target_phrase": result.target_phrase, "views_used": result.views_used, "frames_fused": session.frames_fused,
        "map_points": snapshot.num_points,
        "timings_ms": {"fuse": round(session.fuse_s * 1e3, 1), **{k: round(v, 1) for k, v in result.timings_ms.items()}},
        "objects": [{"label": o.label, "confidence": round(o.confidence, 4), "unconfirmed": o.unconfirmed,
                     "detail": o.detail, "num_points": int(o.point_indices.size),
                     "box": {"center_m": np.round(o.box.center_world_m, 4).tolist(),
                             "size_m": np.round(o.box.size_m, 4).tolist(),
                             "world_R_box": np.round(o.box.world_R_box, 5).tolist()},
                     "supporting_views": o.supporting_views, "visible_views": o.visible_views}
                    for o in result.objects],
        # Where a robot can stand to reach the best object (the robot at the recording's last camera pose).
        "approach": approach_summary(result.approach),
    }
    # The floor grid as map_server's pair, so Nav2 can be started on the map this recording built.
    occupancy = getattr(session, "occupancy", None)
    grid = occupancy.grid(snapshot) if occupancy is not None else build_occupancy_grid(snapshot)
    grid_yaml, _ = save_map_server(grid, out_ply.with_name(out_ply.stem + "_grid"))
    summary["grid_yaml"] = str(grid_yaml)
    last_pose = getattr(session, "last_world_T_camera", None)
    robot = None if last_pose is None else tuple(last_pose[:2, 3])
    render_grid(out_ply.with_name(out_ply.stem + "_grid.png"), grid,
                [(o.box, o.label) for o in result.objects[:1]], result.approach,
                f"'{instruction}': floor grid and approach pose", robot)
    json_path = out_ply.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2))
    png_path = render_query(out_ply.with_suffix(".png"), instruction, result, snapshot, session.mapper.keyframes()).path
    return SegmentOutputs(result, out_ply, json_path, png_path, session.frames_fused, session.fuse_s)


def segment_recording(dataset: str | Path, instruction: str, out_ply: str | Path, backend: str = "offline",
                      views: int = 4, stride: int = 1, max_frames: int | None = None,
                      voxel_size_m: float = DEFAULT_VOXEL_SIZE_M,
                      show_progress: bool = True) -> SegmentOutputs:
    with RecordingSession(dataset, backend, views, stride, max_frames, voxel_size_m, show_progress) as session:
        result = session.query(instruction)
        return write_outputs(session, instruction, result, out_ply)
