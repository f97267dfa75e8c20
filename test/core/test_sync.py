"""Tests of the project's own approximate-time synchroniser."""

from __future__ import annotations

import threading

import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.sync import ApproximateTimeSync, SyncConfig

MS = 1_000_000


def test_matches_within_slop_in_input_order():
    sync = ApproximateTimeSync(SyncConfig(num_inputs=3, slop_ns=10 * MS))
    assert sync.add(0, 100 * MS, "c") is None
    assert sync.add(1, 104 * MS, "d") is None
    match = sync.add(2, 108 * MS, "p")
    assert match is not None
    assert match.messages == ("c", "d", "p") and match.stamps_ns == (100 * MS, 104 * MS, 108 * MS)
    assert match.stamp_ns == 108 * MS
    assert sync.stats.matched == 1


def test_no_match_outside_slop_and_stale_messages_dropped():
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=5 * MS))
    sync.add(0, 100 * MS, "c100")
    assert sync.add(1, 120 * MS, "d120") is None  # 20 ms apart
    sync.add(0, 133 * MS, "c133")
    match = sync.add(1, 135 * MS, "d135")
    assert match.messages == ("c133", "d135")
    stats = sync.stats
    assert stats.matched == 1 and stats.dropped_stale == 2  # c100 and d120 can no longer match


def test_picks_the_nearest_candidate_and_out_of_order_arrival():
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=20 * MS))
    sync.add(0, 100 * MS, "a")
    sync.add(0, 90 * MS, "b")  # arrives late but still sorted into the queue
    match = sync.add(1, 92 * MS, "x")
    assert match.messages == ("b", "x")


def test_late_messages_are_refused():
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=5 * MS))
    sync.add(0, 100 * MS, "a")
    sync.add(1, 101 * MS, "b")
    assert sync.add(0, 50 * MS, "old") is None
    assert sync.stats.dropped_late == 1


def test_queue_is_bounded_and_drops_oldest():
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=1 * MS, queue_size=3))
    for i in range(5):
        sync.add(0, i * 100 * MS, i)
    assert sync.stats.dropped_queue_full == 2
    assert sync.add(1, 100 * MS, "x") is None  # stamp 100 ms was dropped with the oldest
    assert sync.add(1, 400 * MS, "y").messages == (4, "y")


def test_callback_and_threads():
    got = []
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=2 * MS, queue_size=1000), callback=got.append)

    def feed(index):
        for i in range(200):
            sync.add(index, i * 33 * MS, (index, i))

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == sync.stats.matched == 200
    for match in got:
        assert match.messages[0][1] == match.messages[1][1]  # only equal-index pairs are within slop
    assert [m.stamp_ns for m in got] == sorted(m.stamp_ns for m in got)


def test_bad_index_and_config():
    with pytest.raises(IndexError):
        ApproximateTimeSync(SyncConfig(num_inputs=2)).add(2, 0, None)
    for field, value in [("num_inputs", 0), ("slop_ns", -1), ("queue_size", 0)]:
        with pytest.raises(ConfigError, match=field):
            SyncConfig(**{field: value})
