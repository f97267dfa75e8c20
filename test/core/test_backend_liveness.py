"""The liveness rule of the segmentation backend (core/backend_liveness.py), on a hand-driven clock."""

from __future__ import annotations

import pytest

from mllm3d_ros.core.backend_liveness import BackendLiveness, BackendState, Heartbeat, LivenessConfig
from mllm3d_ros.core.config import ConfigError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _liveness(**kw):
    clock = Clock()
    return BackendLiveness(LivenessConfig(**kw), clock=clock), clock


def test_heartbeat_text_with_and_without_an_instance():
    assert Heartbeat.parse("offline active 3fa9") == Heartbeat("offline", "active", "3fa9")
    assert Heartbeat.parse("scripted active") == Heartbeat("scripted", "active", "")  # older senders
    assert Heartbeat.parse("offline loading 3fa9").text() == "offline loading 3fa9"


def test_states_from_the_heartbeat_and_from_silence():
    live, clock = _liveness(timeout_s=3.0, settle_beats=2)
    assert live.status().state is BackendState.UNKNOWN
    live.on_heartbeat("offline loading a1")
    assert live.status().state is BackendState.LOADING and "loading its model" in live.status().reason(3.0)
    live.on_heartbeat("offline active a1")
    assert live.status().state is BackendState.SETTLING  # its service may not be matched yet
    clock.t += 0.5
    live.on_heartbeat("offline active a1")
    assert live.ready() and live.status().instance == "a1"
    clock.t += 3.5
    status = live.status()
    assert status.state is BackendState.SILENT and status.silent_s == pytest.approx(3.5)
    assert "no heartbeat from the segmentation node for 3.5 s" in status.reason(3.0)
    live.on_heartbeat("offline unconfigured a1")  # its model failed to load
    assert live.status().state is BackendState.NOT_READY and "unconfigured" in live.status().reason(3.0)


def test_a_restarted_instance_must_settle_again():
    live, clock = _liveness(settle_beats=2)
    for _ in range(3):
        live.on_heartbeat("offline active a1")
    assert live.ready()
    live.on_heartbeat("offline active b2")  # a new process: its first beat
    status = live.status()
    assert status.state is BackendState.SETTLING and status.instance == "b2"
    live.on_heartbeat("offline active b2")
    assert live.ready()


def test_wait_returns_when_the_predicate_holds_or_at_the_timeout():
    live, _clock = _liveness(settle_beats=1)  # the hand clock: no silence however slow this machine is
    live.on_heartbeat("offline active a1")
    assert live.wait(lambda s: s.state is BackendState.READY, 5.0).state is BackendState.READY
    assert live.wait(lambda s: s.instance == "other", 0.0).instance == "a1"


def test_config_is_checked():
    with pytest.raises(ConfigError, match="settle_beats"):
        LivenessConfig(settle_beats=0)
    with pytest.raises(ConfigError, match="timeout_s"):
        LivenessConfig(timeout_s=0.0)
