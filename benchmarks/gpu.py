"""The real MLLM path on a GPU: the kitchen set and the relational rooms through the transformers backend.

    python -m benchmarks.gpu --json PATH [--vlm ID|DIR] [--sam ID|DIR] [--detector ID|DIR] [--device cuda]
                             [--dtype bfloat16] [--max-pixels N] [--max-new-tokens N] [--batch-size N]
                             [--dataset DIR] [--stride N] [--kitchen-queries N] [--rooms N] [--frames N]
                             [--relational-queries N] [--describe-rooms N] [--estimate]

For users who have the weights (Hugging Face ids already in the local cache, or local directories; the
benchmark never downloads: `huggingface-cli download ID` first). One backend is loaded (defaults: the
GPU preset's Qwen/Qwen2.5-VL-7B-Instruct + facebook/sam2.1-hiera-large + google/owlv2-base-patch16-ensemble,
bfloat16, max_pixels 307200) and reused by both sets, which run through the offline benchmarks' own code:
  kitchen:    benchmarks.real.run (../shared/data/7scenes-redkitchen, our 3D ground truth), the object memory
              from the detector's proposals, the VLM's parse and grounding where the memory cannot decide;
  relational: benchmarks.spatial.run (seeded simulated rooms), the same backend in place of the offline one.
The JSON holds both reports as those benchmarks write them ("kitchen", "relational"; the backend's figures
under "transformers"), plus seconds per query and peak GPU memory (torch.cuda.max_memory_allocated, per
set; on CPU the process's peak RSS instead). `--estimate` prints the README's GPU memory table (no model
is loaded; see `memory_estimate`).

Exit codes: 0 ran (the JSON is written); 3 skipped: no CUDA device for --device cuda*, or weights absent
(the JSON holds {"skipped": reason}; the project's CLI uses 3 for "the backend cannot run" too); 1 failed
while running (a BackendError, e.g. out of memory even at batch size 1); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import real, spatial

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3
DEFAULT_VLM = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_SAM = "facebook/sam2.1-hiera-large"
DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"


def weights_absent(ref: str) -> str | None:
    """Why `ref` cannot be loaded without a download (None when it can): a directory lacking config.json,
    or a hub id whose config.json is not in the local Hugging Face cache."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"{ref}: directory without config.json"
    if ref.startswith(("/", ".", "~")) or ref.count("/") != 1:
        return f"{ref}: no such directory"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str) and Path(cached).is_file():
        return None
    return f"{ref}: not in the local Hugging Face cache (download it first: huggingface-cli download {ref})"


