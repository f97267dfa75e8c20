"""Defensive parsing of a grounding VLM's answer into boxes, points and marks.

Models drift from the requested format: JSON in ```json fences, prose around it, answers cut off by
max_new_tokens, inverted or out-of-range boxes, several targets, or no JSON at all. The parser reads
only the fields it expects (anything else the model says is ignored), and never raises on model text.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ...core.types import GeometryMark
from .prompts import CoordinateFormat

_BOX_KEYS = ("bbox_2d", "bbox", "box_2d", "box")
_POINT_KEYS = ("point_2d", "point")
_LABEL_KEYS = ("label", "name", "object", "target")
_MARK_KEYS = ("mark", "mark_id", "id")

_NUM = r"(-?\d+(?:\.\d+)?)"
_SEP = r"\s*,\s*"
_RE_BOX = re.compile(r'"(?:%s)"\s*:\s*\[\s*%s%s%s%s%s%s%s\s*\]' % ("|".join(_BOX_KEYS), _NUM, _SEP, _NUM, _SEP,
                                                                     _NUM, _SEP, _NUM))
_RE_POINT = re.compile(r'"(?:%s)"\s*:\s*\[\s*%s%s%s\s*\]' % ("|".join(_POINT_KEYS), _NUM, _SEP, _NUM))
_RE_LABEL = re.compile(r'"(?:%s)"\s*:\s*"((?:[^"\\]|\\.)*)"' % "|".join(_LABEL_KEYS))
_RE_MARK = re.compile(r'"(?:%s)"\s*:\s*"?#?(\d+)' % "|".join(_MARK_KEYS))
# Free-text fallbacks: "[12, 34, 56, 78]" or "(12, 34, 56, 78)"; Qwen2-VL's "(x1,y1),(x2,y2)" box
# (its <|box_start|> markers vanish when special tokens are skipped); "(500, 400)"; "mark 3", "#3".
_RE_FREE_PAIR_BOX = re.compile(r"\(\s*%s%s%s\s*\)\s*,?\s*\(\s*%s%s%s\s*\)" % (_NUM, _SEP, _NUM, _NUM, _SEP, _NUM))
_RE_FREE_BOX = re.compile(r"[\[(]\s*%s%s%s%s%s%s%s\s*[\])]" % (_NUM, _SEP, _NUM, _SEP, _NUM, _SEP, _NUM))
_RE_FREE_POINT = re.compile(r"[\[(]\s*%s%s%s\s*[\])]" % (_NUM, _SEP, _NUM))
_RE_FREE_MARK = re.compile(r"(?:\bmark\s*(?:id|number|no\.?)?\s*[:=]?\s*#?|#)(\d+)\b", re.IGNORECASE)


@dataclass(frozen=True)
class GroundingTarget:
    """One target as the model wrote it, in the model's coordinate frame (any field may be missing)."""

    label: str = ""
    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    mark_id: int | None = None


@dataclass(frozen=True)
class ImageTarget:
    """A target in original-image pixels, ready for SAM; rank 0 is the model's first choice.

    box_xyxy: (x1, y1, x2, y2) with x1 < x2, y1 < y2 inside the image; point_xy: inside the image.
    At least one of the two is set.
    """

    rank: int
    label: str
    box_xyxy: tuple[float, float, float, float] | None
    point_xy: tuple[float, float] | None
    mark_id: int | None = None


def _object_chunks(text: str) -> list[str]:
    """Top-level {...} spans of `text`, string-aware; an object cut off at the end is returned as is."""
    chunks, depth, start, in_str, escaped = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = depth > 0
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                chunks.append(text[start:i + 1])
    if depth > 0:
        chunks.append(text[start:])
    return chunks


def _numbers(value: Any, n: int) -> tuple[float, ...] | None:
    """`value` as n finite floats (numbers or numeric strings), else None."""
    if not isinstance(value, (list, tuple)) or len(value) != n:
        return None
    try:
        out = tuple(float(v) for v in value if not isinstance(v, bool))
    except (TypeError, ValueError):
        return None
    if len(out) != n or any(v != v or abs(v) == float("inf") for v in out):
        return None
    return out


def _mark_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*#?(\d+)\s*", value)
        return int(match.group(1)) if match else None
    return None


def _first(obj: dict, keys: Sequence[str]) -> Any:
    return next((obj[k] for k in keys if k in obj), None)


def _target_from_dict(obj: dict) -> GroundingTarget:
    label = _first(obj, _LABEL_KEYS)
    return GroundingTarget(label=label.strip() if isinstance(label, str) else "",
                           box=_numbers(_first(obj, _BOX_KEYS), 4),
                           point=_numbers(_first(obj, _POINT_KEYS), 2),
                           mark_id=_mark_id(_first(obj, _MARK_KEYS)))


def _target_from_fragment(chunk: str) -> GroundingTarget:
    """Field-by-field regex reading of an object that is not valid JSON (typically truncated)."""
    box, point, label, mark = (_RE_BOX.search(chunk), _RE_POINT.search(chunk), _RE_LABEL.search(chunk),
                               _RE_MARK.search(chunk))
    text = ""
    if label:
        try:
            text = json.loads(f'"{label.group(1)}"').strip()
        except ValueError:
            text = label.group(1).strip()
    return GroundingTarget(label=text,
                           box=tuple(float(v) for v in box.groups()) if box else None,
                           point=tuple(float(v) for v in point.groups()) if point else None,
                           mark_id=int(mark.group(1)) if mark else None)


