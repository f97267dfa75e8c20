"""Tests of the project's own approximate-time synchroniser."""

from __future__ import annotations

import threading

import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.mapping.sync import ApproximateTimeSync, SyncConfig

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


S = 1_000_000_000
HOUR = 3600 * S


def test_one_future_set_does_not_make_every_real_message_late():
    # A former bug: the late rule anchored on a set stamped an hour ahead refused everything after it.
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=10 * MS, max_stamp_jump_ns=2 * S))
    assert sync.add(0, 100 * MS, "c0") is None and sync.add(1, 100 * MS, "d0") is not None
    sync.add(0, HOUR, "c_future")
    assert sync.add(1, HOUR, "d_future").stamps_ns == (HOUR, HOUR)  # emitted: the frame gate judges it
    matches = []
    for k in range(1, 6):
        sync.add(0, 100 * MS + k * 100 * MS, f"c{k}")
        matches.append(sync.add(1, 100 * MS + k * 100 * MS, f"d{k}"))
    assert [m.messages for m in matches] == [(f"c{k}", f"d{k}") for k in range(1, 6)]
    # and the ordinary late rule still applies on the real timeline
    assert sync.add(0, 300 * MS, "old") is None and sync.stats.dropped_late == 1


def test_a_lone_future_message_is_evicted_before_real_ones_when_the_queue_fills():
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=10 * MS, queue_size=3, max_stamp_jump_ns=2 * S))
    sync.add(0, 100 * MS, "c0")
    sync.add(0, HOUR, "c_future")
    sync.add(0, 200 * MS, "c1")
    sync.add(0, 300 * MS, "c2")  # full: the future outlier goes, all real colour frames stay
    stats = sync.stats
    assert stats.dropped_ahead == 1 and stats.dropped_queue_full == 0
    assert [sync.add(1, t * MS, f"d{k}").messages[0] for k, t in enumerate((100, 200, 300))] == ["c0", "c1", "c2"]


def test_with_a_clock_messages_far_from_it_are_refused():
    now, refused = [50 * S], []
    sync = ApproximateTimeSync(SyncConfig(num_inputs=2, slop_ns=10 * MS, max_clock_offset_ns=3 * S),
                               now_ns=lambda: now[0], on_off_clock=lambda *args: refused.append(args))
    assert sync.add(0, 50 * S + HOUR, "c") is None and sync.add(1, 50 * S + HOUR, "d") is None
    assert sync.add(0, 50 * S - 20 * MS, "c") is None
    assert sync.add(1, 50 * S - 20 * MS, "d").messages == ("c", "d")
    stats = sync.stats
    assert stats.dropped_off_clock == 2 and stats.matched == 1
    assert refused == [(0, 50 * S + HOUR, 50 * S), (1, 50 * S + HOUR, 50 * S)]


@pytest.mark.parametrize("field, value", [("max_stamp_jump_ns", 5 * MS), ("max_clock_offset_ns", 0)])
def test_stamp_limits_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        SyncConfig(slop_ns=10 * MS, **{field: value})
