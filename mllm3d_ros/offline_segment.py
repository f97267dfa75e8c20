"""`mllm3d segment`: the whole pipeline on a recording, without a ROS graph.

Fuses the recording into the same Mapper the mapping node uses, runs the same QueryPipeline with a
local backend, and writes, per instruction, the best object's points (PLY), a JSON summary and a PNG render.

Output frame: everything `segment` writes (the PLY's points, the boxes, the approach pose, the floor grid)
is in the **map frame** (`"frame": "map"` in the JSON): z up, metres, gravity-aligned. It is the
recording's world frame (the frame of a dataset's `frame-*.pose.txt` / `groundtruth.txt`, or a bag's
poses) rotated so that z points up, where the recording gives its gravity direction
(`gravity-direction.txt`, `sources.dataset`); without one the two frames are the same. The JSON carries
`world_T_map` (4x4, row-major): a point p_map of the output is p_world = world_T_map @ [p_map, 1] in the
recording's world frame, where its camera poses put it (`test/test_offline_segment_frames.py` checks
this by projecting a point through the recording's own pose).

Several instructions, one fusion: `--instruction` repeated and/or `--instructions-file` (one a line; blank
lines and `#` comments skipped) answer every instruction on the one map and memory; with more than one,
the files are `OUT_<k>_<words>.ply|.json|.png` (k from 1, in order) and `OUT_summary.json` lists them.

Reuse: `--save-map DIR` writes the fused map, its keyframes, the object memory and the recording's
fingerprint (`segment.json`: the recording's files, stride, max frames, voxel size, backend) to DIR
(written whole or not at all); `--load-map DIR` answers from it without fusing or proposing, after
checking that the recording and the settings give the same fingerprint, and that the map and memory
files are of this version and intact (CRCs): anything else is refused naming the difference.
`--no-render` skips the PNGs (about a second each).

Faults: every argument is checked before anything heavy runs (`check_request`: the instruction, the
numbers, the recording's layout, the output folder; then the backend loads), so a typo costs no fusion.
Unreadable frames are skipped and counted by the rule `mllm3d replay` follows
(`sources.recording.readable_frames`); frames the map refuses (no depth in range, bad poses, ...) are
counted per reason and the first message of each reason kept, so an empty map says why in terms of
the recording. A PNG that cannot be drawn is reported, and does not turn the answer into a failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backends.base import available_backends, build_backend
from .core.query.approach import ApproachConfig, approach_summary, camera_height_above_floor, plan_approach
from .core.config import ConfigError, check_int
from .core.mapping.frame_checks import FrameGateConfig
from .core.mapping.ingest import IngestConfig
from .core.mapping.keyframes import KeyframeConfig
from .core.memory.map_objects import MapObjectProposer, chain_proposers
from .core.mapping.mapper import Mapper, package_version as _package_version, read_format_json
from .core.memory.memory_file import MemoryFileError, read_memory, save_memory
from .core.query.memory_query import MemoryResolver
from .core.mapping.occupancy import OccupancyGridSource, build_occupancy_grid, save_map_server
from .core.memory.object_memory import ObjectMemory, ObjectMemoryConfig
from .core.memory.proposal_worker import ProposalWorker
from .core.segmentation import SegmentationBackend
from .core.query.pipeline import QueryConfig, QueryPipeline
from .core.query.view_selection import ViewSelectionConfig
from .core.query.voting import VotingConfig
from .node_params import MemoryNodeConfig, check_flag, node_configs
from .core.segmentation import normalise_instruction
from .core.mapping.tsdf_map import MapFileError, TsdfMapConfig
from .core.types import InputError, QueryResult, QueryStatus
from .sources.recording import ReadCounts, nothing_readable, open_recording, readable_frames


# The frame of everything `segment` writes (see the module docstring), as the nodes' `map_frame` default names it.
MAP_FRAME = "map"
MAP_FRAME_TEXT = ("z-up, gravity-aligned map frame (metres): the recording's world frame (its camera poses) rotated "
                  "so that z points up; the same frame where the recording gives no gravity direction")
SESSION_FILE = "segment.json"
SESSION_FORMAT, SESSION_FORMAT_VERSION = "mllm3d_ros.segment_session", 1
# Files up to this size are hashed whole into the recording's fingerprint (poses, intrinsics, gravity, bag
# metadata); larger ones (images, bag data) by name and size.
_HASHED_FILE_BYTES = 64 * 1024


class SavedSessionError(InputError):
    """A `--load-map` folder that does not fit this recording or these settings, or cannot be read."""


def world_T_map_of(recording) -> np.ndarray:
    """(4, 4) world_T_map of an opened recording: the inverse of the rotation its source applied to every pose
    (`Dataset.map_T_world`, the gravity alignment); identity for a source that applies none (a bag)."""
    map_T_world = getattr(recording, "map_T_world", None)
    if map_T_world is None:
        return np.eye(4)
    map_T_world = np.asarray(map_T_world, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = map_T_world[:3, :3].T
    out[:3, 3] = -map_T_world[:3, :3].T @ map_T_world[:3, 3]
    return out


def recording_fingerprint(dataset: str | Path, stride: int, max_frames: int | None, backend_name: str,
                          configs: dict) -> dict:
    """What a saved map and memory depend on: the recording's files (every file's name and size, the small
    ones' bytes: poses, intrinsics, gravity; the two parent folders' intrinsics and gravity files, which the
    dataset reader also reads), the frames taken, the map's and the memory's configs and the backend.
    `recording` (the path) is for messages only: a moved recording keeps its fingerprint."""
    root = Path(dataset).resolve()
    digest = hashlib.sha256()
    if root.is_file():
        files = [(root.name, root)]
    else:
        files = sorted((str(f.relative_to(root)), f) for f in root.rglob("*") if f.is_file())
        for level, parent in enumerate(list(root.parents)[:2], start=1):
            for name in ("camera-intrinsics.txt", "gravity-direction.txt"):
                if (parent / name).is_file():
                    files.append((f"{'../' * level}{name}", parent / name))
    for rel, f in files:
        size = f.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode("utf-8", "surrogateescape"))
        if size <= _HASHED_FILE_BYTES:
            digest.update(f.read_bytes())
    # Every config the session builds (map, keyframes, frame gate, memory, and the query's, harmless to include).
    built = {cls.__name__: dataclasses.asdict(cfg) for cls, cfg in configs.items()}
    return {"recording": str(root), "recording_sha256": digest.hexdigest(), "recording_files": len(files),
            "stride": stride, "max_frames": max_frames, "voxel_size_m": configs[TsdfMapConfig].voxel_size_m,
            "backend": backend_name,
            "configs_sha256": hashlib.sha256(json.dumps(built, sort_keys=True, default=str).encode()).hexdigest()}


_FINGERPRINT_WORDS = {"recording_sha256": "the recording's files differ",
                      "recording_files": "the recording's files differ",
                      "stride": "--stride differs", "max_frames": "--max-frames differs",
                      "voxel_size_m": "--voxel-size differs", "backend": "--backend differs",
                      "configs_sha256": "the map or memory configuration (the parameters file or this build's defaults) differs"}


def read_session_file(folder: str | Path) -> dict:
    """`segment.json` of a `--save-map` folder, checked for format and version (SavedSessionError)."""
    folder = Path(folder)
    path = folder / SESSION_FILE
    if not folder.is_dir():
        raise SavedSessionError(f"--load-map {folder}: no such folder")
    meta = read_format_json(path, SESSION_FORMAT, SESSION_FORMAT_VERSION,
                            lambda message: SavedSessionError(f"--load-map {folder}: {message}"),
                            "`mllm3d segment --save-map` session", ": run again with --save-map")
    if not isinstance(meta.get("fingerprint"), dict):
        raise SavedSessionError(f"--load-map {folder}: {SESSION_FILE} has no fingerprint")
    return meta


def check_fingerprint(folder: str | Path, saved: dict, current: dict) -> None:
    """SavedSessionError naming the first thing that differs between a saved map's fingerprint and this run's."""
    for key, words in _FINGERPRINT_WORDS.items():
        if saved.get(key) != current.get(key):
            raise SavedSessionError(
                f"--load-map {folder} was built from another recording or other settings: {words} "
                f"(saved {key}={saved.get(key)!r} from {saved.get('recording')!r}, now {current.get(key)!r} from "
                f"{current.get('recording')!r}); run with --save-map to build it again")


def instruction_slug(text: str, limit: int = 40) -> str:
    """File-name words of an instruction: lower-case letters and digits joined by '-', at most `limit` chars."""
    slug = "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:limit].strip("-")
    return slug or "instruction"


def read_instructions_file(path: str | Path) -> list[str]:
    """The instructions of a file, one a line; blank lines and lines starting with '#' are skipped (InputError
    naming the file and line for one that is over-long or not UTF-8; for a missing file or one with none)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"--instructions-file {path}: cannot read it ({exc.strerror or exc})") from None
    out = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InputError(f"--instructions-file {path}:{number}: not UTF-8") from None
        if not text or text.startswith("#"):
            continue
        try:
            out.append(normalise_instruction(text))
        except InputError as exc:
            raise InputError(f"--instructions-file {path}:{number}: {exc}") from None
    if not out:
        raise InputError(f"--instructions-file {path}: no instruction in it (one a line; '#' starts a comment)")
    return out


