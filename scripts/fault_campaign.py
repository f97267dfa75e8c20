"""The fault and bad-input campaign: 52 cases on the command line and on the running graph,
tried as a new user would, with a verdict per case.

    /work/tools/isolate .venv/bin/python scripts/fault_campaign.py [--only 1,7,52] [--queries 230]
                                                                  [--budget-s 1500] [--out out/fault_campaign.json]

The script starts and stops every graph itself (`mllm3d launch`, `mllm3d replay`, ...), with discovery
on localhost and a test-only ROS domain it sets itself (run it inside /work/tools/isolate as well, so that
nothing of it meets another job's graph). Every wait has a timeout and the whole run a budget: cases
left when it is spent are SKIPPED. Cases marked with an item (1-8) are faults a first run of this campaign
found, each failing before it was fixed; the others are the faults the README promised already. It is too
long for `make test`; the cheap cases are covered by tests (named in each case's docstring).

Groups: the CLI without a graph (1-19), graph A = `mllm3d launch` fed hand-made frames by this script
(20-41), graph B = `mllm3d launch source:=simulator` (42-52).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
KITCHEN = ROOT.parent / "shared" / "data" / "7scenes-redkitchen"
DEFAULT_DOMAIN = 93  # test-only; any other job on the machine uses its own (and isolate separates them)
# A query the object memory cannot answer alone in the simulated room (seed 3), so the 2D model runs: the
# offline model knows bottles, the room's memory holds none (a word it does not know would be NOT_FOUND at
# once, by the open-set gate, without the 2D model).
TWO_D = "the bottle"


# --- verdicts --------------------------------------------------------------------------------------------
@dataclass
class Result:
    number: int
    title: str
    item: str
    verdict: str = "SKIP"
    detail: str = ""
    seconds: float = 0.0


class CaseFailed(Exception):
    pass


def check(condition: bool, detail: str) -> None:
    if not condition:
        raise CaseFailed(detail)


@dataclass
class Campaign:
    budget_s: float
    only: set[int] | None
    results: list[Result] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def run(self, number: int, title: str, item: str, fn: Callable[[], str]) -> Result:
        result = Result(number, title, item)
        self.results.append(result)
        if self.only is not None and number not in self.only:
            return result
        if time.monotonic() - self.start > self.budget_s:
            result.detail = "time budget spent"
        else:
            t0 = time.monotonic()
            try:
                result.detail = fn() or ""
                result.verdict = "PASS"
            except CaseFailed as exc:
                result.verdict, result.detail = "FAIL", str(exc)
            except Exception as exc:  # noqa: BLE001 -- a broken case is a failed case, with its reason
                result.verdict, result.detail = "FAIL", f"{type(exc).__name__}: {exc}"
            result.seconds = time.monotonic() - t0
        tag = f" [fixed fault, {item}]" if item else ""
        print(f"{result.verdict:4s} {number:2d} {title}{tag}: {result.detail[:300]} ({result.seconds:.1f} s)",
              flush=True)
        return result

    def wanted(self, numbers) -> bool:
        return self.only is None or bool(self.only & set(numbers))


# --- processes -------------------------------------------------------------------------------------------
def env() -> dict[str, str]:
    from mllm3d_ros.launch_spec import local_dds_env
    return local_dds_env(dict(os.environ, PYTHONUNBUFFERED="1"))


def cli(*args, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """`mllm3d ARGS` to completion; bytes arguments pass as they are (a terminal in another encoding)."""
    out = subprocess.run([sys.executable, "-m", "mllm3d_ros.cli", *args], env=env(), capture_output=True,
                         timeout=timeout, cwd=str(ROOT))
    out.stdout, out.stderr = out.stdout.decode("utf-8", "replace"), out.stderr.decode("utf-8", "replace")
    return out


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def quiet(text: str) -> bool:
    return not any(word in text for word in ("Traceback", "RCLError", "Failed to create", "_sigint_gc",
                                             "Exception ignored", "Couldn't parse"))


class Graph:
    """`mllm3d launch ARGS` in its own process group, its output in a log file."""

    def __init__(self, workdir: Path, name: str, *args: str) -> None:
        self.log = workdir / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", "launch", *args], env=env(),
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, cwd=str(ROOT),
                                     start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float, count: int = 1) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if len(re.findall(pattern, self.text())) >= count:
                return True
            if self.proc.poll() is not None:
                return len(re.findall(pattern, self.text())) >= count
            time.sleep(0.2)
        return False

    def pid(self, executable: str) -> int:
        pids = re.findall(rf"\[launch\] {executable} started \(pid (\d+)\)", self.text())
        check(bool(pids), f"{executable} did not start")
        return int(pids[-1])

    def stop(self, signum: int = signal.SIGINT, timeout_s: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def mapping_stats(self) -> dict:
        lines = [line for line in self.text().splitlines() if "frames received=" in line]
        if not lines:
            return {}
        line = lines[-1]
        out = {"line": line}
        for key in ("received", "fused", "keyframes"):
            m = re.search(rf"\b{key}=(\d+)", line)
            out[key] = int(m.group(1)) if m else 0
        for key in ("rejected", "messages", "lost_in_transport"):
            m = re.search(rf"\b{key}=(\{{[^}}]*\}}|0)", line)
            out[key] = ast.literal_eval(m.group(1)) if m and m.group(1) != "0" else {}
        m = re.search(r"dropped_late=(\d+)", line)
        out["dropped_late"] = int(m.group(1)) if m else 0
        return out


def params_file(workdir: Path, name: str, **blocks: dict) -> Path:
    """config/perception.yaml with `blocks` merged in (`mapping={'stats_period_s': 1.0}`, `simulator=...`)."""
    import yaml
    data = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    for node, values in blocks.items():
        data.setdefault(f"/**/{node}", {"ros__parameters": {}})["ros__parameters"].update(values)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def room_recording(path: Path, n: int = 8, depth_scale: float = 1.0, color_format: str = "jpg") -> Path:
    """A 7-Scenes folder of the simulator's room (160x120, no noise); depth_scale 1e-3 writes metres as uint16."""
    import dataclasses

    import numpy as np

    from mllm3d_ros.sources.dataset import write_7scenes
    frames = []
    for k, pose in enumerate(_sim_poses(n)):
        frame = _SIM().render(pose, (k + 1) * 33_000_000).frame
        frames.append(dataclasses.replace(frame, depth_m=frame.depth_m * np.float32(depth_scale)))
    return write_7scenes(frames, path, color_format=color_format)


