"""`mllm3d segment` answers several instructions on one map, saves the map and the object memory, and answers
again from them without fusing or proposing; a saved map that does not fit the recording, the
settings or this build, a missing instructions file, an empty instruction: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mllm3d_ros.cli import main as mllm3d

sys.path.insert(0, str(Path(__file__).resolve().parent / "core"))
from rgbd_scene import orbit_poses, room_frame  # noqa: E402


def _room_recording(path: Path, n: int = 5) -> Path:
    from mllm3d_ros.sources.dataset import write_7scenes
    frames = [room_frame((k + 1) * 33_000_000, pose) for k, pose in enumerate(orbit_poses(n, yaw_step_rad=0.3))]
    return write_7scenes(frames, path, color_format="jpg")


def _segment(capsys, *args: str) -> tuple[int, str, str]:
    code = mllm3d(["segment", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, offline_detector_assets):
    """One recording fused once with two instructions (one from a file) and saved."""
    root = tmp_path_factory.mktemp("reuse")
    rec = _room_recording(root / "rec")
    (root / "instructions.txt").write_text("# what to look for\n\nthe chair\n")
    code = mllm3d(["segment", "--dataset", str(rec), "--instruction", "the table", "--instructions-file",
                   str(root / "instructions.txt"), "--out", str(root / "first" / "o.ply"), "--no-render",
                   "--save-map", str(root / "map")])
    assert code in (0, 1)
    return root, rec


def test_several_instructions_one_fusion_then_answered_again_from_the_saved_map(saved_run, capsys):
    root, rec = saved_run
    first = json.loads((root / "first" / "o_summary.json").read_text())
    assert [r["instruction"] for r in first["results"]] == ["the table", "the chair"]
    assert [Path(r["ply"]).name for r in first["results"]] == ["o_1_the-table.ply", "o_2_the-chair.ply"]
    assert all(Path(r["json"]).is_file() and r["png"] is None for r in first["results"])  # --no-render
    assert first["map"]["saved_to"] == str(root / "map") and first["timings_s"]["fuse"] > 0
    for name in ("map.json", "tsdf.npz", "keyframes.npz", "memory.json", "memory.npz", "segment.json"):
        assert (root / "map" / name).is_file(), name

    code, out, err = _segment(capsys, "--dataset", str(rec), "--instruction", "the table", "--instruction",
                              "the chair", "--out", str(root / "second" / "o.ply"), "--no-render", "--load-map",
                              str(root / "map"))
    assert code in (0, 1), out + err
    assert "fusing" not in err and "object memory:" not in err  # no fusion, no proposals: the progress bars
    second = json.loads((root / "second" / "o_summary.json").read_text())
    assert second["map"]["loaded_from"] == str(root / "map") and second["timings_s"]["fuse"] == 0
    assert second["map"]["frames_fused"] == first["map"]["frames_fused"] == 5
    for a, b in zip(first["results"], second["results"]):
        assert (a["status"], a["label"], a["confidence"]) == (b["status"], b["label"], b["confidence"])
        ja, jb = json.loads(Path(a["json"]).read_text()), json.loads(Path(b["json"]).read_text())
        assert (ja["message"], ja["objects"], ja["map_points"]) == (jb["message"], jb["objects"], jb["map_points"])


def _files(folder: Path) -> list[Path]:
    """The files under `folder` (the output folder may have been made by the write check; nothing in it)."""
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _tamper(kind: str, root: Path, rec: Path, tmp_path: Path) -> tuple[list[str], str]:
    """Arguments of a bad run and the start of its one error line."""
    import shutil
    out = ["--out", str(tmp_path / "bad" / "o.ply")]
    if kind == "other recording":
        other = shutil.copytree(rec, tmp_path / "rec2")
        pose = other / "frame-000001.pose.txt"
        pose.write_text(pose.read_text() + "\n")  # the same numbers, other bytes
        return ["--dataset", str(other), "--instruction", "the table", "--load-map", str(root / "map"), *out], \
            "error: --load-map"
    if kind in ("other stride", "other backend voxel"):
        extra = ["--stride", "2"] if kind == "other stride" else ["--voxel-size", "0.03"]
        return ["--dataset", str(rec), "--instruction", "the table", "--load-map", str(root / "map"), *extra, *out], \
            "error: --load-map"
    folder = shutil.copytree(root / "map", tmp_path / "map")
    args = ["--dataset", str(rec), "--instruction", "the table", "--load-map", str(folder), *out]
    if kind == "older session":
        meta = json.loads((folder / "segment.json").read_text())
        meta["version"] = 0
        (folder / "segment.json").write_text(json.dumps(meta))
        return args, "error: --load-map"
    if kind == "older memory":
        meta = json.loads((folder / "memory.json").read_text())
        meta["version"] = 0
        (folder / "memory.json").write_text(json.dumps(meta))
        return args, "error: "
    if kind == "corrupt memory":
        (folder / "memory.npz").write_bytes(b"PK garbage")
        return args, "error: memory file"
    if kind == "unreadable map":
        (folder / "map.json").write_text("{")
        return args, "error: "
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, words", [
    ("other recording", "the recording's files differ"),
    ("other stride", "--stride differs"),
    ("other backend voxel", "--voxel-size differs"),
    ("older session", "format version 0"),
    ("older memory", "memory format version 0"),
    ("corrupt memory", "not a readable .npz"),
    ("unreadable map", "is not valid JSON"),
])
def test_a_saved_map_that_does_not_fit_is_refused_in_one_line_and_nothing_is_written(saved_run, capsys, tmp_path,
                                                                                      kind, words):
    root, rec = saved_run
    args, start = _tamper(kind, root, rec, tmp_path)
    code, out, err = _segment(capsys, *args)
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(start) and words in lines[0], err
    assert "Traceback" not in err and not _files(tmp_path / "bad")


@pytest.mark.parametrize("args, words", [
    (["--instructions-file", "/nonexistent/instructions.txt"], "--instructions-file /nonexistent/instructions.txt: cannot read it"),
    (["--instruction", "the table", "--instruction", "  "], "instruction 2: instruction is empty"),
    (["--instructions-file", "EMPTY"], "no instruction in it"),
    (["--instruction", "the table", "--save-map", "A", "--load-map", "A"], "not both"),
    (["--instruction", "the table", "--load-map", "/nonexistent/map"], "--load-map /nonexistent/map: no such folder"),
    (["--instruction", "the table", "--save-map", "NOTAMAP"], "holds files that are not a saved map"),
    (["--out", "X"], "give an instruction"),
])
def test_bad_requests_fail_before_the_recording_is_read(tmp_path, capsys, monkeypatch, args, words):
    from mllm3d_ros import offline_segment
    monkeypatch.setattr(offline_segment, "open_recording", lambda *_a, **_k: pytest.fail("opened the recording"))
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "notamap").mkdir()
    (tmp_path / "notamap" / "thesis.tex").write_text("keep me")
    subst = {"EMPTY": str(tmp_path / "empty.txt"), "A": str(tmp_path / "a"), "NOTAMAP": str(tmp_path / "notamap")}
    args = [subst.get(a, a) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o" / "o.ply")]
    code, _, err = _segment(capsys, "--dataset", str(tmp_path), *[a if a != "X" else str(tmp_path / "o" / "o.ply")
                                                                  for a in args])
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert (tmp_path / "notamap" / "thesis.tex").read_text() == "keep me" and not _files(tmp_path / "o")
    assert not (tmp_path / "a").exists()
