"""Bounded ingestion queue and the worker that validates, fuses and selects keyframes.

Sensor callbacks only `submit` frames; they never fuse. The queue holds at most `queue_size` frames
and, when full, drops the *oldest* queued frame (newest wins: a map that lags the camera is worth
less than one that skips a frame), counting each drop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..config import check_int, param, validate_fields
from .frame_checks import FrameGate, FrameRejected, RejectReason
from .keyframes import KeyframeDecision, KeyframeStore
from .tsdf_map import TsdfMap
from ..types import RgbdFrame

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    """Queue bound of the ingestion worker and how often it carves free space."""

    # One second at 30 Hz (30 frames, ~65 MB at 640x480): fusion keeps up with the camera on average,
    # but on 2 cores it falls behind for up to a second while the object memory integrates a keyframe
    # in the same process; 8 frames dropped some of those bursts (benchmarks.realtime).
    queue_size: int = param(30, range=(1, 1000), doc="Frames waiting for fusion; when full the oldest is dropped.")
    # Every n-th fused frame also carves free space into the map (TsdfMap.carve); 0 = never.
    carve_every: int = 10

    def __post_init__(self) -> None:
        validate_fields(self)
        check_int("carve_every", self.carve_every, 0, 100_000)


@dataclass(frozen=True)
class IngestStats:
    """Counters of the ingestion pipeline; `rejected` has one entry per RejectReason."""

    received: int
    fused: int
    dropped_queue_full: int
    rejected: dict[RejectReason, int]
    keyframes_added: int
    fusion_errors: int
    queued: int
    last_update_ms: float

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True, eq=False)
class _Item:
    frame: RgbdFrame
    stamps_ns: tuple[int | None, int | None, int | None]


RejectCallback = Callable[[RgbdFrame, FrameRejected], None]


class IngestWorker:
    """Owns the bounded queue and one worker thread: FrameGate -> TsdfMap -> KeyframeStore."""

    def __init__(self, tsdf_map: TsdfMap, keyframes: KeyframeStore | None = None, gate: FrameGate | None = None,
                 config: IngestConfig | None = None, on_reject: RejectCallback | None = None) -> None:
        self.config = config or IngestConfig()
        self.map = tsdf_map
        self.keyframes = keyframes
        self.gate = gate or FrameGate()
        self._on_reject = on_reject
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._busy = False
        self._holds = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._received = self._fused = self._dropped = self._keyframes_added = self._errors = 0
        self._last_update_ms = 0.0

    def submit(self, frame: RgbdFrame, *, color_stamp_ns: int | None = None, depth_stamp_ns: int | None = None,
               pose_stamp_ns: int | None = None) -> bool:
        """Enqueue a frame (cheap; callable from a sensor callback). Returns False if an old frame was dropped."""
        with self._cond:
            self._received += 1
            dropped = len(self._queue) >= self.config.queue_size
            if dropped:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(_Item(frame, (color_stamp_ns, depth_stamp_ns, pose_stamp_ns)))
            self._cond.notify_all()
        return not dropped

    def process(self, frame: RgbdFrame, *, color_stamp_ns: int | None = None, depth_stamp_ns: int | None = None,
                pose_stamp_ns: int | None = None) -> bool:
        """Validate, fuse and offer one frame in the calling thread; True if it was fused."""
        try:
            checked = self.gate.check(frame, color_stamp_ns=color_stamp_ns, depth_stamp_ns=depth_stamp_ns,
                                      pose_stamp_ns=pose_stamp_ns)
        except FrameRejected as exc:
            if self._on_reject is not None:
                try:
                    self._on_reject(frame, exc)
                except Exception:  # a logging hook must not stop the worker
                    _LOG.exception("on_reject callback failed")
            return False
        t0 = time.perf_counter()
        try:
            if self.map.integrate(checked).touched_blocks == 0:
                # Every pixel in range still touched no block (Open3D found nothing to fuse): not fused, no keyframe.
                self.gate.count(RejectReason.NO_DEPTH_IN_RANGE)
                return False
            added = self.keyframes is not None and self.keyframes.offer(checked).decision is KeyframeDecision.ADDED
            every = self.config.carve_every
            if every and (self._fused + 1) % every == 0:
                # Free-space carving (TsdfMap.carve, 10-30 ms) on every n-th fused frame: a moved object's old
                # surface is erased after a few seconds of seeing its place empty, at a few % of the fusion time.
                self.map.carve(checked)
        except Exception:  # keep the node alive; the map lock guarantees no half-applied state is visible
            _LOG.exception("fusion failed for frame stamped %d", frame.stamp_ns)
            with self._cond:
                self._errors += 1
            return False
        with self._cond:
            self._fused += 1
            self._keyframes_added += int(added)
            self._last_update_ms = (time.perf_counter() - t0) * 1e3
        return True

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="mllm3d_ingest", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the worker after the frame in progress; frames still queued are discarded."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout_s)

    @contextlib.contextmanager
    def paused(self, timeout_s: float = 30.0):
        """Hold the worker between frames for the duration of the block (reset, save, load)."""
        with self._cond:
            self._holds += 1
            if not self._cond.wait_for(lambda: not self._busy, timeout_s):
                self._holds -= 1
                raise TimeoutError(f"the ingestion worker did not finish its frame within {timeout_s} s")
        try:
            yield
        finally:
            with self._cond:
                self._holds -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until the queue is empty and no frame is in progress; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: (self._queue and not self._holds) or self._stop)
                if self._stop:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self.process(item.frame, color_stamp_ns=item.stamps_ns[0], depth_stamp_ns=item.stamps_ns[1],
                             pose_stamp_ns=item.stamps_ns[2])
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    @property
    def stats(self) -> IngestStats:
        rejected = self.gate.rejections
        with self._cond:
            return IngestStats(self._received, self._fused, self._dropped, rejected, self._keyframes_added,
                               self._errors, len(self._queue), self._last_update_ms)

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None