_SIM_CACHE: dict = {}


def _SIM():  # noqa: N802 -- a lazily built constant
    if "sim" not in _SIM_CACHE:
        from mllm3d_ros.sources.simulator import SimConfig, Simulator, generate_room
        room = generate_room(3)
        _SIM_CACHE["room"] = room
        _SIM_CACHE["sim"] = Simulator(room, SimConfig(width=160, height=120, fx=131.25, fy=131.25, cx=79.5, cy=59.5,
                                                      noise=False, nthreads=1))
    return _SIM_CACHE["sim"]


def _sim_poses(n: int):
    from mllm3d_ros.sources.simulator import trajectory
    _SIM()
    key = ("poses", max(n, 60))
    if key not in _SIM_CACHE:
        _SIM_CACHE[key] = trajectory(_SIM_CACHE["room"], max(n, 60))
    return _SIM_CACHE[key][:n]


# --- group 1: the CLI without a graph --------------------------------------------------------------------
def group_cli(c: Campaign, work: Path) -> None:
    rec = room_recording(work / "room")

    def segment(*args, timeout=300.0):
        return cli("segment", *args, timeout=timeout)

    def c1():
        out = segment("--dataset", str(work / "nowhere"), "--instruction", "the table", "--out", str(work / "o.ply"))
        check(out.returncode == 2 and error_lines(out.stderr) == [f"error: recording not found: {work / 'nowhere'}"]
              and quiet(out.stderr), f"exit {out.returncode}: {out.stderr[-300:]}")
        return "exit 2, one error line"
    c.run(1, "segment: a recording that does not exist", "", c1)

    def bad_argument(instruction, extra, expected):
        def fn():
            out = segment("--dataset", str(rec), "--instruction", instruction, *extra, "--out", str(work / "o.ply"))
            lines = error_lines(out.stderr)
            check(out.returncode == 2 and len(lines) == 1 and expected in lines[0] and quiet(out.stderr),
                  f"exit {out.returncode}: {out.stderr[-300:]}")
            check("fusing" not in out.stderr, "reported only after fusing the recording")
            return f"exit 2 before reading a frame: {lines[0][:100]}"
        return fn
    c.run(2, "segment: an empty instruction", "smaller", bad_argument("   ", (), "instruction is empty"))
    c.run(3, "segment: a 2001-character instruction", "smaller",
          bad_argument("x" * 2001, (), "the limit is 2000"))
    c.run(4, "segment: an instruction with bytes that are not UTF-8", "item 5",
          bad_argument(b"caf\xe9 mug", (), "not valid UTF-8 (byte 0xe9"))

    def c5():
        (work / "a_file").write_text("x")
        out = segment("--dataset", str(rec), "--instruction", "the table", "--out", str(work / "a_file" / "o.ply"))
        check(out.returncode == 2 and "cannot write there" in out.stderr and "fusing" not in out.stderr,
              f"exit {out.returncode}: {out.stderr[-300:]}")
        return "exit 2 before reading a frame"
    c.run(5, "segment: an --out that cannot be written", "smaller", c5)

    def c6():
        bad = work / "room_bad"
        shutil.copytree(rec, bad)
        jpg = bad / "frame-000003.color.jpg"
        jpg.write_bytes(jpg.read_bytes()[:300])
        out = segment("--dataset", str(bad), "--instruction", "the table", "--out", str(work / "bad.ply"))
        check(out.returncode in (0, 1), f"exit {out.returncode}: {out.stderr[-300:]}")
        summary = json.loads((work / "bad.json").read_text())
        check(summary["frames_unreadable"] == 1 and summary["frames_fused"] >= 1, str(summary)[:300])
        return f"skipped and counted (frames_unreadable 1), answered {summary['status']}"
    c.run(6, "segment: one truncated JPEG among the frames", "item 7", c6)

    def c7():
        metres = room_recording(work / "room_metres", depth_scale=1e-3)
        out = segment("--dataset", str(metres), "--instruction", "the table", "--out", str(work / "m.ply"))
        summary = json.loads((work / "m.json").read_text()) if (work / "m.json").exists() else {}
        check(out.returncode == 1 and summary.get("status") == "MAP_EMPTY" and summary.get("frames_fused") == 0,
              f"exit {out.returncode}, {str(summary)[:300]}")
        message = summary["message"]
        check("metres written as uint16" in message and "topic" not in message, message)
        return message[:160]
    c.run(7, "segment: depth in metres written as uint16", "item 6", c7)

    def c8():
        check(KITCHEN.is_dir(), f"{KITCHEN} is absent")
        proc = subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", "segment", "--dataset", str(KITCHEN),
                                 "--instruction", "the table", "--out", str(work / "k.ply")], env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
        err: list[bytes] = []
        threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True).start()
        end = time.monotonic() + 120
        while b"fusing" not in b"".join(err) and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        time.sleep(0.2)
        text = b"".join(err).decode(errors="replace")
        check(code == 143 and text.rstrip().splitlines()[-1] == "interrupted by SIGTERM: segment stopped"
              and quiet(text), f"exit {code}: {text[-300:]}")
        return "exit 143, one line"
    c.run(8, "segment: SIGTERM during fusion", "item 2", c8)

    def c9():
        out = cli("query", b"caf\xe9 mug", "--wait", "1")
        check(out.returncode == 2 and error_lines(out.stderr) == [out.stderr.strip()] and "0xe9" in out.stderr,
              f"exit {out.returncode}: {out.stderr[-300:]}")
        return out.stderr.strip()[:100]
    c.run(9, "query: an instruction with bytes that are not UTF-8", "item 5", c9)

    def c10():
        out = cli("query", "the mug", "--wait", "1")
        check(out.returncode == 3 and out.stderr.strip().splitlines() == [
            "error: no SegmentQuery server on /mllm3d/segment_query (is `mllm3d launch` running?)"],
            f"exit {out.returncode}: {out.stderr[-300:]}")
        return "exit 3, one line"
    c.run(10, "query: no server", "", c10)

    def c11():
        out = cli("query", "the mug", "--views", "-1")
        check(out.returncode == 2 and len(error_lines(out.stderr)) == 1, f"exit {out.returncode}: {out.stderr}")
        return "exit 2"
    c.run(11, "query: --views -1", "", c11)

    def c12():
        out = cli("launch", "camra:=realsense")
        check(out.returncode == 2 and error_lines(out.stderr) and "camra" in out.stderr and quiet(out.stderr),
              f"exit {out.returncode}: {out.stderr[-300:]}")
        return "exit 2, one line"
    c.run(12, "launch: an unknown launch argument", "", c12)

    def c13():
        broken = work / "broken.yaml"
        broken.write_text("/**/mapping:\n  ros__parameters:\n    voxel_size_m: [0.02\n")
        out = cli("launch", f"params_file:={broken}", timeout=120)
        check(out.returncode == 2 and error_lines(out.stderr) == [out.stderr.strip()] and "line 4" in out.stderr
              and "started" not in out.stdout, f"exit {out.returncode}: {(out.stdout + out.stderr)[-400:]}")
        return out.stderr.strip()[:120]
    c.run(13, "launch: a parameters file with a YAML syntax error", "item 4", c13)

    def refused(name, node, key, value, expected):
        def fn():
            out = cli("launch", f"params_file:={params_file(work, name, **{node: {key: value}})}", timeout=180)
            both = out.stdout + out.stderr
            refusals = [line for line in both.splitlines() if "refusing to start" in line]
            check(out.returncode == 2 and len(refusals) == 1 and expected in refusals[0], f"exit {out.returncode}: "
                  f"{both[-400:]}")
            check(quiet(both) and both.count("segmentation_node started") == 1 and "restarting" not in both,
                  f"noise from the other node or a restart: {both[-400:]}")
            return refusals[0][:120]
        return fn
    c.run(14, "launch: a refused mapping parameter (voxel_size_m 5.0)", "item 4",
          refused("bad_voxel", "mapping", "voxel_size_m", 5.0, "parameter 'voxel_size_m': expected float in"))
    c.run(15, "launch: a refused segmentation parameter (backend gpt)", "item 4",
          refused("bad_backend", "segmentation", "backend", "gpt", "parameter 'backend': expected one of"))

    from mllm3d_ros.ros.replay_node import REPLAY_PARAMS
    # No subscriber here: do not wait for one (a build from before that parameter has none to set).
    no_wait = ["-p", "wait_for_subscribers_s:=0.0"] if any(p.name == "wait_for_subscribers_s" for p in REPLAY_PARAMS) \
        else []

    def replay(folder: Path) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "mllm3d_ros.ros.replay_node", "--ros-args", "-r", "__ns:=/fc",
                              "-p", f"path:={folder}", "-p", "rate_scale:=0.0", *no_wait],
                             env=env(), capture_output=True, text=True, timeout=120, cwd=str(ROOT))
        return out

    def c16():
        bad = work / "room_png"
        room_recording(bad, n=4, color_format="png")
        png = bad / "frame-000001.color.png"
        png.write_bytes(png.read_bytes()[:60])
        out = replay(bad)
        both = out.stdout + out.stderr
        check(out.returncode == 0 and "skipping frame 1" in both and "3 frames published, 1 unreadable" in both
              and quiet(both), f"exit {out.returncode}: {both[-300:]}")
        return "skipped and counted, exit 0"
    c.run(16, "replay: a truncated PNG", "", c16)

    def c17():
        bad = work / "room_garbage"
        room_recording(bad, n=2, color_format="png")
        for path in bad.glob("*.color.png"):
            path.write_bytes(b"not an image")
        out = replay(bad)
        both = out.stdout + out.stderr
        check(out.returncode == 1 and "no frame of" in both and quiet(both), f"exit {out.returncode}: {both[-300:]}")
        return "exit 1, error line"
    c.run(17, "replay: no readable frame", "", c17)

    def c18():
        bad = work / "room_scaled"
        room_recording(bad, n=2, color_format="png")
        pose = bad / "frame-000001.pose.txt"
        import numpy as np
        matrix = np.loadtxt(pose)
        matrix[:3, :3] *= 1.5  # not a rotation
        np.savetxt(pose, matrix)
        out = replay(bad)
        check(out.returncode == 2 and "refusing to start" in out.stderr and quiet(out.stderr),
              f"exit {out.returncode}: {out.stderr[-300:]}")
        return "exit 2: " + next(line for line in out.stderr.splitlines() if "refusing" in line)[-100:]
    c.run(18, "replay: a pose file that is not a rigid transform", "", c18)

    def c19():
        proc = subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", "simulate", "--rate-hz", "20"], env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(ROOT),
                                start_new_session=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        end = time.monotonic() + 120
        while not any("simulating room" in line for line in lines) and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        time.sleep(0.3)
        text = "".join(lines)
        check(code == 130 and "interrupted by SIGINT: simulator stopped" in text and quiet(text),
              f"exit {code}: {text[-300:]}")
        return "exit 130, one line"
    c.run(19, "simulate: Ctrl-C", "item 2", c19)


