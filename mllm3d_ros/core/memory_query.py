"""Queries answered from the object memory: candidates by text similarity and evidence, relations in 3D.

`MemoryResolver.plan` turns a parsed instruction into a `MemoryPlan`:
- candidates: the memory's confirmed instances whose embedding is close to the target phrase's
  (cosine within `similarity_margin` of the best and at least `min_similarity`), ranked by
  similarity x evidence; colour attributes are checked on the instance's mean colour;
- a relation ("on the table", "next to the box") is decided on gravity-aligned boxes (`relations`)
  against the anchors the memory holds, seen from the latest keyframe (the robot's current view);
- `answer`: the ranked objects, mapped onto the query's map snapshot, when every part of the
  instruction was decided in 3D (a plain class, a relation with its anchors found, a colour);
  otherwise `region_points` and `keyframe_ids` tell the query-time path where to look: the keyframes
  that see the candidates best, instead of views chosen to cover the room.
Each step that could not be decided adds a note; the query result reports them.
"""

from __future__ import annotations

import colorsys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .config import check_int, check_range
from .instruction import COLOURS, ParsedInstruction, Relation
from .object_geometry import oriented_box, strip_support_surface
from .object_memory import MemoryObject, ObjectMemory, VoxelIndex, voxel_keys
from .relations import RANKING_RELATIONS, relation_score, superlative_order
from .types import Keyframe, MapSnapshot, Object3D

EncodeFn = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class MemoryQueryConfig:
    """min_similarity: a candidate's cosine to the target phrase, [-1, 1]. similarity_margin: candidates
    within this of the best, [0, 2]. same_kind_similarity: or whose embedding is this close to the best
    candidate's, [-1, 1]. evidence_views: detections at which the ranking counts evidence as ~63 % complete,
    (0, 1000]. max_candidates: [1, 100]. min_object_points: map points an answer
    needs, [1, 1e6]. support_ring_m / support_min_frac: support-surface stripping (as voting's).
    grow_voxels: an answer takes the map points within this many memory voxels of the instance, [0, 5]."""

    min_similarity: float = 0.45
    similarity_margin: float = 0.08
    same_kind_similarity: float = 0.8
    evidence_views: float = 10.0
    max_candidates: int = 10
    min_object_points: int = 10
    support_ring_m: float = 0.3
    support_min_frac: float = 0.25
    grow_voxels: int = 1

    def __post_init__(self) -> None:
        check_range("min_similarity", self.min_similarity, -1.0, 1.0)
        check_range("similarity_margin", self.similarity_margin, 0.0, 2.0)
        check_range("same_kind_similarity", self.same_kind_similarity, -1.0, 1.0)
        check_range("evidence_views", self.evidence_views, 0.0, 1000.0, low_inclusive=False)
        check_int("max_candidates", self.max_candidates, 1, 100)
        check_int("min_object_points", self.min_object_points, 1, 1_000_000)
        check_range("support_ring_m", self.support_ring_m, 0.0, 5.0)
        check_range("support_min_frac", self.support_min_frac, 0.0, 1.0)
        check_int("grow_voxels", self.grow_voxels, 0, 5)


