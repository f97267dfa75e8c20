"""The embedded offline backend (CPU, no model hub): see backend.py."""

from .backend import OfflineBackend, OfflineBackendConfig

__all__ = ["OfflineBackend", "OfflineBackendConfig"]
