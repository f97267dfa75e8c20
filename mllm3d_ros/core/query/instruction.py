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

import dataclasses
import enum
import json
import re
from dataclasses import dataclass

from .colours import COLOUR_WORDS
from .shapes import SHAPE_WORDS


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

# Attribute words. Colours (`core/query/colours.py`) and shapes (`core/query/shapes.py`) are checked on the map by the
# object memory; materials, patterns and shade modifiers are left to the 2D model.
COLOURS = COLOUR_WORDS
SHAPES = SHAPE_WORDS
MATERIALS = ("plastic", "wooden", "wood", "metal", "metallic", "glass", "ceramic", "paper", "cardboard", "fabric",
             "leather", "floral", "striped", "patterned", "see-through", "transparent", "dark", "bright", "pale")
SIZES = ("big", "large", "small", "little", "short", "tiny", "huge")
# Materials that are nouns too: last in a noun phrase they are its noun ("a wine glass", "the paper").
_MATERIAL_NOUNS = frozenset({"glass", "paper", "metal", "wood", "plastic", "cardboard", "fabric", "leather"})
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
    # "box-shaped" and "see-through" stay one word (a shape, a material); other hyphens split.
    return re.findall(r"[a-z0-9]+(?:-shaped|-through|'[a-z]+)?", text.lower())


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
    is_attribute = [w in COLOURS or w in MATERIALS or w in SIZES or w in SHAPES for w in kept]
    if kept and kept[-1] in _MATERIAL_NOUNS:
        is_attribute[-1] = False
    attributes = tuple(w for w, a in zip(kept, is_attribute) if a)
    noun = [w for w, a in zip(kept, is_attribute) if not a]
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
    if not target and (attributes or superlative or ordinal or relation):
        # "the red one", "the biggest one on the table", "the flat one": a generic target the attributes,
        # the ranking or the relation pin down (core/query/open_set.py: GENERIC).
        target = "object"
    elif not target:
        target = " ".join(_words(text)) or text
        notes.append("no target phrase found: the whole instruction is used as the target")
    target_text = " ".join(attributes + (target,)) if attributes else target
    return ParsedInstruction(text, target, target_text, attributes, relation, anchors, superlative, ordinal,
                             excluded, tuple(notes))


# ---- structured answers (a language model's parse) and JSON ---------------------------------------------
# The keys a structured parse carries: what a model is asked to fill and what `parsed_to_json` writes
# (plus "text" and "notes", which a model does not write).
STRUCTURED_KEYS = ("target", "attributes", "relation", "anchors", "superlative", "ordinal", "excluded")
_MAX_PHRASE_WORDS = 40


