"""The worker that feeds the object memory: proposals on each new keyframe, off the fusion thread.

Fusion must never wait for the 2D model: `submit` (called by the ingest worker when a keyframe is
added) only appends a keyframe id to a bounded queue; when the queue is full the oldest id is dropped
and counted (the newest keyframes matter most, and a dropped keyframe costs only some evidence). A
failing backend (model error, out of memory) is logged and counted, and the keyframe is retried after
`retry_delay_s`, at most `max_retries` times; fusion and queries go on meanwhile. A backend that is not
ready (`backend_ready()` false: still loading its model, restarting, gone) is no failure: the worker
waits for it, and a call refused as BackendUnavailable puts its keyframe back at the front of the queue
without spending a retry (counted in `backend_unavailable`, logged once per outage).

Every proposal source goes through the one `propose_fn` (`map_objects.chain_proposers` joins a detector's
and the map's class-agnostic proposer) and the one `ObjectMemory.integrate`, with the support surfaces a
proposer found in the view.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..config import check_int, check_range
from .object_memory import ObjectMemory
from ..segmentation import BackendUnavailable
from ..types import BackendView, Keyframe, ViewPredictions, keyframe_view

_LOG = logging.getLogger(__name__)

ProposeFn = Callable[[Sequence[BackendView]], Sequence[ViewPredictions]]
KeyframeLookup = Callable[[int], "Keyframe | None"]


@dataclass(frozen=True)
class ProposalWorkerConfig:
    """queue_size: keyframes waiting, [1, 10000]. max_retries: per keyframe after a failure, [0, 100].
    retry_delay_s: wait before a retry, [0, 3600]. niceness: the worker thread's scheduling niceness
    added on Linux, [0, 19]: with an in-process backend the proposals then take the CPU fusion leaves
    (fusion must keep up with the camera; the memory can lag a few seconds)."""

    queue_size: int = 64
    max_retries: int = 3
    retry_delay_s: float = 5.0
    niceness: int = 10

    def __post_init__(self) -> None:
        check_int("queue_size", self.queue_size, 1, 10_000)
        check_int("max_retries", self.max_retries, 0, 100)
        check_range("retry_delay_s", self.retry_delay_s, 0.0, 3600.0)
        check_int("niceness", self.niceness, 0, 19)


@dataclass(frozen=True)
class ProposalStats:
    """Counters; lag is from `submit` to the keyframe's proposals being in the memory (ms)."""

    submitted: int
    integrated: int
    dropped_queue_full: int
    evicted_before_proposal: int
    failures: int
    gave_up: int
    queued: int
    lag_ms_p50: float
    lag_ms_max: float
    backend_unavailable: int = 0


