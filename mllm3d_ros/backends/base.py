"""The backend interface and the name -> factory registry.

A backend turns (views, instruction) into per-view 2D predictions plus one query embedding.
Stages follow transformers pipelines: preprocess (CPU) -> forward (device, batched) -> postprocess.
Weights load once, in the constructor (configure time), never per query.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any, Callable, Sequence

from ..core.types import BackendView, InputError, SegmentationResult

MAX_INSTRUCTION_CHARS = 2000


class BackendError(RuntimeError):
    """The backend cannot run (model missing, device absent, out of memory); the message says how to fix it."""


class BackendUnavailable(BackendError):
    """The backend (e.g. the remote segmentation node) is not reachable right now."""


def normalise_instruction(instruction: str | bytes) -> str:
    """Validate an instruction: decodable UTF-8, not blank, bounded length. Returns it stripped."""
    if isinstance(instruction, bytes):
        try:
            instruction = instruction.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"instruction is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(instruction, str):
        raise InputError(f"instruction must be text, got {type(instruction).__name__}")
    text = " ".join(instruction.split())
    if not text:
        raise InputError("instruction is empty")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(f"instruction is {len(text)} characters; the limit is {MAX_INSTRUCTION_CHARS}")
    return text


class SegmentationBackend(abc.ABC):
    """2D reasoning segmentation over several views of one instruction."""

    name: str = "base"

    @abc.abstractmethod
    def segment(self, views: Sequence[BackendView], instruction: str) -> SegmentationResult:
        """Segment the instruction's target in each view (InputError for bad input, BackendError if it cannot run)."""

    def close(self) -> None:
        """Free weights and device memory."""


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