def output_paths(out_ply: str | Path, instructions: list[str]) -> list[Path]:
    """The PLY of each instruction: `out_ply` itself for one, `<stem>_<k>_<words>.ply` (k from 1) for several."""
    out_ply = Path(out_ply)
    if len(instructions) == 1:
        return [out_ply]
    width = len(str(len(instructions)))
    return [out_ply.with_name(f"{out_ply.stem}_{k:0{width}d}_{instruction_slug(text)}.ply")
            for k, text in enumerate(instructions, start=1)]


def summary_path(out_ply: str | Path) -> Path:
    out_ply = Path(out_ply)
    return out_ply.with_name(out_ply.stem + "_summary.json")


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
    write_s: float = 0.0  # the PLY, JSON and grid files
    render_s: float = 0.0  # the PNGs (0 with render=False)


def check_request(instruction: str, out_ply: str | Path, backend: str = "offline", views: int | None = None, stride: int = 1,
                  max_frames: int | None = None, voxel_size_m: float | None = None) -> str:
    """The cheap checks of a `segment` request, before any frame is read; returns the normalised instruction.

    InputError / ConfigError name the argument: an empty, over-long or non-UTF-8 instruction, views out of
    [1, 64], stride or max_frames below 1, a voxel size out of range, an unknown backend, an --out that is a
    folder or whose folder cannot be written.
    """
    text = normalise_instruction(instruction)
    if views is not None:
        check_flag("--views", "default_max_views", "query", views)
    check_int("--stride", stride, 1)
    if max_frames is not None:
        check_int("--max-frames", max_frames, 1)
    if voxel_size_m is not None:
        check_flag("--voxel-size", "voxel_size_m", "mapping", voxel_size_m)
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


