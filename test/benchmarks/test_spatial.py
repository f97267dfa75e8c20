"""benchmarks.spatial's quick mode: one relational room through the parser, the resolver on ground-truth
boxes, the product path from simulated proposals at p = 0.3, and the captions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.spatial import main  # noqa: E402


def test_quick_mode_writes_the_relational_measures_and_meets_them_on_one_room(tmp_path):
    out = tmp_path / "spatial.json"
    assert main(["--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"] and report["cpu_count"] >= 1 and report["rooms"] == 1
    gt = report["resolver_on_gt_boxes"]
    assert gt["queries"] == 16 and gt["accuracy"] == 1.0 and gt["errors"] == []
    assert gt["accuracy_viewer_turned_30deg"] == 1.0  # the layouts hold within 30 degrees of the viewer
    sim = report["sim_p03"]
    assert sim["queries"] == 16 and sim["acc50"] >= 0.85 and sim["acc25"] >= sim["acc50"]
    assert 0.5 <= sim["miou"] <= 1.0
    assert sim["answered_from_memory"] >= 14 and report["latency_ms_median_from_memory"] is not None
    assert report["viewer_yaw_from_stated_deg_max"] < 1.0
    assert report["describe"]["sim_p03"]["fraction"] >= 0.9 and report["describe"]["sim_p03"]["gt_objects"] == 11
    assert report["offline"] is None and report["describe"]["sim_p03_furnished_rooms"] is None
    kinds = {q["kind"] for q in report["queries"]}
    assert {"on", "under", "near", "left of", "right of", "between", "nth", "biggest", "in front of", "behind",
            "not"} <= kinds
