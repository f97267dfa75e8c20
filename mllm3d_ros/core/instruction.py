"""Instruction parsing: the target, its attributes and, when present, a spatial relation to anchors.

"the mug on the table" -> target "mug", relation ON, anchor "table"; "the white mug" -> target "mug",
attribute "white"; "somewhere I can sit" -> target "somewhere I can sit" (the text model maps
functional phrases onto classes). The whole instruction mapped as one phrase lets an anchor word win
over the target ("the container on the table" found the table): the target must be embedded alone.

A small grammar, not a language model: a relation is recognised only when a noun phrase follows its
words (so "something I can sit on" has no relation), the first relation in the text wins, and what the
grammar does not understand is reported in `notes` rather than guessed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Relation(enum.Enum):
    """Spatial relations between the target and its anchor(s)."""

    ON = "on"
    UNDER = "under"
    ABOVE = "above"
    NEAR = "near"
    LEFT_OF = "left of"
    RIGHT_OF = "right of"
    IN_FRONT_OF = "in front of"
    BEHIND = "behind"
    INSIDE = "inside"
    BETWEEN = "between"
    NEAREST_TO = "nearest to"
    FARTHEST_FROM = "farthest from"
    AT_END_OF = "at the end of"


class Superlative(enum.Enum):
    """Ranking of the target's own instances, without an anchor."""

    BIGGEST = "biggest"
    SMALLEST = "smallest"
    LEFTMOST = "leftmost"
    RIGHTMOST = "rightmost"


# Longest phrases first, so "to the left of" wins over "left of" and "in front of" over "in".
_RELATION_PHRASES: tuple[tuple[str, Relation], ...] = tuple(sorted((
    ("on top of", Relation.ON), ("on", Relation.ON), ("sitting on", Relation.ON), ("lying on", Relation.ON),
    ("under", Relation.UNDER), ("underneath", Relation.UNDER), ("below", Relation.UNDER), ("beneath", Relation.UNDER),
    ("above", Relation.ABOVE), ("over", Relation.ABOVE),
    ("next to", Relation.NEAR), ("near", Relation.NEAR), ("beside", Relation.NEAR), ("by", Relation.NEAR),
    ("close to", Relation.NEAR), ("besides", Relation.NEAR), ("near to", Relation.NEAR),
    ("to the left of", Relation.LEFT_OF), ("left of", Relation.LEFT_OF), ("on the left of", Relation.LEFT_OF),
    ("to the right of", Relation.RIGHT_OF), ("right of", Relation.RIGHT_OF), ("on the right of", Relation.RIGHT_OF),
    ("in front of", Relation.IN_FRONT_OF), ("behind", Relation.BEHIND), ("in back of", Relation.BEHIND),
    ("inside", Relation.INSIDE), ("in", Relation.INSIDE), ("within", Relation.INSIDE),
    ("between", Relation.BETWEEN),
    ("at the end of", Relation.AT_END_OF), ("at either end of", Relation.AT_END_OF),
    ("at one end of", Relation.AT_END_OF), ("at the head of", Relation.AT_END_OF),
    ("at the foot of", Relation.AT_END_OF),
    ("closest to", Relation.NEAREST_TO), ("nearest to", Relation.NEAREST_TO), ("nearest", Relation.NEAREST_TO),
    ("closest", Relation.NEAREST_TO),
    ("farthest from", Relation.FARTHEST_FROM), ("furthest from", Relation.FARTHEST_FROM),
    ("farthest", Relation.FARTHEST_FROM), ("furthest", Relation.FARTHEST_FROM),
), key=lambda item: -len(item[0])))

COLOURS = ("red", "green", "blue", "white", "black", "grey", "gray", "yellow", "orange", "brown", "pink",
           "purple", "silver", "beige", "dark", "light")
MATERIALS = ("plastic", "wooden", "wood", "metal", "metallic", "glass", "ceramic", "paper", "cardboard", "fabric",
             "leather", "floral", "striped")
SIZES = ("big", "large", "small", "little", "tall", "short", "tiny", "huge")
_SUPERLATIVES = {"biggest": Superlative.BIGGEST, "largest": Superlative.BIGGEST, "smallest": Superlative.SMALLEST,
                 "leftmost": Superlative.LEFTMOST, "rightmost": Superlative.RIGHTMOST}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_DETERMINERS = {"the", "a", "an", "some", "that", "this", "my", "any", "one", "me", "find", "show", "get", "where",
                "is", "please", "bring", "give", "grab", "pick", "up", "locate"}
_TRAILING_CLAUSE = re.compile(r"\b(that|which|who)\b.*$")