def check_map_folders(save_map: str | Path | None, load_map: str | Path | None) -> None:
    """The cheap checks of `--save-map` / `--load-map` (InputError): not both; a save folder that is a file, or
    an existing folder that holds something other than a saved map (it would be replaced), or one whose parent
    cannot be written; a load folder that is missing or holds no saved map."""
    if save_map is not None and load_map is not None:
        raise InputError("give --save-map or --load-map, not both (a loaded map is already saved)")
    if load_map is not None:
        read_session_file(load_map)
    if save_map is not None:
        folder = Path(save_map)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--save-map {folder} is a file; give a folder")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / SESSION_FILE).is_file():
            raise InputError(f"--save-map {folder} holds files that are not a saved map; refusing to replace them "
                             "(give a new or empty folder)")
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder.parent, prefix=".mllm3d_write_check_"):
                pass
        except OSError as exc:
            raise InputError(f"--save-map {folder}: cannot write there ({exc.strerror or exc})") from None


def check_segment_request(instructions: list[str], out_ply: str | Path, backend: str = "offline",
                          views: int | None = None, stride: int = 1, max_frames: int | None = None,
                          voxel_size_m: float | None = None, save_map: str | Path | None = None,
                          load_map: str | Path | None = None) -> list[str]:
    """`check_request` for every instruction (at least one) and the map folders; the normalised instructions."""
    if not instructions:
        raise InputError("give an instruction: --instruction TEXT (repeatable) or --instructions-file FILE")
    texts = [check_request(instructions[0], out_ply, backend, views, stride, max_frames, voxel_size_m)]
    for k, text in enumerate(instructions[1:], start=2):
        try:
            texts.append(normalise_instruction(text))
        except InputError as exc:
            raise InputError(f"instruction {k}: {exc}") from None
    check_map_folders(save_map, load_map)
    return texts


