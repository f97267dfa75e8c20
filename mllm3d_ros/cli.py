"""mllm3d: one command-line entry point.

  mllm3d launch [name:=value ...]        start the system (pip-only stand-in for ros2 launch)
  mllm3d query "the mug" [--views N] [--target-frame F]   send a SegmentQuery goal, print feedback and the result
  mllm3d describe [--max N]              list the object memory's objects with a description each
  mllm3d replay PATH [--rate-scale X]    publish a dataset folder or bag as camera topics
  mllm3d simulate [--seed N]             publish a simulated room as camera topics
  mllm3d segment --dataset PATH --instruction TEXT [--instruction ...] --out OUT.ply [--save-map DIR | --load-map DIR]
                                         the pipeline without ROS; output in the z-up map frame (JSON: world_T_map)
  mllm3d demo                            the end-to-end demo (simulator -> map -> queries)

Errors are one line on stderr ("error: ..."). Exit codes, every subcommand:
  0  success (query: an object was found; segment: one for every instruction; launch/replay/simulate: a clean
     stop, e.g. the recording ended)
  1  answered, but not a success (query/segment: NOT_FOUND, MAP_EMPTY, ... for an instruction; the status is printed);
     replay: no frame of the recording could be read; demo: the system did not come up
  2  bad usage, arguments, parameters or input (unknown option, bad dataset, wrong parameter type,
     an instruction that is empty, over 2,000 characters or not UTF-8; segment: a missing --instructions-file,
     a --load-map folder of another recording, other settings or another version, or corrupt)
  3  query/describe: no SegmentQuery server / DescribeScene service; segment: the backend cannot run (model missing, device absent)
  4  query: the goal was rejected (a query is running, second_goal_policy=reject)
  5  query: no result within --timeout (the goal is cancelled)
  130, 143  stopped by SIGINT (Ctrl-C) / SIGTERM, with one line on stderr (query: the goal is cancelled first)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REJECTED, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5


class _Stopped(BaseException):
    """Raised in the main thread by StopSignals(raise_in_main=True); a BaseException, like KeyboardInterrupt,
    so that no library's `except Exception` swallows it."""


class StopSignals:
    """While installed (a `with` block), SIGINT and SIGTERM set `event` and keep the first signal's number;
    with `raise_in_main` they also raise _Stopped in the main thread (work that cannot poll an event)."""

    def __init__(self, raise_in_main: bool = False) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._raise = raise_in_main
        self._previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()
        if self._raise:
            raise _Stopped()

    def __enter__(self) -> "StopSignals":
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def report(self, what: str) -> int:
        """Print the one line that says how the command ended; returns 130 / 143."""
        print(f"interrupted by {signal.Signals(self.signum or signal.SIGINT).name}: {what}", file=sys.stderr,
              flush=True)
        return self.exit_code


def _instruction(text: str) -> str | None:
    """The instruction checked as the query node and the pipeline check it; None after printing why not."""
    from .core.segmentation import normalise_instruction
    from .core.types import InputError
    try:
        return normalise_instruction(text)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _ros_args(params: dict[str, object]) -> list[str]:
    out = ["mllm3d", "--ros-args", "-r", "__ns:=/mllm3d"]
    for k, v in params.items():
        out += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    return out


