"""An approximate-time synchroniser of the project's own, used when `message_filters` is not importable.

N inputs, each a bounded queue of (stamp_ns, message). Whenever a message arrives it is tried as
the pivot of a match: every other input contributes the queued message nearest in time, and the set
is emitted if all stamps lie within `slop_ns` of each other (max - min <= slop_ns), which is the
acceptance rule of message_filters' ApproximateTimeSynchronizer with `slop`. After a match, the
matched messages and everything older in each queue are removed (older ones are counted as stale
drops); messages older than the last emitted match by more than `slop_ns` are refused (late), as
they could only form sets that go back in time. A full queue drops its oldest message.

Stamp poisoning: one set stamped an hour ahead must not make every later message late.
A message more than `max_stamp_jump_ns` older than the last match is not "late" but from another
timeline (a poisoned match, a looping bag): it is queued, and the sets it forms re-anchor the late
rule. When a queue is full and its newest message is more than `max_stamp_jump_ns` ahead of the
one before it, that outlier is dropped instead of the oldest real message. With a clock (`now_ns`, None on sim time) a message
further than `max_clock_offset_ns` from it is refused before it takes a queue slot.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import check_int, param, validate_fields


@dataclass(frozen=True)
class SyncConfig:
    """Inputs, tolerance and queue bound of the synchroniser."""

    num_inputs: int = 3
    slop_ns: int = param(20_000_000, range=(0, 1_000_000_000), unit="ns", doc="Colour, depth and pose stamps must agree within this.")
    queue_size: int = param(10, range=(1, 1000), doc="Messages kept per input while matching stamps.")
    max_stamp_jump_ns: int = param(5_000_000_000, range=(10_000_000, 3600_000_000_000), unit="ns",
                                   doc="Reject a frame stamped further than this from the newest accepted one.")
    max_clock_offset_ns: int = param(10_000_000_000, range=(10_000_000, 86400_000_000_000), unit="ns",
                                     doc="Not on sim time: reject a frame stamped further than this from the node's clock.")

    def __post_init__(self) -> None:
        check_int("num_inputs", self.num_inputs, 1, 16)
        validate_fields(self)
        check_int("max_stamp_jump_ns", self.max_stamp_jump_ns, max(1, self.slop_ns))


@dataclass(frozen=True, eq=False)
class MatchedSet:
    """One message per input, in input order, with their stamps."""

    stamps_ns: tuple[int, ...]
    messages: tuple[Any, ...]

    @property
    def stamp_ns(self) -> int:
        """The newest stamp of the set (what the fused frame is stamped with)."""
        return max(self.stamps_ns)


@dataclass(frozen=True)
class SyncStats:
    """Counters of the synchroniser."""

    matched: int
    dropped_queue_full: int
    dropped_stale: int
    dropped_late: int
    dropped_off_clock: int = 0
    dropped_ahead: int = 0


class ApproximateTimeSync:
    """Thread-safe approximate-time matching over `num_inputs` stamped streams."""

    def __init__(self, config: SyncConfig | None = None,
                 callback: Callable[[MatchedSet], None] | None = None,
                 now_ns: Callable[[], int] | None = None,
                 on_off_clock: Callable[[int, int, int], None] | None = None) -> None:
        """`on_off_clock(input_index, stamp_ns, now_ns)` is told of each message refused by the clock check."""
        self.config = config or SyncConfig()
        self._callback = callback
        self._now_ns = now_ns
        self._on_off_clock = on_off_clock
        self._lock = threading.Lock()
        self._queues: list[deque[tuple[int, Any]]] = [deque() for _ in range(self.config.num_inputs)]
        self._last_emitted_ns: int | None = None
        self._matched = self._full = self._stale = self._late = self._off_clock = self._ahead = 0

    def add(self, input_index: int, stamp_ns: int, message: Any) -> MatchedSet | None:
        """Queue one message; return (and pass to the callback) the set it completes, if any."""
        if not 0 <= input_index < self.config.num_inputs:
            raise IndexError(f"input_index {input_index} not in [0, {self.config.num_inputs})")
        now_ns = None if self._now_ns is None else int(self._now_ns())
        if now_ns is not None and abs(int(stamp_ns) - now_ns) > self.config.max_clock_offset_ns:
            with self._lock:
                self._off_clock += 1
            if self._on_off_clock is not None:
                self._on_off_clock(input_index, int(stamp_ns), now_ns)
            return None
        with self._lock:
            match = self._add_locked(input_index, int(stamp_ns), message)
        if match is not None and self._callback is not None:
            self._callback(match)  # outside the lock: the callback may be slow or re-enter add()
        return match

    def _add_locked(self, index: int, stamp_ns: int, message: Any) -> MatchedSet | None:
        cfg = self.config
        if (self._last_emitted_ns is not None
                and self._last_emitted_ns - cfg.max_stamp_jump_ns <= stamp_ns < self._last_emitted_ns - cfg.slop_ns):
            self._late += 1
            return None
        queue = self._queues[index]
        if len(queue) >= cfg.queue_size:
            if len(queue) >= 2 and queue[-1][0] - queue[-2][0] > cfg.max_stamp_jump_ns:
                queue.pop()  # a stamp far ahead of its own stream (poisoned): it goes, not real data
                self._ahead += 1
            else:
                queue.popleft()
                self._full += 1
        # Keep each queue sorted by stamp; arrivals are nearly always in order, so insert from the back.
        pos = len(queue)
        while pos > 0 and queue[pos - 1][0] > stamp_ns:
            pos -= 1
        queue.insert(pos, (stamp_ns, message))
        chosen: list[int] = []
        for i, q in enumerate(self._queues):
            if i == index:
                chosen.append(pos)
                continue
            if not q:
                return None
            chosen.append(min(range(len(q)), key=lambda k: abs(q[k][0] - stamp_ns)))
        stamps = [self._queues[i][k][0] for i, k in enumerate(chosen)]
        if max(stamps) - min(stamps) > self.config.slop_ns:
            return None
        messages = []
        for q, k in zip(self._queues, chosen):
            messages.append(q[k][1])
            self._stale += k
            for _ in range(k + 1):
                q.popleft()
        self._matched += 1
        self._last_emitted_ns = max(stamps)
        return MatchedSet(tuple(stamps), tuple(messages))

    @property
    def stats(self) -> SyncStats:
        with self._lock:
            return SyncStats(self._matched, self._full, self._stale, self._late, self._off_clock, self._ahead)

    def reset(self) -> None:
        """Empty every queue and forget the last match (counters are kept)."""
        with self._lock:
            for q in self._queues:
                q.clear()
            self._last_emitted_ns = None
