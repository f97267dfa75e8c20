"""The 2D segmentation interface the core depends on: the backend ABC, its errors, instruction checks.

Backends (`mllm3d_ros.backends`) implement `SegmentationBackend`; the core only ever sees this
interface (or a plain callable with `segment`'s signature), never a concrete backend, so the core
imports nothing from `backends/`.

Two modes:
- `segment(views, instruction)`: reasoning segmentation of one instruction's target in each view
  (MLLM-For3D's per-view pseudo masks, confidences alpha_i and embeddings e_i);
- `propose(views)`: instruction-free proposals, every object the model can name in each view, with
  a label and an embedding in the same space as `encode_text` (what the object memory is built from).

Optional capabilities: `uses_marks` (the backend reads `BackendView.marks`, numbered candidates of the
3D map, and may answer with the mark it chose: `Prediction2D.mark_id`), and `caption(view, mark)` (a
short description of the marked object, for dense captions), and `parse(instruction)` (the instruction
split into target, attributes, relation and anchors by the model; callers fall back to the grammar,
`core.query.instruction.parse_instruction`). A mode a backend lacks raises
`ModeUnsupported`, so callers can tell "cannot" from "failed".

What a backend can recognise: `vocabulary()` (`core.query.open_set.Vocabulary`: a closed list of concepts
with their phrases and nouns, or an open vocabulary) and `recognise(phrase)`, the open-set gate on it
(`core.query.open_set.OpenSetGate` with the backend's own text model): a query about anything outside the
vocabulary is NOT_FOUND, never answered with the nearest class.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np

from .query.instruction import ParsedInstruction
from .query.open_set import OpenSetGate, Recognition, Vocabulary
from .types import BackendView, GeometryMark, InputError, SegmentationResult, ViewPredictions

MAX_INSTRUCTION_CHARS = 2000


class BackendError(RuntimeError):
    """The backend cannot run (model missing, device absent, out of memory); the message says how to fix it."""


class BackendUnavailable(BackendError):
    """The backend (e.g. the remote segmentation node) is not reachable right now."""


class ModeUnsupported(BackendError):
    """The backend has no such mode (proposals, text embeddings, captions): asking again will not help."""


def normalise_instruction(instruction: str | bytes) -> str:
    """Validate an instruction: valid UTF-8, not blank, at most MAX_INSTRUCTION_CHARS (2,000) characters after
    whitespace runs are collapsed. Returns it stripped."""
    if isinstance(instruction, bytes):
        try:
            instruction = instruction.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"instruction is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(instruction, str):
        raise InputError(f"instruction must be text, got {type(instruction).__name__}")
    try:
        instruction.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Python keeps command-line bytes that are not UTF-8 as lone surrogates (U+DC80..U+DCFF).
        bad = instruction[exc.start]
        byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"character U+{ord(bad):04X}"
        raise InputError(f"instruction is not valid UTF-8 ({byte} at character {exc.start}): is the terminal's "
                         "encoding UTF-8?") from None
    text = " ".join(instruction.split())
    if not text:
        raise InputError("instruction is empty")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(f"instruction is {len(text)} characters; the limit is {MAX_INSTRUCTION_CHARS}")
    return text


class SegmentationBackend(abc.ABC):
    """2D reasoning segmentation over several views of one instruction, plus instruction-free proposals."""

    name: str = "base"
    # True when `segment` draws `BackendView.marks` into its prompt and may set Prediction2D.mark_id.
    uses_marks: bool = False

    @abc.abstractmethod
    def segment(self, views: Sequence[BackendView], instruction: str) -> SegmentationResult:
        """Segment the instruction's target in each view (InputError for bad input, BackendError if it cannot run)."""

    def propose(self, views: Sequence[BackendView]) -> tuple[ViewPredictions, ...]:
        """Every object the model can name in each view: mask, confidence, label, and an embedding
        (D,) float32 L2-normalised in the space of `encode_text`. One ViewPredictions per view, in order."""
        raise ModeUnsupported(f"backend {self.name!r} has no proposal mode")

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of short phrases, comparable with proposal embeddings."""
        raise ModeUnsupported(f"backend {self.name!r} cannot embed text")

    def caption(self, view: BackendView, mark: GeometryMark) -> str:
        """A short description (one line, plain text) of the object under `mark` in `view`."""
        raise ModeUnsupported(f"backend {self.name!r} has no caption mode")

    def parse(self, instruction: str) -> ParsedInstruction:
        """The instruction parsed by the model, validated (`instruction.parsed_from_structured`)."""
        raise ModeUnsupported(f"backend {self.name!r} has no instruction parsing mode")

    def vocabulary(self) -> Vocabulary:
        """What the backend can recognise. The default is an open vocabulary (every phrase is passed to the
        model): a backend with a closed list of classes must declare it."""
        return Vocabulary.open_vocabulary(f"the {self.name} model", "")

    def recognise(self, phrase: str) -> Recognition:
        """Whether `phrase` (an instruction's target or anchor) is something this backend recognises: the
        open-set gate on `vocabulary()` with `encode_text` (built on first use, then cached)."""
        gate = getattr(self, "_open_set_gate", None)
        if gate is None:
            vocabulary = self.vocabulary()
            gate = OpenSetGate(vocabulary, None if vocabulary.open else self.encode_text)
            self._open_set_gate = gate
        return gate.recognise(phrase)

    def close(self) -> None:
        """Free weights and device memory."""