def _key(phrase: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", phrase.lower()))


_RELATION_SYNONYMS = {**{_key(p): r for p, r in _RELATION_PHRASES}, **{_key(r.value): r for r in Relation},
                      **{_key(r.name.replace("_", " ")): r for r in Relation}}
_SUPERLATIVE_SYNONYMS = {**{_key(w): s for w, s in _SUPERLATIVES.items()}, **{_key(s.value): s for s in Superlative},
                         **{_key(s.name): s for s in Superlative}, "left most": Superlative.LEFTMOST, "right most": Superlative.RIGHTMOST}


def relation_from_phrase(phrase: str) -> Relation | None:
    """The relation a phrase names: an enum value or name ("left of", "LEFT_OF") or a grammar phrase ("beside")."""
    return _RELATION_SYNONYMS.get(_key(phrase)) if isinstance(phrase, str) else None


def superlative_from_word(word: str) -> Superlative | None:
    """The superlative a word names ("largest", "BIGGEST", "leftmost")."""
    return _SUPERLATIVE_SYNONYMS.get(_key(word)) if isinstance(word, str) else None


def _phrase(value: object) -> str | None:
    """A short noun phrase: lower case, determiners dropped; None unless a non-empty string of a few words."""
    if not isinstance(value, str):
        return None
    words = _words(value)
    # Determiners are dropped as the grammar drops them, unless nothing else is left ("the" alone).
    words = [w for w in words if w not in _DETERMINERS] or words
    return " ".join(words) if 0 < len(words) <= _MAX_PHRASE_WORDS else None


def _is_empty(value: object) -> bool:
    return value is None or value == "" or value == [] or value == () or value == {}


def _strings(key: str, value: object, notes: list[str]) -> tuple[str, ...]:
    """A list of short phrases (one string is taken as a list of one); invalid entries dropped with a note."""
    if _is_empty(value):
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        notes.append(f"{key} {value!r:.60} is not a list of phrases: dropped")
        return ()
    out = []
    for item in items:
        phrase = _phrase(item)
        if phrase is None:
            notes.append(f"{key} entry {item!r:.60} is not a short phrase: dropped")
        elif phrase not in out:
            out.append(phrase)
    return tuple(out)


def parsed_from_structured(answer: object, text: str, source: str = "the model") -> ParsedInstruction:
    """Validate a structured parse (a JSON object's dict, keys `STRUCTURED_KEYS`) of the instruction `text`.

    Invalid fields are dropped with a note naming them: a relation that is not a Relation (or one of the
    grammar's phrases for it), anchors that are not phrases, BETWEEN without exactly two anchors, an
    ordinal that is not a positive integer, an unknown superlative. Without a usable target (or when
    `answer` is not a dict) the grammar parses `text` instead, with a note saying so. Never raises.
    """
    if not isinstance(answer, dict):
        shown = answer if isinstance(answer, str) else type(answer).__name__
        return _grammar_instead(text, f"not a JSON object ({shown!r:.80})", source)
    target = _phrase(answer.get("target"))
    if target is None:
        return _grammar_instead(text, f"no usable target ({answer.get('target')!r:.60})", source)
    notes = _strings_raw(answer.get("notes"))
    attributes = tuple(a for a in _strings("attributes", answer.get("attributes"), notes) if a != target)
    relation, anchors = None, _strings("anchors", answer.get("anchors"), notes)
    raw_relation = answer.get("relation")
    if not _is_empty(raw_relation):
        relation = relation_from_phrase(raw_relation)
        if relation is None:
            notes.append(f"{source}'s relation {raw_relation!r:.40} is not one the resolver knows: ignored")
    if relation is Relation.BETWEEN and len(anchors) != 2:
        notes.append(f"'between' needs two anchors, {source} gave {len(anchors)}: relation ignored")
        relation = None
    elif relation is not None and not anchors:
        notes.append(f"relation '{relation.value}' without an anchor: ignored")
        relation = None
    elif relation is not None and relation is not Relation.BETWEEN and len(anchors) > 1:
        notes.append(f"relation '{relation.value}' takes one anchor: kept '{anchors[0]}', dropped {list(anchors[1:])}")
        anchors = anchors[:1]
    if relation is None:
        anchors = ()
    superlative = None
    raw_superlative = answer.get("superlative")
    if not _is_empty(raw_superlative):
        superlative = superlative_from_word(raw_superlative)
        if superlative is None:
            notes.append(f"{source}'s superlative {raw_superlative!r:.40} is unknown: ignored")
    ordinal = answer.get("ordinal")
    if _is_empty(ordinal):
        ordinal = None
    elif isinstance(ordinal, bool) or not isinstance(ordinal, int) or ordinal < 1:
        notes.append(f"{source}'s ordinal {ordinal!r:.20} is not a positive integer: ignored")
        ordinal = None
    elif superlative is None:
        # An ordinal ranks along a superlative; the grammar's default for "the third chair" is the left.
        notes.append(f"ordinal {ordinal} without 'from the left/right': counted from the left")
        superlative = Superlative.LEFTMOST
    excluded = _excluded(answer.get("excluded"), source, notes)
    target_text = " ".join(attributes + (target,))
    return ParsedInstruction(text, target, target_text, attributes, relation, anchors, superlative, ordinal,
                             excluded, tuple(notes))


def _strings_raw(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, (list, tuple)) else []


def _excluded(value: object, source: str, notes: list[str]) -> tuple[Relation, str] | None:
    if _is_empty(value):
        return None
    relation = relation_from_phrase(value.get("relation")) if isinstance(value, dict) else None
    anchor = _phrase(value.get("anchor")) if isinstance(value, dict) else None
    if relation is None or anchor is None:
        notes.append(f"{source}'s exclusion {value!r:.60} needs a known relation and an anchor: ignored")
        return None
    return relation, anchor


def _grammar_instead(text: str, why: str, source: str) -> ParsedInstruction:
    parsed = parse_instruction(text)
    note = f"{source}'s parse was unusable: {why}, used the grammar"
    return dataclasses.replace(parsed, notes=(note,) + parsed.notes)


def parsed_to_structured(parsed: ParsedInstruction) -> dict:
    """The JSON-ready dict of a parse (the keys `STRUCTURED_KEYS` plus text and notes)."""
    return {"text": parsed.text, "target": parsed.target, "attributes": list(parsed.attributes),
            "relation": parsed.relation.value if parsed.relation else None, "anchors": list(parsed.anchors),
            "superlative": parsed.superlative.value if parsed.superlative else None, "ordinal": parsed.ordinal,
            "excluded": ({"relation": parsed.excluded[0].value, "anchor": parsed.excluded[1]}
                         if parsed.excluded else None),
            "notes": list(parsed.notes)}


def parsed_to_json(parsed: ParsedInstruction) -> str:
    """The parse as one JSON object (what SegmentViews mode PARSE returns in `parsed_json`)."""
    return json.dumps(parsed_to_structured(parsed))


def parsed_from_json(data: str, text: str, source: str = "the backend") -> ParsedInstruction:
    """`parsed_to_json`'s inverse, validated like a model's answer (`parsed_from_structured`); never raises."""
    try:
        answer = json.loads(data)
    except (TypeError, ValueError):
        answer = data if isinstance(data, str) else None
    return parsed_from_structured(answer, text, source)
