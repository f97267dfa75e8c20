"""Backend latency and memory on real 640x480 RGB-D frames: `python -m benchmarks.backends --json PATH`.

Each backend runs in its own spawned process, so `load_s` (imports + weights, as a node's configure
step pays it) and `rss_mb` (peak resident memory) are not mixed between backends. Queries carry 4
views, the MLLM-For3D default; ms per view is a query's wall time over its views, text encoding included.
Proposal mode (`propose`, instruction-free, what the object memory runs on keyframes) is timed the same
way, 4 views per call.
Frames: ../shared/data/7scenes-redkitchen (Microsoft 7-Scenes RedKitchen, research-only, read in place).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "7scenes-redkitchen"
VIEWS_PER_QUERY = 4
INSTRUCTIONS = ("somewhere I can sit", "a cup I can drink from", "the table", "the mug next to the laptop")


@dataclass(frozen=True)
class BackendFigures:
    """One backend's figures on this machine."""

    backend: str
    ms_per_view_p50: float
    ms_per_view_p90: float
    forward_ms_per_view_p50: float
    load_s: float
    rss_mb: float
    views: int
    predictions: int


@dataclass(frozen=True)
class ProposalFigures:
    """One backend's proposal-mode figures on this machine."""

    backend: str
    ms_per_view_p50: float
    ms_per_view_p90: float
    load_s: float
    rss_mb: float
    views: int
    proposals: int


def load_views(folder: Path, count: int) -> list:
    """`count` frames spread over the recording as BackendViews (depth 0 where the sensor gave 65535)."""
    import cv2

    from mllm3d_ros.core.types import BackendView, CameraIntrinsics

    k = np.loadtxt(folder / "camera-intrinsics.txt")
    stems = sorted(p.name[: -len(".color.jpg")] for p in folder.glob("frame-*.color.jpg"))
    if not stems:
        raise SystemExit(f"no frames in {folder} (see ../shared/data/README.md)")
    picked = [stems[i] for i in np.linspace(0, len(stems) - 1, min(count, len(stems))).astype(int)]
    views = []
    for index, stem in enumerate(picked):
        color = cv2.cvtColor(cv2.imread(str(folder / f"{stem}.color.jpg")), cv2.COLOR_BGR2RGB)
        depth_mm = cv2.imread(str(folder / f"{stem}.depth.png"), cv2.IMREAD_UNCHANGED)
        depth_m = np.where(depth_mm == 65535, 0, depth_mm).astype(np.float32) / 1000.0
        h, w = color.shape[:2]
        intrinsics = CameraIntrinsics(w, h, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
        views.append(BackendView(index, color, depth_m, intrinsics, np.loadtxt(folder / f"{stem}.pose.txt")))
    return views


def _measure(name: str, build, views: list) -> BackendFigures:
    """Time `build()` then 4-view queries over `views` (one warm-up query, not counted)."""
    start = time.perf_counter()
    backend = build()
    load_s = time.perf_counter() - start
    batches = [views[i:i + VIEWS_PER_QUERY] for i in range(0, len(views) - VIEWS_PER_QUERY + 1, VIEWS_PER_QUERY)]
    backend.segment(batches[0], INSTRUCTIONS[0])
    per_view_ms, forward_ms, predictions = [], [], 0
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        result = backend.segment(batch, INSTRUCTIONS[i % len(INSTRUCTIONS)])
        per_view_ms.append((time.perf_counter() - start) * 1000.0 / len(batch))
        forward_ms.append(result.forward_ms / len(batch))
        predictions += sum(len(v.predictions) for v in result.views)
    backend.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    return BackendFigures(name, float(np.percentile(per_view_ms, 50)), float(np.percentile(per_view_ms, 90)),
                          float(np.percentile(forward_ms, 50)), load_s, rss_mb,
                          len(per_view_ms) * VIEWS_PER_QUERY, predictions)


def _measure_proposals(name: str, build, views: list) -> ProposalFigures:
    """Time `build()` then 4-view `propose` calls over `views` (one warm-up call, not counted)."""
    start = time.perf_counter()
    backend = build()
    load_s = time.perf_counter() - start
    batches = [views[i:i + VIEWS_PER_QUERY] for i in range(0, len(views) - VIEWS_PER_QUERY + 1, VIEWS_PER_QUERY)]
    backend.propose(batches[0])
    per_view_ms, proposals = [], 0
    for batch in batches:
        start = time.perf_counter()
        result = backend.propose(batch)
        per_view_ms.append((time.perf_counter() - start) * 1000.0 / len(batch))
        proposals += sum(len(v.predictions) for v in result)
    backend.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    return ProposalFigures(name, float(np.percentile(per_view_ms, 50)), float(np.percentile(per_view_ms, 90)),
                           load_s, rss_mb, len(per_view_ms) * VIEWS_PER_QUERY, proposals)


def offline_figures(data_dir: Path, frames: int, num_threads: int) -> BackendFigures:
    """The offline backend (CPU), weights from the asset cache (`... offline.assets fetch` first)."""
    views = load_views(data_dir, frames)

    def build():
        from mllm3d_ros.backends import build_backend

        return build_backend("offline", num_threads=num_threads)

    return _measure("offline", build, views)


# ---------------------------------------------------------------------------------------------
# transformers backend (owned by the transformers-backend engineer): tiny random models built by
# test/fixtures/make_tiny_models.py, so the figures are the wiring cost only (load, pre/post-
# processing, generate on a few-layer model), never the speed of a real MLLM.
# ---------------------------------------------------------------------------------------------
def _tiny_models(num_threads: int) -> Path:
    import torch

    torch.set_num_threads(num_threads)
    spec = importlib.util.spec_from_file_location("make_tiny_models", REPO_ROOT / "test" / "fixtures" / "make_tiny_models.py")
    make_tiny_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny_models)
    return make_tiny_models.tiny_models_dir()  # built once, cached outside the repo