def _write_ply(path: Path, points: np.ndarray, colors: np.ndarray, comments: tuple[str, ...] = ()) -> None:
    """Binary little-endian PLY of x y z (float32) and red green blue (uint8); an empty cloud is valid.
    `comments`: header comment lines (the frame of the points)."""
    vertex = np.zeros(points.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                               ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colors[:, i]
    header = ("ply\nformat binary_little_endian 1.0\n" + "".join(f"comment {c}\n" for c in comments) +
              f"element vertex {vertex.shape[0]}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    path.write_bytes(header.encode("ascii") + vertex.tobytes())


def session_configs(views: int | None = None, voxel_size_m: float | None = None,
                    params_file: str | Path | None = None) -> dict:
    """The configs of `mllm3d segment`, built as the nodes build theirs: the mapping, query and memory blocks of
    the parameters file (default: the package's config/perception.yaml), the CLI flags on top (same checks, same
    wording). One dict by config class (the three nodes' classes do not overlap). `views` None: the query
    block's default_max_views."""
    query = {} if views is None else {"default_max_views": views, "max_views_limit": max(16, views)}
    mapping = {} if voxel_size_m is None else {"voxel_size_m": voxel_size_m}
    configs: dict = {}
    for node, flags in (("mapping", mapping), ("query", query), ("memory", {})):
        configs.update(node_configs(node, flags, params_file))
    return configs


def build_memory(mapper: Mapper, model, show_progress: bool = False, map_objects: bool = True,
                 config: ObjectMemoryConfig | None = None) -> ObjectMemory:
    """The object memory of a built map: what the live proposal worker does as keyframes arrive, done
    once for every stored keyframe, in order. With `map_objects`, the map's class-agnostic objects are
    proposed with the model's (`MapObjectProposer`, as the memory node does)."""
    memory = ObjectMemory(config)
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

    def __init__(self, dataset: str | Path, backend: str | SegmentationBackend = "offline", views: int | None = None,
                 stride: int = 1, max_frames: int | None = None, voxel_size_m: float | None = None,
                 show_progress: bool = True, use_memory: bool = True, load_map: str | Path | None = None,
                 params_file: str | Path | None = None) -> None:
        """`backend`: a registry name (built here with its defaults, closed by `close`) or a backend already
        built by the caller (benchmarks.gpu: one set of GPU weights for several runs; the caller closes it).
        `load_map`: a folder of `save` for this recording and these settings (checked before the backend is
        built: SavedSessionError / MapFileError name what does not fit); the map and the memory come from it,
        nothing is fused or proposed."""
        self.dataset = dataset
        frames = open_recording(dataset, stride, max_frames)
        # The output frame (the map frame) in the recording's world frame: see the module docstring.
        self.world_T_map = world_T_map_of(frames)
        backend_name = backend if isinstance(backend, str) else type(backend).__name__
        # The nodes' configs (depth cut-off, block budget, keyframes, frame gate, memory) from the same YAML; a
        # saved map is reused only with the configs it was built with.
        self.configs = session_configs(views, voxel_size_m, params_file)
        self.fingerprint = recording_fingerprint(dataset, stride, max_frames, backend_name, self.configs)
        saved = None
        if load_map is not None:
            saved = read_session_file(load_map)
            check_fingerprint(load_map, saved["fingerprint"], self.fingerprint)
        self.loaded_from = Path(load_map) if load_map is not None else None
        t0 = time.monotonic()
        self._owns_model = isinstance(backend, str)
        self.model = build_backend(backend) if self._owns_model else backend
        self.model_load_s = time.monotonic() - t0
        try:
            self.reject_examples: dict[str, str] = {}
            c = self.configs
            self.mapper = Mapper(c[TsdfMapConfig], c[KeyframeConfig], c[FrameGateConfig], c[IngestConfig],
                                 on_reject=self._rejected)
            self.approach_config = c[ApproachConfig]
            self.memory = None
            self.memory_s = 0.0
            self.load_s = 0.0
            if saved is not None:
                self._load(Path(load_map), saved, use_memory)
            else:
                self._fuse(frames, show_progress)
                if use_memory and self.frames_fused:
                    t0 = time.monotonic()
                    self.memory = build_memory(self.mapper, self.model, show_progress,
                                               c[MemoryNodeConfig].map_objects, c[ObjectMemoryConfig])
                    self.memory_s = time.monotonic() - t0
            self.occupancy = OccupancyGridSource(self.mapper)
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise
        self.pipeline = QueryPipeline(self.mapper, self.model.segment,
                                      dataclasses.replace(c[QueryConfig], marked_prompts=c[QueryConfig].marked_prompts
                                                          and self.model.uses_marks),
                                      c[VotingConfig], c[ViewSelectionConfig],
                                      resolver=MemoryResolver(self.memory, self.model.encode_text)
                                      if self.memory is not None else None,
                                      parse_fn=self.model.parse,  # the grammar when the backend cannot parse
                                      recognise_fn=self.model.recognise)  # the backend's open-set gate

    def _fuse(self, frames, show_progress: bool) -> None:
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
        self.fuse_s = time.monotonic() - t0
        if reads.read == 0:
            raise nothing_readable(self.dataset, reads)
        self.frames_read, self.frames_unreadable = reads.read, reads.unreadable
        self.frames_rejected = {r.name: n for r, n in self.mapper.worker.stats.rejected.items() if n}

    def _load(self, folder: Path, saved: dict, use_memory: bool) -> None:
        """The map, keyframes and memory of a `save` folder whose fingerprint matched (MapFileError when a file
        is missing, corrupt or of another version; nothing of this session is half-replaced: it is new)."""
        t0 = time.monotonic()
        map_uid = self.mapper.load(folder)
        if use_memory and saved.get("memory"):
            memory = ObjectMemory(self.configs[ObjectMemoryConfig])
            stored = read_memory(folder, memory.config, map_uid)
            memory.restore_state(stored.meta, stored.arrays)
            self.memory = memory
        self.load_s = time.monotonic() - t0
        self.fuse_s = 0.0
        try:
            self.frames_fused, self.frames_read = int(saved["frames_fused"]), int(saved["frames_read"])
            self.frames_unreadable = int(saved["frames_unreadable"])
            self.frames_rejected = {str(k): int(v) for k, v in saved["frames_rejected"].items()}
            self.reject_examples = {str(k): str(v) for k, v in saved.get("reject_examples", {}).items()}
            pose = saved["last_world_T_camera"]
            self.last_world_T_camera = None if pose is None else np.asarray(pose, dtype=np.float64).reshape(4, 4)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SavedSessionError(f"--load-map {folder}: {SESSION_FILE} is incomplete ({type(exc).__name__}: "
                                    f"{exc}); run with --save-map to build it again") from None

    def save(self, folder: str | Path) -> Path:
        """Write the map, its keyframes, the object memory and this recording's fingerprint to `folder` (made
        whole or not at all: `Mapper.save`'s partial folder), for `load_map`."""
        session = {"format": SESSION_FORMAT, "version": SESSION_FORMAT_VERSION,
                   "written_by": f"mllm3d_ros {_package_version()}", "fingerprint": self.fingerprint,
                   "frame": MAP_FRAME, "world_T_map": self.world_T_map.tolist(),
                   "memory": self.memory is not None, "frames_fused": self.frames_fused,
                   "frames_read": self.frames_read, "frames_unreadable": self.frames_unreadable,
                   "frames_rejected": self.frames_rejected, "reject_examples": self.reject_examples,
                   "last_world_T_camera": None if self.last_world_T_camera is None
                   else np.asarray(self.last_world_T_camera).tolist(),
                   "built_s": {"fuse": round(self.fuse_s, 3), "memory": round(self.memory_s, 3)}}

        def extra(partial: Path, map_uid: str) -> None:
            if self.memory is not None:
                save_memory(self.memory, partial, map_uid)
            (partial / SESSION_FILE).write_text(json.dumps(session, indent=1))

        return self.mapper.save(folder, extra=extra)

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


def write_outputs(session: RecordingSession, instruction: str, result: QueryResult, out_ply: str | Path,
                  render: bool = True) -> SegmentOutputs:
    """The best object's points (PLY; empty when nothing was found), a JSON summary and, with `render`, the
    PNGs; all in the map frame (`MAP_FRAME`, the module docstring), the JSON with `world_T_map`."""
    t_start = time.monotonic()
    out_ply = Path(out_ply)
    out_ply.parent.mkdir(parents=True, exist_ok=True)
    snapshot = result.snapshot or session.mapper.snapshot()
    best = result.objects[0] if result.objects else None
    idx = best.point_indices if best is not None else np.zeros(0, np.int64)
    world_T_map = np.asarray(getattr(session, "world_T_map", np.eye(4)), dtype=np.float64)
    _write_ply(out_ply, snapshot.points_world_m[idx], snapshot.colors_rgb[idx],
               (f"frame {MAP_FRAME}: {MAP_FRAME_TEXT}",
                "world_T_map " + " ".join(f"{v:.9g}" for v in world_T_map.ravel())))
    summary = {
        "instruction": instruction, "status": result.status.name, "message": result.message,
        # Every position below (boxes, approach, grid) and the PLY's points are in this frame.
        "frame": MAP_FRAME, "frame_description": MAP_FRAME_TEXT,
        "world_T_map": world_T_map.tolist(),
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
    summary["timings_ms"]["write"] = round((time.monotonic() - t_start) * 1e3, 1)
    json_path.write_text(json.dumps(summary, indent=2))
    write_s = time.monotonic() - t_start
    png_path, png_error = (out_ply.with_suffix(".png") if render else None), ""
    t0 = time.monotonic()
    if render:
        try:  # pictures for people: their failure must not change the answer
            from .render import render_grid, render_query  # matplotlib: imported only when a render is drawn
            render_query(png_path, instruction, result, snapshot, session.mapper.keyframes())
            render_grid(out_ply.with_name(out_ply.stem + "_grid.png"), grid,
                        [(o.box, o.label) for o in result.objects[:1]], result.approach,
                        f"'{instruction}': floor grid and approach pose", robot)
        except Exception as exc:  # noqa: BLE001
            png_path, png_error = None, f"{type(exc).__name__}: {exc}"
    return SegmentOutputs(result, out_ply, json_path, png_path, session.frames_fused, session.fuse_s, png_error,
                          write_s=write_s, render_s=time.monotonic() - t0)


@dataclass(frozen=True)
class SegmentRun:
    """What one `mllm3d segment` run did: one SegmentOutputs per instruction, in order, and the summary file."""

    outputs: tuple[SegmentOutputs, ...]
    summary_path: Path | None
    saved_to: Path | None
    loaded_from: Path | None
    model_load_s: float
    build_s: float  # fusion + proposals, or the load of a saved map


def segment_recording(dataset: str | Path, instruction: str | list[str], out_ply: str | Path, backend: str = "offline",
                      views: int | None = None, stride: int = 1, max_frames: int | None = None,
                      voxel_size_m: float | None = None, show_progress: bool = True,
                      save_map: str | Path | None = None, load_map: str | Path | None = None,
                      render: bool = True, params_file: str | Path | None = None) -> SegmentOutputs | SegmentRun:
    """One instruction (a str): its SegmentOutputs. Several (a list): every one answered on one map and memory,
    files per `output_paths`, a summary JSON beside them (`summary_path`), and a SegmentRun. Everything is
    checked before the recording is read; `save_map` / `load_map`: see the module docstring."""
    single = isinstance(instruction, str)
    texts = check_segment_request([instruction] if single else list(instruction), out_ply, backend, views, stride,
                                  max_frames, voxel_size_m, save_map, load_map)
    paths = output_paths(out_ply, texts)
    with RecordingSession(dataset, backend, views, stride, max_frames, voxel_size_m, show_progress,
                          load_map=load_map, params_file=params_file) as session:
        saved_to = session.save(save_map) if save_map is not None else None
        outputs, query_s = [], []
        for text, path in zip(texts, paths):
            t0 = time.monotonic()
            result = session.query(text)
            query_s.append(time.monotonic() - t0)
            outputs.append(write_outputs(session, text, result, path, render=render))
        summary = None
        if not single or len(texts) > 1:
            summary = summary_path(out_ply)
            summary.write_text(json.dumps({
                "dataset": str(dataset), "frame": MAP_FRAME, "frame_description": MAP_FRAME_TEXT,
                "world_T_map": session.world_T_map.tolist(),
                "map": {"loaded_from": str(load_map) if load_map is not None else None,
                        "saved_to": str(saved_to) if saved_to is not None else None,
                        "frames_fused": session.frames_fused},
                "timings_s": {"model_load": round(session.model_load_s, 3), "fuse": round(session.fuse_s, 3),
                              "memory": round(session.memory_s, 3), "load": round(session.load_s, 3)},
                "results": [{"instruction": t, "status": o.result.status.name,
                             "label": o.result.objects[0].label if o.result.objects else None,
                             "confidence": round(o.result.objects[0].confidence, 4) if o.result.objects else None,
                             "ply": str(o.ply_path), "json": str(o.json_path),
                             "png": str(o.png_path) if o.png_path is not None else None,
                             "query_s": round(q, 3),
                             "write_s": round(o.write_s, 3), "render_s": round(o.render_s, 3)}
                            for t, o, q in zip(texts, outputs, query_s)]}, indent=2))
        if single:
            return outputs[0]
        return SegmentRun(tuple(outputs), summary, saved_to, session.loaded_from, session.model_load_s,
                          session.load_s if load_map is not None else session.fuse_s + session.memory_s)
