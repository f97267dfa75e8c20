"""`mllm3d` subcommands: one-line errors and the documented exit codes (no ROS graph needed)."""

from __future__ import annotations

import subprocess
import sys

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
    (("launch", "camra:=realsense"), "error: unknown launch argument(s) ['camra']"),
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
