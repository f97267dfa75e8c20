"""Open-set recognition of an instruction's target: which of a backend's concepts it means, or none.

A backend declares what it can recognise (`Vocabulary`): a closed vocabulary (the offline detector's
classes, each with the phrases and nouns that name it) or an open one (a VLM that reads any phrase and
says itself when the thing is not in the image). `OpenSetGate.recognise(phrase)` then answers:
- GENERIC: the phrase names no kind ("object", "thing", "something"): only geometry, colour or a
  relation can pin it (the memory's class-agnostic objects);
- KNOWN: it means one or more concepts (best first);
- UNKNOWN: it means something outside the vocabulary; the answer names the nearest concepts, and the
  query says NOT_FOUND instead of substituting the nearest class (MLLM-For3D's point about answering
  with objects that are not there, here in the language step);
- OPEN: the vocabulary is open: the phrase is passed on as it is.

The rule for a closed vocabulary (calibrated on `benchmarks/open_set_calibration.json`, tune split
only; the held-out split and the kitchen's absent objects report it, `python -m benchmarks.open_set`):
1. generic words only -> GENERIC;
2. the head noun (the last word before "of", "to", "that", "I" ...; plurals folded) or the last two
   words is a noun of a concept -> KNOWN (every concept that noun names: "cup" is Mug and Coffee cup);
3. the head noun is a noun of the background set (common household and outdoor things the vocabulary
   lacks: `BACKGROUND_CONCEPTS`) -> UNKNOWN;
4. otherwise the text model decides (cosine similarity s of the phrase's embedding to each phrase):
   KNOWN when the best concept phrase scores s_known >= `min_similarity` and beats the best
   background phrase by `min_margin` (a margin against known unknowns, as open-set recognition with
   a background class does: Dhamija et al., "Reducing Network Agnostophobia", NeurIPS 2018);
   otherwise UNKNOWN. Cosine to the concepts alone does not separate them: "stool" scores 0.63 against
   "a seat" while "a carton" scores 0.46 against "a box".
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..config import check_range

EncodeFn = Callable[[Sequence[str]], np.ndarray]


class RecognitionStatus(enum.Enum):
    KNOWN = "known"
    GENERIC = "generic"
    UNKNOWN = "unknown"
    OPEN = "open"


@dataclass(frozen=True)
class Concept:
    """One thing a backend recognises: its name (the label its proposals carry), phrases that describe it
    (what it is and what it is for) and nouns that name it (lower case, singular; "coffee cup" may be two
    words)."""

    name: str
    phrases: tuple[str, ...]
    nouns: tuple[str, ...] = ()
    # The shape the memory can check for it (`core/query/shapes.py`: "box-shaped", "flat", "tall", "round"), "" if
    # none: an unlabelled object may stand in for it (flagged unconfirmed) only when it has this shape.
    shape: str = ""


@dataclass(frozen=True)
class Vocabulary:
    """What a backend can recognise. `open`: any phrase (the model itself answers "not in the image":
    `absent_answer` says how). `model`: the name used in messages ("the offline model")."""

    model: str
    concepts: tuple[Concept, ...] = ()
    open: bool = False
    absent_answer: str = ""

    @staticmethod
    def open_vocabulary(model: str, absent_answer: str) -> "Vocabulary":
        return Vocabulary(model=model, open=True, absent_answer=absent_answer)

    def concept(self, name: str) -> Concept | None:
        return next((c for c in self.concepts if c.name.lower() == name.lower()), None)


@dataclass(frozen=True)
class Recognition:
    """The gate's answer for one phrase. concepts: KNOWN's concept names, best first; nearest: the closest
    concepts (UNKNOWN's message names them); score / margin: the text model's best concept cosine and its
    lead over the background (nan when the lexical rule decided); how: "generic" | "noun" | "background noun"
    | "embedding" | "open"."""

    status: RecognitionStatus
    phrase: str
    concepts: tuple[str, ...] = ()
    nearest: tuple[str, ...] = ()
    score: float = float("nan")
    margin: float = float("nan")
    how: str = ""
    model: str = ""
    open_vocabulary: bool = False
    shape: str = ""  # KNOWN: the best concept's checkable shape (Concept.shape)

    @property
    def known(self) -> bool:
        return self.status is RecognitionStatus.KNOWN

    def message(self) -> str:
        """Why an UNKNOWN phrase is not answered (the NOT_FOUND message), or a one-line account otherwise."""
        if self.status is RecognitionStatus.UNKNOWN:
            near = ", ".join(n.lower() for n in self.nearest)
            return f"'{self.phrase}' is not something {self.model or 'the model'} recognises; nearest known: {near}"
        if self.status is RecognitionStatus.KNOWN:
            return f"'{self.phrase}' recognised as {' or '.join(c.lower() for c in self.concepts)}"
        if self.status is RecognitionStatus.GENERIC:
            return f"'{self.phrase}' names no kind of object"
        return f"'{self.phrase}' passed to {self.model or 'the model'} (open vocabulary)"

    def to_json(self) -> str:
        def num(x: float):
            return None if not np.isfinite(x) else round(float(x), 4)

        return json.dumps({"status": self.status.value, "phrase": self.phrase, "concepts": list(self.concepts),
                           "nearest": list(self.nearest), "score": num(self.score), "margin": num(self.margin),
                           "how": self.how, "model": self.model, "open_vocabulary": self.open_vocabulary,
                           "shape": self.shape})

    @staticmethod
    def from_json(data: str) -> "Recognition":
        """Inverse of `to_json`; ValueError when `data` is not a recognition."""
        try:
            d = json.loads(data)
            status = RecognitionStatus(d["status"])
            return Recognition(status, str(d["phrase"]), tuple(str(c) for c in d.get("concepts", ())),
                               tuple(str(c) for c in d.get("nearest", ())),
                               float("nan") if d.get("score") is None else float(d["score"]),
                               float("nan") if d.get("margin") is None else float(d["margin"]),
                               str(d.get("how", "")), str(d.get("model", "")), bool(d.get("open_vocabulary", False)),
                               str(d.get("shape", "")))
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"not a recognition: {data!r:.80} ({exc})") from None


# Words that name no kind of thing: "the thing on the table", "the red object", "something blue".
GENERIC_WORDS = frozenset({"object", "objects", "thing", "things", "something", "item", "items", "stuff", "one",
                           "ones", "it", "anything", "whatever"})
# Where a noun phrase's head ends: "cup of tea", "something to drink from", "a cup I can drink from".
_CLAUSE_WORDS = frozenset({"of", "for", "to", "that", "which", "who", "where", "i", "you", "we", "he", "she", "they",
                           "can", "could", "with", "from", "while", "when", "so", "used", "made", "and", "or", "what",
                           "should", "would", "need", "want"})
# Heads that say what a thing is for, not what it is ("somewhere to sit", "a place to put things").
FUNCTIONAL_HEADS = frozenset({"somewhere", "someplace", "place", "spot", "anywhere"})
_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "feet": "foot", "knives": "knife", "shelves": "shelf", "leaves": "leaf", "geese": "goose",
              "teeth": "tooth", "cacti": "cactus", "boxes": "box", "glasses": "glasses", "scissors": "scissors"}

# Common household and outdoor things an indoor class list usually lacks: the known unknowns the
# margin is taken against (rule 3/4 above). Kept disjoint from the calibration set's unknown nouns
# (a test checks it) so that the calibration measures what the gate does with nouns it never saw.
BACKGROUND_CONCEPTS: tuple[str, ...] = (
    # furniture and fittings
    "bench", "stool", "ottoman", "bookcase", "wardrobe", "dresser", "nightstand", "cupboard", "cabinet", "drawer",
    "counter", "countertop", "kitchen island", "mattress", "crib", "hammock", "futon", "coat rack", "hanger",
    "staircase", "stairs", "wall", "floor", "ceiling", "fireplace", "chandelier", "light bulb",
    "light switch", "power socket", "doormat", "picture frame", "painting", "poster",
    "calendar", "photograph", "sculpture", "aquarium", "houseplant", "cactus", "bathtub", "shower", "washbasin",
    "tap", "shower screen", "bath mat", "tiles", "skylight", "venetian blind",
    # kitchen
    "freezer", "blender", "food mixer", "coffee maker", "rice cooker", "cutting board",
    "ladle", "spatula", "whisk", "colander", "saucepan", "tray", "napkin", "tablecloth", "placemat", "dish rack",
    "sponge", "dish soap", "corkscrew", "thermos", "lunchbox", "jug", "pitcher", "carafe", "saucer", "platter",
    "tumbler", "goblet", "chopsticks", "salt shaker", "pepper grinder", "apron", "kitchen roll", "aluminium foil",
    # bathroom and cleaning
    "toothbrush", "toothpaste", "soap", "shampoo", "hair dryer", "razor", "comb", "hairbrush", "vacuum cleaner",
    "clothes iron", "ironing board", "washing machine", "tumble dryer", "mop", "dustpan", "bin liner",
    "recycling bin", "laundry hamper", "detergent",
    # electronics
    "speaker", "microphone", "wifi router", "charger", "cable", "power strip", "game console",
    "game controller", "joystick", "smartwatch", "projector", "scanner", "calculator", "hard drive", "usb stick",
    "earbuds", "radio", "record player", "thermostat", "smoke detector", "air conditioner",
    "space heater", "extension cord",
    # clothing and bags
    "shirt", "jacket", "coat", "hat", "cap", "scarf", "glove", "sock", "trousers", "dress", "belt", "necktie",
    "handbag", "purse", "briefcase", "tote bag", "luggage trolley",
    # stationery, tools, toys, sport
    "pencil", "highlighter", "eraser", "ruler", "envelope", "folder", "ring binder", "sticky note", "paper clip",
    "sticky tape", "glue stick", "screwdriver", "wrench", "power drill", "saw", "pliers", "tape measure",
    "flashlight", "toolbox", "doll", "kite", "skateboard", "surfboard", "tennis racket", "baseball bat",
    "frisbee", "jigsaw puzzle", "board game", "balloon", "yoga mat", "dumbbell",
    # food
    "apple", "banana", "bread", "sandwich", "pizza", "cake", "cheese", "egg", "fruit", "vegetables",
    # outdoors
    "street", "road", "sidewalk", "bus", "motorcycle", "train", "airplane", "boat", "road cone",
    "parking meter", "fire hydrant", "streetlight", "building", "house", "garage", "garden hose", "lawn mower",
    "wheelbarrow", "shovel", "rake", "swing", "slide", "trampoline", "tent", "barbecue grill", "bush", "grass",
    "rock", "mountain", "river", "sky", "cloud", "statue", "fountain",
    # animals
    "goat", "donkey", "pony", "pig", "chicken", "duck", "rabbit", "hamster", "fish", "deer", "elephant", "giraffe", "lion", "monkey",
    "snake", "spider", "insect", "butterfly",
    # what some things are for (functional phrasings of the above)
    "somewhere to lie down", "something to cut food with", "something to write with",
    "somewhere to store food cold", "something to clean the floor with", "something to brighten the room",
    "something to play with", "somewhere to hang clothes", "something to listen to music on",
)


@dataclass(frozen=True)
class OpenSetConfig:
    """A phrase without a head noun ("something to drink from", "somewhere I can sit") is KNOWN when its best
    concept phrase scores min_similarity [-1, 1] and leads the best background phrase by min_margin [-2, 2];
    a head noun the vocabulary does not list ("teapot", "window") needs noun_min_similarity and
    noun_min_margin: a noun outside the lexicon is most likely another thing, and only a close paraphrase
    ("a portable computer") may override that. nearest: concepts named in an UNKNOWN answer, [1, 10].
    class_margin: KNOWN by the text model also takes the concepts within this cosine of the best, [0, 1].
    Defaults: the middle of the gap between paraphrases and unknowns on the calibration set's tune split."""

    min_similarity: float = 0.5
    min_margin: float = 0.08
    noun_min_similarity: float = 0.65
    noun_min_margin: float = 0.2
    nearest: int = 3
    class_margin: float = 0.03

    def __post_init__(self) -> None:
        check_range("min_similarity", self.min_similarity, -1.0, 1.0)
        check_range("min_margin", self.min_margin, -2.0, 2.0)
        check_range("noun_min_similarity", self.noun_min_similarity, -1.0, 1.0)
        check_range("noun_min_margin", self.noun_min_margin, -2.0, 2.0)
        check_range("nearest", self.nearest, 1, 10)
        check_range("class_margin", self.class_margin, 0.0, 1.0)


def words_of(phrase: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", phrase.lower())


def singular(word: str) -> tuple[str, ...]:
    """The word and its likely singular forms ("cups" -> cups, cup; "boxes" -> boxes, box)."""
    if word in _IRREGULAR:
        return (word, _IRREGULAR[word])
    out = [word]
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        out.append(word[:-1])
    return tuple(out)


def head_words(phrase: str) -> list[str]:
    """The noun phrase's words before its first clause word ("cup of tea" -> [cup]; "something to drink
    from" -> [something]; "a cup I can drink from" -> [a, cup])."""
    words = words_of(phrase)
    for i, w in enumerate(words):
        if w in _CLAUSE_WORDS:
            return words[:i]  # empty when the phrase opens with one ("can I sit down"): no head noun
    return words


def is_generic(phrase: str) -> bool:
    """Whether the phrase is made of generic words only ("object", "the thing", "something")."""
    words = [w for w in words_of(phrase) if w not in ("the", "a", "an", "some", "this", "that")]
    return bool(words) and all(w in GENERIC_WORDS for w in words)


def open_recognition(phrase: str, model: str = "", open_vocabulary: bool = True) -> Recognition:
    """GENERIC for generic words, else OPEN: what a phrase is to an open vocabulary (or without a gate)."""
    status = RecognitionStatus.GENERIC if is_generic(phrase) else RecognitionStatus.OPEN
    return Recognition(status, phrase, how=status.value, model=model, open_vocabulary=open_vocabulary)


@dataclass(frozen=True)
class InstructionRecognition:
    """The gate's answers for a parsed instruction's target, its anchors (in order) and its exclusion's anchor."""

    target: Recognition
    anchors: tuple[Recognition, ...] = ()
    excluded: Recognition | None = None

    @staticmethod
    def of(parsed, recognise: Callable[[str], Recognition] | None = None) -> "InstructionRecognition":
        """Every phrase of `parsed` (a ParsedInstruction) through `recognise` (None: `open_recognition`)."""
        fn = recognise or open_recognition
        return InstructionRecognition(fn(parsed.target), tuple(fn(a) for a in parsed.anchors),
                                      fn(parsed.excluded[1]) if parsed.excluded else None)


class OpenSetGate:
    """Recognises phrases against a vocabulary; `encode_fn` embeds phrases (the backend's text model).

    Embeddings of the concept and background phrases are computed once, at construction; a phrase costs
    one text-model call (cached per phrase)."""

    def __init__(self, vocabulary: Vocabulary, encode_fn: EncodeFn | None, config: OpenSetConfig | None = None) -> None:
        self.vocabulary = vocabulary
        self.config = config or OpenSetConfig()
        self._encode = encode_fn
        self._cache: dict[str, Recognition] = {}
        if vocabulary.open:
            return
        if encode_fn is None:
            raise ValueError("a closed vocabulary needs a text model (encode_fn) for its gate")
        self._nouns: dict[str, list[str]] = {}
        for c in vocabulary.concepts:
            for n in c.nouns:
                self._nouns.setdefault(n.lower(), []).append(c.name)
        known_words = set(self._nouns) | {w for c in vocabulary.concepts for n in c.nouns for w in words_of(n)}
        # A background thing the vocabulary does name is not background.
        self.background = tuple(b for b in BACKGROUND_CONCEPTS if b.split()[-1] not in known_words and b not in self._nouns)
        self._background_nouns = {b for b in self.background if not b.startswith(("something", "somewhere"))}
        self._background_nouns |= {b.split()[-1] for b in self._background_nouns}
        phrases = [p for c in vocabulary.concepts for p in c.phrases]
        self._owner = np.array([i for i, c in enumerate(vocabulary.concepts) for _ in c.phrases])
        emb = np.asarray(encode_fn(phrases + [f"a {b}" if not b.startswith("some") else b for b in self.background]),
                         dtype=np.float32)
        self._concept_emb, self._background_emb = emb[: len(phrases)], emb[len(phrases):]

    def _concept_scores(self, q: np.ndarray) -> np.ndarray:
        """(C,) best cosine of `q` to each concept's phrases."""
        sims = self._concept_emb @ q
        scores = np.full(len(self.vocabulary.concepts), -1.0, np.float32)
        np.maximum.at(scores, self._owner, sims)
        return scores

    def recognise(self, phrase: str) -> Recognition:
        """What the phrase means for this vocabulary (see the module docstring)."""
        key = " ".join(words_of(phrase))
        if key in self._cache:
            return self._cache[key]
        result = self._recognise(phrase, key)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _known(self, phrase, concepts, nearest, score, margin, how) -> Recognition:
        # Concepts that share a noun with the best one are the same kind of thing to a person ("mug" and
        # "cup" name both Mug and Coffee cup): a detector torn between them must not lose the answer.
        concept = self.vocabulary.concept(concepts[0])
        if concept is not None and concept.nouns:
            same = [c.name for c in self.vocabulary.concepts if set(c.nouns) & set(concept.nouns)]
            concepts = tuple(dict.fromkeys(list(concepts) + same))
        return Recognition(RecognitionStatus.KNOWN, phrase, concepts, nearest, score, margin, how,
                           self.vocabulary.model, shape=concept.shape if concept is not None else "")

    def _recognise(self, phrase: str, key: str) -> Recognition:
        vocab = self.vocabulary
        if is_generic(phrase) or vocab.open:
            return open_recognition(phrase, vocab.model, vocab.open)
        q = np.asarray(self._encode([key or phrase]), dtype=np.float32)[0]
        scores = self._concept_scores(q)
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        names = [vocab.concepts[i].name for i in order]
        nearest = tuple(names[: self.config.nearest])
        best = float(scores[order[0]])
        background = float((self._background_emb @ q).max()) if self._background_emb.size else -1.0
        margin = best - background
        head = head_words(key)
        has_noun = bool(head) and head[-1] not in GENERIC_WORDS and head[-1] not in FUNCTIONAL_HEADS
        if has_noun:
            for n in (2, 1):
                if len(head) < n:
                    continue
                for form in singular(head[-1]):
                    noun = " ".join(head[-n:-1] + [form])
                    if noun in self._nouns:
                        hits = self._nouns[noun]
                        ranked = tuple(sorted(dict.fromkeys(hits), key=lambda c: names.index(c)))
                        return self._known(phrase, ranked, nearest, best, margin, "noun")
            for form in singular(head[-1]):
                if form in self._background_nouns or " ".join(head[-2:-1] + [form]) in self._background_nouns:
                    return Recognition(RecognitionStatus.UNKNOWN, phrase, (), nearest, best, margin, "background noun",
                                       vocab.model)
        cfg = self.config
        min_s, min_m = ((cfg.noun_min_similarity, cfg.noun_min_margin) if has_noun else
                        (cfg.min_similarity, cfg.min_margin))
        if best >= min_s and margin >= min_m:
            concepts = tuple(n for i, n in zip(order, names) if scores[i] >= best - self.config.class_margin)[:3]
            return self._known(phrase, concepts, nearest, best, margin, "embedding")
        return Recognition(RecognitionStatus.UNKNOWN, phrase, (), nearest, best, margin, "embedding", vocab.model)


__all__ = ["BACKGROUND_CONCEPTS", "Concept", "GENERIC_WORDS", "InstructionRecognition", "OpenSetConfig", "OpenSetGate",
           "Recognition", "RecognitionStatus", "Vocabulary", "head_words", "is_generic", "open_recognition", "singular"]
