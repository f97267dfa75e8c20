"""Benchmark: `mllm3d segment` answering again from a saved map and memory.

    python -m benchmarks.segment_reuse --json PATH [--dataset DIR] [--first-runs N] [--second-runs N]

On the 250-frame 7-Scenes kitchen (../shared/data/7scenes-redkitchen; exit code 3 and a message when it is
absent), through `offline_segment.segment_recording`, the code of `mllm3d segment` (offline backend, its
defaults):
  first run:  fuse the recording + propose on every keyframe (the object memory) + answer the instructions,
              saving the map and the memory (`--save-map`);
  second run: load the saved map and memory (`--load-map`) + answer the same instructions.
Each run is timed by stage (model load, fuse + memory or load, per instruction: query, files, PNGs), with
and without the renders (`--no-render`), in this process; one more of each as a `mllm3d segment` process
(imports and the model load included: what a user waits for). Reported: medians over the runs, the ratio
first / second, whether both answered every instruction the same (status, label, confidence), the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "7scenes-redkitchen"
INSTRUCTIONS = ("the table", "the chair", "the mug", "the box", "the laptop")
EXIT_NO_DATA = 3


def _median(values):
    return round(statistics.median(values), 3) if values else None


def _run(dataset: Path, out: Path, render: bool, save_map: Path | None = None, load_map: Path | None = None) -> dict:
    from mllm3d_ros.offline_segment import segment_recording
    t0 = time.monotonic()
    run = segment_recording(dataset, list(INSTRUCTIONS), out, show_progress=False, save_map=save_map,
                            load_map=load_map, render=render)
    total = time.monotonic() - t0
    summary = json.loads(run.summary_path.read_text())
    results = summary["results"]
    return {"total_s": round(total, 3), "model_load_s": round(run.model_load_s, 3), "build_s": round(run.build_s, 3),
            "answer_s": round(total - run.model_load_s - run.build_s, 3),
            "query_s": [r["query_s"] for r in results], "write_s": [r["write_s"] for r in results],
            "render_s": [r["render_s"] for r in results],
            "answers": [(r["instruction"], r["status"], r["label"], r["confidence"]) for r in results]}


def _cli(dataset: Path, out: Path, *extra: str) -> float:
    args = [sys.executable, "-m", "mllm3d_ros.cli", "segment", "--dataset", str(dataset), "--out", str(out)]
    for text in INSTRUCTIONS:
        args += ["--instruction", text]
    t0 = time.monotonic()
    done = subprocess.run(args + list(extra), capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"mllm3d segment exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return round(time.monotonic() - t0, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="where the report goes")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--first-runs", type=int, default=1, help="first runs (fuse + propose + answer)")
    parser.add_argument("--second-runs", type=int, default=3, help="second runs (load + answer), each way")
    parser.add_argument("--no-cli", action="store_true", help="skip the two `mllm3d segment` process runs")
    ns = parser.parse_args(argv)
    dataset = Path(ns.dataset)
    if not dataset.is_dir():
        print(f"no data: {dataset} is absent (the 7-Scenes kitchen, see ../shared/data/README.md); nothing measured",
              file=sys.stderr)
        return EXIT_NO_DATA
    work = Path(tempfile.mkdtemp(prefix="mllm3d_segment_reuse_"))
    try:
        saved = work / "map"
        first = [_run(dataset, work / f"first{k}" / "o.ply", render=False, save_map=saved)
                 for k in range(ns.first_runs)]
        second = [_run(dataset, work / f"second{k}" / "o.ply", render=False, load_map=saved)
                  for k in range(ns.second_runs)]
        second_render = [_run(dataset, work / f"second_render{k}" / "o.ply", render=True, load_map=saved)
                         for k in range(ns.second_runs)]
        cli = {}
        if not ns.no_cli:
            cli["first_process_s"] = _cli(dataset, work / "cli_first" / "o.ply", "--no-render", "--save-map",
                                          str(work / "cli_map"))
            cli["second_process_s"] = _cli(dataset, work / "cli_second" / "o.ply", "--no-render", "--load-map",
                                           str(work / "cli_map"))
        saved_mb = sum(f.stat().st_size for f in saved.iterdir()) / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def stage(runs, key):
        return _median([r[key] for r in runs])

    def per_instruction(runs, key):
        return _median([v for r in runs for v in r[key]])

    first_build, second_build = stage(first, "build_s"), stage(second, "build_s")
    first_answer = stage(first, "answer_s")
    second_answer = stage(second, "answer_s")
    report = {
        "benchmark": "segment_reuse", "dataset": str(dataset), "instructions": list(INSTRUCTIONS),
        "machine": platform.node(), "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "note": "in-process stage times (segment_recording, offline backend); medians over the runs",
        "runs": {"first": ns.first_runs, "second": ns.second_runs},
        "first_run": {"model_load_s": stage(first, "model_load_s"), "fuse_and_memory_s": first_build,
                      "answer_all_s": first_answer, "total_s": stage(first, "total_s")},
        "second_run": {"model_load_s": stage(second, "model_load_s"), "load_map_and_memory_s": second_build,
                       "answer_all_s": second_answer, "total_s": stage(second, "total_s"),
                       # The first query after the load also extracts the map's surface (cached after).
                       "first_query_s": _median([r["query_s"][0] for r in second]),
                       "load_plus_first_answer_s": round(second_build + _median([r["query_s"][0] for r in second])
                                                         + per_instruction(second, "write_s"), 3)},
        "per_instruction_s": {"query": per_instruction(second, "query_s"), "files": per_instruction(second, "write_s"),
                              "render": per_instruction(second_render, "render_s"),
                              "query_first_run": per_instruction(first, "query_s")},
        "second_run_with_render_total_s": stage(second_render, "total_s"),
        "ratio_first_to_second_excluding_model_load": round((first_build + first_answer) /
                                                            max(1e-9, second_build + second_answer), 2),
        "same_answers": all(r["answers"] == first[0]["answers"] for r in first + second + second_render),
        "answers": first[0]["answers"], "saved_map_mb": round(saved_mb, 1), **cli,
    }
    Path(ns.json).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.json).write_text(json.dumps(report, indent=2))
    print(f"first run: fuse + memory {first_build} s, answers {first_answer} s; second run: load {second_build} s, "
          f"answers {second_answer} s ({per_instruction(second, 'query_s')} s a query, "
          f"{per_instruction(second_render, 'render_s')} s to render); model load {stage(second, 'model_load_s')} s; "
          f"same answers: {report['same_answers']}; {report['machine']}, {report['cpu_count']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