# --- group A: the mapping node fed hand-made frames -----------------------------------------------------
class Sender:
    """Publishes camera messages under /mllm3d from this process (the script's own node)."""

    def __init__(self, node) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image

        from mllm3d_ros.ros.qos import SENSOR_QOS
        self.node = node
        self.color = node.create_publisher(Image, "/mllm3d/camera/color/image_raw", SENSOR_QOS)
        self.depth = node.create_publisher(Image, "/mllm3d/camera/depth/image_raw", SENSOR_QOS)
        self.info = node.create_publisher(CameraInfo, "/mllm3d/camera/color/camera_info", SENSOR_QOS)
        self.pose = node.create_publisher(PoseStamped, "/mllm3d/camera/pose", SENSOR_QOS)
        self.index = 0

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def matched(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.color, self.depth, self.info, self.pose))

    def send(self, stamp_ns: int | None = None, mutate: Callable | None = None, pose=None):
        """One frame of the room along the trajectory (the next pose unless `pose`); `mutate(msgs)` edits the
        four messages (dict) before they go out."""
        from geometry_msgs.msg import PoseStamped

        from mllm3d_ros.ros.conversions import (depth_to_image, intrinsics_to_camera_info, make_header,
                                                matrix_to_pose, rgb_to_image)
        stamp = self.now_ns() if stamp_ns is None else stamp_ns
        if pose is None:
            pose = _sim_poses(60)[self.index % 60]
            self.index += 1
        frame = _SIM().render(pose, stamp).frame
        header = make_header("camera_color_optical_frame", stamp)
        msgs = {"info": intrinsics_to_camera_info(frame.intrinsics, header), "color": rgb_to_image(frame.color_rgb, header),
                "depth": depth_to_image(frame.depth_m, header, "16UC1"),
                "pose": PoseStamped(header=make_header("map", stamp), pose=matrix_to_pose(pose))}
        if mutate is not None:
            mutate(msgs)
        for key in ("info", "color", "depth", "pose"):
            getattr(self, key).publish(msgs[key])
        time.sleep(0.15)
        return pose


