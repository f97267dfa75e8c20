"""The one client of the segmentation node's SegmentViews service, used by the query and memory nodes.

Each mode is a method: `segment` (a SegmentFn), `parse` (a ParseFn), `recognise` (a RecogniseFn, the
backend's open-set gate), `propose` (a ProposeFn), `encode_text` (an EncodeFn), `caption` (a CaptionFn). Every call follows one liveness rule
(core/backend_liveness.py, read from the heartbeat "<backend> <state> <instance>"):
- before sending: SILENT, LOADING or NOT_READY answer BackendUnavailable at once, with the reason;
  UNKNOWN (no beat yet) and SETTLING (just activated) wait up to `service_wait_s` for READY;
- while waiting for the answer: a new instance (the node was restarted, so the request went to a dead
  process and will never be answered) gets the request again once it is READY, or the call fails at
  once while it loads; silence for `backend_timeout_s` fails the call; the caller's cancel event, its
  deadline (TimeoutError) and `call_timeout_s` end it too.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Sequence

import numpy as np
from rclpy.node import Node
from std_msgs.msg import String

from ..core.backend_liveness import BackendLiveness, BackendState, BackendStatus, LivenessConfig
from ..core.query.instruction import ParsedInstruction, parsed_from_json
from ..core.query.open_set import Recognition, open_recognition
from ..core.query.pipeline import QueryCanceled
from ..core.segmentation import BackendUnavailable, ModeUnsupported
from ..core.types import BackendView, GeometryMark, SegmentationResult, ViewPredictions
from ..srv import SegmentViews
from .conversions import add_views_to_request, checked_response, predictions_from_response
from .qos import RELIABLE_QOS

_WAITABLE = (BackendState.UNKNOWN, BackendState.SETTLING)
# A request is sent again to each new instance at most this often per call (a node restarting in a loop).
MAX_RESENDS = 3


class SegmentViewsClient:
    """SegmentViews calls with the heartbeat's liveness rule; thread-safe (one call per caller thread)."""

    def __init__(self, node: Node, service: str, heartbeat_topic: str, *, backend_timeout_s: float,
                 service_wait_s: float, call_timeout_s: float | None = None, callback_group=None) -> None:
        self._node = node
        self._client = node.create_client(SegmentViews, service, callback_group=callback_group)
        self._heartbeat_topic = node.resolve_topic_name(heartbeat_topic)
        self.liveness = BackendLiveness(LivenessConfig(timeout_s=backend_timeout_s))
        self._backend_timeout_s = backend_timeout_s
        self._service_wait_s = service_wait_s
        self._call_timeout_s = call_timeout_s
        self._lock = threading.Lock()
        # Modes the backend answered UNSUPPORTED, with the liveness `changes` then: not asked again until the
        # heartbeat names another backend or instance.
        self._unsupported: dict[int, int] = {}
        node.create_subscription(String, heartbeat_topic, lambda msg: self.liveness.on_heartbeat(msg.data),
                                 RELIABLE_QOS, callback_group=callback_group)

    @property
    def service_name(self) -> str:
        return self._client.srv_name

    def status(self) -> BackendStatus:
        return self.liveness.status()

    def ready(self) -> bool:
        """READY by the heartbeat and the service discovered (what the proposal worker waits for)."""
        return self.liveness.ready() and self._client.service_is_ready()

    # --- the modes --------------------------------------------------------------------------------
    def segment(self, views: Sequence[BackendView], instruction: str, *, cancel: threading.Event | None = None,
                deadline: float | None = None) -> SegmentationResult:
        """Segment `instruction` in `views`; `cancel` raises QueryCanceled, `deadline` (time.monotonic())
        TimeoutError."""
        request = SegmentViews.Request(mode=SegmentViews.Request.SEGMENT, instruction=instruction)
        add_views_to_request(request, views)
        response = self.call(request, cancel=cancel, deadline=deadline)
        return SegmentationResult(
            target_phrase=response.target_phrase,
            query_embedding=np.asarray(response.query_embedding, dtype=np.float32),
            views=predictions_from_response(response, views), forward_ms=float(response.forward_ms))

    __call__ = segment

    def parse(self, instruction: str, *, cancel: threading.Event | None = None,
              deadline: float | None = None) -> ParsedInstruction:
        """The backend's parse (mode PARSE). UNSUPPORTED is remembered: later calls raise ModeUnsupported
        without asking, until the heartbeat names another backend or instance (a restart may bring a model)."""
        mode = SegmentViews.Request.PARSE
        if self._known_unsupported(mode):
            raise ModeUnsupported(f"backend '{self.liveness.status().backend}' has no instruction parsing mode")
        response = self._call_mode(SegmentViews.Request(mode=mode, instruction=instruction), cancel, deadline)
        return parsed_from_json(response.parsed_json, instruction, "the segmentation node")

    def recognise(self, phrase: str, *, cancel: threading.Event | None = None,
                  deadline: float | None = None) -> Recognition:
        """Whether the backend recognises `phrase` (mode RECOGNISE: its open-set gate). A backend without the
        mode (UNSUPPORTED, remembered like `parse`'s) leaves the phrase open, as an open vocabulary would."""
        mode = SegmentViews.Request.RECOGNISE
        if not self._known_unsupported(mode):
            try:
                response = self._call_mode(SegmentViews.Request(mode=mode, instruction=phrase), cancel, deadline)
                return Recognition.from_json(response.recognition_json)
            except ModeUnsupported:
                pass
        return open_recognition(phrase, f"backend '{self.liveness.status().backend}'")

    def _known_unsupported(self, mode: int) -> bool:
        with self._lock:
            return self._unsupported.get(mode) == self.liveness.status().changes

    def _call_mode(self, request, cancel, deadline):
        """`call`, remembering an UNSUPPORTED answer for the request's mode."""
        try:
            return self.call(request, cancel=cancel, deadline=deadline)
        except ModeUnsupported:
            with self._lock:
                self._unsupported[request.mode] = self.liveness.status().changes
            raise

    def propose(self, views: Sequence[BackendView]) -> tuple[ViewPredictions, ...]:
        request = SegmentViews.Request(mode=SegmentViews.Request.PROPOSE)
        add_views_to_request(request, views)
        return predictions_from_response(self.call(request), views)

    def caption(self, view: BackendView, mark: GeometryMark) -> str:
        request = SegmentViews.Request(mode=SegmentViews.Request.CAPTION)
        add_views_to_request(request, [dataclasses.replace(view, marks=(mark,))])
        return self.call(request).caption

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        out = [np.asarray(self.call(SegmentViews.Request(mode=SegmentViews.Request.ENCODE_TEXT, instruction=t))
                          .query_embedding, dtype=np.float32) for t in texts]
        return np.stack(out)

    # --- one call -----------------------------------------------------------------------------------
    def call(self, request, *, cancel: threading.Event | None = None, deadline: float | None = None):
        """The response to `request` once it is OK; errors by status (InputError, ModeUnsupported,
        BackendError), BackendUnavailable by the liveness rule, QueryCanceled, TimeoutError at `deadline`."""
        start = time.monotonic()
        for attempt in range(MAX_RESENDS + 1):
            instance = self._wait_ready(cancel, deadline)
            future = self._client.call_async(request)
            restarted = self._wait_answer(future, instance, cancel, deadline, start)
            if restarted is None:
                return checked_response(future.result())
            self._node.get_logger().warning(
                f"segmentation node restarted during a call (instance {instance or '?'} -> {restarted or '?'}): "
                + ("sending the request again" if attempt < MAX_RESENDS else "giving up"))
        raise BackendUnavailable(f"the segmentation node restarted {MAX_RESENDS + 1} times during one call")

    def _wait_ready(self, cancel: threading.Event | None, deadline: float | None) -> str:
        """The READY instance to send to; BackendUnavailable at once when the heartbeat says it cannot answer."""
        end = time.monotonic() + self._service_wait_s
        if deadline is not None:
            end = min(end, deadline)
        while True:
            status = self.liveness.status()
            if status.state is BackendState.READY and self._client.service_is_ready():
                return status.instance
            if status.state not in _WAITABLE and status.state is not BackendState.READY:
                raise BackendUnavailable(f"segmentation service '{self._client.srv_name}' cannot answer: "
                                         f"{status.reason(self._backend_timeout_s)}")
            if cancel is not None and cancel.is_set():
                raise QueryCanceled()
            if time.monotonic() >= end:
                detail = status.reason(self._backend_timeout_s) if status.state is not BackendState.READY else \
                    "its service is not discovered"
                raise BackendUnavailable(f"segmentation service '{self._client.srv_name}' is not available after "
                                         f"{self._service_wait_s:.1f} s: {detail} (is the segmentation node running?)")
            self.liveness.wait(lambda s: s.state is BackendState.READY or s.state not in _WAITABLE,
                               min(0.05, max(0.0, end - time.monotonic())))

    def _wait_answer(self, future, instance: str, cancel: threading.Event | None, deadline: float | None,
                     start: float) -> str | None:
        """None once `future` is done; the new instance's token when the node restarted (re-send)."""
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        sent = time.monotonic()
        while not done.wait(0.05):
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                self._client.remove_pending_request(future)
                raise QueryCanceled()
            if deadline is not None and now > deadline:
                self._client.remove_pending_request(future)
                raise TimeoutError(f"no answer from '{self._client.srv_name}' before the query's deadline "
                                   f"({now - start:.1f} s into this call)")
            if self._call_timeout_s is not None and now - sent > self._call_timeout_s:
                self._client.remove_pending_request(future)
                raise BackendUnavailable(f"no answer from '{self._client.srv_name}' after {now - sent:.1f} s "
                                         "(segmentation node busy or gone)")
            status = self.liveness.status()
            if status.state is BackendState.SILENT:
                self._client.remove_pending_request(future)
                raise BackendUnavailable(f"segmentation node stopped answering during the call: "
                                         f"{status.reason(self._backend_timeout_s)} on '{self._heartbeat_topic}'")
            if status.instance != instance:
                self._client.remove_pending_request(future)
                if status.state in (BackendState.LOADING, BackendState.NOT_READY):
                    raise BackendUnavailable(f"the segmentation node restarted during the call: "
                                             f"{status.reason(self._backend_timeout_s)}")
                return status.instance
            if status.state in (BackendState.LOADING, BackendState.NOT_READY):
                self._client.remove_pending_request(future)  # deactivated or cleaned up: no answer will come
                raise BackendUnavailable(f"segmentation service '{self._client.srv_name}' stopped serving during "
                                         f"the call: {status.reason(self._backend_timeout_s)}")
        return None
