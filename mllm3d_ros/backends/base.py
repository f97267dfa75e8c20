"""The backend interface and the name -> factory registry.

A backend turns (views, instruction) into per-view 2D predictions plus one query embedding.
Stages follow transformers pipelines: preprocess (CPU) -> forward (device, batched) -> postprocess.
Weights load once, in the constructor (configure time), never per query.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# The interface lives in the core (which must not import backends); re-exported here for backends.
from ..core.segmentation import (BackendError, BackendUnavailable, MAX_INSTRUCTION_CHARS,  # noqa: F401
                                 SegmentationBackend, normalise_instruction)

_REGISTRY: dict[str, str | Callable[..., SegmentationBackend]] = {
    # Lazily imported so that choosing one backend never imports the other's heavy dependencies.
    "offline": "mllm3d_ros.backends.offline:OfflineBackend",
    "transformers": "mllm3d_ros.backends.transformers_backend:TransformersBackend",
}


def register_backend(name: str, factory: Callable[..., SegmentationBackend]) -> None:
    """Register a backend factory under `name` (a class or a callable taking keyword config)."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def build_backend(name: str, **config: Any) -> SegmentationBackend:
    """Construct the backend registered as `name` with keyword config."""
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; available: {available_backends()}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module_name, attr = factory.split(":")
        factory = getattr(importlib.import_module(module_name), attr)
    return factory(**config)
