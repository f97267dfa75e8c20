"""The transformers backend: a grounding VLM reasons and boxes the target, a SAM-family model masks it.

Stages (as transformers pipelines): preprocess on CPU (marks drawn, chat prompt, image tensors) ->
forward on the device (batched generate under torch.inference_mode, SAM) -> postprocess on CPU
(defensive parsing, coordinates back to the original image, masks, confidences, embeddings).

Embeddings for Token-for-Query (MLLM-For3D): e_i is the mean of the VLM's last-layer hidden states
over the tokens of the target's label, from a text-only forward of that label; q is the same pooling
over the instruction. Encoding phrases on their own, rather than reading the hidden states of the
generated answer, keeps e_i and q in the same context-free space, so e_i . q compares what was found
with what was asked and the same label gives the same e_i in every view.

Marked prompts (GAP-MLLM): with `geometry_prompting`, the numbered candidates a view carries are drawn
into the image and listed with their metric geometry; the model's "mark" answer becomes a point
prompt for SAM and `Prediction2D.mark_id`. Captions (`caption`): the object's mark is drawn into its
best view and the VLM describes it in one phrase (parsed defensively, one plain line). Instruction
parsing (`parse`): a text-only prompt (no image) asks for one JSON object with fixed keys; the first
object in the answer is read defensively and validated by the core (`parsed_from_structured`), which
falls back to the grammar when the answer is unusable.

Proposal mode (`propose`, for the object memory; needs `detector_model`): an open-vocabulary
detector (OWLv2) finds every phrase of `proposal_vocabulary` in each view, SAM masks each box, and a
proposal's embedding is the detector's own (CLIP) text embedding of its phrase, so `encode_text`
(the same text tower) compares instructions with proposals. The vocabulary's embeddings are computed
once, at construction; a proposal costs one batched detector forward and one SAM decode per view.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from ...core.config import ConfigError, check_choice, check_int, check_range
from ...core.query.instruction import (ParsedInstruction, Relation, Superlative, parsed_from_structured)
from ...core.query.open_set import Vocabulary
from ...core.types import (BackendView, GeometryMark, InputError, Prediction2D, SegmentationResult,
                           ViewPredictions)
from ..base import BackendError, SegmentationBackend, normalise_instruction
from . import detector as owl
from .parsing import ImageTarget, parse_caption, parse_grounding, parse_structured, to_image_targets
from .prompts import (ChatPrompt, CoordinateFormat, build_caption_prompt, build_parse_prompt, build_prompt,
                      draw_marks)
from .sam import SamKind, SamMask, decode_masks, preprocess_image, read_normalisation, slice_embeddings

_LOG = logging.getLogger(__name__)



@dataclass(frozen=True)
class CoordinateConvention:
    """How a VLM family writes image coordinates, and where that is stated."""

    fmt: CoordinateFormat
    source: str


# model_type -> the family's grounding coordinate convention. Each entry cites its source; a family
# not listed needs `coord_format` set by hand (the backend refuses to guess).
COORDINATE_CONVENTIONS: dict[str, CoordinateConvention] = {
    "qwen2_vl": CoordinateConvention(
        CoordinateFormat.NORMALISED_1000,
        "Qwen2-VL paper, arXiv 2409.12191, sec. 2.2.1: boxes normalised to [0, 1000), written (x1,y1),(x2,y2)"),
    "qwen2_5_vl": CoordinateConvention(
        CoordinateFormat.RESIZED_PIXELS,
        "Qwen2.5-VL technical report, arXiv 2502.13923, sec. 2.1.2: absolute coordinates of the input as the "
        "processor resized it (no normalisation)"),
    "qwen3_vl": CoordinateConvention(
        CoordinateFormat.NORMALISED_1000,
        "Qwen3-VL model card and 2D-grounding cookbook (QwenLM/Qwen3-VL): relative coordinates 0-1000"),
    "qwen3_vl_moe": CoordinateConvention(
        CoordinateFormat.NORMALISED_1000,
        "Qwen3-VL model card and 2D-grounding cookbook (QwenLM/Qwen3-VL): relative coordinates 0-1000"),
}
# SAM checkpoints by config model_type, as transformers maps them (MODEL_FOR_MASK_GENERATION_MAPPING_NAMES):
# the published SAM 2 / 2.1 checkpoints (facebook/sam2-hiera-*, facebook/sam2.1-hiera-*) say `sam2_video`
# (Sam2VideoModel) and load into Sam2Model, the video model's memory weights left unused.
SAM_KIND_BY_MODEL_TYPE: dict[str, SamKind] = {"sam": SamKind.SAM, "sam2": SamKind.SAM2, "sam2_video": SamKind.SAM2}
# Image size bound of the VLM's processor: 640x480-equivalent keeps ~300-400 image tokens per view
# (Qwen2.5-VL 391, Qwen3-VL 300 at 640x480) where a 1080p frame at the checkpoints' own bound
# (12,845,056 px) costs ~2,700. Views above it are shrunk, aspect kept (transformers' smart_resize).
DEFAULT_MAX_PIXELS = 640 * 480
# Answer length bound. Qwen's tokenizers split every digit into its own token (PRETOKENIZE_REGEX's
# \p{N}): a fenced three-target answer with marks is ~130 tokens written compactly and ~175
# pretty-printed (test/backends/test_transformers_backend.py measures both); 384 leaves 2x margin.
# The bound costs nothing when the model stops, only when it rambles.
DEFAULT_MAX_NEW_TOKENS = 384
_MIN_IMAGE_SIDE = 16
_MAX_ASPECT = 50.0
_DETECTOR_MODEL_TYPES = ("owlv2",)
_MAX_VOCABULARY = 1000
_MAX_PHRASE_CHARS = 64

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TransformersBackendConfig:
    """Configuration of the transformers backend, validated at construction (errors name the field)."""

    vlm_model: str  # HF id (e.g. Qwen/Qwen2.5-VL-7B-Instruct) or local directory
    sam_model: str  # HF id (e.g. facebook/sam2.1-hiera-large, facebook/sam-vit-base) or local directory
    sam_kind: str = "auto"  # auto (from the checkpoint's model_type: sam | sam2 | sam2_video) | sam | sam2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # bfloat16 by default: a 7B VLM needs ~16 GB instead of float32's ~33 GB, on a GPU or (slowly) on a CPU;
    # float32 only for small models or exact CPU numerics (the tests' tiny models).
    dtype: str = "bfloat16"  # float32 | float16 | bfloat16
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # answer length bound (Qwen writes digits one token each)
    max_pixels: int = DEFAULT_MAX_PIXELS  # VLM image size bound (pixels after resize); the checkpoint's own if lower
    batch_size: int = 4  # views per generate call; halved automatically on out-of-memory
    load_in_4bit: bool = False  # bitsandbytes quantisation of the VLM (CUDA only)
    load_in_8bit: bool = False
    min_confidence: float = 0.0  # predictions with alpha below this are dropped
    max_targets_per_view: int = 3  # ranked targets kept from one answer
    coord_format: str = "auto"  # auto (from model_type) | pixels | norm1000
    geometry_prompting: bool = True  # draw marks and add their metric table when views carry marks
    local_files_only: bool = False  # never contact the hub (local directories always load offline)
    # Proposal mode (instruction-free, for the object memory); "" = no proposal mode.
    detector_model: str = ""  # HF id (e.g. google/owlv2-base-patch16-ensemble) or local directory
    proposal_vocabulary: tuple[str, ...] = owl.DEFAULT_VOCABULARY  # class phrases detected in every view
    proposal_score_threshold: float = 0.1  # detector score (sigmoid) a box needs; OWLv2 scores run low
    proposal_nms_iou: float = 0.5  # boxes overlapping a better one more than this are dropped (any label)
    max_proposals_per_view: int = 20

    def __post_init__(self) -> None:
        for name in ("vlm_model", "sam_model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a Hugging Face model id or a local directory, got {value!r}")
        check_choice("sam_kind", self.sam_kind, ("auto",) + tuple(k.value for k in SamKind))
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or (self.device.startswith("cuda:")
                                                        and self.device[5:].isdigit())):
            raise ConfigError(f"device must be one of ['auto', 'cpu', 'cuda', 'cuda:N'], got {self.device!r}")
        check_choice("dtype", self.dtype, ("float32", "float16", "bfloat16"))
        check_int("max_new_tokens", self.max_new_tokens, 1, 4096)
        # 56 x 56 is the Qwen-VL processors' own minimum (min_pixels); 2^26 px is far above any camera.
        check_int("max_pixels", self.max_pixels, 56 * 56, 1 << 26)
        check_int("batch_size", self.batch_size, 1, 256)
        check_range("min_confidence", self.min_confidence, 0.0, 1.0)
        check_int("max_targets_per_view", self.max_targets_per_view, 1, 32)
        check_choice("coord_format", self.coord_format, ("auto",) + tuple(f.value for f in CoordinateFormat))
        for name in ("load_in_4bit", "load_in_8bit", "geometry_prompting", "local_files_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError("load_in_4bit and load_in_8bit are exclusive; set at most one")
        if not isinstance(self.detector_model, str):
            raise ConfigError(f"detector_model must be a Hugging Face model id, a local directory or '' (no "
                              f"proposal mode), got {self.detector_model!r}")
        # Frozen dataclass: normalised values replace the given ones (lists from YAML become a tuple).
        object.__setattr__(self, "detector_model", self.detector_model.strip())
        object.__setattr__(self, "proposal_vocabulary", _check_vocabulary(self.proposal_vocabulary))
        check_range("proposal_score_threshold", self.proposal_score_threshold, 0.0, 1.0)
        check_range("proposal_nms_iou", self.proposal_nms_iou, 0.0, 1.0, low_inclusive=False)
        check_int("max_proposals_per_view", self.max_proposals_per_view, 1, 256)


def _check_vocabulary(vocabulary: object) -> tuple[str, ...]:
    """The proposal vocabulary as a tuple of whitespace-normalised, distinct, non-empty phrases."""
    if isinstance(vocabulary, str) or not isinstance(vocabulary, (list, tuple)):
        raise ConfigError(f"proposal_vocabulary must be a list of class phrases, got {type(vocabulary).__name__}"
                          f" {vocabulary!r:.80}")
    if not 1 <= len(vocabulary) <= _MAX_VOCABULARY:
        raise ConfigError(f"proposal_vocabulary must hold 1 to {_MAX_VOCABULARY} phrases, got {len(vocabulary)}")
    phrases: list[str] = []
    for i, phrase in enumerate(vocabulary):
        text = " ".join(phrase.split()) if isinstance(phrase, str) else None
        if not text or len(text) > _MAX_PHRASE_CHARS:
            raise ConfigError(f"proposal_vocabulary[{i}] must be a phrase of 1 to {_MAX_PHRASE_CHARS} characters, "
                              f"got {phrase!r}")
        if text.lower() in (p.lower() for p in phrases):
            raise ConfigError(f"proposal_vocabulary[{i}] {text!r} is a duplicate (the detector's tokenizer "
                              "ignores case)")
        phrases.append(text)
    return tuple(phrases)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA (or other accelerator) out-of-memory errors."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(exc, oom_type)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def run_with_oom_backoff(items: Sequence[T], batch_size: int, fn: Callable[[Sequence[T]], list[R]],
                         what: str) -> list[R]:
    """Apply `fn` to consecutive batches; on out-of-memory retry that batch at half size, down to 1.

    Raises BackendError when a single item does not fit. The smaller size is kept for later batches,
    since what failed once will fail again.
    """
    import torch

    out: list[R] = []
    start, size = 0, batch_size
    while start < len(items):
        batch = items[start:start + size]
        try:
            out.extend(fn(batch))
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size == 1:
                raise BackendError(
                    f"out of memory in {what} even with one view per batch ({exc}); use a smaller model, "
                    "dtype bfloat16/float16, load_in_4bit/load_in_8bit, or a larger GPU") from None
            size = max(1, size // 2)
            _LOG.warning("out of memory in %s; retrying with batch size %d", what, size)
            continue
        start += len(batch)
    return out


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available else cpu; a CUDA device that is absent -> BackendError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but CUDA is not available (torch "
                               f"{torch.__version__}, built with CUDA {torch.version.cuda}); set device: cpu "
                               "or auto, or install a CUDA build of torch")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise BackendError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA "
                               "device(s) exist")
    return device


def resolve_dtype(dtype: str, device: str):
    """The torch dtype; float16 on CPU falls back to float32 with a warning."""
    import torch

    if dtype == "float16" and device == "cpu":
        # Many CPU kernels have no float16 implementation (or emulate it very slowly), so generation
        # would fail or crawl; bfloat16 is the half precision that CPUs support.
        _LOG.warning("dtype float16 is not supported well on CPU; using float32 (bfloat16 also works on CPU)")
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _have_package(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def device_map(device: str) -> dict | None:
    """from_pretrained's device_map placing every weight on `device` as it is read, or None (load on the
    host, then .to(device)) when accelerate, which transformers needs for device_map, is not installed."""
    if _have_package("accelerate"):
        return {"": device}
    if device != "cpu":
        _LOG.warning("accelerate is not installed: the models are loaded in host memory and then copied to %s "
                     "(pip install accelerate loads them straight onto the device)", device)
    return None


def processor_chat_template(name: str, load_kwargs: dict) -> str | None:
    """The chat template a checkpoint ships for its processor, where its tokenizer has none: the legacy
    chat_template.json ({"chat_template": ...}, what ProcessorMixin reads) or chat_template.jinja."""
    import json

    from transformers.utils import cached_file

    for filename in ("chat_template.json", "chat_template.jinja"):
        path = cached_file(name, filename, local_files_only=load_kwargs.get("local_files_only", False),
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if not path:
            continue
        text = Path(path).read_text(encoding="utf-8")
        if filename.endswith(".jinja"):
            return text
        template = json.loads(text).get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if isinstance(template, str) and template:
            return template
    return None


def bounded_image_size(image_processor, max_pixels: int) -> dict[str, int]:
    """The Qwen-VL processor's `size` (shortest_edge = min_pixels, longest_edge = max_pixels) with the
    pixel bound lowered to `max_pixels`; a checkpoint's own lower bound is kept."""
    size = getattr(image_processor, "size", None) or {}

    def get(key: str):
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

    longest = min(int(get("longest_edge") or max_pixels), max_pixels)
    shortest = min(int(get("shortest_edge") or 56 * 56), longest)
    return {"shortest_edge": shortest, "longest_edge": longest}


