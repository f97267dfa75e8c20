"""2D reasoning-segmentation backends behind one interface, chosen by name (see registry)."""

from .base import BackendError, BackendUnavailable, SegmentationBackend, build_backend, available_backends, register_backend

__all__ = ["BackendError", "BackendUnavailable", "SegmentationBackend", "build_backend", "available_backends", "register_backend"]