class Services:
    def __init__(self, node) -> None:
        self.node = node

    def call(self, srv_type, name: str, request, timeout_s: float = 60.0):
        client = self.node.create_client(srv_type, name)
        try:
            check(client.wait_for_service(timeout_sec=timeout_s), f"no service {name}")
            future = client.call_async(request)
            end = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < end:
                time.sleep(0.05)
            check(future.done(), f"{name} did not answer")
            return future.result()
        finally:
            self.node.destroy_client(client)


def group_a(c: Campaign, work: Path, node) -> None:
    from std_srvs.srv import Trigger

    from mllm3d_ros.srv import MapFile
    params = params_file(work, "graph_a", mapping={"stats_period_s": 1.0, "map_publish_period_s": 0.5})
    graph = Graph(work, "graph_a", f"params_file:={params}")
    sender, services = Sender(node), Services(node)
    try:
        ready = graph.wait_for(r"SegmentQuery action", 180) and graph.wait_for(r"loaded in", 240)
        end = time.monotonic() + 60
        while not sender.matched() and time.monotonic() < end:
            time.sleep(0.1)

        def good_frame() -> None:
            """A good frame first: the gate measures stamp jumps from the newest accepted frame, and a case
            that comes more than max_stamp_jump_s (5 s) after it would be a STAMP_JUMP first."""
            fused = graph.mapping_stats().get("fused", 0)
            sender.send()
            end = time.monotonic() + 20
            while graph.mapping_stats().get("fused", 0) <= fused and time.monotonic() < end:
                time.sleep(0.1)

        def rejected_after(mutate=None, stamp_offset_ns: int = 0, reason: str = "", pose=None) -> str:
            good_frame()
            before = graph.mapping_stats()
            base = sum(v for k, v in before.get("rejected", {}).items() if reason in k)
            sender.send(sender.now_ns() + stamp_offset_ns, mutate, pose)
            end = time.monotonic() + 20
            while time.monotonic() < end:
                stats = graph.mapping_stats()
                now = sum(v for k, v in stats.get("rejected", {}).items() if reason in k)
                if now > base:
                    return f"{reason} counted ({now}); " + ("warned" if f"frame rejected ({reason}" in graph.text()
                                                            else "no warning line")
                time.sleep(0.2)
            raise CaseFailed(f"no {reason} counted: {graph.mapping_stats().get('line', '')[-300:]}")

        def c20():
            check(ready and sender.matched(), f"graph not up: {graph.text()[-500:]}")
            for _ in range(8):
                sender.send()
            check(graph.wait_for(r"keyframes=[1-9]", 30), graph.mapping_stats().get("line", "no stats"))
            s = graph.mapping_stats()
            return f"fused {s['fused']}, keyframes {s['keyframes']}"
        c.run(20, "mapping: good frames are fused into keyframes (baseline)", "", c20)
        c.run(21, "mapping: a frame stamped an hour ahead", "",
              lambda: rejected_after(stamp_offset_ns=3600 * 10 ** 9, reason="STAMP_OFF_CLOCK"))

        def jump():
            import numpy as np
            pose = _sim_poses(60)[sender.index % 60].copy()
            pose[:3, 3] += np.array([5.0, 0.0, 0.0])
            return rejected_after(reason="POSE_JUMP", pose=pose)
        c.run(22, "mapping: a pose that jumps 5 m", "", jump)

        def nan_pose(msgs):
            msgs["pose"].pose.position.x = float("nan")
        c.run(23, "mapping: a NaN in the pose", "", lambda: rejected_after(nan_pose, reason="BAD_POSE"))

        def zero_quaternion(msgs):
            q = msgs["pose"].pose.orientation
            q.x = q.y = q.z = q.w = 0.0
        c.run(24, "mapping: a pose that is not a rotation (zero quaternion)", "",
              lambda: rejected_after(zero_quaternion, reason="BAD_POSE"))

        def nan_depth(msgs):
            import numpy as np

            from mllm3d_ros.ros.conversions import depth_to_image
            d = msgs["depth"]
            msgs["depth"] = depth_to_image(np.full((d.height, d.width), np.nan, np.float32), d.header, "32FC1")
        c.run(25, "mapping: depth that is all NaN", "", lambda: rejected_after(nan_depth, reason="NO_VALID_DEPTH"))

        def encoding(msgs):
            msgs["color"].encoding = "yuv422"
        c.run(26, "mapping: an unknown colour encoding", "", lambda: rejected_after(encoding, reason="BAD_ENCODING"))

        def small_depth(msgs):
            import numpy as np

            from mllm3d_ros.ros.conversions import depth_to_image
            msgs["depth"] = depth_to_image(np.full((60, 80), 1.5, np.float32), msgs["depth"].header, "16UC1")
        c.run(27, "mapping: depth smaller than colour", "", lambda: rejected_after(small_depth, reason="SIZE_MISMATCH"))

        def zero_k(msgs):
            msgs["info"].k = [0.0] * 9
        c.run(28, "mapping: a camera_info with K all zero", "", lambda: rejected_after(zero_k, reason="BAD_INTRINSICS"))

        def c29():
            good_frame()
            before = graph.mapping_stats()
            sender.send(sender.now_ns() - 2 * 10 ** 9)
            end = time.monotonic() + 20
            while time.monotonic() < end:
                s = graph.mapping_stats()
                late = s.get("dropped_late", 0) - before.get("dropped_late", 0)
                order = s.get("rejected", {}).get("STAMP_OUT_OF_ORDER", 0) - before.get("rejected", {}).get(
                    "STAMP_OUT_OF_ORDER", 0)
                if late > 0 or order > 0:
                    return f"not fused (sync late {late}, STAMP_OUT_OF_ORDER {order})"
                time.sleep(0.2)
            raise CaseFailed(f"not counted: {graph.mapping_stats().get('line', '')[-300:]}")
        c.run(29, "mapping: a frame stamped 2 s before the last", "", c29)

        def c30():
            import numpy as np

            from mllm3d_ros.ros.conversions import depth_to_image

            def metres(msgs):
                d = msgs["depth"]
                raw = np.frombuffer(d.data, np.uint16).reshape(d.height, d.width)
                msgs["depth"] = depth_to_image(raw.astype(np.float32) * 1e-6, d.header, "16UC1")  # 2 m -> "2 mm"
            good_frame()
            before = graph.mapping_stats()
            for _ in range(4):
                sender.send(mutate=metres)
            end = time.monotonic() + 20
            while time.monotonic() < end:
                s = graph.mapping_stats()
                if s.get("rejected", {}).get("NO_DEPTH_IN_RANGE", 0) >= 4:
                    break
                time.sleep(0.2)
            s = graph.mapping_stats()
            check(s.get("rejected", {}).get("NO_DEPTH_IN_RANGE", 0) >= 4 and s["fused"] == before["fused"],
                  f"counted as fused or not counted: {s.get('line', '')[-300:]}")
            text = graph.text()
            check(text.count("frame rejected (NO_DEPTH_IN_RANGE)") == 1 and "metres written as uint16" in text,
                  "not warned exactly once with the cause")
            for _ in range(3):
                sender.send()
            check(graph.wait_for(r"fused=%d\b" % (before["fused"] + 3), 30) or graph.mapping_stats()["fused"] >
                  before["fused"], "good frames after it were not fused")
            return "NO_DEPTH_IN_RANGE x4, said once with the cause, not fused; good frames fused after"
        c.run(30, "mapping: depth in metres written as uint16 (16UC1)", "item 6", c30)

        saved = work / "map_ok"

        def blocks() -> int:
            s = graph.mapping_stats()
            m = re.search(r"blocks=(\d+)", s.get("line", ""))
            return int(m.group(1)) if m else -1

        def c31():
            r = services.call(MapFile, "/mllm3d/mapping/save_map", MapFile.Request(path=str(saved)))
            check(r.success and (saved / "tsdf.npz").exists(), r.message)
            return r.message
        c.run(31, "map: save", "", c31)

        def load_refused(variant: str, corrupt: Callable[[Path], None], expected: str):
            def fn():
                folder = work / f"map_{variant}"
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(saved, folder)
                corrupt(folder)
                before = blocks()
                r = services.call(MapFile, "/mllm3d/mapping/load_map", MapFile.Request(path=str(folder)))
                time.sleep(1.5)  # a statistics line after it
                check(not r.success and expected in r.message, f"success={r.success}: {r.message}")
                check(blocks() == before, f"the map changed: {before} -> {blocks()} blocks")
                return r.message[:150]
            return fn

        c.run(32, "map: load a folder that does not exist", "",
              load_refused("missing", lambda f: shutil.rmtree(f), "map.json is missing"))

        def truncate(folder: Path):
            data = (folder / "tsdf.npz").read_bytes()
            (folder / "tsdf.npz").write_bytes(data[: len(data) // 2])
        c.run(33, "map: load a truncated tsdf.npz", "", load_refused("truncated", truncate, "TSDF file"))

        def flip(folder: Path):
            import zipfile
            path = folder / "tsdf.npz"
            with zipfile.ZipFile(path) as archive:
                info = max(archive.infolist(), key=lambda i: i.file_size)
            raw = bytearray(path.read_bytes())
            start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28],
                                                             "little") + \
                int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
            middle = start + info.compress_size // 2
            raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
            path.write_bytes(bytes(raw))
        c.run(34, "map: load a tsdf.npz with bytes flipped inside", "item 3",
              load_refused("flipped", flip, "CRC"))

        def older(folder: Path):
            meta = json.loads((folder / "map.json").read_text())
            meta["version"] = 0
            meta.pop("written_by", None)
            (folder / "map.json").write_text(json.dumps(meta))
        c.run(35, "map: load a map of an older format version", "item 3",
              load_refused("older", older, "map format version 0, written by an older mllm3d_ros"))

        def c36():
            r = services.call(MapFile, "/mllm3d/mapping/load_map", MapFile.Request(path=str(saved)))
            check(r.success, r.message)
            return r.message
        c.run(36, "map: load the saved folder", "", c36)

        def c37():
            end = time.monotonic() + 120
            out = cli("describe", "--wait", "30")
            while not re.search(r"\(([1-9]\d*) keyframes in the memory\)", out.stdout) and time.monotonic() < end:
                for _ in range(3):
                    sender.send()
                time.sleep(2.0)
                out = cli("describe", "--wait", "30")
            check(re.search(r"\(([1-9]\d*) keyframes in the memory\)", out.stdout) is not None,
                  f"the memory took no keyframe: {out.stdout[:200]}")
            r = services.call(Trigger, "/mllm3d/mapping/reset", Trigger.Request())
            check(r.success, r.message)
            out = cli("describe", "--wait", "30")
            first = out.stdout.splitlines()[0] if out.stdout else out.stderr
            check(first == "0 of 0 confirmed objects (0 keyframes in the memory)", first)
            return first
        c.run(37, "describe after ~/reset", "item 8", c37)

        def c38():
            proc = subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", "describe", "--wait", "30"], env=env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
            proc.stdout.close()  # the reader is gone before the first line (`| head -1` a moment later)
            err = proc.stderr.read()
            code = proc.wait(60)
            check(err.strip() == "" and code in (0, 141), f"exit {code}: {err[-300:]}")
            return f"exit {code}, nothing on stderr"
        c.run(38, "describe | head -1 (the reader goes away)", "smaller", c38)

        def c39():
            check(KITCHEN.is_dir(), f"{KITCHEN} is absent")
            before = graph.mapping_stats()
            proc = subprocess.run([sys.executable, "-m", "mllm3d_ros.cli", "replay", str(KITCHEN), "--stride", "4"],
                                  env=env(), capture_output=True, text=True, timeout=180, cwd=str(ROOT))
            m = re.search(r"replay finished: (\d+) frames published", proc.stdout + proc.stderr)
            check(proc.returncode == 0 and m is not None, (proc.stdout + proc.stderr)[-300:])
            published = int(m.group(1))
            time.sleep(3.0)  # two statistics lines
            s = graph.mapping_stats()
            got = {k: s["messages"].get(k, 0) - before["messages"].get(k, 0) for k in ("color", "depth", "pose")}
            lost = {k: s["lost_in_transport"].get(k, 0) - before.get("lost_in_transport", {}).get(k, 0)
                    for k in ("color", "depth", "pose")}
            accounted = all(got[k] + lost[k] == published for k in got)
            check(accounted, f"published {published}, received {got}, reported lost {lost}")
            return f"published {published}; received {got}; lost in transport {lost}"
        c.run(39, "replay -> mapping: every published frame accounted for", "smaller", c39)

        def c40():
            text = graph.text()
            failed = len(re.findall(r"proposals failed for keyframe", text))
            bypass = [line for line in text.splitlines()
                      if re.search(r"proposals (failed|wait)|frame gate re-anchored|fusion failed|reset listener",
                                   line) and not line.startswith("[")]
            check(failed == 0 and not bypass, f"{failed} proposal failures; lines outside the ROS logger: {bypass[:2]}")
            return "no proposal failure (the backend loaded meanwhile); core lines through the ROS logger"
        c.run(40, "logs: proposal failures while loading, lines outside the ROS logger", "smaller", c40)

        def c41():
            code = graph.stop(signal.SIGINT)
            text = graph.text()
            check(code == 130 and "[launch] SIGINT: stopping every process" in text and quiet(text),
                  f"exit {code}: {text[-400:]}")
            return "exit 130"
        c.run(41, "launch: Ctrl-C", "item 2", c41)
    finally:
        if graph.proc.poll() is None:
            graph.stop(signal.SIGINT, 20)
        if graph.proc.poll() is None:
            os.killpg(graph.proc.pid, signal.SIGKILL)