def _free_text_targets(text: str) -> list[GroundingTarget]:
    """Targets from prose when there is no JSON object: bracketed 4-number boxes, else points, else marks."""
    matches = sorted([*_RE_FREE_BOX.finditer(text), *_RE_FREE_PAIR_BOX.finditer(text)], key=lambda m: m.start())
    if matches:
        return [GroundingTarget(box=tuple(float(v) for v in m.groups())) for m in matches]
    points = [GroundingTarget(point=tuple(float(v) for v in m.groups())) for m in _RE_FREE_POINT.finditer(text)]
    if points:
        return points
    return [GroundingTarget(mark_id=int(m.group(1))) for m in _RE_FREE_MARK.finditer(text)]


def parse_grounding(text: str) -> tuple[GroundingTarget, ...]:
    """All targets found in a model answer, in the order written; () when there are none."""
    targets = []
    for chunk in _object_chunks(text):
        try:
            obj = json.loads(chunk)
        except ValueError:
            target = _target_from_fragment(chunk)
        else:
            if not isinstance(obj, dict):
                continue
            target = _target_from_dict(obj)
        if target.box is not None or target.point is not None or target.mark_id is not None:
            targets.append(target)
    if not targets and not _object_chunks(text):
        targets = _free_text_targets(text)
    return tuple(targets)


def to_image_targets(targets: Sequence[GroundingTarget], fmt: CoordinateFormat, image_wh: tuple[int, int],
                     model_wh: tuple[int, int], marks: Sequence[GeometryMark] = (),
                     max_targets: int = 3, min_box_px: float = 1.0) -> tuple[ImageTarget, ...]:
    """Map targets into original-image pixels: sort and clip boxes, drop degenerate ones and duplicates.

    image_wh: original (width, height); model_wh: the resized size the model saw (RESIZED_PIXELS frame).
    A mark id the view does not carry is ignored; a target left with neither box nor point is dropped.
    """
    w, h = image_wh
    if fmt is CoordinateFormat.NORMALISED_1000:
        sx, sy = w / 1000.0, h / 1000.0
    else:
        sx, sy = w / float(model_wh[0]), h / float(model_wh[1])
    marks_by_id = {m.mark_id: m for m in marks}
    out: list[ImageTarget] = []
    seen: set[tuple] = set()
    for t in targets:
        box = None
        if t.box is not None:
            x1, x2 = sorted((t.box[0] * sx, t.box[2] * sx))
            y1, y2 = sorted((t.box[1] * sy, t.box[3] * sy))
            x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
            y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
            if x2 - x1 >= min_box_px and y2 - y1 >= min_box_px:
                box = (x1, y1, x2, y2)
        point = None
        if t.point is not None:
            px, py = t.point[0] * sx, t.point[1] * sy
            point = (px, py) if 0.0 <= px < w and 0.0 <= py < h else None
        mark = marks_by_id.get(t.mark_id) if t.mark_id is not None else None
        if point is None and mark is not None:
            mx, my = mark.pixel_xy
            point = (float(mx), float(my)) if 0.0 <= mx < w and 0.0 <= my < h else None
        if box is None and point is None:
            continue
        key = (box, None if box else point)
        if key in seen:
            continue
        seen.add(key)
        label = t.label or (mark.label if mark is not None else "")
        out.append(ImageTarget(rank=len(out), label=label, box_xyxy=box, point_xy=point,
                               mark_id=mark.mark_id if mark is not None else None))
        if len(out) == max_targets:
            break
    return tuple(out)


_CAPTION_KEYS = ("caption", "description", "text", "answer")
_CAPTION_PREFIX = re.compile(r"^\s*(?:(?:caption|description|answer)\s*:|mark\s*#?\d+\s*(?::|-|is)?)\s*",
                             re.IGNORECASE)
_CONTROL = re.compile(r"<\|[^|<>]{0,40}\|>|</?[a-z_]{1,20}>", re.IGNORECASE)


def _unwrapped(text: str) -> str:
    """A model answer without chat tokens, tags and code fences (what hides a JSON object or a plain line)."""
    return _CONTROL.sub(" ", text or "").replace("```json", "\n").replace("```", "\n")


def parse_caption(text: str, max_chars: int = 200) -> str:
    """A model's caption as one plain line: JSON unwrapped, fences, tags, quotes and 'Mark 3:' stripped,
    cut at a word boundary to `max_chars`; '' when nothing usable is left. Never raises on model text."""
    text = _unwrapped(text)
    for chunk in _object_chunks(text):
        try:
            obj = json.loads(chunk)
        except ValueError:
            continue
        value = _first(obj, _CAPTION_KEYS) if isinstance(obj, dict) else None
        if isinstance(value, str):
            text = value
            break
    line = next((ln for ln in (" ".join(x.split()) for x in text.splitlines()) if ln.strip("\"'`*[]{} ")), "")
    line = _CAPTION_PREFIX.sub("", line).strip("\"'`* ")
    line = "".join(ch for ch in line if ch.isprintable())
    if len(line) > max_chars:
        line = line[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return line


_JSON_WORDS = re.compile(r"\b(null|true|false)\b")


def parse_structured(text: str) -> dict | None:
    """The first JSON object of a model answer as a dict, or None. Tolerates code fences, prose before or after
    it, single quotes and Python literals (None, True); only the outermost object is read. Never raises."""
    text = _unwrapped(text)
    for chunk in _object_chunks(text):
        try:
            obj = json.loads(chunk)
        except ValueError:
            try:  # single quotes / Python literals: JSON words mapped to Python ones first
                obj = ast.literal_eval(_JSON_WORDS.sub(lambda m: {"null": "None", "true": "True",
                                                                   "false": "False"}[m.group(1)], chunk))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        if isinstance(obj, dict):
            return obj
    return None
