"""The mapping facade: TSDF map + keyframe store + ingestion worker, seen by queries as a MapSource."""

from __future__ import annotations

import threading

from .frame_checks import FrameGate, FrameGateConfig
from .ingest import IngestConfig, IngestWorker, RejectCallback
from .keyframes import KeyframeConfig, KeyframeStore
from .tsdf_map import TsdfMap, TsdfMapConfig
from .types import Keyframe, MapSnapshot, RgbdFrame


class Mapper:
    """Owns the map state; `submit` is cheap (callbacks), fusion runs on the worker thread."""

    def __init__(self, map_config: TsdfMapConfig | None = None, keyframe_config: KeyframeConfig | None = None,
                 gate_config: FrameGateConfig | None = None, ingest_config: IngestConfig | None = None,
                 on_reject: RejectCallback | None = None) -> None:
        self.map = TsdfMap(map_config)
        self.keyframe_store = KeyframeStore(keyframe_config)
        self.worker = IngestWorker(self.map, self.keyframe_store, FrameGate(gate_config), ingest_config,
                                   on_reject=on_reject)
        # Extracting the surface costs tens of ms at 2 cm: reuse it until the map changes.
        self._snapshot_lock = threading.Lock()
        self._snapshot: MapSnapshot | None = None
        self._snapshot_key: tuple[int, int] | None = None

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def submit(self, frame: RgbdFrame, **stamps_ns: int | None) -> bool:
        """Queue a frame for fusion; False when an older queued frame was dropped to make room."""
        return self.worker.submit(frame, **stamps_ns)

    def process(self, frame: RgbdFrame) -> bool:
        """Validate and fuse a frame in the calling thread (offline tools)."""
        return self.worker.process(frame)

    def snapshot(self) -> MapSnapshot:
        with self._snapshot_lock:
            key = (self.map.frames_integrated, self.map.num_blocks)
            if self._snapshot is None or key != self._snapshot_key:
                self._snapshot, self._snapshot_key = self.map.snapshot(), key
            return self._snapshot

    def keyframes(self) -> tuple[Keyframe, ...]:
        return self.keyframe_store.keyframes