# --- group B: the graph with the simulator --------------------------------------------------------------
def group_b(c: Campaign, work: Path, queries: int) -> None:
    from mllm3d_ros.core.types import QueryStatus
    from mllm3d_ros.ros.client import QueryClient
    from mllm3d_ros.ros import query_node
    RESULT_TIMEOUT_S = getattr(query_node, "RESULT_TIMEOUT_S", 10)  # noqa: N806 -- as the node names it

    params = params_file(work, "graph_b", simulator={"seed": 3, "num_frames": 60, "rate_hz": 8.0, "loop": False})
    graph = Graph(work, "graph_b", "source:=simulator", f"params_file:={params}")
    client = QueryClient(node_name="fault_campaign_client")
    status_name = {s.value: s.name for s in QueryStatus}
    try:
        up = client.wait_for_server(180.0) and graph.wait_for(r"loaded in", 240) and \
            graph.wait_for(r"trajectory finished", 240)
        if up:  # the memory catches up with the last keyframes
            graph.wait_for(r"memory instances=\d+ confirmed=[1-9]", 120)
            time.sleep(5.0)

        def ask(text: str, **kw):
            accepted, result = client.send(text, timeout_s=120.0, **kw)
            check(accepted, f"goal '{text}' rejected")
            return result

        def c42():
            check(up, f"graph not up: {graph.text()[-400:]}")
            r = ask("the chair")
            check(r.error_code == QueryStatus.SUCCESS, r.error_message)
            return f"SUCCESS {r.objects[0].label}, views {r.views_used}"
        c.run(42, "query: the chair", "", c42)

        def c43():
            r = ask(TWO_D)
            check(r.error_code in (QueryStatus.SUCCESS, QueryStatus.NOT_FOUND) and r.views_used > 0,
                  f"{status_name.get(r.error_code)}: {r.error_message}")
            return f"{status_name[r.error_code]} after the 2D model on {r.views_used} views"
        c.run(43, "query: one the 2D model must answer", "", c43)

        def c44():
            futures = [client.send_async(TWO_D), client.send_async(TWO_D)]
            handles = [client._wait(f, 30.0) for f in futures]
            for h in handles:
                if h.accepted:
                    client._wait(h.get_result_async(), 120.0)
            check(sorted(h.accepted for h in handles) == [False, True], f"{[h.accepted for h in handles]}")
            return "exactly one accepted"
        c.run(44, "query: two goals sent at the same instant (reject)", "", c44)

        def c45():
            segmenting = threading.Event()  # cancelled while the 2D model works (a feedback stage), not after a guess
            accepted, result = client.send(TWO_D, max_views=16, timeout_s=120.0, cancel_when=segmenting,
                                           feedback=lambda s, _p: segmenting.set() if s.startswith("segmenting view")
                                           else None)
            check(accepted and result.error_code == QueryStatus.CANCELED, f"{status_name.get(result.error_code)}: "
                  f"{result.error_message}")
            return result.error_message[:100]
        c.run(45, "query: a client cancels its running goal", "", c45)

        def c46():
            r = ask("the chair", target_frame="nowhere_frame")
            check(r.error_code == QueryStatus.INVALID_GOAL and "nowhere_frame" in r.error_message, r.error_message)
            return r.error_message[:100]
        c.run(46, "query: a target_frame TF does not know", "", c46)

        def c47():
            r = ask("x" * 2001)
            check(r.error_code == QueryStatus.INVALID_INSTRUCTION and "2000" in r.error_message, r.error_message)
            return r.error_message
        c.run(47, "query: a 2001-character instruction over the action", "", c47)

        def c48():
            pid = graph.pid("perception_node")

            def rss_mb() -> float:
                text = Path(f"/proc/{pid}/status").read_text()
                return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024.0
            rss = [rss_mb()]
            for _ in range(3):  # the first batch warms up (allocator pools, DDS buffers); the last must not grow
                for _ in range(queries):
                    ask("the chair")
                # Finished results are kept result_timeout (10 s) for late requests: measured after it.
                time.sleep(RESULT_TIMEOUT_S + 2.0)
                rss.append(rss_mb())
            trend = " -> ".join(f"{r:.0f}" for r in rss)
            check(rss[3] - rss[2] < 10.0, f"perception RSS {trend} MB over 3 x {queries} queries")
            return f"perception RSS {trend} MB over 3 x {queries} queries"
        c.run(48, f"query: 3 x {queries} queries with flat memory", "", c48)

        def c49():
            for attempt in range(3):
                proc = subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", "query", TWO_D, "--views",
                                         "16"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        cwd=str(ROOT))
                lines: list[str] = []
                threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
                end = time.monotonic() + 60
                while not any("segmenting view" in line for line in lines) and time.monotonic() < end \
                        and proc.poll() is None:
                    time.sleep(0.01)
                proc.send_signal(signal.SIGINT)
                code = proc.wait(60)
                err = proc.stderr.read()
                if code == 130:
                    check(err.strip().splitlines() == ["interrupted by SIGINT: goal canceled"] and quiet(err), err)
                    time.sleep(1.0)
                    check("CANCELED" in graph.text().rsplit(f"query '{TWO_D}'", 1)[-1][:200],
                          "the server did not end the goal CANCELED")
                    return f"exit 130, goal canceled (attempt {attempt + 1})"
            raise CaseFailed(f"exit {code}: {err[-300:]}")
        c.run(49, "query: Ctrl-C while the 2D model works", "item 2", c49)

        def c50():
            os.kill(graph.pid("segmentation_node"), signal.SIGKILL)
            r = ask(TWO_D)
            check(r.error_code == QueryStatus.BACKEND_UNAVAILABLE and r.elapsed_s <= 3.0 + 2.0,
                  f"{status_name.get(r.error_code)} after {r.elapsed_s:.1f} s: {r.error_message}")
            check(graph.wait_for(r"loaded in", 240, count=2), "not restarted")
            time.sleep(2.0)
            r = ask(TWO_D)
            check(r.error_code in (QueryStatus.SUCCESS, QueryStatus.NOT_FOUND) and r.views_used > 0, r.error_message)
            return f"BACKEND_UNAVAILABLE at once, restarted, answered again"
        c.run(50, "kill -9 of the segmentation node: restarted, queries answered again", "", c50)

        def c51():
            for _ in range(2):
                ask(TWO_D)  # 2D-model queries before the kill
            loads = len(re.findall(r"loaded in", graph.text()))
            os.kill(graph.pid("segmentation_node"), signal.SIGKILL)
            time.sleep(4.0)  # the campaign's timing: a query 4 s after the kill
            r = ask(TWO_D)
            check(r.error_code != QueryStatus.TIMEOUT and r.elapsed_s < 3.0 + 2.0 + 1.0,
                  f"{status_name.get(r.error_code)} after {r.elapsed_s:.1f} s: {r.error_message}")
            check(graph.wait_for(r"loaded in", 240, count=loads + 1), "not restarted")
            time.sleep(2.0)
            again = ask(TWO_D)
            check(again.error_code in (QueryStatus.SUCCESS, QueryStatus.NOT_FOUND), again.error_message)
            return (f"{status_name[r.error_code]} after {r.elapsed_s:.2f} s ({r.error_message[:80]}); then "
                    f"{status_name[again.error_code]}")
        c.run(51, "after 2D-model queries, kill -9 and a query 4 s later", "item 1", c51)

        def c52():
            code = graph.stop(signal.SIGTERM)
            text = graph.text()
            check(code == 143 and "[launch] SIGTERM: stopping every process" in text and quiet(text),
                  f"exit {code}: {text[-400:]}")
            return "exit 143, no traceback"
        c.run(52, "launch: SIGTERM", "item 2", c52)
    finally:
        client.close()
        if graph.proc.poll() is None:
            graph.stop(signal.SIGINT, 20)
        if graph.proc.poll() is None:
            os.killpg(graph.proc.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated case numbers (default: all 52)")
    parser.add_argument("--queries", type=int, default=230, help="queries of case 48")
    parser.add_argument("--budget-s", type=float, default=1800.0, help="cases left after this are SKIPPED")
    parser.add_argument("--domain", type=int, default=DEFAULT_DOMAIN, help="test-only ROS_DOMAIN_ID")
    parser.add_argument("--out", default="out/fault_campaign.json")
    args = parser.parse_args()
    # Set before rclpy is imported: this process and every child stay on this machine, on this domain.
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(args.domain))
    os.environ.pop("ROS_STATIC_PEERS", None)
    sys.path.insert(0, str(ROOT))
    only = {int(x) for x in args.only.split(",") if x.strip()} or None
    campaign = Campaign(args.budget_s, only)
    work = Path(tempfile.mkdtemp(prefix="mllm3d_fault_campaign_"))
    print(f"fault campaign: domain {args.domain}, discovery LOCALHOST, logs in {work}", flush=True)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    rclpy.init(args=["fault_campaign"])
    node = rclpy.create_node("fault_campaign")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        if campaign.wanted(range(1, 20)):
            group_cli(campaign, work)
        if campaign.wanted(range(20, 42)):
            group_a(campaign, work, node)
        if campaign.wanted(range(42, 53)):
            group_b(campaign, work, args.queries)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    ran = [r for r in campaign.results if r.verdict != "SKIP" or r.detail]
    counts = {v: sum(r.verdict == v for r in ran) for v in ("PASS", "FAIL", "SKIP")}
    print(f"\nverdicts: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP of {len(ran)} cases "
          f"in {time.monotonic() - campaign.start:.0f} s; logs in {work}")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"counts": counts, "seconds": round(time.monotonic() - campaign.start, 1),
                               "cases": [r.__dict__ for r in ran]}, indent=1))
    return 0 if counts["FAIL"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
