"""Open any supported recording (dataset folder or ROS 2 bag) as a sized sequence of RgbdFrames."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..core.types import InputError, RgbdFrame


def is_bag(path: Path) -> bool:
    return path.suffix in (".db3", ".mcap") or (path.is_dir() and (path / "metadata.yaml").exists())


def open_recording(path: str | Path, stride: int = 1, max_frames: int | None = None) -> Sequence[RgbdFrame]:
    """A dataset folder (7-Scenes/3DMatch or TUM layout) or a ROS 2 bag, as RgbdFrames in time order."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"recording not found: {p}")
    if is_bag(p):
        from .bag import read_bag
        frames = list(read_bag(p))[::stride]
        return frames[:max_frames] if max_frames else frames
    from .dataset import open_dataset
    return open_dataset(p, stride=stride, max_frames=max_frames)
