"""Queries answered from the object memory: candidates by evidence for the asked class, relations in 3D.

`MemoryResolver.plan` turns a parsed instruction and the open-set gate's answers for its phrases
(`open_set.InstructionRecognition`) into a `MemoryPlan`:
- candidates of the asked kind. A KNOWN target (the backend recognises it as one or more of its classes)
  takes the confirmed instances with evidence for those classes: a share of their label distribution
  (`min_label_share`) and detections of them (`min_class_detections`), never the nearest class by
  embedding. An OPEN target (an open-vocabulary backend, or no gate) takes the instances whose embedding
  is close to the target phrase's (cosine within `similarity_margin` of the best and at least
  `min_similarity`). A GENERIC target ("the thing", "the red one") takes every object; an UNKNOWN one
  none of the labelled objects;
- a label rests on geometry too: a labelled instance whose size cannot be of the class (`core/query/size_priors.py`:
  larger than the class ever is, or a crumb of it), or a portable thing (a box, a mug) that stands on no
  support surface (a "Box" at a chair's back height), or one lying on the voxels of an instance of another kind
  detected twice as often, is no candidate (said in the notes);
- naming by geometry: the memory's unlabelled (class-agnostic) objects answer only when the instruction
  pins them down with what the memory can check: a relation to an anchor it holds, an exclusion, a colour
  (`core/query/colours.py`), a shape (`core/query/shapes.py`) or a size word / superlative; for a KNOWN class when the
  object has the class's declared shape or fits its size prior ("the plastic box on the table" -> the
  box-sized unlabelled object on the table), and only when no labelled candidate holds the relation (or, for
  "next to", none is next to the anchor at all: `next_to`); one stand-in, the most typical size, is answered.
  Such answers are flagged unconfirmed (the message, each object's `unconfirmed` and `detail`) and their
  confidence is scaled by `unconfirmed_factor`. A bare noun never lets an unlabelled object answer, not even
  one whose class a shape seems to define ("the box" by a box-shaped object of a box's size): measured by
  `benchmarks.shape_nouns`, such objects are mostly mugs (a rim fills a 3 cm grid's top) and clutter (0 of 3 on the
  real kitchen, whose see-through box is not box-shaped in the map; 22 of 71 on simulated rooms; 9 of 15 rooms
  without any box would get one). A GENERIC
  or UNKNOWN target with nothing that pins it is refused (`MemoryPlan.refusal`: the query ends NOT_FOUND with
  the reason);
- support surfaces are anchors: "the counter" (an elevated surface at a worktop's height), "the shelf", "the
  floor" name the memory's support surfaces (`SUPPORT_NOUNS`), no detector class needed;
- colours are checked on the object's fused map colours, shapes on its box and voxels, a relation ("on
  the table", "next to the box") on gravity-aligned boxes (`relations`) against anchors found by the
  same rules (an unknown or absent anchor is said, never replaced by the nearest class), seen from the
  latest keyframe (the robot's current view). "On" and "at the end of" are also decided against the anchor's
  top surface (`top_box`: what stands on a table lifts its box, a chair taken into it stretches it); "next to"
  an unlabelled anchor (one of the objects that may be it) holds only beside the target, at its height, and
  gaps under a memory voxel count as touching;
- lists a robot can trust: a candidate lying inside a better-ranked one (its footprint mostly within the
  other's, at the same height) is a fragment of that object, and a table or desk must stand free on legs
  (`FREE_STANDING_MAX_BODY`: a counter or cabinet run is a solid block to the floor, a table a top with
  air under it) with its top at a table's height (`LOW_TABLE_TOP_M`: a top lower than a dining table's on a
  footprint longer than a coffee table's is neither);
- `answer`: the ranked objects, mapped onto the query's map snapshot, when every part of the
  instruction was decided in 3D; otherwise `region_points` and `keyframe_ids` tell the query-time path
  where to look: the keyframes that see the candidates best, instead of views chosen to cover the room.
Each step that could not be decided adds a note; the query result reports them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .colours import ColourProfile, canonical_colour, colour_name, colour_profile  # noqa: F401 (re-exported)
from ..clustering import cluster_points
from ..config import check_int, check_range
from .instruction import ParsedInstruction, Relation, Superlative
from ..memory.object_geometry import oriented_box, strip_support_surface
from ..geometry import voxel_keys
from ..memory.object_memory import MemoryObject, ObjectMemory, VoxelIndex
from .open_set import InstructionRecognition, Recognition, RecognitionStatus, head_words, singular
from .relations import END_SIDE_M, RANKING_RELATIONS, BoxGeometry, box_gap_m, relation_score, superlative_order
from .shapes import canonical_shape, shape_words
from .size_priors import consistent, prior_of, typicality
from ..memory.supports import SupportSurface, cell_indices
from ..types import UNLABELLED, Keyframe, MapSnapshot, Object3D, OrientedBox3D, SupportKind

EncodeFn = Callable[[Sequence[str]], np.ndarray]

# A table stands free: it is a top on legs, so few of its voxels lie more than BODY_DEPTH_M below its top
# surface; a kitchen counter or a cabinet run that a detector calls "table" from afar is a solid block down to
# the floor. The top surface is the highest layer of voxels holding at least half as many as the densest
# layer (objects standing on the table are above it and sparse), floor spill within FLOOR_SPILL_M of the
# floor left out. Measured: the kitchen's table 0.00 (both recordings), its counters and cabinets 0.67-0.84,
# the demo room's table 0.02. Desks are left out: a desk with a drawer pedestal is a solid block too (the
# simulated desks 0.66-0.89). Keys: lower-case class names.
BODY_DEPTH_M = 0.15
FLOOR_SPILL_M = 0.1
FREE_STANDING_MAX_BODY = {"table": 0.5, "dining table": 0.5, "coffee table": 0.5, "kitchen table": 0.5}
MIN_TOP_SIDE_M = 0.25  # a table top narrower than this is not a table
TOP_BAND_VOXELS = 2  # the top surface's voxels: its layer and the one under (a real top is not exactly level)
# Relations decided against an anchor's top surface as well as its box (`top_box`).
TOP_RELATIONS = frozenset({Relation.ON, Relation.AT_END_OF})
# A table's top stands at a dining table's height, 720-760 mm, or is a coffee table's, 400-500 mm high and at most
# about 1.4 m long (Neufert, "Architects' Data"): a top under LOW_TABLE_TOP_M (720 mm less the map's height error)
# on a footprint longer than COFFEE_TABLE_MAX_LONG_M is neither. Measured: the kitchen's table top 0.74 m; chairs
# round it that the detector called "table" in some views make an instance whose densest layer is the seats',
# 0.50 m, over 2.2 m.
LOW_TABLE_TOP_M = 0.6
COFFEE_TABLE_MAX_LONG_M = 1.6
# Support surfaces an instruction may name as anchors ("the chair by the counter", "the box on the floor"): the
# memory's support surfaces (`core/memory/supports.py`), no detector class needed. A counter (worktop) is an elevated
# surface at a worktop's height above the floor: EN 1116 ("Kitchen furniture - Co-ordinating sizes") gives
# 850-950 mm, widened by SURFACE_HEIGHT_TOL_M for the map's height error; a dining table stands at 720-760 mm
# and a seat at 400-480 mm (Neufert, "Architects' Data"), so neither is taken for a counter. A shelf is any
# elevated surface, the floor the surfaces of the floor's height. A surface is split into tiles of at most
# SURFACE_TILE_M a side, each an anchor box (an L-shaped worktop's bounding box would hold the whole kitchen):
# the relation takes the tile that fits best; a counter's tiles reach down to the floor (a built-in block).
SUPPORT_NOUNS = {"counter": "counter", "countertop": "counter", "worktop": "counter", "worksurface": "counter",
                 "shelf": "shelf", "shelve": "shelf", "floor": "floor", "ground": "floor"}
COUNTER_HEIGHT_M = (0.85, 0.95)
SURFACE_HEIGHT_TOL_M = 0.05
SURFACE_TILE_M = 0.5
_SIZE_WORDS = {"big": Superlative.BIGGEST, "large": Superlative.BIGGEST, "huge": Superlative.BIGGEST,
               "small": Superlative.SMALLEST, "little": Superlative.SMALLEST, "tiny": Superlative.SMALLEST}


@dataclass(frozen=True)
class MemoryQueryConfig:
    """min_similarity: a candidate's cosine to the target phrase, [-1, 1]. similarity_margin: candidates
    within this of the best, [0, 2]. same_kind_similarity: or whose embedding is this close to the best
    candidate's, [-1, 1]. evidence_views: detections at which the ranking counts evidence as ~63 % complete,
    (0, 1000]. max_candidates: [1, 100]. min_object_points: map points an answer
    needs, [1, 1e6]. support_ring_m / support_min_frac: support-surface stripping (as voting's).
    grow_voxels: an answer takes the map points within this many memory voxels of the instance, [0, 5].
    min_label_share: share of an instance's label distribution the asked class needs, [0, 1].
    min_class_detections: detections of the asked class an instance needs (share x detections), [0, 1000].
    unconfirmed_factor: confidence scale of an object whose label is unconfirmed, [0, 1].
    fragment_overlap: a candidate whose footprint lies this much inside a better one's is its fragment, [0, 1]."""

    min_similarity: float = 0.45
    similarity_margin: float = 0.08
    same_kind_similarity: float = 0.8
    evidence_views: float = 10.0
    max_candidates: int = 10
    min_object_points: int = 10
    support_ring_m: float = 0.3
    support_min_frac: float = 0.25
    grow_voxels: int = 1
    min_label_share: float = 0.2
    min_class_detections: float = 2.0
    unconfirmed_factor: float = 0.5
    fragment_overlap: float = 0.5

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
        check_range("min_label_share", self.min_label_share, 0.0, 1.0)
        check_range("min_class_detections", self.min_class_detections, 0.0, 1000.0)
        check_range("unconfirmed_factor", self.unconfirmed_factor, 0.0, 1.0)
        check_range("fragment_overlap", self.fragment_overlap, 0.0, 1.0)


@dataclass(frozen=True, eq=False)
class MemoryPlan:
    """What the memory says about a query. `answer` is None when the query-time path must decide.

    refusal: non-empty when the query must end NOT_FOUND with this reason (a target nothing can look for:
    outside the backend's vocabulary, or generic and not pinned down). unconfirmed: the candidates are
    unlabelled objects named by their geometry. details: per candidate, what the memory checked
    (colour, shape, relation; "label unconfirmed" first when it is). unresolved_anchor: the relation's
    anchor is not something the backend recognises or not in the memory (the pipeline answers NOT_FOUND
    for a closed vocabulary: a 2D model that segments the target alone cannot check the relation)."""

    target_phrase: str
    candidates: tuple[MemoryObject, ...]
    answer: tuple[Object3D, ...] | None
    region_points_world_m: np.ndarray
    keyframe_ids: tuple[int, ...]
    anchor: MemoryObject | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    refusal: str = ""
    unconfirmed: bool = False
    details: tuple[str, ...] = ()
    unresolved_anchor: str = ""  # why the instruction's relation cannot be checked (its anchor unknown or absent)


def class_share(obj: MemoryObject, concepts: Sequence[str]) -> float:
    """The share of `obj`'s label distribution that names one of `concepts` (case-insensitive)."""
    names = {c.lower() for c in concepts}
    return float(sum(s for label, s in obj.label_scores if label.lower() in names))


def top_surface_z(obj: MemoryObject, floor_z: float, voxel_size_m: float) -> float | None:
    """z of the object's top surface (see FREE_STANDING_MAX_BODY), None when it is all floor spill."""
    z = np.asarray(obj.points_world_m)[:, 2]
    above = z[z > floor_z + FLOOR_SPILL_M]
    if above.size == 0:
        return None
    layers, counts = np.unique(np.floor(above / voxel_size_m).astype(np.int64), return_counts=True)
    return (int(layers[counts >= 0.5 * counts.max()].max()) + 1) * voxel_size_m


def body_fraction(obj: MemoryObject, top_z: float | None) -> float:
    """Share of the object's voxels more than BODY_DEPTH_M below its top surface `top_z` (`top_surface_z`; see
    FREE_STANDING_MAX_BODY): 0 for a table top on legs, most of a counter or cabinet; 1 without a top."""
    if top_z is None:
        return 1.0
    return float(np.mean(np.asarray(obj.points_world_m)[:, 2] < top_z - BODY_DEPTH_M))


def neither_table_height(obj: MemoryObject, top_z: float | None, floor_z: float) -> bool:
    """A top (`top_surface_z`) too low for a dining table on a footprint too long for a coffee table (see
    LOW_TABLE_TOP_M): seats around a table that a detector called "table" (their most populated layer is the seats')."""
    return (top_z is not None and top_z - floor_z < LOW_TABLE_TOP_M
            and float(np.max(obj.box.size_m[:2])) > COFFEE_TABLE_MAX_LONG_M)


def top_box(obj: MemoryObject, floor_z: float, voxel_size_m: float) -> OrientedBox3D | None:
    """The object as its top surface bounds it, None when it has no top (`top_surface_z`): the footprint of the
    largest part (voxels within two voxels of each other) of those within TOP_BAND_VOXELS below the top, from the object's bottom up to the top.
    "On the table" and "at the end of the table" speak of the top: what stands on it lifts the box's top above
    the surface (the kitchen's table box ended 9 cm above it once it held the plastic box), and a chair the
    detector took for part of the table stretches the box but not the top (the 30 Hz kitchen's table box was
    2.45 m long with the end chair, its top 2.0 m, as on the 250-frame recording)."""
    top_z = top_surface_z(obj, floor_z, voxel_size_m)
    if top_z is None:
        return None
    points = np.asarray(obj.points_world_m)
    band = points[(points[:, 2] < top_z) & (points[:, 2] >= top_z - TOP_BAND_VOXELS * voxel_size_m)]
    if band.shape[0] == 0:
        return None
    # Parts two voxels apart, as the memory splits instances (`ObjectMemory._split`): kept voxels leave holes.
    labels = cluster_points(band, 2.0 * voxel_size_m, 1).labels  # largest part first
    # Its extent along the object's box axes (the same yaw: "the end" is measured in the same frame).
    world_R_box = np.asarray(obj.box.world_R_box, dtype=np.float64)
    local = band[labels == 0, :2].astype(np.float64) @ world_R_box[:2, :2]  # yaw-only: x, y in the box's axes
    lo_xy, hi_xy = local.min(axis=0) - voxel_size_m / 2.0, local.max(axis=0) + voxel_size_m / 2.0
    lo_z = float(points[:, 2].min()) - voxel_size_m / 2.0
    centre = np.append(world_R_box[:2, :2] @ ((lo_xy + hi_xy) / 2.0), (lo_z + top_z) / 2.0)
    return OrientedBox3D(centre, world_R_box, np.append(hi_xy - lo_xy, top_z - lo_z))


def next_to(a: OrientedBox3D, b: OrientedBox3D) -> bool:
    """Whether two boxes are next to each other: their gap at most the larger one's largest side. Nearness
    scales with the things (a mug 1 m from a box is not next to it, a car 1 m from a house is): the ranking
    relation "next to" only says which is nearest, this says whether the nearest is near at all."""
    return box_gap_m(BoxGeometry.of(a), BoxGeometry.of(b)) <= max(float(np.max(a.size_m)), float(np.max(b.size_m)))


def _footprint_inside(a: MemoryObject, b: MemoryObject) -> float:
    """Share of a's ground footprint inside b's, when their height ranges overlap (else 0)."""
    ga, gb = BoxGeometry.of(a.box), BoxGeometry.of(b.box)
    if ga.lo[2] > gb.hi[2] + 0.05 or gb.lo[2] > ga.hi[2] + 0.05:
        return 0.0
    lo, hi = np.maximum(ga.lo[:2], gb.lo[:2]), np.minimum(ga.hi[:2], gb.hi[:2])
    inter = float(np.prod(np.maximum(0.0, hi - lo)))
    return inter / max(float(np.prod(np.maximum(1e-6, ga.hi[:2] - ga.lo[:2]))), 1e-9)


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
        self._colours: dict[tuple[int, int], ColourProfile] = {}
        self._floor: tuple[MapSnapshot, float] | None = None  # the map's lowest surface, per snapshot
        self._shape_cache: dict[tuple, object] = {}  # shapes and voxel keys per (instance, memory version)

    def plan(self, parsed: ParsedInstruction, snapshot: MapSnapshot, keyframes: Sequence[Keyframe],
             recognition: InstructionRecognition | None = None) -> MemoryPlan | None:
        """None when the memory holds nothing yet (the caller falls back to the query-time path).
        `recognition`: the open-set gate's answers for the instruction's phrases (None: every phrase OPEN,
        generic words GENERIC)."""
        recognition = recognition or InstructionRecognition.of(parsed)
        rec_key = tuple((r.status, r.concepts) for r in (recognition.target, *recognition.anchors,
                                                          recognition.excluded) if r is not None)
        key = (parsed.text.lower(), self.memory.version, id(snapshot), keyframes[-1].keyframe_id if keyframes else -1,
               rec_key)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        plan = self._plan(parsed, snapshot, keyframes, recognition)
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

    def colours(self, obj: MemoryObject, snapshot: MapSnapshot) -> ColourProfile:
        """The object's colours from the fused map colours in its voxels (its mean colour without a snapshot)."""
        key = (obj.instance_id, id(snapshot))
        if key not in self._colours:
            if len(self._colours) > 2048:
                self._colours.clear()
            idx = self._snapshot_index(snapshot).indices(obj.points_world_m) if snapshot.num_points else np.zeros(0, int)
            rgb = snapshot.colors_rgb[idx] if idx.size else np.asarray([obj.mean_color_rgb], np.float32)
            self._colours[key] = colour_profile(rgb)
        return self._colours[key]

    def _snapshot_index(self, snapshot: MapSnapshot) -> VoxelIndex:
        if self._index is None or self._index[0] is not snapshot:
            self._index = (snapshot, VoxelIndex(snapshot.points_world_m, self.memory.config.voxel_size_m))
            self._colours.clear()
        return self._index[1]

    # --- candidates of the asked kind ----------------------------------------------------------------
    def _with_evidence(self, concepts: Sequence[str], objects: Sequence[MemoryObject]) -> list[MemoryObject]:
        """Labelled objects with evidence for `concepts`, ranked by that evidence."""
        cfg = self.config
        scored = []
        for o in objects:
            share = class_share(o, concepts)
            dets = share * o.detections
            if share >= cfg.min_label_share and dets >= cfg.min_class_detections:
                scored.append((share * o.confidence * (1.0 - np.exp(-dets / cfg.evidence_views)), o))
        return [o for _, o in sorted(scored, key=lambda s: -s[0])]

    def _has_supports(self) -> bool:
        """Whether the memory knows support surfaces (a memory without the map's proposer has none: then no
        object's `support` says anything)."""
        supports = getattr(self.memory, "supports", None)
        return bool(supports is not None and len(supports()) > 0)

    def misfit(self, obj: MemoryObject, concepts: Sequence[str], labelled: bool = True) -> str:
        """Why the object's geometry cannot be one of `concepts` ('' when it can, or no concept has a size
        prior, `core/query/size_priors.py`): its size (a labelled instance: only too large; an unlabelled one: the
        whole prior with its shape bounds), or a portable thing that stands on no support surface (a "box" at a
        chair's back height: when the memory knows its supports)."""
        priors = prior_of(concepts)
        if not priors:
            return ""
        tolerance = self.memory.config.voxel_size_m
        size = np.asarray(obj.box.size_m, dtype=np.float64)
        if not any(consistent(p, size, tolerance, labelled) for p in priors):
            kind = " or ".join(c.lower() for c in concepts)
            return f"its size ({' x '.join(f'{v:.2f}' for v in sorted(size, reverse=True))} m) is not a {kind}'s"
        if all(p.portable for p in priors) and obj.support is None and self._has_supports():
            return "it stands on no support surface (floor, table top, counter, shelf)"
        return ""

    def _fitting(self, candidates: list[MemoryObject], concepts: Sequence[str], notes: list[str]) -> list[MemoryObject]:
        """The labelled candidates whose geometry may be of the class (`misfit`); the others are said."""
        kept, dropped = [], []
        for c in candidates:
            why = self.misfit(c, concepts)
            if why:
                dropped.append(f"#{c.instance_id} ('{c.label}': {why})")
            else:
                kept.append(c)
        if dropped:
            notes.append(f"labelled but not consistent with a {' or '.join(k.lower() for k in concepts)}: "
                         f"{'; '.join(dropped)} dropped")
        return kept

    def stand_ins(self, target: Recognition, unlabelled: Sequence[MemoryObject]) -> list[MemoryObject]:
        """Unlabelled objects that may stand in for a KNOWN class (naming by geometry, flagged unconfirmed by
        the caller): of the class's checkable shape (`Recognition.shape`), or consistent with its size prior
        (and standing on a support when it is a portable thing); ranked by how typical their size is of the
        class (`size_priors.typicality`), the shaped ones without a prior last."""
        priors = prior_of(target.concepts)
        out = []
        for o in unlabelled:
            if priors and not self.misfit(o, target.concepts, labelled=False):
                out.append((min(typicality(p, o.box.size_m) for p in priors), o))
            elif target.shape and target.shape in self._shapes(o):
                out.append((np.inf, o))
        return [o for _, o in sorted(out, key=lambda x: x[0])]

    def _by_embedding(self, phrase_emb: np.ndarray, phrase: str, objects: Sequence[MemoryObject],
                      notes: list[str]) -> list[MemoryObject]:
        """Instances whose embedding is close to the phrase's (the open-vocabulary rule), ranked by
        similarity x evidence."""
        cfg = self.config
        if not objects:
            notes.append(f"no labelled object in the memory for '{phrase}'")
            return []
        obj_emb = np.stack([o.embedding for o in objects])
        sims = obj_emb @ phrase_emb
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
        if not order:
            notes.append(f"no object in the memory matches '{phrase}' (best similarity {best:.2f})")
        return [objects[i] for i in order]

    def _plan(self, parsed: ParsedInstruction, snapshot: MapSnapshot, keyframes: Sequence[Keyframe],
              rec: InstructionRecognition) -> MemoryPlan | None:
        objects = self.memory.objects()
        if not objects:
            return None
        cfg = self.config
        notes = list(parsed.notes)
        self._note_floor(snapshot)
        target = rec.target
        labelled = [o for o in objects if not o.unlabelled]
        unlabelled = [o for o in objects if o.unlabelled]
        open_phrases = [parsed.target_text] if target.status is RecognitionStatus.OPEN else []
        open_phrases += [a for a, r in zip(parsed.anchors, rec.anchors) if r.status is RecognitionStatus.OPEN]
        if rec.excluded is not None and rec.excluded.status is RecognitionStatus.OPEN:
            open_phrases.append(parsed.excluded[1])
        emb = dict(zip(open_phrases, self._encode(open_phrases))) if open_phrases else {}
        colours = [c for c in (canonical_colour(a) for a in parsed.attributes) if c]
        shapes = [s for s in (canonical_shape(a) for a in parsed.attributes) if s]
        superlative = parsed.superlative
        size_word = next((a for a in parsed.attributes if a in _SIZE_WORDS), None)
        if superlative is None and size_word is not None:
            superlative = _SIZE_WORDS[size_word]  # "the small mug": the smallest of the candidates
        unchecked = [a for a in parsed.attributes
                     if not canonical_colour(a) and not canonical_shape(a) and a not in _SIZE_WORDS]
        # An exclusion ("the mug, not the one on the table") is a relation the memory checks too.
        instruction_pins = bool(parsed.relation or colours or shapes or superlative or parsed.excluded is not None)
        # Candidates of the asked kind; `strict`: every pin must hold (objects no detector named: what the
        # instruction says of them is all there is to go on).
        strict, unconfirmed = False, False
        stand_ins: list[MemoryObject] = []
        if target.status is RecognitionStatus.KNOWN:
            candidates = self._fitting(self._with_evidence(target.concepts, labelled), target.concepts, notes)
            # keep_one=False: a class's only instance lying on the voxels of another kind's is no answer ("the
            # box" is not a chair's back the detector once called "Box"); stand-ins or the 2D model may be.
            candidates = self._drop_relabelled(candidates[: cfg.max_candidates], objects, notes, keep_one=False)
            kind = " or ".join(c.lower() for c in target.concepts)
            # Only an instruction that pins an object down lets an unlabelled one answer for a class, never a
            # bare noun ("the mug on the table": a mug-sized object on the table, flagged unconfirmed).
            stand_ins = self.stand_ins(target, unlabelled) if instruction_pins else []
            if not candidates:
                if stand_ins:
                    candidates, strict, unconfirmed = stand_ins, True, True
                    stand_ins = []
                    notes.append(f"no {kind} was detected: unlabelled object(s) of a {kind}'s size or shape "
                                 "considered, label unconfirmed")
                else:
                    notes.append(f"no {kind} in the object memory")
        elif target.status is RecognitionStatus.OPEN:
            candidates = self._by_embedding(emb[parsed.target_text], parsed.target_text, labelled, notes)
        elif target.status is RecognitionStatus.GENERIC:
            candidates, strict = sorted(objects, key=lambda o: -o.confidence), True
            unconfirmed = False  # per object: the unlabelled among them are flagged
        else:  # UNKNOWN: only objects no detector named can be it, and only when the instruction pins one down
            candidates, strict, unconfirmed = list(unlabelled), True, True
        empty = np.zeros((0, 3), np.float32)

        def refused(reason: str) -> MemoryPlan:
            return MemoryPlan(parsed.target_text, (), None, empty, (), None, tuple(notes), refusal=reason)

        if strict and not instruction_pins:
            if target.status is RecognitionStatus.UNKNOWN:
                return refused(target.message())
            return refused(f"'{parsed.target}' names no kind of object: say where it is (on / next to what), its "
                           "colour, size or shape")
        if not candidates:
            if target.status is RecognitionStatus.UNKNOWN:
                return refused(target.message() + "; no unlabelled object in the memory fits the instruction")
            return MemoryPlan(parsed.target_text, (), None, empty, (), None, tuple(notes))
        # Strict candidates are cut to max_candidates only once the pins have chosen among them.
        if target.status is not RecognitionStatus.KNOWN:  # a KNOWN target's were checked above
            candidates = self._drop_relabelled(candidates if strict else candidates[: cfg.max_candidates], objects,
                                               notes)
        pinned, decided = False, True
        checked: list[str] = []
        if colours:
            matching = [c for c in candidates if any(self.colours(c, snapshot).is_colour(k) for k in colours)]
            if matching:
                candidates, pinned = matching, True
                checked.append("/".join(colours))
            elif strict:
                candidates = []
                notes.append(f"no candidate looks {'/'.join(colours)}")
            else:
                seen = ", ".join(sorted({self.colours(c, snapshot).phrase() for c in candidates}))
                notes.append(f"no candidate looks {'/'.join(colours)} (they look {seen}): kept all")
        if shapes and candidates:
            matching = [c for c in candidates if all(s in self._shapes(c) for s in shapes)]
            if matching:
                candidates, pinned = matching, True
                checked.append("/".join(shapes))
            elif strict:
                candidates = []
                notes.append(f"no candidate is {'/'.join(shapes)}")
            else:
                notes.append(f"no candidate is {'/'.join(shapes)}: kept all")
        if unchecked:
            notes.append(f"attribute(s) {unchecked} are left to the 2D model" if not strict else
                         f"attribute(s) {unchecked} not checked: the memory cannot see them")
            decided = strict and not target.open_vocabulary
        viewer = keyframes[-1].world_T_camera if keyframes else None
        anchor = None
        unresolved = ""
        if parsed.relation is not None and candidates:
            labelled_notes = len(notes)
            candidates, anchor, ok, unresolved = self._apply_relation(parsed, rec, candidates, objects, emb, viewer,
                                                                      notes, strict)
            if stand_ins and not unresolved:
                # The labelled candidates fail the relation, or (a ranking relation) an unlabelled stand-in of
                # the class holds it better: the pinned unlabelled objects answer, flagged unconfirmed.
                alt_notes: list[str] = []
                alt, alt_anchor, alt_ok, _ = self._apply_relation(parsed, rec, stand_ins, objects, emb, viewer,
                                                                  alt_notes, True)
                better = (alt_ok and alt and (not ok or (
                    parsed.relation in (Relation.NEAR, Relation.NEAREST_TO) and anchor is not None
                    and not next_to(candidates[0].box, anchor.box)
                    and self._relation_score(alt[0], alt_anchor, parsed.relation, viewer)
                    > self._relation_score(candidates[0], anchor, parsed.relation, viewer))))
                if better:
                    del notes[labelled_notes:]
                    notes.append(f"no detected {parsed.target} holds the relation as well as an unlabelled object "
                                 f"of a {parsed.target}'s size or shape: label unconfirmed")
                    notes.extend(alt_notes)
                    candidates, anchor, ok, strict, unconfirmed = alt, alt_anchor, alt_ok, True, True
                    decided = decided or not unchecked or not target.open_vocabulary
            decided = decided and ok
            pinned = pinned or ok
            if ok and anchor is not None:
                checked.append(f"{parsed.relation.value} {anchor.label.lower()} #{anchor.instance_id}")
        if parsed.excluded is not None and candidates:
            before = len(candidates)
            candidates = self._exclude(parsed, rec, candidates, objects, emb, viewer, notes)
            if len(candidates) < before:
                pinned = True
                checked.append(f"not {parsed.excluded[0].value} {parsed.excluded[1]}")
        if superlative is not None and candidates:
            ranked = superlative_order([c.box for c in candidates], superlative, viewer)
            candidates = [candidates[i] for i in ranked]
            pinned = True
            checked.append(superlative.value if size_word is None or parsed.superlative else size_word)
            if parsed.ordinal is not None:
                if parsed.ordinal > len(candidates):
                    notes.append(f"asked for number {parsed.ordinal} but the memory holds {len(candidates)}")
                else:
                    candidates = [candidates[parsed.ordinal - 1]]
            else:
                candidates = candidates[:1]
        if strict and not pinned:
            reason = (target.message() if target.status is RecognitionStatus.UNKNOWN else
                      f"no {' or '.join(c.lower() for c in target.concepts)} was detected and no unlabelled object "
                      "of its size or shape is pinned down" if target.status is RecognitionStatus.KNOWN else
                      f"'{parsed.target}' names no kind of object")
            return refused(reason + "; nothing the memory can check pins it down (" + "; ".join(notes[-2:]) + ")")
        if not strict and candidates:
            candidates = self._trustworthy(candidates, target, parsed.target, notes)
        if strict and not candidates:
            reason = (target.message() + "; " if target.status is RecognitionStatus.UNKNOWN else "")
            return refused(reason + f"no object in the memory fits '{parsed.text}'")
        if unconfirmed and target.status is RecognitionStatus.KNOWN and len(candidates) > 1:
            # Stand-ins for a class: the one whose size is the most typical of it (see `stand_ins`), the others
            # said; a list of unconfirmed guesses is not what a robot should be handed as "the box".
            notes.append(f"{len(candidates) - 1} other unlabelled object(s) fit too: "
                         f"{', '.join(f'#{c.instance_id}' for c in candidates[1:6])}")
            candidates = candidates[:1]
        candidates = candidates[: cfg.max_candidates]
        if target.status is RecognitionStatus.UNKNOWN:
            notes.insert(0, target.message() + ": only unlabelled objects that fit what the instruction says can be "
                         "meant")
        flags = [unconfirmed or c.unlabelled for c in candidates]
        details = tuple(self._detail(c, snapshot, flag, checked) for c, flag in zip(candidates, flags))
        answer = (self.candidate_objects(candidates, snapshot, flags, details)
                  if decided and candidates else None)
        if answer is not None and not answer:
            answer = None
            notes.append("the candidates are not in the current map")
        if any(flags) and candidates:
            notes.append(f"label unconfirmed: {sum(flags)} unlabelled object(s) named by what the memory checked "
                         f"({', '.join(checked) or 'geometry'})")
        region = (np.concatenate([c.points_world_m for c in candidates]) if candidates else empty)
        kf_ids = tuple(dict.fromkeys(k for c in candidates for k in c.best_keyframe_ids))
        return MemoryPlan(parsed.target_text, tuple(candidates), answer, region, kf_ids, anchor, tuple(notes),
                          unconfirmed=bool(candidates) and all(flags), details=details, unresolved_anchor=unresolved)

    def _apart_points(self, obj: MemoryObject) -> np.ndarray | None:
        """The voxel centres of the confirmed instances held apart from `obj` (None: none)."""
        if not obj.apart_ids:
            return None
        others = [o.points_world_m for o in self.memory.objects() if o.instance_id in obj.apart_ids]
        return np.concatenate(others) if others else None

    def _voxel_keys(self, obj: MemoryObject) -> np.ndarray:
        """The sorted voxel keys of an instance (cached per memory version)."""
        key = ("keys", obj.instance_id, self.memory.version)
        if key not in self._shape_cache:
            self._shape_cache[key] = np.unique(voxel_keys(obj.points_world_m, self.memory.config.voxel_size_m))
        return self._shape_cache[key]

    def _shapes(self, obj: MemoryObject) -> frozenset[str]:
        key = (obj.instance_id, self.memory.version)
        if key not in self._shape_cache:
            if len(self._shape_cache) > 2048:
                self._shape_cache.clear()
            self._shape_cache[key] = shape_words(obj.box, obj.points_world_m, self.memory.config.voxel_size_m)
        return self._shape_cache[key]

    def _detail(self, obj: MemoryObject, snapshot: MapSnapshot, unconfirmed: bool, checked: Sequence[str]) -> str:
        """What the memory knows of a candidate: "label unconfirmed (...)", colours, shapes, what was checked."""
        parts = []
        if unconfirmed:
            parts.append("label unconfirmed: no detector named this object, it is named by "
                         + (", ".join(checked) or "its geometry"))
        colour = self.colours(obj, snapshot).phrase()
        if colour:
            parts.append(colour)
        parts += sorted(self._shapes(obj))
        if obj.support is not None:
            parts.append(f"stands on the {obj.support.kind.value} (support #{obj.support.support_id}, "
                         f"{obj.support.height_m:.2f} m)")
        return "; ".join(parts)

    def _floor_z(self, candidates: Sequence[MemoryObject]) -> float:
        """The floor's height: from a candidate that stands on it (`support`), else the map's lowest surface
        (the 1st percentile of its points' heights, cached per snapshot)."""
        for c in candidates:
            if c.support is not None and c.support.kind.value == "floor":
                return float(c.support.height_m)
        return self._floor[1] if self._floor is not None else -np.inf

    def _note_floor(self, snapshot: MapSnapshot) -> None:
        if self._floor is None or self._floor[0] is not snapshot:
            z = snapshot.points_world_m[:, 2]
            self._floor = (snapshot, float(np.percentile(z, 1)) if z.size else -np.inf)

    def _trustworthy(self, candidates: list[MemoryObject], target: Recognition, phrase: str,
                     notes: list[str]) -> list[MemoryObject]:
        """The list a robot can be handed: fragments of a better candidate dropped, and support furniture
        (tables, desks) that does not stand free on legs dropped (see FREE_STANDING_MAX_BODY)."""
        names = [c.lower() for c in target.concepts] or [phrase.lower()]
        limit = min((FREE_STANDING_MAX_BODY[n] for n in names if n in FREE_STANDING_MAX_BODY), default=None)
        kept: list[MemoryObject] = []
        solid, narrow, low, fragments = [], [], [], []
        floor_z = self._floor_z(candidates) if limit is not None else -np.inf
        for c in candidates:
            if limit is not None:
                size = np.asarray(c.box.size_m)
                # One top surface for both tests (the densest high layer of the object's voxels).
                top_z = top_surface_z(c, floor_z, self.memory.config.voxel_size_m)
                if body_fraction(c, top_z) > limit:
                    solid.append(f"#{c.instance_id}")
                    continue
                if min(size[0], size[1]) < MIN_TOP_SIDE_M:
                    narrow.append(f"#{c.instance_id}")
                    continue
                if neither_table_height(c, top_z, floor_z):
                    low.append(f"#{c.instance_id}")
                    continue
            owner = next((k for k in kept if _footprint_inside(c, k) >= self.config.fragment_overlap), None)
            if owner is not None:
                fragments.append(f"#{c.instance_id} (in #{owner.instance_id})")
                continue
            kept.append(c)
        if solid:
            notes.append(f"not free-standing {names[0]}s (a solid body below the top, a counter or cabinet): "
                         f"{', '.join(solid)} dropped")
        if narrow:
            notes.append(f"tops narrower than {MIN_TOP_SIDE_M:.2f} m: {', '.join(narrow)} dropped")
        if low:
            notes.append(f"tops lower than {LOW_TABLE_TOP_M:.2f} m on footprints longer than a coffee table's "
                         f"({COFFEE_TABLE_MAX_LONG_M:.1f} m), neither a dining nor a coffee table: {', '.join(low)} dropped")
        if fragments:
            notes.append(f"parts of a better-ranked object: {', '.join(fragments)} dropped")
        return kept or candidates[:1]

    def _drop_relabelled(self, candidates: list[MemoryObject], objects: Sequence[MemoryObject],
                         notes: list[str], keep_one: bool = True) -> list[MemoryObject]:
        """Candidates on the same voxels (IoU >= 0.5) as an instance of another kind detected at least twice
        as often are dropped: one object has one class, and a proposal with a wrong label on it (a
        hallucination on another object) starts an instance of its own on the same voxels. At least
        twice: when the detector is torn between two labels for one object (a table it calls "Desk" 45
        times and "Table" 40), either label is a fair answer and the query's must not lose. IoU, not
        containment: a table instance that took in the mug on it (box-refined masks spill) must not
        remove the mug."""
        voxel = self.memory.config.voxel_size_m
        chosen = {c.instance_id for c in candidates}
        others = [o for o in objects if o.instance_id not in chosen and not o.unlabelled]
        if not others:
            return candidates
        other_keys = [self._voxel_keys(o) for o in others]
        kept = []
        for c in candidates:
            keys = self._voxel_keys(c)
            owner = None
            for o, k in zip(others, other_keys):
                shared = int(np.isin(keys, k, assume_unique=True).sum())
                if o.detections >= 2 * c.detections and shared >= 0.5 * (keys.shape[0] + k.shape[0] - shared):
                    owner = o
                    break
            if owner is None:
                kept.append(c)
            else:
                notes.append(f"#{c.instance_id} ('{c.label}') is on the voxels of #{owner.instance_id} "
                             f"('{owner.label}', detected {owner.detections} times to its {c.detections}): dropped")
        return kept or (candidates if keep_one else [])

    def surface_anchors(self, phrase: str, notes: list[str]) -> tuple[list[MemoryObject], str] | None:
        """The support surfaces a phrase names (`SUPPORT_NOUNS`) as anchor objects, one per tile, and why there
        are none; None when the phrase names no support surface."""
        nouns = [SUPPORT_NOUNS[w] for word in head_words(phrase) for w in singular(word) if w in SUPPORT_NOUNS]
        if not nouns:
            return None
        kind = nouns[-1]
        supports = getattr(self.memory, "supports", None)
        surfaces: Sequence[SupportSurface] = supports() if supports is not None else ()
        floors = [s for s in surfaces if s.kind is SupportKind.FLOOR]
        if not surfaces:
            return [], f"no support surfaces in the map to be the {kind} ('{phrase}')"
        if kind != "floor" and not floors:
            return [], f"no floor in the map to tell a {kind} by its height ('{phrase}')"
        floor_z = max(floors, key=lambda s: s.area_m2).height_m if floors else 0.0
        if kind == "floor":
            chosen = floors
        elif kind == "counter":
            lo, hi = COUNTER_HEIGHT_M[0] - SURFACE_HEIGHT_TOL_M, COUNTER_HEIGHT_M[1] + SURFACE_HEIGHT_TOL_M
            # A worktop one can put things on: a top narrower than a table's (MIN_TOP_SIDE_M) is no counter (a chair's
            # backrest top, at a worktop's height, is a 0.15 x 0.2 m surface once a 30 Hz stream has seen it often).
            chosen = [s for s in surfaces if s.kind is SupportKind.ELEVATED and lo <= s.height_m - floor_z <= hi
                      and min(np.subtract(*s.bounds_xy_m[::-1])) >= MIN_TOP_SIDE_M - 1e-6]
        else:
            chosen = [s for s in surfaces if s.kind is SupportKind.ELEVATED]
        if not chosen:
            return [], f"no {kind} among the map's support surfaces ('{phrase}')"
        out = []
        for s in chosen:
            cells = cell_indices(s.cell_keys)
            tiles = np.floor(cells * s.cell_m / SURFACE_TILE_M).astype(np.int64)
            _, tile_of = np.unique(tiles, axis=0, return_inverse=True)
            bottom = floor_z if kind == "counter" else s.height_m - s.cell_m
            for t in range(int(tile_of.max()) + 1):
                c = cells[tile_of.ravel() == t]
                lo_xy, hi_xy = c.min(axis=0) * s.cell_m, (c.max(axis=0) + 1) * s.cell_m
                lo3 = np.array([lo_xy[0], lo_xy[1], bottom])
                hi3 = np.array([hi_xy[0], hi_xy[1], s.height_m])
                centres = (c + 0.5) * s.cell_m
                pts = np.column_stack([centres, np.full(len(c), s.height_m)]).astype(np.float32)
                out.append(MemoryObject(-(1 + s.support_id * 1000 + t), kind, ((kind, 1.0),), np.zeros(1, np.float32),
                                        pts, OrientedBox3D((lo3 + hi3) / 2, np.eye(3), hi3 - lo3), (0.0, 0.0, 0.0),
                                        0, 0, 1.0, (), 0, unlabelled=True))
        heights = ", ".join(f"#{s.support_id} at {s.height_m - floor_z:.2f} m" for s in chosen[:6])
        notes.append(f"the anchor '{phrase}' is the map's {kind} surface(s) ({heights} above the floor)")
        return out, ""

    def _anchors(self, phrase: str, recognition: Recognition, emb: dict, objects: Sequence[MemoryObject],
                 exclude: set[int], notes: list[str]) -> tuple[list[MemoryObject], str]:
        """Objects that may be the anchor `phrase`, and why there are none ('' when there are)."""
        cfg = self.config
        surfaces = self.surface_anchors(phrase, notes)
        if surfaces is not None:
            return surfaces
        pool = [o for o in objects if o.instance_id not in exclude]
        if recognition.status is RecognitionStatus.UNKNOWN:
            return [], f"the anchor {recognition.message()}"
        if recognition.status is RecognitionStatus.GENERIC:
            return sorted(pool, key=lambda o: -o.confidence), ""
        if recognition.status is RecognitionStatus.KNOWN:
            quiet: list[str] = []
            found = self._fitting(self._with_evidence(recognition.concepts, [o for o in pool if not o.unlabelled]),
                                  recognition.concepts, quiet)
            found = self._drop_relabelled(found, objects, quiet, keep_one=False) if found else found
            kind = " or ".join(c.lower() for c in recognition.concepts)
            if found:
                # The anchor is held to the same standard as an answer: "the table" is not a counter.
                return self._trustworthy(found, recognition, phrase, []), ""
            shaped = self.stand_ins(recognition, [o for o in pool if o.unlabelled])
            if shaped:
                notes.append(f"no {kind} was detected: the anchor '{phrase}' is an unlabelled object of a {kind}'s "
                             "size or shape (label unconfirmed)")
                return shaped, ""
            return [], f"no {kind} in the object memory to be the anchor '{phrase}'"
        labelled = [o for o in pool if not o.unlabelled]
        if not labelled:
            return [], f"anchor '{phrase}' not in the map"
        sims = np.array([o.embedding @ emb[phrase] for o in labelled])
        best = float(sims.max())
        found = [labelled[i] for i in np.argsort(-sims, kind="stable")
                 if sims[i] >= max(cfg.min_similarity, best - cfg.similarity_margin)]
        return found, "" if found else f"anchor '{phrase}' not in the map"

    def _apply_relation(self, parsed: ParsedInstruction, rec: InstructionRecognition, candidates: list[MemoryObject],
                        objects: Sequence[MemoryObject], emb: dict, viewer, notes: list[str], strict: bool):
        """Candidates ranked by the relation to the best-placed anchor; (candidates, anchor, decided, why the
        anchor could not be found ('' when it was)). When no candidate holds the relation, the best anchor is
        still returned (undecided), so that what the 2D model finds is checked against it."""
        # Every object may be an anchor, but never of itself ("the thing on the table": the table is a thing).
        found = [self._anchors(a, r, emb, objects, set(), notes) for a, r in zip(parsed.anchors, rec.anchors)]
        anchor_sets = [f[0] for f in found]
        missing = [why for _, why in found if why]
        if missing:
            why = "; ".join(missing) + f": relation '{parsed.relation.value}' not applied"
            notes.append(why)
            return ([] if strict else candidates), None, False, why
        scored = []
        for c in candidates:
            if parsed.relation is Relation.BETWEEN:
                # Every pair of matching anchors: the best-matching box of a class need not be the one meant.
                pairs = [(a, b) for a in anchor_sets[0][:5] for b in anchor_sets[1][:5]
                         if a is not b and c.instance_id not in (a.instance_id, b.instance_id)]
                best = max(((relation_score(c.box, [a.box, b.box], parsed.relation, viewer), a) for a, b in pairs),
                           key=lambda x: x[0], default=(-np.inf, anchor_sets[0][0]))
                scored.append((best[0], c, best[1]))
                continue
            best = max(((self._relation_score(c, a, parsed.relation, viewer), a) for a in anchor_sets[0]
                        if a.instance_id != c.instance_id), key=lambda x: x[0], default=(-np.inf, anchor_sets[0][0]))
            scored.append((best[0], c, best[1]))
        holding = sorted([s for s in scored if np.isfinite(s[0])], key=lambda s: -s[0])
        if not holding:
            notes.append(f"no '{parsed.target}' in the memory is {parsed.relation.value} a '{parsed.anchors[0]}'")
            best_anchor = anchor_sets[0][0] if parsed.relation is not Relation.BETWEEN else None
            return ([] if strict else candidates), best_anchor, False, ""
        if len(anchor_sets[0]) > 1 and parsed.relation is not Relation.BETWEEN:
            notes.append(f"{len(anchor_sets[0])} objects match the anchor '{parsed.anchors[0]}': used the one "
                         f"that fits best (#{holding[0][2].instance_id})")
        anchor = holding[0][2]
        centre, size = (", ".join(f"{v:.2f}" for v in vec) for vec in (anchor.box.center_world_m, anchor.box.size_m))
        notes.append(f"relation '{parsed.relation.value}' decided in 3D against anchor #{anchor.instance_id} "
                     f"'{anchor.label}' (box centre {centre} m, size {size} m)")
        return [s[1] for s in holding], anchor, True, ""

    def _relation_score(self, target: MemoryObject, anchor: MemoryObject, relation: Relation, viewer) -> float:
        """`relation_score` of two memory objects: "on" and "at the end of" also against the anchor's top surface
        (`top_box`), the better of the two; "next to" only beside an unlabelled anchor, gaps under a voxel none."""
        score = relation_score(target.box, [anchor.box], relation, viewer)
        if relation in (Relation.NEAR, Relation.NEAREST_TO) and np.isfinite(score):
            t, a = BoxGeometry.of(target.box), BoxGeometry.of(anchor.box)
            if anchor.unlabelled and anchor.instance_id >= 0 and (t.lo[2] > a.hi[2] or a.lo[2] > t.hi[2]):
                # An unlabelled anchor is one of many objects that may be it (`stand_ins`, or every object for "the
                # thing"): the one meant is beside the target, at its height, not under the table the target stands
                # on (the 30 Hz kitchen's mug was "next to" a box-sized object that was legs on the floor below it).
                return -np.inf
            # Gaps under one memory voxel are not measured (its kept voxels are the map at that resolution): such
            # objects touch, and the candidates' own ranking orders them (the 30 Hz kitchen's mug beside the box,
            # 2.1 cm apart, lost to two crumbs on a shelf whose boxes touched).
            return min(0.0, score + self.memory.config.voxel_size_m)
        if relation in TOP_RELATIONS and anchor.instance_id >= 0:  # surface tiles (negative ids) are a top already
            key = ("top", anchor.instance_id, self.memory.version)
            if key not in self._shape_cache:
                self._shape_cache[key] = top_box(anchor, self._floor_z(()), self.memory.config.voxel_size_m)
            top = self._shape_cache[key]
            voxel = self.memory.config.voxel_size_m
            # Resting on the top, not through it: a chair pushed under the table, its back up at the top's height,
            # does not stand on the table (its bottom is below the top's band; ON_GAP_M allows 12 cm either way for
            # a box's top, which things standing on it may lift).
            through = (relation is Relation.ON and top is not None and BoxGeometry.of(target.box).lo[2]
                       < float(top.center_world_m[2] + top.size_m[2] / 2.0) - TOP_BAND_VOXELS * voxel)
            # "At the end of": the top only where something else stretched the box beyond it by more than the
            # relation's own slack (END_SIDE_M; the 250-frame kitchen's table box and top differ by 3 cm, and a chair
            # along its side would otherwise flip on the end zone's border).
            stretched = relation is Relation.ON or (
                top is not None and float(np.max(anchor.box.size_m[:2]) - np.max(top.size_m[:2])) > END_SIDE_M)
            if top is not None and not through and stretched:
                score = max(score, relation_score(target.box, [top], relation, viewer))
        return score

    def _exclude(self, parsed: ParsedInstruction, rec: InstructionRecognition, candidates: list[MemoryObject],
                 objects: Sequence[MemoryObject], emb: dict, viewer, notes: list[str]) -> list[MemoryObject]:
        relation, phrase = parsed.excluded
        anchors, why = self._anchors(phrase, rec.excluded, emb, objects, {c.instance_id for c in candidates}, notes)
        if not anchors:
            notes.append(f"{why or repr(phrase) + ' not in the map'} (the exclusion's anchor): nothing excluded")
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

    def candidate_objects(self, candidates: Sequence[MemoryObject], snapshot: MapSnapshot,
                          unconfirmed: Sequence[bool] | None = None,
                          details: Sequence[str] | None = None) -> tuple[Object3D, ...]:
        """Memory instances as objects on the snapshot's points, support surface stripped (what an answer
        from memory returns). An unconfirmed one keeps its (unlabelled) label, is flagged, and its confidence
        is scaled by `unconfirmed_factor`."""
        cfg = self.config
        voxel = self.memory.config.voxel_size_m
        index = self._snapshot_index(snapshot)
        points = snapshot.points_world_m
        flags = list(unconfirmed) if unconfirmed is not None else [c.unlabelled for c in candidates]
        texts = list(details) if details is not None else [""] * len(candidates)
        out = []
        for obj, flag, detail in zip(candidates, flags, texts):
            # One voxel grown: the memory keeps the voxels its masks agreed on, which undershoot an object's
            # rim and thin parts (measured on the real kitchen: precision 0.9, recall 0.4 without it).
            # Not into the voxels of an object held apart from it (the next book on the shelf, 2-5 cm thick).
            idx = index.indices(obj.points_world_m, cfg.grow_voxels, self._apart_points(obj))
            if idx.shape[0] < cfg.min_object_points:
                continue
            # min_points=1, then the size check: an instance that is only floor (mask spill the memory
            # could not strip) has nothing left and is no answer.
            idx = strip_support_surface(points, idx, 2 * voxel, cfg.support_ring_m, cfg.support_min_frac, 1)
            if idx.shape[0] < cfg.min_object_points:
                continue
            confidence = float(obj.confidence) * (cfg.unconfirmed_factor if flag else 1.0)
            out.append(Object3D(point_indices=idx, point_confidence=np.full(idx.shape[0], confidence, np.float32),
                                box=oriented_box(points[idx]), confidence=confidence,
                                supporting_views=obj.detections, visible_views=obj.views_seen,
                                label=obj.label or UNLABELLED, unconfirmed=bool(flag), detail=detail))
        return tuple(out)
