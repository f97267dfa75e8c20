"""Dense captions of the object memory: one short description per object (GAP-MLLM's 3D dense captioning,
from explicit geometry rather than a model): class, colour, size, position, and its relation to the
nearest neighbour ("a white mug, 0.10 x 0.08 x 0.10 m, at (0.21, 1.80, -0.72) m, on the table #3").

With a backend that captions (`caption_fn`, the MLLM backend's `caption`), the model describes each
object on its best stored view with its mark drawn (what it is, colour, material, details), and the
geometric caption follows it: "A red mug with a chipped handle; a red mug, 0.10 x ... m, on the table #3".
A backend without a caption mode, an object no stored view sees, or a failing call leave the geometric
caption, and `note` says why.

Colours follow `core/query/colours.py` (the object's fused map colours when `colour_fn` gives them, else its
mean colour: "a white and blue mug"); shapes `core/query/shapes.py`. An object no detector named (unlabelled,
class-agnostic) is described as such: "an unlabelled object (label unconfirmed), red, flat, 0.15 x ...".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, MutableMapping, Sequence

import numpy as np

from .instruction import Relation
from .colours import ColourProfile, colour_profile
from ..memory.object_memory import MemoryObject
from .marks import object_mark
from .relations import box_gap_m, BoxGeometry, relation_score
from ..segmentation import BackendError, BackendUnavailable, ModeUnsupported
from .shapes import shape_words
from ..types import BackendView, GeometryMark, InputError, Keyframe, keyframe_view

ColourFn = Callable[[MemoryObject], ColourProfile]

CaptionFn = Callable[[BackendView, GeometryMark], str]
KeyframeFn = Callable[[int], "Keyframe | None"]


@dataclass(frozen=True)
class ObjectCaption:
    """A memory object with its caption; `relation` and `neighbour_id` are '' / -1 when none applies.

    model_text: the model's own description ('' without one); note: why there is none, when it was asked for.
    """

    instance_id: int
    label: str
    text: str
    relation: str
    neighbour_id: int
    model_text: str = ""
    note: str = ""


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _model_caption(obj: MemoryObject, caption_fn: CaptionFn, keyframe_fn: KeyframeFn,
                   cache: MutableMapping | None) -> str:
    """The model's caption of `obj` on the first of its best keyframes that still sees it (ModeUnsupported,
    BackendError, InputError, TimeoutError propagate; ValueError when no stored view sees it)."""
    for kf_id in obj.best_keyframe_ids:
        keyframe = keyframe_fn(kf_id)
        mark = object_mark(1, obj, keyframe) if keyframe is not None else None
        if mark is None:
            continue
        key = (obj.instance_id, kf_id, obj.label)
        if cache is not None and key in cache:
            return cache[key]
        text = " ".join(str(caption_fn(keyframe_view(keyframe, (mark,)), mark)).split())
        if not text:
            raise BackendError("the model returned an empty caption")
        if cache is not None:
            cache[key] = text
        return text
    raise ValueError("none of its stored keyframes sees it")


def describe_objects(objects: Sequence[MemoryObject], near_m: float = 0.3, *, caption_fn: CaptionFn | None = None,
                     keyframe_fn: KeyframeFn | None = None, cache: MutableMapping | None = None,
                     colour_fn: ColourFn | None = None,
                     voxel_size_m: float = 0.03) -> tuple[ObjectCaption, ...]:
    """Captions of `objects`, in their order. The relation named is ON when the object rests on another,
    else NEAR for the closest other object within `near_m`.

    caption_fn / keyframe_fn: the model's captions on each object's best keyframe (looked up by id);
    `cache` keeps them per (instance, keyframe, label), so a repeated call does not ask the model again.
    colour_fn: an object's colour profile from the fused map (default: from its mean colour).
    """
    out = []
    unsupported = ""
    for obj in objects:
        profile = colour_fn(obj) if colour_fn is not None else colour_profile(np.asarray([obj.mean_color_rgb]))
        colour = profile.phrase() or "grey"
        label = obj.label.lower()
        size = obj.box.size_m
        c = obj.box.center_world_m
        shapes = sorted(shape_words(obj.box, obj.points_world_m, voxel_size_m))
        shape = "".join(f", {w}" for w in shapes)
        if obj.unlabelled:
            head = f"an unlabelled object (label unconfirmed), {colour}{shape}"
        else:
            head = f"{_article(colour)} {colour} {label}{shape}"
        text = f"{head}, {size[0]:.2f} x {size[1]:.2f} x {size[2]:.2f} m, at ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) m"
        relation, neighbour = "", -1
        others = [o for o in objects if o.instance_id != obj.instance_id]
        supports = [o for o in others if np.isfinite(relation_score(obj.box, [o.box], Relation.ON))
                    and float(np.prod(o.box.size_m)) > float(np.prod(obj.box.size_m))]
        if supports:
            support = min(supports, key=lambda o: abs(BoxGeometry.of(obj.box).lo[2] - BoxGeometry.of(o.box).hi[2]))
            relation, neighbour = "on", support.instance_id
            text += f", on the {support.label.lower()} #{support.instance_id}"
        elif others:
            gaps = [box_gap_m(BoxGeometry.of(obj.box), BoxGeometry.of(o.box)) for o in others]
            k = int(np.argmin(gaps))
            if gaps[k] <= near_m:
                relation, neighbour = "next to", others[k].instance_id
                text += f", next to the {others[k].label.lower()} #{others[k].instance_id}"
        model_text, note = "", ""
        if caption_fn is not None and keyframe_fn is not None:
            if unsupported:
                note = unsupported
            else:
                try:
                    model_text = _model_caption(obj, caption_fn, keyframe_fn, cache)
                except (ModeUnsupported, BackendUnavailable) as exc:  # the same for every object: asked once
                    unsupported = note = f"geometric caption: {exc}"
                except (BackendError, InputError, TimeoutError, ValueError) as exc:
                    note = f"geometric caption: the model caption failed ({exc})"
        if model_text:
            text = f"{model_text}; {text}"
        out.append(ObjectCaption(obj.instance_id, obj.label, text, relation, neighbour, model_text, note))
    return tuple(out)