def _tiny_transformers(models: Path, **extra):
    from mllm3d_ros.backends import build_backend

    return build_backend("transformers", vlm_model=str(models / "qwen2_5_vl"), sam_model=str(models / "sam"),
                         device="cpu", dtype="float32", max_new_tokens=32, local_files_only=True, **extra)


def transformers_figures(data_dir: Path, frames: int, num_threads: int) -> BackendFigures:
    """The transformers backend on CPU with the tiny Qwen2.5-VL + SAM models."""
    models = _tiny_models(num_threads)
    views = load_views(data_dir, frames)
    return _measure("transformers", lambda: _tiny_transformers(models), views)


def transformers_proposal_figures(data_dir: Path, frames: int, num_threads: int) -> ProposalFigures:
    """Proposal mode on CPU with the tiny OWLv2 + SAM models and the default vocabulary."""
    models = _tiny_models(num_threads)
    views = load_views(data_dir, frames)
    return _measure_proposals("transformers", lambda: _tiny_transformers(models, detector_model=str(models / "owlv2")),
                              views)


def _run_isolated(fn, *args) -> BackendFigures:
    """Run one backend's measurement in a fresh spawned process (clean imports, load time and peak RSS)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="7-Scenes-layout folder of 640x480 frames")
    parser.add_argument("--frames", type=int, default=48, help="frames for the offline backend (multiple of 4)")
    parser.add_argument("--transformers-frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: no data at {args.data} (see ../shared/data/README.md)", file=sys.stderr)
        return 1

    offline = _run_isolated(offline_figures, args.data, args.frames, args.threads)
    report: dict[str, object] = {
        # The three figures the backend comparison reports; all from the offline backend.
        "offline_ms_per_view_p50": round(offline.ms_per_view_p50, 2),
        "load_s": round(offline.load_s, 3),
        "rss_mb": round(offline.rss_mb, 1),
        "threads": args.threads,
        "data": str(args.data),
        "backends": {"offline": dataclasses.asdict(offline)},
    }
    if args.skip_transformers:
        report["transformers_status"] = "skipped (--skip-transformers)"
    else:
        try:
            tiny = _run_isolated(transformers_figures, args.data, args.transformers_frames, args.threads)
        except Exception as exc:  # a broken or unfinished backend must not lose the offline figures
            report["transformers_status"] = f"not measured: {type(exc).__name__}: {exc}"[:500]
        else:
            report["transformers_status"] = "tiny random models (wiring cost only)"
            report["transformers_ms_per_view_p50"] = round(tiny.ms_per_view_p50, 2)
            report["backends"]["transformers"] = dataclasses.asdict(tiny)
        try:
            proposals = _run_isolated(transformers_proposal_figures, args.data, args.transformers_frames, args.threads)
        except Exception as exc:  # noqa: BLE001 - as above: never lose the other figures
            report["transformers_proposals_status"] = f"not measured: {type(exc).__name__}: {exc}"[:500]
        else:
            report["transformers_proposals_status"] = "tiny random models (wiring cost only)"
            report["proposals"] = {"transformers": dataclasses.asdict(proposals)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
