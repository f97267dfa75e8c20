"""Tests of one stage import the scene helpers of this folder and of other stages' tests (test_voting's
hand-built two-cube scene, test_object_memory's views): every folder of test/core goes on sys.path."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _folder in [_HERE, *sorted(p for p in _HERE.iterdir() if p.is_dir() and p.name != "__pycache__")]:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
