"""Open any supported recording (dataset folder or ROS 2 bag) as a sized sequence of RgbdFrames, and read
it with the one rule that `mllm3d replay` and `mllm3d segment` share: a frame that cannot be decoded (a
truncated JPEG, a garbage depth PNG) is skipped and counted, the others are used; a recording of which no
frame can be read is an error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass
class ReadCounts:
    """Frames read and skipped so far by `readable_frames`."""

    read: int = 0
    unreadable: int = 0


def readable_frames(recording: Sequence[RgbdFrame], counts: ReadCounts | None = None,
                    on_unreadable: Callable[[int, InputError], None] | None = None) -> Iterator[tuple[int, RgbdFrame]]:
    """(index, frame) for every frame of `recording` that decodes; the others are counted in `counts` and
    passed to `on_unreadable(index, error)` (e.g. to log them), never raised."""
    counts = counts if counts is not None else ReadCounts()
    for index in range(len(recording)):
        try:
            frame = recording[index]
        except InputError as exc:
            counts.unreadable += 1
            if on_unreadable is not None:
                on_unreadable(index, exc)
            continue
        counts.read += 1
        yield index, frame


def nothing_readable(path: str | Path, counts: ReadCounts) -> InputError:
    """The error for a recording of which no frame could be read."""
    return InputError(f"no frame of {path} could be read ({counts.unreadable} unreadable)")
