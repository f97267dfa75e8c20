"""benchmarks.open_set's scoring of the gate, on a stand-in backend (the real figures: the benchmark's JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.open_set import ABSENT, CALIBRATION, calibrate  # noqa: E402
from mllm3d_ros.core.query.open_set import Recognition, RecognitionStatus  # noqa: E402


class _Backend:
    """Knows chairs and mugs only."""

    def recognise(self, phrase):
        if phrase in ("seat", "cup", "mug"):
            return Recognition(RecognitionStatus.KNOWN, phrase, ("Chair",) if phrase == "seat" else ("Mug",))
        return Recognition(RecognitionStatus.UNKNOWN, phrase, (), ("Chair",))


def test_calibration_scores_kept_paraphrases_rejected_unknowns_and_classes():
    items = {"paraphrases": [{"text": "a seat", "class": "Chair", "split": "tune"},
                             {"text": "a cup", "class": "Chair", "split": "tune"},  # kept, wrong class
                             {"text": "an armchair", "class": "Chair", "split": "heldout"}],
             "unknown": [{"text": "the umbrella", "split": "tune"}, {"text": "the mug", "split": "heldout"}]}
    report = calibrate(_Backend(), items)
    tune, held = report["tune"], report["heldout"]
    assert (tune["paraphrases_kept"], tune["unknown_rejected"], tune["class_accuracy"]) == (1.0, 1.0, 0.5)
    assert (held["paraphrases_kept"], held["unknown_rejected"], held["precision_kept"]) == (0.0, 0.0, 0.0)
    assert [e["text"] for e in held["errors"]] == ["an armchair", "the mug"]


def test_the_calibration_set_and_the_absent_set_are_large_enough_and_split():
    items = json.loads(CALIBRATION.read_text())
    for kind in ("paraphrases", "unknown"):
        splits = [i["split"] for i in items[kind]]
        assert len(splits) >= 60 and splits.count("heldout") >= 0.4 * len(splits) and set(splits) == {"tune", "heldout"}
    assert all(i["class"] for i in items["paraphrases"])
    assert len(ABSENT) >= 15 and {k for _, k in ABSENT} == {"unknown", "known class"}
