"""`mllm3d` subcommands: one-line errors and the documented exit codes (no ROS graph needed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from mllm3d_ros import cli

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mllm3d_ros.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=str(REPO_ROOT.parent))


def test_help_documents_the_exit_codes():
    text = cli.build_parser().format_help()
    for line in ("0  success", "1  answered, but not a success", "2  bad usage", "3  query/describe: no SegmentQuery server",
                 "4  query: the goal was rejected", "5  query: no result within --timeout"):
        assert line in text, text


@pytest.mark.parametrize("args, message", [
    (("segment", "--dataset", "/nonexistent/rec", "--instruction", "the table", "--out", "/tmp/x.ply"),
     "error: recording not found: /nonexistent/rec"),
    (("launch", "camera"), "error: launch arguments are name:=value, got 'camera'"),
    (("launch", "camra:=realsense"), "error: unknown launch argument 'camra'; did you mean 'camera'?"),
    (("query", "the mug", "--views", "-1"), "error: --views must be in [0, 65535]"),
    (("query", "the mug", "--target-frame", "base link"), "error: --target-frame: a frame id must be printable "
     "with no spaces"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    out = _cli(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr


def test_unknown_subcommand_is_a_usage_error():
    out = _cli("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


def test_an_instruction_with_bytes_that_are_not_utf8_is_refused_in_one_line(tmp_path):
    # A terminal in Latin-1: "café" arrives as b"caf\xe9". `query` crashed in rclpy.init with a traceback,
    # `segment` at the very end, in matplotlib, turning its answer into a failure.
    for args in (["query", b"caf\xe9 mug", "--wait", "1"],
                 ["segment", "--dataset", str(tmp_path), "--instruction", b"caf\xe9 mug", "--out",
                  str(tmp_path / "o.ply")]):
        out = subprocess.run([sys.executable, "-m", "mllm3d_ros.cli", *args], capture_output=True, timeout=120,
                             cwd=str(REPO_ROOT.parent))
        err = out.stderr.decode("utf-8", "replace").strip()
        assert out.returncode == 2 and err.splitlines() == [
            "error: instruction is not valid UTF-8 (byte 0xe9 at character 3): is the terminal's encoding UTF-8?"], err


def test_segment_stops_on_sigterm_during_fusion_with_one_line(redkitchen_dir, tmp_path, offline_detector_assets):
    out = tmp_path / "table.ply"
    proc = subprocess.Popen([sys.executable, "-m", "mllm3d_ros.cli", "segment", "--dataset", str(redkitchen_dir),
                             "--instruction", "the table", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(REPO_ROOT.parent))
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while b"fusing" not in b"".join(err) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert b"fusing" in b"".join(err), b"".join(err)
    proc.send_signal(signal.SIGTERM)  # during fusion: 250 frames take seconds
    code = proc.wait(60)
    reader.join(10)
    text = b"".join(err).decode()
    assert code == 143, text
    assert text.rstrip().splitlines()[-1] == "interrupted by SIGTERM: segment stopped" and "Traceback" not in text
    assert not out.with_suffix(".json").exists()
