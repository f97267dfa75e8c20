"""Instruction -> detector classes with the all-MiniLM-L6-v2 sentence model (no sentence-transformers needed).

Embeddings follow the model's sentence-transformers recipe (its modules.json: Transformer -> mean
pooling over non-padding tokens -> L2 normalisation; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019),
re-implemented with plain `transformers` AutoTokenizer/AutoModel on the packaged folder.

Class selection rule: each class is described by a few phrases; its score is the best cosine
similarity between the instruction and one of its phrases. The target classes are the best class and
every other class scoring within `class_margin` of it, at most `max_target_classes` of them, best
first (so "a cup I can drink from" selects both Mug and Coffee cup). What the classes and their
phrases and nouns (`CLASS_NOUNS`) do not cover is outside this backend's vocabulary: `vocabulary()`
declares it, and the core's open-set gate (`core/query/open_set.py`) answers an instruction about anything
else NOT_FOUND before this classifier would pick its nearest classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Phrases say what the class is and what it is for, so that functional instructions
# ("somewhere I can sit") land on the right class. Keys are the label map's names.
CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "Bicycle": ("a bicycle", "a bike", "something to ride outside"),
    "Boot": ("a boot", "a tall boot to wear", "a winter boot"),
    "Laptop": ("a laptop", "a notebook computer", "a portable computer"),
    "Person": ("a person", "a human", "someone standing there"),
    "Chair": ("a chair", "something to sit on", "a seat"),
    "Cattle": ("a cow", "cattle", "a farm animal"),
    "Desk": ("a desk", "a work desk", "somewhere to work at"),
    "Cat": ("a cat", "a kitten", "a pet cat"),
    "Computer mouse": ("a computer mouse", "a mouse for the computer", "a pointing device"),
    "Computer monitor": ("a computer monitor", "a screen", "a display to look at"),
    "Box": ("a box", "a cardboard box", "a storage container"),
    "Mug": ("a mug", "a cup I can drink from", "a tea mug"),
    "Coffee cup": ("a coffee cup", "a cup I can drink from", "a cup of coffee"),
    "Stationary bicycle": ("a stationary bicycle", "an exercise bike", "gym equipment"),
    "Table": ("a table", "somewhere to put things", "a dining table"),
    "Bottle": ("a bottle", "a water bottle", "something to pour from"),
    "High heels": ("high heels", "high-heeled shoes", "elegant women's shoes"),
    "Vehicle": ("a vehicle", "a truck", "a van"),
    "Footwear": ("footwear", "a shoe", "shoes to wear"),
    "Dog": ("a dog", "a puppy", "a pet dog"),
    "Book": ("a book", "a magazine", "something to read"),
    "Camera": ("a camera", "a photo camera", "something to take pictures with"),
    "Car": ("a car", "an automobile", "a car to drive"),
}

# What the open-set gate compares an instruction with (`vocabulary()`): the class phrases above, less the
# ones that describe a wider kind than the detector's class ("a farm animal" would take in sheep and
# horses, "gym equipment" a treadmill), plus what each class is for. Not used for the class embeddings.
# "a tea mug" makes a teapot a mug.
_BROAD_PHRASES = frozenset({"a farm animal", "gym equipment", "someone standing there", "elegant women's shoes",
                            "a tea mug"})
CLASS_USES: dict[str, tuple[str, ...]] = {
    "Chair": ("somewhere to sit down", "a place to sit"),
    "Table": ("a surface to eat at", "somewhere to eat a meal", "a flat surface to put things on"),
    "Desk": ("somewhere to work at a computer", "a desk to write at"),
    "Mug": ("something to drink tea or coffee from",),
    "Coffee cup": ("a cup for coffee",),
    "Bottle": ("something to pour from", "a bottle of water"),
    "Box": ("something to keep things in", "something to store things in", "a container for things"),
    "Book": ("something to read", "pages to read"),
    "Laptop": ("a computer to carry around",),
    "Computer monitor": ("a computer screen",),
    "Computer mouse": ("something to move the cursor with",),
    "Person": ("someone", "a man or a woman"),
    "Camera": ("something to take photos with",),
    "Footwear": ("something to wear on my feet",),
    "Stationary bicycle": ("an exercise bike",),
}


def gate_phrases(label: str) -> tuple[str, ...]:
    """The phrases the open-set gate compares instructions with for a class (see CLASS_USES)."""
    return tuple(p for p in CLASS_PHRASES.get(label, ()) if p not in _BROAD_PHRASES) + CLASS_USES.get(label, ())


# Nouns that name each class (singular, lower case; two words where one would be ambiguous): the gate's
# lexical rule. Dictionary synonyms of the Open Images class, not words picked from a test set.
CLASS_NOUNS: dict[str, tuple[str, ...]] = {
    "Bicycle": ("bicycle", "bike", "mountain bike", "road bike"),
    "Boot": ("boot", "wellington"),
    "Laptop": ("laptop", "notebook computer", "macbook"),
    "Person": ("person", "human", "man", "woman", "child", "kid", "boy", "girl", "someone", "somebody", "adult"),
    "Chair": ("chair", "armchair", "seat"),
    "Cattle": ("cattle", "cow", "bull", "calf", "ox"),
    "Desk": ("desk",),
    "Cat": ("cat", "kitten", "kitty"),
    "Computer mouse": ("computer mouse", "mouse"),
    "Computer monitor": ("monitor", "computer monitor", "computer screen", "screen", "display"),
    "Box": ("box", "carton", "parcel", "package", "container", "cardboard box"),
    "Mug": ("mug", "cup", "coffee mug", "tea mug"),
    "Coffee cup": ("coffee cup", "cup", "mug", "espresso cup"),
    "Stationary bicycle": ("stationary bicycle", "stationary bike", "exercise bike", "exercise bicycle"),
    "Table": ("table",),
    "Bottle": ("bottle",),
    "High heels": ("high heels", "heels", "high heel", "stiletto"),
    "Vehicle": ("vehicle", "truck", "van", "lorry", "pickup"),
    "Footwear": ("footwear", "shoe", "sneaker", "sandal", "slipper", "loafer"),
    "Dog": ("dog", "puppy", "doggy"),
    "Book": ("book", "magazine", "novel", "textbook", "paperback", "hardback", "comic"),
    "Camera": ("camera",),
    "Car": ("car", "automobile"),
}

# The shape the object memory can check for a class (`core/query/shapes.py`): an unlabelled object of that shape may
# stand in for it, flagged unconfirmed ("the plastic box on the table" -> the box-shaped object on it).
CLASS_SHAPES: dict[str, str] = {"Box": "box-shaped", "Book": "flat", "Laptop": "flat", "Bottle": "tall"}

MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


@dataclass(frozen=True, eq=False)
class ClassQuery:
    """An instruction mapped onto detector classes.

    class_ids: target class indices into the label map (best first); scores (C,) float32 cosine
    score of every label (background 0 gets -1); query_embedding (384,) float32 L2-normalised.
    """

    class_ids: tuple[int, ...]
    target_phrase: str
    query_embedding: np.ndarray
    scores: np.ndarray


class InstructionClassifier:
    """Embeds class descriptions once at construction; `classify` maps an instruction to classes."""

    def __init__(self, model_dir: Path, labels: tuple[str, ...], class_margin: float = 0.03,
                 max_target_classes: int = 3) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self._model = AutoModel.from_pretrained(str(model_dir)).eval()
        self.labels = labels
        self.class_margin = class_margin
        self.max_target_classes = max_target_classes
        # Background (index 0) and any label without phrases can never be a target.
        self._phrase_owner: list[int] = []
        phrases: list[str] = []
        for class_id, label in enumerate(labels):
            for phrase in CLASS_PHRASES.get(label, ()):
                phrases.append(phrase)
                self._phrase_owner.append(class_id)
        self._phrase_embeddings = self.embed(phrases)
        dim = self._phrase_embeddings.shape[1]
        owners = np.asarray(self._phrase_owner)
        self.class_embeddings = np.zeros((len(labels), dim), dtype=np.float32)
        for class_id in np.unique(owners):
            mean = self._phrase_embeddings[owners == class_id].mean(axis=0)
            self.class_embeddings[class_id] = mean / np.linalg.norm(mean)

    def embed(self, texts: list[str]) -> np.ndarray:
        """(N, 384) float32 L2-normalised sentence embeddings (mean pooling over the attention mask)."""
        torch = self._torch
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        # A sentence is a few tokens: intra-op threads only add OpenMP hand-off and spin-waiting that
        # competes with the detector's threads (measured on 2 cores: 300-1000 ms with 2 threads, ~10 ms
        # with 1). The setting is process-wide, so it is restored afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                tokens = self._model(**batch).last_hidden_state
        finally:
            torch.set_num_threads(threads)
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32)

    def classify(self, instruction: str) -> ClassQuery:
        """Target classes of an already-normalised instruction, with the query embedding q."""
        q = self.embed([instruction])[0]
        sims = self._phrase_embeddings @ q
        scores = np.full(len(self.labels), -1.0, dtype=np.float32)
        np.maximum.at(scores, np.asarray(self._phrase_owner), sims)
        best = float(scores.max())
        order = np.argsort(-scores, kind="stable")
        class_ids = tuple(int(c) for c in order if scores[c] >= best - self.class_margin)[: self.max_target_classes]
        phrase = " or ".join(self.labels[c].lower() for c in class_ids)
        return ClassQuery(class_ids, phrase, q, scores)

    def close(self) -> None:
        self._model = None
