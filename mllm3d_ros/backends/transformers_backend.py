"""Registry entry point of the transformers backend (implementation in `mllm3d_ros.backends.mllm`)."""

from .mllm.backend import TransformersBackend, TransformersBackendConfig

__all__ = ["TransformersBackend", "TransformersBackendConfig"]