@dataclass(frozen=True)
class ParsedInstruction:
    """What an instruction asks for.

    target: the target's phrase without determiners or attributes ("mug"); target_text the same with
    its attributes ("white mug"), what a text model should embed. anchors: anchor phrases (two for
    BETWEEN). ordinal with a LEFTMOST/RIGHTMOST superlative means "n-th from the left/right".
    excluded: (relation, anchor) of a "not the one ..." clause. notes: what was not understood.
    """

    text: str
    target: str
    target_text: str
    attributes: tuple[str, ...] = ()
    relation: Relation | None = None
    anchors: tuple[str, ...] = ()
    superlative: Superlative | None = None
    ordinal: int | None = None
    excluded: tuple[Relation, str] | None = None
    notes: tuple[str, ...] = ()

    @property
    def is_plain(self) -> bool:
        """A class (or function) phrase alone: no attribute, relation, ranking or exclusion."""
        return not (self.attributes or self.relation or self.superlative or self.excluded)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _find_relation(words: list[str]) -> tuple[int, int, Relation] | None:
    """(start, end, relation) of the first relation phrase followed by at least one word."""
    for start in range(1, len(words)):  # a relation never opens the instruction: the target comes first
        for phrase, relation in _RELATION_PHRASES:
            parts = phrase.split()
            end = start + len(parts)
            if words[start:end] == parts and end < len(words):
                return start, end, relation
    return None


def _noun_phrase(words: list[str]) -> tuple[str, tuple[str, ...]]:
    """(phrase without determiners and attributes, attributes)."""
    kept = [w for w in words if w not in _DETERMINERS]
    attributes = tuple(w for w in kept if w in COLOURS or w in MATERIALS or w in SIZES)
    noun = [w for w in kept if w not in attributes]
    return " ".join(noun), attributes


def parse_instruction(text: str) -> ParsedInstruction:
    """Parse an already-normalised instruction (see `segmentation.normalise_instruction`)."""
    notes: list[str] = []
    lowered = text.lower()
    excluded = None
    main, _, negative = lowered.partition(", not ")
    if not negative:
        main, _, negative = lowered.partition(" not ")
    words = _words(main)
    superlative, ordinal = None, None
    for i, w in enumerate(words):
        if w in _SUPERLATIVES and superlative is None:
            superlative = _SUPERLATIVES[w]
            words = words[:i] + words[i + 1:]
            break
    for i, w in enumerate(words):
        if w in _ORDINALS:
            ordinal = _ORDINALS[w]
            words = words[:i] + words[i + 1:]
            # "the second chair from the left": the ordering comes from "from the left/right"
            tail = " ".join(words[i:])
            m = re.search(r"\bfrom (the )?(left|right)\b", tail)
            if m:
                superlative = Superlative.LEFTMOST if m.group(2) == "left" else Superlative.RIGHTMOST
                drop = len(m.group(0).split())
                start = i + len(tail[: m.start()].split())
                words = words[:start] + words[start + drop:]
            else:
                superlative = superlative or Superlative.LEFTMOST
                notes.append(f"'{w}' without 'from the left/right': counted from the left")
            break
    found = _find_relation(words)
    relation, anchors = None, ()
    if found is not None:
        start, end, relation = found
        target_words, anchor_words = words[:start], words[end:]
        anchor_text = " ".join(anchor_words)
        anchor_text = _TRAILING_CLAUSE.sub("", anchor_text).strip()
        if relation is Relation.BETWEEN:
            first, _, second = anchor_text.partition(" and ")
            anchors = tuple(a for a in (_noun_phrase(first.split())[0], _noun_phrase(second.split())[0]) if a)
            if len(anchors) != 2:
                notes.append("'between' needs two anchors ('between the X and the Y')")
        else:
            anchor, _ = _noun_phrase(anchor_text.split())
            anchors = (anchor,) if anchor else ()
        if not anchors:
            relation = None
            target_words = words
    else:
        target_words = words
    target, attributes = _noun_phrase(target_words)
    if negative:
        neg_words = _words(negative)
        neg = _find_relation(["one"] + [w for w in neg_words if w not in ("the", "one")])
        if neg is not None:
            w = ["one"] + [x for x in neg_words if x not in ("the", "one")]
            excluded = (neg[2], _noun_phrase(w[neg[1]:])[0])
        else:
            notes.append(f"could not understand the exclusion 'not {negative.strip()}'")
    if not target:
        target = " ".join(_words(text)) or text
        notes.append("no target phrase found: the whole instruction is used as the target")
    target_text = " ".join(attributes + (target,)) if attributes else target
    return ParsedInstruction(text, target, target_text, attributes, relation, anchors, superlative, ordinal,
                             excluded, tuple(notes))