@dataclass(frozen=True, eq=False)
class MemoryPlan:
    """What the memory says about a query. `answer` is None when the query-time path must decide."""

    target_phrase: str
    candidates: tuple[MemoryObject, ...]
    answer: tuple[Object3D, ...] | None
    region_points_world_m: np.ndarray
    keyframe_ids: tuple[int, ...]
    anchor: MemoryObject | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def colour_name(rgb: Sequence[float]) -> str:
    """A coarse colour word for an RGB mean in [0, 255] (HSV rules; 'grey' for unsaturated mid tones)."""
    r, g, b = (float(np.clip(c, 0, 255)) / 255.0 for c in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.2:
        return "black"
    if s < 0.18:
        return "white" if v > 0.75 else "grey"
    hue = h * 360.0
    if hue < 15 or hue >= 340:
        return "red"
    if hue < 45:
        return "brown" if v < 0.6 else "orange"
    if hue < 70:
        return "yellow"
    if hue < 170:
        return "green"
    if hue < 260:
        return "blue"
    if hue < 300:
        return "purple"
    return "pink"


def _embedding_matrix(objects: Sequence[MemoryObject], dim: int) -> np.ndarray:
    """(N, dim) float32 embeddings of the objects; an unlabelled object's is zero (no text reaches it by
    similarity), whatever size the memory gave it."""
    out = np.zeros((len(objects), dim), np.float32)
    for i, o in enumerate(objects):
        if not o.unlabelled and o.embedding.shape == (dim,):
            out[i] = o.embedding
    return out


_COLOUR_ALIASES = {"gray": "grey", "silver": "grey", "beige": "white"}


class MemoryResolver:
    """Plans queries against an ObjectMemory; `encode_fn` embeds phrases in the proposals' space."""

    def __init__(self, memory: ObjectMemory, encode_fn: EncodeFn, config: MemoryQueryConfig | None = None) -> None:
        self.memory = memory
        self.encode_fn = encode_fn
        self.config = config or MemoryQueryConfig()
        self._index: tuple[MapSnapshot, VoxelIndex] | None = None  # the snapshot is kept so its id stays its own
        # A repeated query on an unchanged memory and map is answered from these (no text model, no mapping).
        self._embeddings: OrderedDict[str, np.ndarray] = OrderedDict()
        self._plans: OrderedDict[tuple, tuple[MapSnapshot, MemoryPlan]] = OrderedDict()

    def plan(self, parsed: ParsedInstruction, snapshot: MapSnapshot, keyframes: Sequence[Keyframe]) -> MemoryPlan | None:
        """None when the memory holds nothing yet (the caller falls back to the query-time path)."""
        key = (parsed.text.lower(), self.memory.version, id(snapshot), keyframes[-1].keyframe_id if keyframes else -1)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        plan = self._plan(parsed, snapshot, keyframes)
        self._plans[key] = (snapshot, plan)
        while len(self._plans) > 64:
            self._plans.popitem(last=False)
        return plan

    def _encode(self, phrases: Sequence[str]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(phrases) if p not in self._embeddings]
        if missing:
            for phrase, e in zip(missing, np.asarray(self.encode_fn(missing), dtype=np.float32)):
                self._embeddings[phrase] = e
            while len(self._embeddings) > 512:
                self._embeddings.popitem(last=False)
        return np.stack([self._embeddings[p] for p in phrases])

    def _plan(self, parsed: ParsedInstruction, snapshot: MapSnapshot, keyframes: Sequence[Keyframe]) -> MemoryPlan | None:
        objects = self.memory.objects()
        if not objects:
            return None
        cfg = self.config
        notes = list(parsed.notes)
        phrases = [parsed.target_text] + list(parsed.anchors)
        emb = self._encode(phrases)
        obj_emb = _embedding_matrix(objects, emb.shape[1])
        sims = obj_emb @ emb[0]
        best_i = int(np.argmax(sims))
        best = float(sims[best_i])
        # Within the margin of the best match, or of the same kind as it ("mug" takes the instances the
        # detector called "coffee cup" too, "somewhere I can sit" does not take the tables).
        same_kind = obj_emb @ obj_emb[best_i] >= cfg.same_kind_similarity
        ok = (sims >= cfg.min_similarity) & ((sims >= best - cfg.similarity_margin) | same_kind)
        # Rank: similarity x confidence x how much evidence there is (an instance detected in 40 views
        # outranks an equally confident one detected in 10: 1 - exp(-detections / evidence_views)).
        evidence = np.array([o.confidence * (1.0 - np.exp(-o.detections / cfg.evidence_views)) for o in objects])
        order = [i for i in np.argsort(-(sims * evidence), kind="stable") if ok[i]]
        empty = np.zeros((0, 3), np.float32)
        if not order:
            notes.append(f"no object in the memory matches '{parsed.target_text}' (best similarity {best:.2f})")
            return MemoryPlan(parsed.target_text, (), None, empty, (), None, tuple(notes))
        candidates = self._drop_relabelled([objects[i] for i in order][: cfg.max_candidates], objects, notes)
        decided = True
        colours = [_COLOUR_ALIASES.get(a, a) for a in parsed.attributes if a in COLOURS]
        if colours:
            matching = [c for c in candidates if colour_name(c.mean_color_rgb) in colours]
            if matching:
                candidates = matching
            else:
                notes.append(f"no candidate looks {'/'.join(colours)}: kept all")
        unchecked = [a for a in parsed.attributes if a not in COLOURS]
        if unchecked:
            notes.append(f"attribute(s) {unchecked} are left to the 2D model")
            decided = False
        viewer = keyframes[-1].world_T_camera if keyframes else None
        anchor = None
        if parsed.relation is not None:
            candidates, anchor, ok = self._apply_relation(parsed, candidates, objects, emb[1:], viewer, notes)
            decided = decided and ok
        if parsed.excluded is not None:
            candidates = self._exclude(parsed, candidates, objects, viewer, notes)
        if parsed.superlative is not None:
            ranked = superlative_order([c.box for c in candidates], parsed.superlative, viewer)
            candidates = [candidates[i] for i in ranked]
            if parsed.ordinal is not None:
                if parsed.ordinal > len(candidates):
                    notes.append(f"asked for number {parsed.ordinal} but the memory holds {len(candidates)}")
                else:
                    candidates = [candidates[parsed.ordinal - 1]]
            else:
                candidates = candidates[:1]
        answer = self.candidate_objects(candidates, snapshot) if decided and candidates else None
        if answer is not None and not answer:
            answer = None
            notes.append("the candidates are not in the current map")
        region = (np.concatenate([c.points_world_m for c in candidates]) if candidates else empty)
        kf_ids = tuple(dict.fromkeys(k for c in candidates for k in c.best_keyframe_ids))
        return MemoryPlan(parsed.target_text, tuple(candidates), answer, region, kf_ids, anchor, tuple(notes))

    def _drop_relabelled(self, candidates: list[MemoryObject], objects: Sequence[MemoryObject],
                         notes: list[str]) -> list[MemoryObject]:
        """Candidates on the same voxels (IoU >= 0.5) as an instance of another kind detected at least twice
        as often are dropped: one object has one class, and a proposal with a wrong label on it (a
        hallucination on another object) starts an instance of its own on the same voxels. At least
        twice: when the detector is torn between two labels for one object (a table it calls "Desk" 45
        times and "Table" 40), either label is a fair answer and the query's must not lose. IoU, not
        containment: a table instance that took in the mug on it (box-refined masks spill) must not
        remove the mug."""
        voxel = self.memory.config.voxel_size_m
        chosen = {c.instance_id for c in candidates}
        others = [o for o in objects if o.instance_id not in chosen]
        if not others:
            return candidates
        other_keys = [np.unique(voxel_keys(o.points_world_m, voxel)) for o in others]
        kept = []
        for c in candidates:
            keys = np.unique(voxel_keys(c.points_world_m, voxel))
            owner = None
            for o, k in zip(others, other_keys):
                shared = int(np.isin(keys, k).sum())
                if o.detections >= 2 * c.detections and shared >= 0.5 * (keys.shape[0] + k.shape[0] - shared):
                    owner = o
                    break
            if owner is None:
                kept.append(c)
            else:
                notes.append(f"#{c.instance_id} ('{c.label}') is on the voxels of #{owner.instance_id} "
                             f"('{owner.label}', detected {owner.detections} times to its {c.detections}): dropped")
        return kept or candidates

    def _anchors(self, phrase_emb: np.ndarray, objects: Sequence[MemoryObject], exclude: set[int]) -> list[MemoryObject]:
        cfg = self.config
        sims = _embedding_matrix(objects, phrase_emb.shape[0]) @ phrase_emb
        best = float(sims.max()) if sims.size else -1.0
        return [objects[i] for i in np.argsort(-sims, kind="stable")
                if sims[i] >= max(cfg.min_similarity, best - cfg.similarity_margin)
                and objects[i].instance_id not in exclude]

    def _apply_relation(self, parsed: ParsedInstruction, candidates: list[MemoryObject],
                        objects: Sequence[MemoryObject], anchor_emb: np.ndarray, viewer, notes: list[str]):
        """Candidates ranked by the relation to the best-placed anchor; (candidates, anchor, decided)."""
        exclude = {c.instance_id for c in candidates}
        anchor_sets = [self._anchors(e, objects, exclude) for e in anchor_emb]
        missing = [a for a, s in zip(parsed.anchors, anchor_sets) if not s]
        if missing:
            notes.append(f"anchor(s) {missing} not in the map: relation '{parsed.relation.value}' not applied")
            return candidates, None, False
        scored = []
        for c in candidates:
            if parsed.relation is Relation.BETWEEN:
                # Every pair of matching anchors: the best-matching box of a class need not be the one meant.
                best = max(((relation_score(c.box, [a.box, b.box], parsed.relation, viewer), a)
                            for a in anchor_sets[0][:5] for b in anchor_sets[1][:5] if a is not b),
                           key=lambda x: x[0], default=(-np.inf, anchor_sets[0][0]))
                scored.append((best[0], c, best[1]))
                continue
            best = max(((relation_score(c.box, [a.box], parsed.relation, viewer), a) for a in anchor_sets[0]),
                       key=lambda x: x[0])
            scored.append((best[0], c, best[1]))
        holding = sorted([s for s in scored if np.isfinite(s[0])], key=lambda s: -s[0])
        if not holding:
            notes.append(f"no '{parsed.target}' is {parsed.relation.value} a '{parsed.anchors[0]}' in the map: "
                         "returning the best candidates without the relation")
            return candidates, None, False
        if len(anchor_sets[0]) > 1 and parsed.relation is not Relation.BETWEEN:
            notes.append(f"{len(anchor_sets[0])} objects match the anchor '{parsed.anchors[0]}': used the one "
                         f"that fits best (#{holding[0][2].instance_id})")
        anchor = holding[0][2]
        centre, size = (", ".join(f"{v:.2f}" for v in vec) for vec in (anchor.box.center_world_m, anchor.box.size_m))
        notes.append(f"relation '{parsed.relation.value}' decided in 3D against anchor #{anchor.instance_id} "
                     f"'{anchor.label}' (box centre {centre} m, size {size} m)")
        return [s[1] for s in holding], anchor, True

    def _exclude(self, parsed: ParsedInstruction, candidates: list[MemoryObject], objects: Sequence[MemoryObject],
                 viewer, notes: list[str]) -> list[MemoryObject]:
        relation, phrase = parsed.excluded
        anchors = self._anchors(self._encode([phrase])[0], objects,
                                {c.instance_id for c in candidates})
        if not anchors:
            notes.append(f"'{phrase}' (the exclusion's anchor) is not in the map: nothing excluded")
            return candidates
        scores = [max(relation_score(c.box, [a.box], relation, viewer) for a in anchors) for c in candidates]
        if relation in RANKING_RELATIONS:
            # "not the one next to the X": the candidate that is the most so, not all at finite distance.
            worst = int(np.argmax(scores))
            kept = [c for i, c in enumerate(candidates) if i != worst]
        else:
            kept = [c for c, s in zip(candidates, scores) if not np.isfinite(s)]
        if not kept:
            notes.append("every candidate matched the exclusion: kept all")
            return candidates
        return kept

    def candidate_objects(self, candidates: Sequence[MemoryObject], snapshot: MapSnapshot) -> tuple[Object3D, ...]:
        """Memory instances as objects on the snapshot's points, support surface stripped (what an answer
        from memory returns)."""
        cfg = self.config
        voxel = self.memory.config.voxel_size_m
        if self._index is None or self._index[0] is not snapshot:
            self._index = (snapshot, VoxelIndex(snapshot.points_world_m, voxel))
        index = self._index[1]
        points = snapshot.points_world_m
        out = []
        for obj in candidates:
            # One voxel grown: the memory keeps the voxels its masks agreed on, which undershoot an object's
            # rim and thin parts (measured on the real kitchen: precision 0.9, recall 0.4 without it).
            idx = index.indices(obj.points_world_m, cfg.grow_voxels)
            if idx.shape[0] < cfg.min_object_points:
                continue
            # min_points=1, then the size check: an instance that is only floor (mask spill the memory
            # could not strip) has nothing left and is no answer.
            idx = strip_support_surface(points, idx, 2 * voxel, cfg.support_ring_m, cfg.support_min_frac, 1)
            if idx.shape[0] < cfg.min_object_points:
                continue
            out.append(Object3D(point_indices=idx, point_confidence=np.full(idx.shape[0], obj.confidence, np.float32),
                                box=oriented_box(points[idx]), confidence=float(obj.confidence),
                                supporting_views=obj.detections, visible_views=obj.views_seen, label=obj.label))
        return tuple(out)