@dataclass(frozen=True)
class ModelSource:
    """Where a model is loaded from: a local directory (always offline) or a hub id."""

    ref: str
    local_dir: Path | None

    def kwargs(self, local_files_only: bool) -> dict:
        """from_pretrained keyword arguments for this source."""
        return {"local_files_only": self.local_dir is not None or local_files_only}

    @property
    def name(self) -> str:
        return str(self.local_dir) if self.local_dir is not None else self.ref


def resolve_source(field_name: str, ref: str) -> ModelSource:
    """A local directory when `ref` is one; a hub id when it looks like 'org/name'; else BackendError."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return ModelSource(ref, path.resolve())
    looks_like_path = ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref or path.exists()
    if looks_like_path:
        raise BackendError(f"{field_name}: model directory {ref!r} does not exist (or is not a directory); "
                           "give an existing directory holding config.json and weights, or a Hugging Face id "
                           "on a machine that can reach the hub")
    return ModelSource(ref, None)


def _load_error(field_name: str, source: ModelSource, exc: Exception) -> BackendError:
    hint = ("the directory lacks files the loader needs" if source.local_dir is not None else
            "it is not in the local Hugging Face cache and the hub is not reachable (offline machines "
            "need the model downloaded beforehand, e.g. `huggingface-cli download "
            f"{source.ref}`, then point {field_name} at the local directory)")
    return BackendError(f"{field_name}: cannot load {source.name!r}: {hint}. Cause: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, eq=False)
class _PreparedView:
    """A view after CPU preprocessing: prompt text (image tokens expanded) and the image's patches.

    pixel_values (P, C) float32 patches; image_grid_thw (1, 3) int64; model_wh the resized (w, h).
    A text-only request (instruction parsing) has no view and None for the three image fields.
    """

    view: BackendView | None
    prompt_text: str
    pixel_values: object
    image_grid_thw: object
    model_wh: tuple[int, int] | None


@dataclass(frozen=True)
class VlmAnswer:
    """The decoded answer of one view and the geometric mean of its token probabilities in [0, 1]."""

    text: str
    token_confidence: float


class TransformersBackend(SegmentationBackend):
    """Reason with a VLM (Qwen2-VL / Qwen2.5-VL / Qwen3-VL), then segment with SAM / SAM 2; weights load once here."""

    name = "transformers"

    @property
    def uses_marks(self) -> bool:
        """Views' marks are drawn and listed in the prompt (`geometry_prompting`)."""
        return self.config.geometry_prompting

    def vocabulary(self) -> Vocabulary:
        """Open vocabulary: the VLM reads any phrase and answers [] when the target is not in the image."""
        return Vocabulary.open_vocabulary("the transformers model", "the VLM answers [] when the object is not visible")

    def __init__(self, config: TransformersBackendConfig | None = None, **fields_: object) -> None:
        if config is None:
            known = {f.name for f in fields(TransformersBackendConfig)}
            unknown = sorted(set(fields_) - known)
            if unknown:
                raise ConfigError(f"unknown transformers backend parameter(s) {unknown}; known: {sorted(known)}")
            missing = sorted({"vlm_model", "sam_model"} - set(fields_))
            if missing:
                raise ConfigError(f"transformers backend needs {missing}")
            config = TransformersBackendConfig(**fields_)
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self._device_map = device_map(self.device)
        t0 = time.perf_counter()
        self._load_vlm()
        self._load_sam()
        if config.detector_model:
            self._load_detector()
        self.load_s = time.perf_counter() - t0

    # ---- loading (configure time) ----------------------------------------------------------------
    def _quantization(self):
        if not (self.config.load_in_4bit or self.config.load_in_8bit):
            return None
        field = "load_in_4bit" if self.config.load_in_4bit else "load_in_8bit"
        # transformers' bitsandbytes quantizer needs both packages; without them its ImportError would
        # escape from deep inside from_pretrained, after the tokenizer and config were read.
        missing = [name for name in ("bitsandbytes", "accelerate") if not _have_package(name)]
        if missing:
            raise BackendError(f"{field} needs the package(s) {', '.join(missing)}, not installed "
                               f"(pip install {' '.join(missing)}; bitsandbytes runs on CUDA only); or set "
                               f"{field}: false")
        if not self.device.startswith("cuda"):
            raise BackendError(f"{field} needs a CUDA device; the backend runs on {self.device}")
        from transformers import BitsAndBytesConfig

        if self.config.load_in_4bit:
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=self.dtype,
                                      bnb_4bit_quant_type="nf4")
        return BitsAndBytesConfig(load_in_8bit=True)

    def _placement(self, model) -> object:
        """`model` on the backend's device (a no-op when from_pretrained already placed it there)."""
        return model if self._device_map is not None else model.to(self.device)

    def _load_vlm(self) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        source = resolve_source("vlm_model", self.config.vlm_model)
        kw = source.kwargs(self.config.local_files_only)
        quant = self._quantization()
        try:
            model_config = AutoConfig.from_pretrained(source.name, **kw)
            # Tokenizer and image processor rather than AutoProcessor: in transformers 5 the Qwen-VL
            # processors also build a video processor, which requires torchvision
            # (huggingface/transformers#48558); image grounding needs neither.
            self.tokenizer = AutoTokenizer.from_pretrained(source.name, **kw)
            self.image_processor = AutoImageProcessor.from_pretrained(source.name, **kw)
            load_kw = {"dtype": self.dtype, **kw, **self._load_kwargs()}
            if quant is not None:
                load_kw["quantization_config"] = quant
            self.vlm = AutoModelForImageTextToText.from_pretrained(source.name, **load_kw)
            template = self.tokenizer.chat_template or processor_chat_template(source.name, kw)
        except (OSError, ValueError) as exc:
            raise _load_error("vlm_model", source, exc) from None
        self.vlm = self._placement(self.vlm)
        self.vlm.eval()
        model_type = model_config.model_type
        if self.config.coord_format != "auto":
            self.coord_format = CoordinateFormat(self.config.coord_format)
        elif model_type in COORDINATE_CONVENTIONS:
            self.coord_format = COORDINATE_CONVENTIONS[model_type].fmt
        else:
            raise BackendError(f"vlm_model: model_type {model_type!r} has no known grounding coordinate format "
                               f"(known: {sorted(COORDINATE_CONVENTIONS)}); set coord_format to pixels or norm1000")
        if not template:
            raise BackendError(f"vlm_model: {source.name!r} has no chat template (neither in the tokenizer nor in "
                               "the processor's chat_template.json / chat_template.jinja); use an instruction-tuned "
                               "model")
        self.tokenizer.chat_template = template
        self.image_token = "<|image_pad|>"
        self.image_token_id = getattr(model_config, "image_token_id", None)
        if self.image_token_id is None:
            self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        self.merge_size = int(getattr(self.image_processor, "merge_size", 2))
        self.patch_size = int(getattr(self.image_processor, "patch_size", 14))
        self.image_size = bounded_image_size(self.image_processor, self.config.max_pixels)
        eos = self.vlm.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.eos_ids.add(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(
            iter(self.eos_ids))

    def _load_kwargs(self) -> dict:
        """from_pretrained placement: weights read straight onto the device (device_map, which needs
        accelerate) rather than built in host memory and copied with .to(device)."""
        return {} if self._device_map is None else {"device_map": self._device_map}

    def _load_sam(self) -> None:
        from transformers import AutoConfig, SamModel, Sam2Model

        source = resolve_source("sam_model", self.config.sam_model)
        kw = source.kwargs(self.config.local_files_only)
        try:
            sam_config = AutoConfig.from_pretrained(source.name, **kw)
        except (OSError, ValueError) as exc:
            raise _load_error("sam_model", source, exc) from None
        detected = SAM_KIND_BY_MODEL_TYPE.get(sam_config.model_type)
        if self.config.sam_kind != "auto":
            requested = SamKind(self.config.sam_kind)
            if detected is not None and detected is not requested:
                raise BackendError(f"sam_kind is {requested.value!r} but {source.name!r} is a "
                                   f"{sam_config.model_type!r} checkpoint; set sam_kind: auto")
            detected = requested
        if detected is None:
            raise BackendError(f"sam_model: model_type {sam_config.model_type!r} is not a supported SAM "
                               f"(supported: {sorted(SAM_KIND_BY_MODEL_TYPE)}); set sam_kind: sam or sam2 if it "
                               "is one")
        self.sam_kind = detected
        cls = SamModel if detected is SamKind.SAM else Sam2Model
        # The config read above is passed on, as AutoModelForMaskGeneration does: a sam2_video config
        # builds the image model without a "model of type sam2_video into sam2" warning.
        config_kw = {"config": sam_config} if sam_config.model_type in SAM_KIND_BY_MODEL_TYPE else {}
        try:
            self.sam = self._placement(cls.from_pretrained(source.name, dtype=self.dtype, **config_kw, **kw,
                                                           **self._load_kwargs())).eval()
        except (OSError, ValueError) as exc:
            raise _load_error("sam_model", source, exc) from None
        self.sam_side = int(sam_config.prompt_encoder_config.image_size)
        self.sam_mean, self.sam_std = read_normalisation(source.local_dir)

    def _load_detector(self) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer, Owlv2ForObjectDetection

        source = resolve_source("detector_model", self.config.detector_model)
        kw = source.kwargs(self.config.local_files_only)
        try:
            detector_config = AutoConfig.from_pretrained(source.name, **kw)
        except (OSError, ValueError) as exc:
            raise _load_error("detector_model", source, exc) from None
        if detector_config.model_type not in _DETECTOR_MODEL_TYPES:
            raise BackendError(f"detector_model: model_type {detector_config.model_type!r} is not a supported "
                               f"open-vocabulary detector (supported: {list(_DETECTOR_MODEL_TYPES)}, e.g. "
                               "google/owlv2-base-patch16-ensemble)")
        try:
            self.detector_tokenizer = AutoTokenizer.from_pretrained(source.name, **kw)
            self.detector = Owlv2ForObjectDetection.from_pretrained(source.name, dtype=self.dtype, **kw,
                                                                    **self._load_kwargs())
        except (OSError, ValueError) as exc:
            raise _load_error("detector_model", source, exc) from None
        self.detector = self._placement(self.detector).eval()
        side = detector_config.vision_config.image_size
        # The box head's position bias is built for this square input; other sizes would need interpolation.
        self.detector_side = int(side[0] if isinstance(side, (list, tuple)) else side)
        self.detector_text_tokens = int(detector_config.text_config.max_position_embeddings)
        self.detector_mean, self.detector_std = read_normalisation(source.local_dir, owl.CLIP_MEAN, owl.CLIP_STD)
        # Shared by every proposal of a phrase: read-only, so no caller can alter another's embedding.
        self.vocabulary_embeddings = self._text_features(self.config.proposal_vocabulary)
        self.vocabulary_embeddings.setflags(write=False)
        self._vocabulary_queries = torch.from_numpy(self.vocabulary_embeddings.copy()).to(self.device, self.dtype)

    def close(self) -> None:
        """Drop the weights and return device memory."""
        import torch

        for attr in ("vlm", "sam", "detector", "_vocabulary_queries"):
            if hasattr(self, attr):
                delattr(self, attr)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- preprocess (CPU) ------------------------------------------------------------------------
    @staticmethod
    def validate_view(view: BackendView) -> None:
        """InputError unless the colour image is (H, W, 3) uint8 matching the view's intrinsics."""
        img = view.color_rgb
        if not isinstance(img, np.ndarray):
            raise InputError(f"view {view.keyframe_id}: color_rgb must be a numpy array, got {type(img).__name__}")
        if img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"view {view.keyframe_id}: color_rgb must be (H, W, 3), got shape {img.shape}")
        if img.dtype != np.uint8:
            raise InputError(f"view {view.keyframe_id}: color_rgb must be uint8, got {img.dtype}")
        h, w = img.shape[:2]
        if min(h, w) < _MIN_IMAGE_SIDE or max(h, w) / min(h, w) > _MAX_ASPECT:
            raise InputError(f"view {view.keyframe_id}: image {w}x{h} is too small (< {_MIN_IMAGE_SIDE} px) or "
                             f"too elongated (aspect > {_MAX_ASPECT:g})")
        if (view.intrinsics.width, view.intrinsics.height) != (w, h):
            raise InputError(f"view {view.keyframe_id}: image is {w}x{h} but intrinsics are for "
                             f"{view.intrinsics.width}x{view.intrinsics.height}")

    def _preprocess(self, view: BackendView, instruction: str) -> _PreparedView:
        """Marks drawn, image patchified, prompt built in the resized frame, image tokens expanded."""
        h, w = view.color_rgb.shape[:2]
        marks = view.marks if self.config.geometry_prompting else ()
        return self._prepare(view, marks, lambda model_wh: build_prompt(
            instruction, self.coord_format, (w, h), model_wh, marks, self.config.max_targets_per_view))

    def _prepare(self, view: BackendView, marks: Sequence[GeometryMark],
                 prompt_for: Callable[[tuple[int, int]], ChatPrompt]) -> _PreparedView:
        """`marks` drawn, image patchified, `prompt_for(model_wh)` templated, image tokens expanded."""
        image = draw_marks(view.color_rgb, marks) if marks else view.color_rgb
        image_inputs = self.image_processor(images=[image], size=self.image_size, return_tensors="pt")
        grid = image_inputs["image_grid_thw"][0]
        # The processor's resize (bounded by max_pixels) is the frame Qwen2.5-VL writes absolute pixel coordinates in.
        model_wh = (int(grid[2]) * self.patch_size, int(grid[1]) * self.patch_size)
        prompt = prompt_for(model_wh)
        text = self.tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        n_tokens = int(grid.prod()) // (self.merge_size ** 2)
        text = text.replace(self.image_token, self.image_token * n_tokens, 1)
        return _PreparedView(view=view, prompt_text=text, pixel_values=image_inputs["pixel_values"],
                             image_grid_thw=image_inputs["image_grid_thw"], model_wh=model_wh)

    # ---- forward (device) ------------------------------------------------------------------------
    def _generate(self, batch: Sequence[_PreparedView]) -> list[VlmAnswer]:
        """One batched, left-padded generate over several views."""
        import torch

        text_inputs = self.tokenizer([p.prompt_text for p in batch], padding=True, padding_side="left",
                                     return_tensors="pt")
        with_images = [p for p in batch if p.pixel_values is not None]
        if with_images and len(with_images) != len(batch):
            raise ValueError("a generate batch mixes text-only and image requests")
        image_inputs = {"pixel_values": torch.cat([p.pixel_values for p in batch]),
                        "image_grid_thw": torch.cat([p.image_grid_thw for p in batch])} if with_images else {}
        # M-RoPE needs to know which positions are image tokens (what the Qwen-VL processors return).
        text_inputs["mm_token_type_ids"] = (text_inputs["input_ids"] == self.image_token_id).int()
        inputs = {k: v.to(self.device) for k, v in {**text_inputs, **image_inputs}.items()}
        if with_images:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.vlm.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False,
                                    return_dict_in_generate=True, output_logits=True, pad_token_id=self.pad_id)
        new_tokens = out.sequences[:, text_inputs["input_ids"].shape[1]:]
        # Log-probability of each chosen token under the raw logits, gathered step by step so that the
        # (steps x batch x vocab) logits are never stacked (150k-token vocabularies on real models).
        token_logprobs = torch.cat([torch.log_softmax(step.float(), dim=-1).gather(1, new_tokens[:, t:t + 1])
                                    for t, step in enumerate(out.logits)], dim=1).cpu()
        new_tokens = new_tokens.cpu()
        answers = []
        for row in range(new_tokens.shape[0]):
            ids = new_tokens[row].tolist()
            end = next((i for i, t in enumerate(ids) if t in self.eos_ids or t == self.pad_id), len(ids))
            confidence = float(torch.exp(token_logprobs[row, :end].mean())) if end else 0.0
            answers.append(VlmAnswer(self.tokenizer.decode(ids[:end], skip_special_tokens=True), confidence))
        return answers

    def _segment_views(self, items: Sequence[tuple[BackendView, Sequence[ImageTarget]]]) -> list[list]:
        """SAM masks for every target of every view: images embedded as a batch, prompts per view."""
        import torch

        tensors, geometries = zip(*(preprocess_image(view.color_rgb, self.sam_kind, self.sam_side,
                                                     self.sam_mean, self.sam_std) for view, _ in items))
        pixel_values = torch.from_numpy(np.stack(tensors)).to(self.device, self.dtype)
        with torch.inference_mode():
            embeddings = self.sam.get_image_embeddings(pixel_values)
            return [decode_masks(self.sam, slice_embeddings(embeddings, i), geometry, targets, self.device,
                                 self.dtype, self.sam_kind)
                    for i, ((_, targets), geometry) in enumerate(zip(items, geometries))]

    def _masks(self, views: Sequence[BackendView], targets: Sequence[Sequence[ImageTarget]]) -> list[list[SamMask]]:
        """SAM masks of each view's targets, batched over views; views with no target cost no SAM encoding."""
        to_segment = [i for i, ts in enumerate(targets) if ts]
        decoded = run_with_oom_backoff([(views[i], targets[i]) for i in to_segment], self.config.batch_size,
                                       self._segment_views, "SAM decoding")
        masks: list[list[SamMask]] = [[] for _ in views]
        for i, view_masks in zip(to_segment, decoded):
            masks[i] = view_masks
        return masks

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised mean last-layer hidden states of each text (text-only forward)."""
        import torch

        enc = self.tokenizer(list(texts), padding=True, padding_side="left", return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.vlm(**enc, output_hidden_states=True).hidden_states[-1].float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu().numpy()
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    # ---- the query ------------------------------------------------------------------------------
    def segment(self, views: Sequence[BackendView], instruction: str | bytes) -> SegmentationResult:
        """Per view: VLM answer -> ranked targets -> SAM masks; alpha = SAM quality x VLM token confidence."""
        text = normalise_instruction(instruction)
        views = tuple(views)
        for view in views:
            self.validate_view(view)
        if not hasattr(self, "vlm"):
            raise BackendError("the transformers backend was closed; construct a new one")
        t0 = time.perf_counter()
        prepared = [self._preprocess(v, text) for v in views]
        answers = run_with_oom_backoff(prepared, self.config.batch_size, self._generate, "VLM generation")
        targets = []
        for p, answer in zip(prepared, answers):
            h, w = p.view.color_rgb.shape[:2]
            targets.append(to_image_targets(parse_grounding(answer.text), self.coord_format, (w, h), p.model_wh,
                                            p.view.marks, self.config.max_targets_per_view))
        masks = self._masks([p.view for p in prepared], targets)
        labels = sorted({t.label for ts in targets for t in ts if t.label})
        vectors = self.embed_texts([text, *labels])
        query, by_label = vectors[0], dict(zip(labels, vectors[1:]))
        results = []
        for p, answer, view_targets, view_masks in zip(prepared, answers, targets, masks):
            predictions = []
            for target, sam_mask in zip(view_targets, view_masks):
                alpha = float(np.clip(sam_mask.score * answer.token_confidence, 0.0, 1.0))
                if alpha < self.config.min_confidence or not math.isfinite(alpha):
                    continue
                # Without a label the target is "what the instruction asked for": e_i = q.
                embedding = by_label.get(target.label, query)
                predictions.append(Prediction2D(mask=sam_mask.mask, confidence=alpha, embedding=embedding,
                                                label=target.label, box_xyxy=target.box_xyxy,
                                                mark_id=target.mark_id))
            results.append(ViewPredictions(keyframe_id=p.view.keyframe_id, predictions=tuple(predictions)))
        return SegmentationResult(target_phrase=_target_phrase(targets, text), query_embedding=query,
                                  views=tuple(results), forward_ms=(time.perf_counter() - t0) * 1e3)

    # ---- dense captions ----------------------------------------------------------------------------
    def caption(self, view: BackendView, mark: GeometryMark) -> str:
        """One short phrase describing the object under `mark` (drawn into `view` whatever geometry_prompting
        says: it is how the model knows which object is meant). BackendError when the answer is unusable."""
        self.validate_view(view)
        if not hasattr(self, "vlm"):
            raise BackendError("the transformers backend was closed; construct a new one")
        h, w = view.color_rgb.shape[:2]
        if not (0.0 <= mark.pixel_xy[0] < w and 0.0 <= mark.pixel_xy[1] < h):
            raise InputError(f"view {view.keyframe_id}: mark {mark.mark_id} at {mark.pixel_xy} is outside the "
                             f"{w}x{h} image")
        prepared = self._prepare(view, (mark,), lambda model_wh: build_caption_prompt(
            mark, self.coord_format, (w, h), model_wh))
        (answer,) = run_with_oom_backoff([prepared], 1, self._generate, "VLM captioning")
        text = parse_caption(answer.text)
        if not text:
            raise BackendError(f"the VLM gave no usable caption for mark {mark.mark_id} "
                               f"(answer {answer.text[:80]!r})")
        return text

    # ---- instruction parsing ----------------------------------------------------------------------
    def parse(self, instruction: str | bytes) -> ParsedInstruction:
        """The instruction as the VLM splits it (target, attributes, relation, anchors, ranking, exclusion),
        validated by the core; an unusable answer gives the grammar's parse with a note saying so."""
        text = normalise_instruction(instruction)
        if not hasattr(self, "vlm"):
            raise BackendError("the transformers backend was closed; construct a new one")
        prompt = build_parse_prompt(text, [r.value for r in Relation], [s.value for s in Superlative])
        templated = self.tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        prepared = _PreparedView(view=None, prompt_text=templated, pixel_values=None, image_grid_thw=None,
                                 model_wh=None)
        (answer,) = run_with_oom_backoff([prepared], 1, self._generate, "VLM instruction parsing")
        structured = parse_structured(answer.text)
        return parsed_from_structured(structured if structured is not None else answer.text, text)

    # ---- proposals (instruction-free, for the object memory) ---------------------------------------
    def _require_detector(self) -> None:
        if not hasattr(self, "vlm"):
            raise BackendError("the transformers backend was closed; construct a new one")
        if not hasattr(self, "detector"):
            raise BackendError("proposal mode needs an open-vocabulary detector: set detector_model to a Hugging "
                               "Face id or local directory of an OWLv2 checkpoint (e.g. "
                               "google/owlv2-base-patch16-ensemble); it is '' (proposal mode off)")

    def _text_features(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised detector text embeddings (the CLIP space its class head compares in).

        Padded to the text tower's fixed length, as Owlv2Processor does; the tower is causal and pools at
        the end-of-text token, so a text's embedding does not depend on the batch it is encoded in.
        Longer texts are cut to the tower's length (16 tokens for OWLv2).
        """
        import torch

        if not texts:
            return np.zeros((0, self.detector.config.projection_dim), np.float32)
        enc = self.detector_tokenizer(list(texts), padding="max_length", truncation=True,
                                      max_length=self.detector_text_tokens, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.detector.owlv2.get_text_features(input_ids=enc["input_ids"],
                                                        attention_mask=enc["attention_mask"])
        features = out.pooler_output.float().cpu().numpy()
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return (features / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of phrases in the space of the proposals' embeddings."""
        self._require_detector()
        if isinstance(texts, (str, bytes)) or not isinstance(texts, SequenceABC):
            raise InputError(f"texts must be a sequence of strings, got {type(texts).__name__}")
        cleaned = []
        for i, text in enumerate(texts):
            try:
                cleaned.append(normalise_instruction(text))
            except InputError as exc:
                raise InputError(f"texts[{i}]: {exc}") from None
        return self._text_features(cleaned)

    def _detect(self, views: Sequence[BackendView]) -> list[list[owl.Detection]]:
        """One batched detector forward over several views, against the vocabulary's cached embeddings."""
        import torch

        tensors, geometries = zip(*(owl.preprocess_image(v.color_rgb, self.detector_side, self.detector_mean,
                                                         self.detector_std) for v in views))
        pixel_values = torch.from_numpy(np.stack(tensors)).to(self.device, self.dtype)
        with torch.inference_mode():
            feature_map = self.detector.image_embedder(pixel_values=pixel_values)[0]
            b, ph, pw, d = feature_map.shape
            image_feats = feature_map.reshape(b, ph * pw, d)
            logits, _ = self.detector.class_predictor(image_feats, self._vocabulary_queries.expand(b, -1, -1), None)
            boxes = self.detector.box_predictor(image_feats, feature_map)
        logits, boxes = logits.float().cpu().numpy(), boxes.float().cpu().numpy()
        cfg = self.config
        return [owl.select_detections(logits[i], owl.boxes_to_image(boxes[i], geometry),
                                      cfg.proposal_score_threshold, cfg.proposal_nms_iou, cfg.max_proposals_per_view)
                for i, geometry in enumerate(geometries)]

    def propose(self, views: Sequence[BackendView]) -> tuple[ViewPredictions, ...]:
        """Every vocabulary phrase found in each view, masked by SAM; one ViewPredictions per view, in order.

        confidence = detector score x SAM's mask quality; embedding = the phrase's detector text
        embedding (equal to `encode_text([label])[0]`); proposals whose mask comes out empty are dropped.
        """
        self._require_detector()
        views = tuple(views)
        for view in views:
            self.validate_view(view)
        detections = run_with_oom_backoff(views, self.config.batch_size, self._detect, "detector")
        vocabulary = self.config.proposal_vocabulary
        targets = [tuple(ImageTarget(rank=r, label=vocabulary[d.label_index], box_xyxy=d.box_xyxy, point_xy=None)
                         for r, d in enumerate(view_detections)) for view_detections in detections]
        masks = self._masks(views, targets)
        results = []
        for view, view_detections, view_masks in zip(views, detections, masks):
            predictions = []
            for det, sam_mask in zip(view_detections, view_masks):
                confidence = float(np.clip(det.score * sam_mask.score, 0.0, 1.0))
                if not sam_mask.mask.any() or not math.isfinite(confidence):
                    continue
                predictions.append(Prediction2D(mask=sam_mask.mask, confidence=confidence,
                                                embedding=self.vocabulary_embeddings[det.label_index],
                                                label=vocabulary[det.label_index], box_xyxy=det.box_xyxy))
            results.append(ViewPredictions(keyframe_id=view.keyframe_id, predictions=tuple(predictions)))
        return tuple(results)


def _target_phrase(targets: Sequence[Sequence[ImageTarget]], instruction: str) -> str:
    """The label most views rank first (ties: first seen); the instruction when no view named one."""
    counts: dict[str, int] = {}
    for view_targets in targets:
        if view_targets and view_targets[0].label:
            counts[view_targets[0].label] = counts.get(view_targets[0].label, 0) + 1
    return max(counts, key=counts.get) if counts else instruction