def skip_reason(device: str, models: dict[str, str]) -> str | None:
    """Why the benchmark cannot run here, or None."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return (f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); the benchmark is "
                "for a GPU (--device cpu runs it on the CPU, hours for a 7B model)")
    absent = [f"{name} {why}" for name, ref in models.items() if (why := weights_absent(ref)) is not None]
    return "weights absent: " + "; ".join(absent) if absent else None


def _peak(device: str) -> dict:
    import torch

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    if device.startswith("cuda"):
        return {"peak_gpu_allocated_mb": round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1),
                "peak_gpu_reserved_mb": round(torch.cuda.max_memory_reserved(device) / 2 ** 20, 1),
                "peak_rss_mb": round(rss_mb, 1)}
    return {"peak_gpu_allocated_mb": None, "peak_gpu_reserved_mb": None, "peak_rss_mb": round(rss_mb, 1)}


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _seconds(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 3), "mean": round(float(np.mean(values)), 3),
            "max": round(float(np.max(values)), 3), "queries": len(values)} if values else {"queries": 0}


def run(args: argparse.Namespace) -> dict:
    import torch

    from mllm3d_ros.backends.base import build_backend

    backend_kwargs = {"vlm_model": args.vlm, "sam_model": args.sam, "detector_model": args.detector,
                      "device": args.device, "dtype": args.dtype, "max_pixels": args.max_pixels,
                      "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "local_files_only": True}
    t0 = time.perf_counter()
    model = build_backend("transformers", **backend_kwargs)
    load_s = time.perf_counter() - t0
    report: dict = {
        "machine": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "device": model.device, "gpu": torch.cuda.get_device_name(model.device) if model.device.startswith("cuda")
        else None, "torch": torch.__version__, "backend": backend_kwargs, "load_s": round(load_s, 2),
        "after_load": _peak(model.device),
    }
    try:
        if real.skipped_without(args.dataset, os.devnull):
            report["kitchen"] = {"skipped": f"dataset folder {args.dataset} not found (see ../shared/data/README.md)"}
        else:
            _reset_peak(model.device)
            queries = real.QUERIES[:args.kitchen_queries] if args.kitchen_queries else real.QUERIES
            report["kitchen"] = real.run(args.dataset, None, model=model, queries=queries, repeat=False,
                                         stride=args.stride)
            report["kitchen_memory"] = _peak(model.device)
            report["kitchen_seconds_per_query"] = _seconds([r["elapsed_s"] for r in report["kitchen"]["queries"]])
        if args.rooms:
            _reset_peak(model.device)
            report["relational"] = spatial.run(args.rooms, args.frames, False, args.describe_rooms, model=model,
                                               model_name="transformers", queries_per_room=args.relational_queries)
            report["relational_memory"] = _peak(model.device)
            report["relational_seconds_per_query"] = _seconds(
                [r["elapsed_ms"] / 1e3 for r in report["relational"]["queries"] if r["backend"] == "transformers"])
    finally:
        model.close()
    return report


# ---- GPU memory estimate (the README's table) ------------------------------------------------------------
@dataclass(frozen=True)
class VlmSpec:
    """What the memory of a VLM depends on: parameters (model card) and the text model's KV-cache shape
    (config.json: num_hidden_layers, num_key_value_heads, head_dim = hidden_size / num_attention_heads)."""

    name: str
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    patch: int  # vision patch side; a token is (2 x patch)^2 pixels after the 2x2 merge


VLMS = (
    VlmSpec("Qwen/Qwen2-VL-2B-Instruct", 2.21, 28, 2, 128, 151936, 14),
    VlmSpec("Qwen/Qwen2-VL-7B-Instruct", 8.29, 28, 4, 128, 152064, 14),
    VlmSpec("Qwen/Qwen2.5-VL-3B-Instruct", 3.75, 36, 2, 128, 151936, 14),
    VlmSpec("Qwen/Qwen2.5-VL-7B-Instruct", 8.29, 28, 4, 128, 152064, 14),
    VlmSpec("Qwen/Qwen3-VL-4B-Instruct", 4.44, 36, 8, 128, 151936, 16),
    VlmSpec("Qwen/Qwen3-VL-8B-Instruct", 8.77, 36, 8, 128, 151936, 16),
)
# (name, parameters in millions), from the model cards.
SAMS = (("facebook/sam-vit-base", 94), ("facebook/sam2.1-hiera-large", 224))
DETECTOR = ("google/owlv2-base-patch16-ensemble", 155)
PROMPT_TEXT_TOKENS = 400  # system prompt, instruction and a marks table of a few candidates
CUDA_CONTEXT_GB = 0.5  # CUDA context, cuBLAS workspaces and allocator slack (typical; not from a formula)


def image_tokens(spec: VlmSpec, width: int = 640, height: int = 480, max_pixels: int = 640 * 480) -> int:
    """Image tokens of one view, by the processors' own resize (transformers' smart_resize)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    factor = 2 * spec.patch
    h, w = smart_resize(height, width, factor, 56 * 56, max_pixels)
    return (h // factor) * (w // factor)


def memory_estimate(spec: VlmSpec, sam_params_m: float, detector_params_m: float, bytes_per_param: float = 2.0,
                    batch: int = 4, new_tokens: int = 384, max_pixels: int = 640 * 480) -> dict:
    """GPU memory (GB = 1e9 bytes) of the backend at `batch` views per generate call:
    weights   = (VLM + SAM + detector parameters) x bytes per parameter;
    KV cache  = 2 (K, V) x layers x kv_heads x head_dim x 2 bytes x (image + prompt + answer tokens) x batch;
    logits    = answer tokens x batch x vocabulary x 4 bytes (generate keeps each step's float32 logits for the
                token confidences);
    + CUDA_CONTEXT_GB. Vision-tower activations are freed before decoding and stay below the logits here."""
    tokens = image_tokens(spec, max_pixels=max_pixels) + PROMPT_TEXT_TOKENS + new_tokens
    weights = (spec.params_b * 1e9 + (sam_params_m + detector_params_m) * 1e6) * bytes_per_param
    kv = 2 * spec.layers * spec.kv_heads * spec.head_dim * 2 * tokens * batch
    logits = new_tokens * batch * spec.vocab * 4
    total = weights + kv + logits + CUDA_CONTEXT_GB * 1e9
    return {"image_tokens": image_tokens(spec, max_pixels=max_pixels), "weights_gb": weights / 1e9,
            "kv_gb": kv / 1e9, "logits_gb": logits / 1e9, "total_gb": total / 1e9}


def estimate_table() -> str:
    """Markdown: per VLM x SAM (with OWLv2-base), bfloat16, 640x480 views, batch 4, 384 answer tokens."""
    rows = ["| VLM | image tokens (640x480) | + SAM | weights | KV cache | logits | total (bf16) | 4-bit VLM |",
            "|---|---|---|---|---|---|---|---|"]
    for spec in VLMS:
        for sam, sam_m in SAMS:
            m = memory_estimate(spec, sam_m, DETECTOR[1])
            # 4-bit: the VLM's weights at ~0.5 byte/parameter (nf4 + scales ~0.56), the rest unchanged.
            four_bit = m["total_gb"] - spec.params_b * (2.0 - 0.56)
            rows.append(f"| {spec.name.split('/')[1]} | {m['image_tokens']} | {sam.split('/')[1]} | "
                        f"{m['weights_gb']:.1f} | {m['kv_gb']:.2f} | {m['logits_gb']:.2f} | "
                        f"**{math.ceil(m['total_gb'] * 10) / 10:.1f} GB** | {four_bit:.1f} GB |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="where to write the results (required unless --estimate)")
    parser.add_argument("--vlm", default=DEFAULT_VLM, help="VLM: Hugging Face id (cached) or local directory")
    parser.add_argument("--sam", default=DEFAULT_SAM, help="SAM / SAM 2 checkpoint: id (cached) or directory")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help="OWLv2 checkpoint for the object memory")
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--max-pixels", type=int, default=640 * 480)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dataset", type=Path, default=real.DEFAULT_DATASET, help="7-Scenes RedKitchen folder")
    parser.add_argument("--stride", type=int, default=1, help="fuse every n-th kitchen frame")
    parser.add_argument("--kitchen-queries", type=int, default=0, help="the first n kitchen queries (0 = all 25)")
    parser.add_argument("--rooms", type=int, default=10, help="relational rooms 0..n-1 (0 = none)")
    parser.add_argument("--frames", type=int, default=40, help="frames along each room's trajectory")
    parser.add_argument("--relational-queries", type=int, default=None, help="the first n instructions per room")
    parser.add_argument("--describe-rooms", type=int, default=0, help="furnished rooms for the captions measure")
    parser.add_argument("--estimate", action="store_true", help="print the GPU memory estimate table and exit")
    args = parser.parse_args(argv)
    if args.estimate:
        print(estimate_table())
        return EXIT_OK
    if not args.json:
        parser.print_usage(sys.stderr)
        print("benchmarks.gpu: --json is required", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    reason = skip_reason(args.device, {"vlm": args.vlm, "sam": args.sam, "detector": args.detector})
    if reason is not None:
        print(f"benchmarks.gpu: skipped: {reason}", file=sys.stderr)
        out.write_text(json.dumps({"skipped": reason}, indent=2))
        return EXIT_SKIPPED
    from mllm3d_ros.core.config import ConfigError
    from mllm3d_ros.core.segmentation import BackendError

    try:
        report = run(args)
    except ConfigError as exc:
        print(f"benchmarks.gpu: bad arguments: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as exc:
        print(f"benchmarks.gpu: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    out.write_text(json.dumps(report, indent=2))
    if "queries" in report.get("kitchen", {}):
        print(real.table(report["kitchen"]))
        print(f"kitchen: {report['kitchen_seconds_per_query']} s per query; {report['kitchen_memory']}")
    if "relational" in report:
        print(spatial.table(report["relational"]))
        print(f"relational: {report['relational_seconds_per_query']} s per query; {report['relational_memory']}")
    print(f"load {report['load_s']} s on {report['device']} ({report['gpu'] or 'no GPU'}); {report['machine']}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
