"""Is the segmentation backend there, and ready? One rule for every client of the SegmentViews service.

The segmentation node publishes a heartbeat "<backend> <state> <instance>" twice a second (the
instance is a token new at every process start; older senders omit it): `loading` while its model
loads, `active` while it answers, `inactive` / `unconfigured` otherwise (a model that failed to load).
DDS alone cannot tell: a killed server's endpoints stay in the graph until its lease expires (20 s by
default), so a request sent then goes to the dead process and is never answered, while a restarted
node's heartbeats would make a watchdog that only counts beats believe the call is alive.

The rule (`BackendLiveness.status`):
- SILENT: no heartbeat for `timeout_s` (the node is gone or hung);
- UNKNOWN: none heard yet (start-up; a caller may wait for the first);
- LOADING / NOT_READY: beating, but loading its model or not active: a request would not be answered;
- SETTLING: its first `active` beat(s); READY once the current instance has beaten `active`
  `settle_beats` times. One beat is not enough: its service was created just before that beat, and a
  request sent before this process has matched the new endpoints would be lost.
A change of instance while a request is pending means the request went to a process that is gone: the
caller re-sends it to the new instance once that one is READY, or fails at once.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .config import check_int, check_range


class BackendState(enum.Enum):
    """What the heartbeat says about the backend (see the module doc)."""

    UNKNOWN = "unknown"
    READY = "ready"
    SETTLING = "settling"
    LOADING = "loading"
    NOT_READY = "not ready"
    SILENT = "silent"


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat: backend name, lifecycle state word, instance token ('' from older senders)."""

    backend: str
    state: str
    instance: str = ""

    @classmethod
    def parse(cls, text: str) -> "Heartbeat":
        words = text.split()
        return cls(words[0] if words else "", words[1] if len(words) > 1 else "active",
                   words[2] if len(words) > 2 else "")

    def text(self) -> str:
        return " ".join(w for w in (self.backend, self.state, self.instance) if w)


@dataclass(frozen=True)
class BackendStatus:
    """The backend as last heard: state, backend name and instance, seconds since the last beat."""

    state: BackendState
    backend: str = ""
    instance: str = ""
    silent_s: float = float("inf")
    heartbeat_state: str = ""
    changes: int = 0  # how often the heartbeat has named another backend or instance

    def reason(self, timeout_s: float) -> str:
        """Why a request cannot be sent now, for error messages."""
        if self.state is BackendState.SILENT:
            return f"no heartbeat from the segmentation node for {self.silent_s:.1f} s (limit {timeout_s:.1f} s)"
        if self.state is BackendState.UNKNOWN:
            return "no heartbeat from the segmentation node yet"
        if self.state is BackendState.SETTLING:
            return "the segmentation node has just become active"
        if self.state is BackendState.LOADING:
            return f"the segmentation node is loading its model (backend '{self.backend}')"
        if self.state is BackendState.NOT_READY:
            return (f"the segmentation node is {self.heartbeat_state} (backend '{self.backend}'; a model that "
                    "failed to load leaves it unconfigured, see its log)")
        return "the segmentation node is ready"


@dataclass(frozen=True)
class LivenessConfig:
    """timeout_s: silence after which the backend counts as gone, (0, 3600]. settle_beats: `active` beats of
    one instance before it counts as READY, [1, 100]."""

    timeout_s: float = 3.0
    settle_beats: int = 2

    def __post_init__(self) -> None:
        check_range("timeout_s", self.timeout_s, 0.0, 3600.0, low_inclusive=False)
        check_int("settle_beats", self.settle_beats, 1, 100)


class BackendLiveness:
    """Heartbeats in (`on_heartbeat`, from any thread), status out; `wait` blocks until a predicate on the
    status holds. `clock` is monotonic seconds (injectable for tests)."""

    def __init__(self, config: LivenessConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or LivenessConfig()
        self._clock = clock
        self._cond = threading.Condition()
        self._last: Heartbeat | None = None
        self._last_at = 0.0
        self._active_beats = 0  # consecutive `active` beats of the current instance
        self._changes = 0

    def on_heartbeat(self, text: str) -> None:
        beat = Heartbeat.parse(text)
        with self._cond:
            same = self._last is not None and (beat.backend, beat.instance) == (self._last.backend, self._last.instance)
            self._changes += int(self._last is not None and not same)
            self._active_beats = (self._active_beats + 1 if same else 1) if beat.state == "active" else 0
            self._last, self._last_at = beat, self._clock()
            self._cond.notify_all()

    def status(self) -> BackendStatus:
        with self._cond:
            return self._status_locked()

    def _status_locked(self) -> BackendStatus:
        beat = self._last
        if beat is None:
            return BackendStatus(BackendState.UNKNOWN)
        silent_s = self._clock() - self._last_at
        if silent_s > self.config.timeout_s:
            state = BackendState.SILENT
        elif beat.state == "active":
            state = BackendState.READY if self._active_beats >= self.config.settle_beats else BackendState.SETTLING
        elif beat.state == "loading":
            state = BackendState.LOADING
        else:
            state = BackendState.NOT_READY
        return BackendStatus(state, beat.backend, beat.instance, silent_s, beat.state, self._changes)

    def wait(self, predicate: Callable[[BackendStatus], bool], timeout_s: float) -> BackendStatus:
        """Block until `predicate(status)` holds or `timeout_s` passed (re-checked at every heartbeat and
        every 50 ms, as silence has no event); returns the last status."""
        end = self._clock() + max(0.0, timeout_s)
        with self._cond:
            while True:
                status = self._status_locked()
                left = end - self._clock()
                if predicate(status) or left <= 0:
                    return status
                self._cond.wait(min(left, 0.05))

    def ready(self) -> bool:
        return self.status().state is BackendState.READY
