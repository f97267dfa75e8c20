"""A small time-interpolated transform buffer, for set-ups without tf2_ros (pip-only).

Holds a tree of frames (each child has one parent, as in TF): dynamic transforms as a time series
per edge, bounded by `cache_duration_ns` behind the newest sample of that edge, and static
transforms valid at every time. `lookup(target, source, stamp_ns)` chains the edges through the
closest common ancestor (e.g. map -> odom -> base_link -> camera optical) and returns
`target_T_source`; each dynamic edge is interpolated between the two samples around the stamp
(linear translation, slerp rotation), as tf2 does. Stamp 0 means "the newest sample of each edge".
A lookup outside an edge's samples is an extrapolation and fails, as in tf2; with `timeout_s` it
waits for newer samples instead of failing at once.

Failures raise TransformUnavailable (a LookupError) whose message names the missing frame or link
and the times involved, so a node can reject and count the frame instead of crashing.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..config import check_int
from ..geometry import invert_transform, matrix_to_quaternion, rigid_transform
from ..types import InputError


class TransformUnavailable(LookupError):
    """No transform for the requested frames at the requested time (the message says why)."""


class ExtrapolationError(TransformUnavailable):
    """The requested time lies outside the samples of one link of the chain."""


MAX_FRAME_ID_CHARS = 256


def check_frame_id(name: str, frame_id: str) -> None:
    """Raise InputError unless `frame_id` is a usable TF frame name: non-empty, printable, no whitespace,
    at most MAX_FRAME_ID_CHARS characters (tf2 would only fail later, with a less specific message)."""
    if not isinstance(frame_id, str) or not frame_id:
        raise InputError(f"{name}: a frame id must be a non-empty string, got {frame_id!r}")
    if len(frame_id) > MAX_FRAME_ID_CHARS:
        raise InputError(f"{name}: a frame id has at most {MAX_FRAME_ID_CHARS} characters, got {len(frame_id)}")
    if not frame_id.isprintable() or any(c.isspace() for c in frame_id):
        raise InputError(f"{name}: a frame id must be printable with no spaces, got {frame_id!r}")


@dataclass(frozen=True)
class TfBufferConfig:
    """Cache bound of the buffer: samples older than this behind an edge's newest are dropped."""

    cache_duration_ns: int = 10_000_000_000

    def __post_init__(self) -> None:
        check_int("cache_duration_ns", self.cache_duration_ns, 1)