def cmd_launch(ns: argparse.Namespace) -> int:
    from .launcher import launch
    args = {}
    for item in ns.args:
        if ":=" not in item:
            print(f"error: launch arguments are name:=value, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        k, v = item.split(":=", 1)
        args[k] = v
    params_file = args.pop("params_file", "")
    try:
        return launch(args, params_file)  # 130 / 143 after a signal, with its own line
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_query(ns: argparse.Namespace) -> int:
    from .core.types import QueryStatus
    from .ros.client import Interrupted, QueryClient, with_ros

    if not 0 <= ns.views <= 65535 or not 0.0 <= ns.min_confidence <= 1.0 or ns.timeout <= 0:
        print(f"error: --views must be in [0, 65535], --min-confidence in [0, 1] and --timeout > 0, got "
              f"{ns.views}, {ns.min_confidence}, {ns.timeout}", file=sys.stderr)
        return EXIT_USAGE
    if ns.target_frame:
        from .core.tf_buffer import check_frame_id
        try:
            check_frame_id("--target-frame", ns.target_frame)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if _instruction(ns.instruction) is None:
        return EXIT_USAGE
    stop = StopSignals()

    def run() -> int:
        client = QueryClient(node_name="mllm3d_query_cli")
        try:
            if not _wait_for_server(client, ns.wait, stop.event):
                if stop.event.is_set():
                    return stop.report("no goal was sent")
                print("error: no SegmentQuery server on /mllm3d/segment_query (is `mllm3d launch` running?)",
                      file=sys.stderr)
                return EXIT_UNAVAILABLE
            try:
                accepted, result = client.send(ns.instruction, ns.views, ns.min_confidence,
                                               lambda stage, p: print(f"  [{p * 100:5.1f} %] {stage}", flush=True),
                                               ns.timeout, target_frame=ns.target_frame, stop=stop.event)
            except Interrupted as exc:
                return stop.report({True: "goal canceled", False: "the server did not confirm the cancel of the goal",
                                    None: "no goal was running"}[exc.goal_canceled])
            except TimeoutError as exc:
                canceled = getattr(exc, "goal_canceled", None)
                print(f"error: {exc}" + {True: " (goal canceled)", False: " (the cancel was not confirmed)",
                                         None: ""}[canceled], file=sys.stderr)
                return EXIT_TIMEOUT
            if not accepted:
                print("error: goal rejected: a query is already running (second_goal_policy=reject)",
                      file=sys.stderr)
                return EXIT_REJECTED
            status = {s.value: s.name for s in QueryStatus}.get(result.error_code, "UNKNOWN")
            print(f"status: {status} ({result.error_code}) {result.error_message}")
            print(f"target: {result.target_phrase!r}  views: {result.views_used}  time: {result.elapsed_s:.2f} s  "
                  f"frame: {result.points.header.frame_id}")
            for i, obj in enumerate(result.objects):
                print(f"  {i + 1}. {obj.description}  confidence {obj.confidence:.2f}  "
                      f"views {obj.supporting_views}/{obj.visible_views}  points {obj.points.width}")
            return EXIT_OK if result.error_code == QueryStatus.SUCCESS else EXIT_FAILED
        finally:
            client.close()

    with stop:
        return with_ros(run, handle_signals=False)


def _wait_for_server(client, wait_s: float, stop: threading.Event) -> bool:
    """wait_for_server in short steps, so a signal ends the wait."""
    import time
    end = time.monotonic() + wait_s
    while not client.wait_for_server(min(0.2, max(0.0, end - time.monotonic()))):
        if stop.is_set() or time.monotonic() >= end:
            return False
    return True


def cmd_describe(ns: argparse.Namespace) -> int:
    from .ros.client import Interrupted, QueryClient, with_ros

    if not 0 <= ns.max <= 65535:
        print(f"error: --max must be in [0, 65535], got {ns.max}", file=sys.stderr)
        return EXIT_USAGE
    stop = StopSignals()

    def run() -> int:
        client = QueryClient(node_name="mllm3d_describe_cli")
        try:
            response = client.describe(ns.max, ns.wait, stop=stop.event)
        except Interrupted:
            return stop.report("describe stopped")
        except TimeoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_TIMEOUT
        finally:
            client.close()
        if response is None:
            print("error: no DescribeScene service on /mllm3d/memory/describe_scene (is `mllm3d launch` running?)",
                  file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(response.message)
        for i, obj in enumerate(response.objects):
            print(f"  {i + 1}. {obj.description}  confidence {obj.confidence:.2f}  "
                  f"views {obj.supporting_views}/{obj.visible_views}")
        return EXIT_OK if response.success else EXIT_FAILED

    with stop:
        return with_ros(run, handle_signals=False)


def _run_source(main, args: list[str], what: str) -> int:
    """A publishing node (replay, simulator) until it ends or a signal stops it (130 / 143, one line)."""
    code = main(args, signal_exit_codes=True)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        print(f"interrupted by {signal.Signals(code - 128).name}: {what} stopped", file=sys.stderr, flush=True)
    return code


def cmd_replay(ns: argparse.Namespace) -> int:
    from .ros.replay_node import main
    return _run_source(main, _ros_args({"path": ns.path, "rate_scale": float(ns.rate_scale), "stride": ns.stride,
                                        "loop": ns.loop}), "replay")


def cmd_simulate(ns: argparse.Namespace) -> int:
    from .ros.simulator_node import main
    return _run_source(main, _ros_args({"seed": ns.seed, "rate_hz": float(ns.rate_hz), "num_frames": ns.num_frames,
                                        "loop": not ns.once}), "simulator")


def cmd_segment(ns: argparse.Namespace) -> int:
    from .backends.base import BackendError
    from .core.config import ConfigError
    from .core.tsdf_map import MapFileError
    from .core.types import InputError
    from .offline_segment import read_instructions_file, segment_recording
    stop = StopSignals(raise_in_main=True)
    try:
        instructions = list(ns.instruction or [])
        if ns.instructions_file is not None:
            instructions += read_instructions_file(ns.instructions_file)
        if not instructions:
            print("error: give an instruction: --instruction TEXT (repeatable) or --instructions-file FILE",
                  file=sys.stderr)
            return EXIT_USAGE
        with stop:
            run = segment_recording(ns.dataset, instructions if len(instructions) > 1 else instructions[0], ns.out,
                                    backend=ns.backend, views=ns.views, stride=ns.stride, max_frames=ns.max_frames,
                                    voxel_size_m=ns.voxel_size, save_map=ns.save_map, load_map=ns.load_map,
                                    render=not ns.no_render)
    except _Stopped:
        return stop.report("segment stopped")
    except (InputError, ConfigError, MapFileError, OSError) as exc:  # MapFileError: a --load-map that does not fit
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as exc:
        print(f"error: backend '{ns.backend}' cannot run: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    outputs = getattr(run, "outputs", (run,))
    found = True
    for k, out in enumerate(outputs, start=1):
        r = out.result
        found &= bool(r.objects)
        if len(outputs) > 1:
            print(f"[{k}/{len(outputs)}] {r.status.name}: {r.message}")
        else:
            print(f"{r.status.name}: {r.message}")
        for i, obj in enumerate(r.objects):
            c = obj.box.center_world_m
            print(f"  {i + 1}. {obj.label} confidence {obj.confidence:.2f} at ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) m "
                  f"(map frame), {obj.point_indices.size} points, views {obj.supporting_views}/{obj.visible_views}"
                  + (f"; {obj.detail}" if obj.detail else "") + ("" if obj.detail or not obj.unconfirmed else
                                                                  "; label unconfirmed"))
        print(f"wrote {', '.join(str(p) for p in (out.ply_path, out.json_path, out.png_path) if p is not None)}")
        if out.png_error:
            print(f"warning: the PNG render was not written: {out.png_error}", file=sys.stderr)
    if getattr(run, "summary_path", None) is not None:
        print(f"wrote {run.summary_path}")
    if getattr(run, "saved_to", None) is not None:
        print(f"saved the map and the object memory to {run.saved_to} (answer again with --load-map)")
    # 0 only when every instruction found an object.
    return EXIT_OK if found else EXIT_FAILED


def cmd_demo(ns: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo(ns.out, seed=ns.seed, frames=ns.frames)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllm3d", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("launch", help="start the system (pip-only stand-in for ros2 launch)")
    p.add_argument("args", nargs="*", help="launch arguments name:=value (see README)")
    p.set_defaults(fn=cmd_launch)
    p = sub.add_parser("query", help="send a SegmentQuery goal and print the result")
    p.add_argument("instruction")
    p.add_argument("--views", type=int, default=0, help="max views (0 = node default)")
    p.add_argument("--min-confidence", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the action server")
    p.add_argument("--target-frame", default="", help="TF frame of the returned geometry ('' = the map frame)")
    p.set_defaults(fn=cmd_query)
    p = sub.add_parser("describe", help="list the object memory's objects with a description each")
    p.add_argument("--max", type=int, default=0, help="at most this many objects (0 = all)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the service")
    p.set_defaults(fn=cmd_describe)
    p = sub.add_parser("replay", help="publish a dataset folder or bag as camera topics")
    p.add_argument("path")
    p.add_argument("--rate-scale", type=float, default=1.0, help="1 = recorded rate, 0 = as fast as possible")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--loop", action="store_true")
    p.set_defaults(fn=cmd_replay)
    p = sub.add_parser("simulate", help="publish a simulated room as camera topics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate-hz", type=float, default=10.0)
    p.add_argument("--num-frames", type=int, default=240)
    p.add_argument("--once", action="store_true", help="stop after one loop of the trajectory")
    p.set_defaults(fn=cmd_simulate)
    p = sub.add_parser("segment", help="run the pipeline on a recording without ROS",
                       description="Fuse a recording, build the object memory and answer instructions without ROS. "
                       "Everything written (PLY points, boxes, approach pose, floor grid) is in the map frame: "
                       "z up, metres, gravity-aligned: the recording's world frame (its camera poses) rotated so "
                       "that z points up where the recording gives gravity-direction.txt, else the same frame. "
                       "The JSON states \"frame\": \"map\" and world_T_map (4x4): p_world = world_T_map @ p_map.")
    p.add_argument("--dataset", required=True, help="dataset folder or ROS 2 bag")
    p.add_argument("--instruction", action="append", default=None,
                   help="what to find; repeat it to answer several on one map (files OUT_<k>_<words>.*, "
                   "OUT_summary.json)")
    p.add_argument("--instructions-file", default=None,
                   help="a file of instructions, one a line (blank lines and '#' comments skipped)")
    p.add_argument("--backend", default="offline")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--voxel-size", type=float, default=0.02, help="map voxel edge, metres")
    p.add_argument("--out", required=True, help="output .ply (a .json and a .png are written next to it), map frame")
    p.add_argument("--save-map", default=None, metavar="DIR",
                   help="save the fused map, its keyframes and the object memory to DIR (with the recording's "
                   "fingerprint)")
    p.add_argument("--load-map", default=None, metavar="DIR",
                   help="answer from a map saved by --save-map for this recording and these settings: no fusion, no "
                   "proposals (refused when the recording, --stride, --max-frames, --voxel-size or --backend differ)")
    p.add_argument("--no-render", action="store_true", help="skip the PNG renders (about a second each)")
    p.set_defaults(fn=cmd_segment)
    p = sub.add_parser("demo", help="end-to-end demo on the simulator")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--frames", type=int, default=120)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)  # usage errors exit 2
        code = ns.fn(ns)
        sys.stdout.flush()  # here, where a reader that went away can still be answered quietly
        return code
    except BrokenPipeError:
        # `mllm3d describe | head -1`: the reader has gone, which is what it asked for. Point stdout at
        # /dev/null so the flush at exit does not fail again, and exit as a tool killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
