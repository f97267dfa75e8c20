"""`mllm3d segment`: the whole pipeline on a recording, without a ROS graph.

Fuses the recording into the same Mapper the mapping node uses, runs the same QueryPipeline with a
local backend, and writes the best object's points (PLY, dataset world frame), a JSON summary and
a PNG render.

Faults: every argument is checked before anything heavy runs (`check_request`: the instruction, the
numbers, the recording's layout, the output folder; then the backend loads), so a typo costs no fusion.
Unreadable frames are skipped and counted by the rule `mllm3d replay` follows
(`sources.recording.readable_frames`); frames the map refuses (no depth in range, bad poses, ...) are
counted per reason and the first message of each reason kept, so an empty map says why in terms of
the recording. A PNG that cannot be drawn is reported, and does not turn the answer into a failure.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backends.base import available_backends, build_backend
from .core.query.approach import ApproachConfig, approach_summary, camera_height_above_floor, plan_approach
from .core.config import ConfigError, check_int
from .core.mapping.keyframes import KeyframeConfig
from .core.memory.map_objects import MapObjectProposer, chain_proposers
from .core.mapping.mapper import Mapper
from .core.query.memory_query import MemoryResolver
from .core.mapping.occupancy import OccupancyGridSource, build_occupancy_grid, save_map_server
from .core.memory.object_memory import ObjectMemory
from .core.memory.proposal_worker import ProposalWorker
from .core.segmentation import SegmentationBackend
from .core.query.pipeline import QueryConfig, QueryPipeline
from .core.segmentation import normalise_instruction
from .core.mapping.tsdf_map import TsdfMapConfig
from .core.types import InputError, QueryResult, QueryStatus
from .sources.recording import ReadCounts, nothing_readable, open_recording, readable_frames


DEFAULT_VOXEL_SIZE_M = TsdfMapConfig.voxel_size_m


@dataclass(frozen=True)
class SegmentOutputs:
    """What `mllm3d segment` wrote; `png_path` is None (and `png_error` says why) when the render failed."""

    result: QueryResult
    ply_path: Path
    json_path: Path
    png_path: Path | None
    frames_fused: int
    fuse_s: float
    png_error: str = ""


def check_request(instruction: str, out_ply: str | Path, backend: str = "offline", views: int = 4, stride: int = 1,
                  max_frames: int | None = None, voxel_size_m: float = DEFAULT_VOXEL_SIZE_M) -> str:
    """The cheap checks of a `segment` request, before any frame is read; returns the normalised instruction.

    InputError / ConfigError name the argument: an empty, over-long or non-UTF-8 instruction, views out of
    [1, 64], stride or max_frames below 1, a voxel size out of range, an unknown backend, an --out that is a
    folder or whose folder cannot be written.
    """
    text = normalise_instruction(instruction)
    check_int("--views", views, 1, 64)
    check_int("--stride", stride, 1)
    if max_frames is not None:
        check_int("--max-frames", max_frames, 1)
    try:
        TsdfMapConfig(voxel_size_m=voxel_size_m)
    except ConfigError as exc:
        raise ConfigError(f"--voxel-size: {exc}") from None
    if backend not in available_backends():
        raise ConfigError(f"--backend must be one of {available_backends()}, got {backend!r}")
    out = Path(out_ply)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name ending in .ply")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".mllm3d_write_check_"):
            pass
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return text


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
    QueryPipeline with a local backend: what `mllm3d segment` runs, and what benchmarks.real measures.

    The backend is built before any frame is fused (a model that cannot load fails in seconds). Frames that
    cannot be decoded are skipped and counted (`frames_unreadable`); frames the mapper refuses are counted
    per reason (`frames_rejected`, with the first message of each in `reject_examples`)."""

    def __init__(self, dataset: str | Path, backend: str | SegmentationBackend = "offline", views: int = 4,
                 stride: int = 1, max_frames: int | None = None, voxel_size_m: float = DEFAULT_VOXEL_SIZE_M,
                 show_progress: bool = True, use_memory: bool = True) -> None:
        """`backend`: a registry name (built here with its defaults, closed by `close`) or a backend already
        built by the caller (benchmarks.gpu: one set of GPU weights for several runs; the caller closes it)."""
        self.dataset = dataset
        frames = open_recording(dataset, stride, max_frames)
        self._owns_model = isinstance(backend, str)
        self.model = build_backend(backend) if self._owns_model else backend
        try:
            self.reject_examples: dict[str, str] = {}
            self.mapper = Mapper(TsdfMapConfig(voxel_size_m=voxel_size_m), KeyframeConfig(), on_reject=self._rejected)
            reads = ReadCounts()
            t0 = time.monotonic()
            self.frames_fused = 0
            # The robot is taken to stand where the recording's camera last was (its approach poses must be
            # reachable from there).
            self.last_world_T_camera = None
            # A `with` block: the bar is closed while an interruption unwinds, before the CLI says so.
            with tqdm(total=len(frames), desc="fusing", unit="frame", disable=not show_progress) as bar:
                def skipped(index: int, exc: InputError) -> None:
                    bar.update()
                    if show_progress:
                        tqdm.write(f"skipping frame {index}: {exc}")

                for _, frame in readable_frames(frames, reads, skipped):
                    if self.mapper.process(frame):
                        self.frames_fused += 1
                        self.last_world_T_camera = frame.world_T_camera
                    bar.update()
            self.occupancy = OccupancyGridSource(self.mapper)
            self.approach_config = ApproachConfig()
            self.fuse_s = time.monotonic() - t0
            if reads.read == 0:
                raise nothing_readable(dataset, reads)
            self.frames_read, self.frames_unreadable = reads.read, reads.unreadable
            self.frames_rejected = {r.name: n for r, n in self.mapper.worker.stats.rejected.items() if n}
            self.memory = None
            self.memory_s = 0.0
            if use_memory and self.frames_fused:
                t0 = time.monotonic()
                self.memory = build_memory(self.mapper, self.model, show_progress)
                self.memory_s = time.monotonic() - t0
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise
        self.pipeline = QueryPipeline(self.mapper, self.model.segment,
                                      QueryConfig(default_max_views=views, max_views_limit=max(16, views),
                                                  marked_prompts=self.model.uses_marks),
                                      resolver=MemoryResolver(self.memory, self.model.encode_text)
                                      if self.memory is not None else None,
                                      parse_fn=self.model.parse,  # the grammar when the backend cannot parse
                                      recognise_fn=self.model.recognise)  # the backend's open-set gate

    def _rejected(self, _frame, exc) -> None:
        reason = getattr(getattr(exc, "reason", None), "name", type(exc).__name__)
        self.reject_examples.setdefault(reason, str(exc))

    def why_empty(self) -> str:
        """Why no frame reached the map, in terms of the recording (no topics here)."""
        parts = [f"{n} {reason}" for reason, n in sorted(self.frames_rejected.items(), key=lambda kv: -kv[1])]
        text = (f"map is empty: none of the {self.frames_read} frames read from {self.dataset} was fused"
                + (f" ({', '.join(parts)})" if parts else ""))
        if self.reject_examples:
            reason = max(self.frames_rejected, key=self.frames_rejected.get) if self.frames_rejected else \
                next(iter(self.reject_examples))
            text += f"; e.g. {self.reject_examples.get(reason, next(iter(self.reject_examples.values())))}"
        if self.frames_unreadable:
            text += f"; {self.frames_unreadable} unreadable frame(s) skipped"
        return text

    def query(self, instruction: str) -> QueryResult:
        """The pipeline's answer, with the approach pose of its best object when it succeeded."""
        result = self.pipeline.run(instruction)
        if result.status is QueryStatus.MAP_EMPTY:  # the pipeline's message speaks of topics: not here
            result = dataclasses.replace(result, message=self.why_empty())
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
        "frames_unreadable": getattr(session, "frames_unreadable", 0),
        "frames_rejected": getattr(session, "frames_rejected", {}),
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
    json_path = out_ply.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2))
    png_path, png_error = out_ply.with_suffix(".png"), ""
    try:  # pictures for people: their failure must not change the answer
        from .render import render_grid, render_query  # matplotlib: imported only when a render is drawn
        render_query(png_path, instruction, result, snapshot, session.mapper.keyframes())
        render_grid(out_ply.with_name(out_ply.stem + "_grid.png"), grid,
                    [(o.box, o.label) for o in result.objects[:1]], result.approach,
                    f"'{instruction}': floor grid and approach pose", robot)
    except Exception as exc:  # noqa: BLE001
        png_path, png_error = None, f"{type(exc).__name__}: {exc}"
    return SegmentOutputs(result, out_ply, json_path, png_path, session.frames_fused, session.fuse_s, png_error)


def segment_recording(dataset: str | Path, instruction: str, out_ply: str | Path, backend: str = "offline",
                      views: int = 4, stride: int = 1, max_frames: int | None = None,
                      voxel_size_m: float = DEFAULT_VOXEL_SIZE_M,
                      show_progress: bool = True) -> SegmentOutputs:
    text = check_request(instruction, out_ply, backend, views, stride, max_frames, voxel_size_m)
    with RecordingSession(dataset, backend, views, stride, max_frames, voxel_size_m, show_progress) as session:
        result = session.query(text)
        return write_outputs(session, text, result, out_ply)