def _normalised(q: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion {tuple(q)} has no direction")
    return q / norm


def slerp(q0_xyzw: np.ndarray, q1_xyzw: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w), shortest arc."""
    q0, q1 = np.asarray(q0_xyzw, dtype=np.float64), np.asarray(q1_xyzw, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: linear is exact enough and avoids dividing by sin(~0)
        return _normalised(q0 + t * (q1 - q0))
    theta = np.arccos(min(dot, 1.0))
    return (np.sin((1.0 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


class _Edge:
    """parent_T_child over time: stamps sorted, with translations and quaternions."""

    def __init__(self, parent: str, static: bool) -> None:
        self.parent = parent
        self.static = static
        self.stamps: list[int] = []
        self.translations: list[np.ndarray] = []
        self.quaternions: list[np.ndarray] = []

    def insert(self, stamp_ns: int, t: np.ndarray, q: np.ndarray, cache_ns: int) -> None:
        if self.static:
            self.stamps, self.translations, self.quaternions = [stamp_ns], [t], [q]
            return
        k = bisect.bisect_left(self.stamps, stamp_ns)
        if k < len(self.stamps) and self.stamps[k] == stamp_ns:
            self.translations[k], self.quaternions[k] = t, q
        else:
            self.stamps.insert(k, stamp_ns)
            self.translations.insert(k, t)
            self.quaternions.insert(k, q)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_ns)
        if cut:
            del self.stamps[:cut], self.translations[:cut], self.quaternions[:cut]

    def at(self, stamp_ns: int, child: str) -> np.ndarray:
        if self.static or stamp_ns == 0:
            t, q = self.translations[-1], self.quaternions[-1]
        else:
            stamps = self.stamps
            k = bisect.bisect_left(stamps, stamp_ns)
            if k < len(stamps) and stamps[k] == stamp_ns:
                t, q = self.translations[k], self.quaternions[k]
            elif k == 0 or k == len(stamps):
                side = "before the oldest" if k == 0 else "after the newest"
                raise ExtrapolationError(
                    f"lookup of '{self.parent}' -> '{child}' at {stamp_ns / 1e9:.6f} s would extrapolate: it is "
                    f"{side} sample (samples span {stamps[0] / 1e9:.6f} .. {stamps[-1] / 1e9:.6f} s)")
            else:
                s0, s1 = stamps[k - 1], stamps[k]
                w = (stamp_ns - s0) / (s1 - s0)
                t = (1.0 - w) * self.translations[k - 1] + w * self.translations[k]
                q = slerp(self.quaternions[k - 1], self.quaternions[k], w)
        return rigid_transform(t, q)


class TransformBuffer:
    """Thread-safe buffer of a TF tree with time interpolation and chained lookups."""

    def __init__(self, config: TfBufferConfig | None = None) -> None:
        self.config = config or TfBufferConfig()
        self._cond = threading.Condition()
        self._edges: dict[str, _Edge] = {}  # child frame -> edge to its parent

    def set_transform(self, parent_frame: str, child_frame: str, stamp_ns: int, translation_xyz,
                      quaternion_xyzw, *, static: bool = False) -> None:
        """Store parent_T_child at `stamp_ns`; a child moved to another parent is re-parented (as in tf2)."""
        parent, child = parent_frame.lstrip("/"), child_frame.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"transform needs two different non-empty frames, got '{parent_frame}' -> "
                             f"'{child_frame}'")
        t = np.asarray(translation_xyz, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(t)):
            raise ValueError(f"transform '{parent}' -> '{child}' has a non-finite translation {tuple(t)}")
        q = _normalised(np.asarray(quaternion_xyzw, dtype=np.float64).reshape(4))
        with self._cond:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = self._edges[child] = _Edge(parent, static)
            edge.insert(int(stamp_ns), t, q, self.config.cache_duration_ns)
            self._cond.notify_all()

    def set_matrix(self, parent_frame: str, child_frame: str, stamp_ns: int, parent_T_child: np.ndarray, *,
                   static: bool = False) -> None:
        """`set_transform` from a 4x4 matrix."""
        m = np.asarray(parent_T_child, dtype=np.float64)
        self.set_transform(parent_frame, child_frame, stamp_ns, m[:3, 3], matrix_to_quaternion(m[:3, :3]),
                           static=static)

    def _chain_locked(self, frame: str) -> list[str]:
        chain, seen = [frame], {frame}
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in seen:  # a loop in the published tree: stop rather than spin
                break
            chain.append(parent)
            seen.add(parent)
        return chain

    def _lookup_locked(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for name, frame in (("target", target), ("source", source)):
            if frame not in known:
                raise TransformUnavailable(f"{name} frame '{frame}' does not exist in the TF tree"
                                           + (f" (known frames: {sorted(known)})" if known else " (no transform "
                                              "received yet)"))
        up_source, up_target = self._chain_locked(source), self._chain_locked(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            raise TransformUnavailable(f"frames '{target}' and '{source}' are not connected: '{source}' leads "
                                       f"up to '{up_source[-1]}', '{target}' up to '{up_target[-1]}'")

        def root_T(frame_chain: list[str]) -> np.ndarray:
            out = np.eye(4)
            for child in frame_chain[:frame_chain.index(common)]:
                out = self._edges[child].at(stamp_ns, child) @ out
            return out

        return invert_transform(root_T(up_target)) @ root_T(up_source)

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int, timeout_s: float = 0.0) -> np.ndarray:
        """target_T_source (4x4) at `stamp_ns` (0 = newest); waits up to `timeout_s` for missing data."""
        target, source = target_frame.lstrip("/"), source_frame.lstrip("/")
        if target == source:
            return np.eye(4)
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                try:
                    return self._lookup_locked(target, source, int(stamp_ns))
                except TransformUnavailable:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise
                    self._cond.wait(remaining)

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int) -> bool:
        try:
            self.lookup(target_frame, source_frame, stamp_ns)
        except TransformUnavailable:
            return False
        return True

    @property
    def frames(self) -> tuple[str, ...]:
        with self._cond:
            return tuple(sorted(set(self._edges) | {e.parent for e in self._edges.values()}))

    def clear(self) -> None:
        """Drop the dynamic transforms (e.g. after a time jump); static ones stay."""
        with self._cond:
            self._edges = {c: e for c, e in self._edges.items() if e.static}