class ProposalWorker:
    """One thread: keyframe id -> propose_fn -> memory.integrate."""

    def __init__(self, memory: ObjectMemory, propose_fn: ProposeFn, lookup: KeyframeLookup,
                 config: ProposalWorkerConfig | None = None, backend_ready: Callable[[], bool] | None = None) -> None:
        """`backend_ready`: False while the backend cannot answer (the worker then waits, polling it)."""
        self.memory = memory
        self.config = config or ProposalWorkerConfig()
        self._propose = propose_fn
        self._lookup = lookup
        self._backend_ready = backend_ready
        self._outage = False  # logged once per outage
        # `reset` (a map reset or load) bumps the generation under this lock: proposals computed for a
        # keyframe of the previous map are dropped instead of being integrated into the new memory.
        self._integrate_lock = threading.Lock()
        self._generation = 0
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, float, int, float]] = deque()  # (id, submitted_at, tries, not_before)
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lags_ms: deque[float] = deque(maxlen=500)
        self._counts = dict(submitted=0, integrated=0, dropped=0, evicted=0, failures=0, gave_up=0, unavailable=0)

    def submit(self, keyframe_id: int) -> bool:
        """Queue a keyframe (cheap; called from the ingest thread). False when the oldest was dropped."""
        with self._cond:
            self._counts["submitted"] += 1
            dropped = len(self._queue) >= self.config.queue_size
            if dropped:
                self._queue.popleft()
                self._counts["dropped"] += 1
            self._queue.append((int(keyframe_id), time.monotonic(), 0, 0.0))
            self._cond.notify_all()
        return not dropped

    def process_one(self, keyframe_id: int, submitted_at: float | None = None) -> bool:
        """Propose on one keyframe and integrate it, in the calling thread; True on success."""
        generation = self._generation
        keyframe = self._lookup(keyframe_id)
        if keyframe is None:  # evicted from the store before its turn
            with self._cond:
                self._counts["evicted"] += 1
            return True
        views = self._propose([keyframe_view(keyframe)])
        if len(views) != 1 or views[0].keyframe_id != keyframe_id:
            raise RuntimeError(f"proposal backend answered {len(views)} views for keyframe {keyframe_id}")
        with self._integrate_lock:
            if generation != self._generation:  # the map was reset or loaded meanwhile
                return True
            self.memory.integrate(keyframe, views[0].predictions, views[0].supports)
        with self._cond:
            self._counts["integrated"] += 1
            if submitted_at is not None:
                self._lags_ms.append((time.monotonic() - submitted_at) * 1e3)
        return True

    def reset(self, then: Callable[[], None] | None = None) -> None:
        """Forget the queue and the memory (a map reset or load); a proposal in flight is not integrated.
        `then()` runs before any later integration (e.g. to read the memory's counters at the reset)."""
        with self._integrate_lock:
            self._generation += 1
            with self._cond:
                self._queue.clear()
            self.memory.reset()
            if then is not None:
                then()

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="mllm3d_proposals", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            thread, self._thread = self._thread, None
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout_s)

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Block until nothing is queued or in progress (retries waiting count as queued); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def _next_locked(self) -> tuple[int, float, int, float] | None:
        if self._backend_ready is not None and self._queue and not self._backend_ready():
            return None
        now = time.monotonic()
        for i, item in enumerate(self._queue):
            if item[3] <= now:
                del self._queue[i]
                return item
        return None

    def _run(self) -> None:
        if self.config.niceness and hasattr(os, "setpriority"):
            try:  # Linux: a thread is a task of its own, so this lowers this thread only
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.niceness)
            except OSError as exc:
                _LOG.warning("could not lower the proposal worker's priority: %s", exc)
        while True:
            with self._cond:
                item = None
                while not self._stop:
                    item = self._next_locked()
                    if item is not None:
                        break
                    wait = min((it[3] for it in self._queue), default=None)
                    if wait is not None and self._backend_ready is not None:
                        wait = min(wait, time.monotonic() + 0.1)  # readiness has no event here: poll it
                    self._cond.wait(None if wait is None else max(0.01, wait - time.monotonic()))
                if self._stop:
                    return
                self._busy = True
            kf_id, submitted_at, tries, _ = item
            try:
                self.process_one(kf_id, submitted_at)
                self._outage = False
            except BackendUnavailable as exc:  # not the keyframe's fault: back to the front, no retry spent
                with self._cond:
                    self._counts["unavailable"] += 1
                    self._queue.appendleft((kf_id, submitted_at, tries, 0.0))
                    self._cond.wait(0.1)  # not a tight loop against a backend that keeps refusing
                if not self._outage:
                    self._outage = True
                    _LOG.warning("proposals wait for the segmentation backend: %s", exc)
            except Exception as exc:  # the model failed: count, log, retry later; never stop fusion
                with self._cond:
                    self._counts["failures"] += 1
                    if tries < self.config.max_retries:
                        self._queue.append((kf_id, submitted_at, tries + 1,
                                            time.monotonic() + self.config.retry_delay_s))
                    else:
                        self._counts["gave_up"] += 1
                _LOG.warning("proposals failed for keyframe %d (try %d of %d): %s", kf_id, tries + 1,
                             self.config.max_retries + 1, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    @property
    def stats(self) -> ProposalStats:
        with self._cond:
            c = self._counts
            lags = np.asarray(self._lags_ms) if self._lags_ms else np.zeros(1)
            return ProposalStats(c["submitted"], c["integrated"], c["dropped"], c["evicted"], c["failures"],
                                 c["gave_up"], len(self._queue), float(np.median(lags)), float(lags.max()),
                                 c["unavailable"])
