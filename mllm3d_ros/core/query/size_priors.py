"""Plausible sizes of everyday objects: may an unlabelled object be of a class the instruction names?

An object no detector named (a class-agnostic instance of the memory) may answer "the mug on the desk" only
when it is at least consistent with a mug (naming by geometry). A `SizePrior` holds the plausible
extents of a class's sorted sides, largest first (orientation-free: a bottle lying down is still a bottle),
from common knowledge of the things themselves, NOT fitted to any scene of this project:
- mug: 7-10 cm across, 8-12 cm tall, a handle adds 2-4 cm; a coffee cup from an espresso cup (5-6 cm) to a
  take-away cup (18 cm); both, like a bottle, solids of revolution, never flat;
- bottle: 0.2-0.35 m tall for 0.33-2 l (a magnum 0.4 m), 5-12 cm across, at least 1.5 times as long as wide;
- laptop: 11-17 inch, 0.27-0.41 m x 0.19-0.29 m, 1.5-4 cm closed, its lid up to 0.29 m open;
- book: paperback 11 x 18 cm to a coffee-table book 0.35 m (an A4 magazine: ISO 216, 0.297 m), 0.5-8 cm
  thick, flat;
- box: a household box, from a tissue or shoe box (0.15-0.33 m) to a large moving box (0.6-0.7 m); larger is
  a crate or furniture;
- computer mouse 8-13 cm, camera 8-20 cm, monitor 17-32 inch (0.37-0.71 m wide) with its stand;
- footwear 22-31 cm long (EU sizes 35-48), a boot up to 0.5 m tall;
- chair: seat 0.40-0.48 m high and 0.38-0.6 m wide, 0.7-1.1 m to the top of the back; table and desk tops
  0.6-3 m long (furniture dimensions: Neufert, "Architects' Data", dining tables and office desks).
Classes without a prior (people, animals, vehicles: no unlabelled stand-in) keep the memory's rule without one.
`portable`: a thing that is put down (everything but the furniture): in a static map it stands on a support
surface (floor, table top, counter, shelf); a "box" floating at a chair's back height stands on nothing.

The rule (`consistent`): with the measured sorted extents e1 >= e2 >= e3 of the object's gravity-aligned box
and a tolerance t (one memory voxel: the voxel centres an extent is measured on are a voxel apart),
lo1 - t <= e1 <= hi1 + t, e2 <= hi2 + t, e3 <= hi3 + t: an object may be smaller than the class's smallest in
its two lesser sides (seen from one side, or part of it hidden), never larger, and its longest side must fit.
Shape bounds on the side ratios, with the shape words' thresholds (`core/query/shapes.py`): `never_flat` (e3 >
FLAT_RATIO x e2: a mug, a cup, a bottle), `flat` (e3 <= FLAT_RATIO x e2: a book), `elongated` (e1 >=
TALL_RATIO x e2: a bottle). `typicality` orders consistent objects: |log(e1 / the geometric middle of the
largest side's range)|, smaller is more typical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .shapes import FLAT_RATIO, TALL_RATIO


@dataclass(frozen=True)
class SizePrior:
    """Plausible sorted sides of a class, metres: largest (lo, hi), middle and smallest at most; shape bounds."""

    largest: tuple[float, float]
    middle_max: float
    smallest_max: float
    never_flat: bool = False
    flat: bool = False
    elongated: bool = False
    portable: bool = True
    spills: bool = False  # a detected instance's box may take in a neighbour (a chair pushed under a table)
    # The smallest side's allowed ranges when the class has distinct states (a laptop closed 1.5-4 cm thick or
    # open with its lid up, 0.18-0.29 m): () = any up to smallest_max.
    smallest_ranges: tuple[tuple[float, float], ...] = ()

    @property
    def typical_m(self) -> float:
        """The geometric middle of the largest side's range."""
        return math.sqrt(self.largest[0] * self.largest[1])


# Keys: lower-case class names (a backend's concept names: `open_set.Recognition.concepts`).
SIZE_PRIORS: dict[str, SizePrior] = {
    "mug": SizePrior((0.07, 0.16), 0.13, 0.13, never_flat=True),
    "coffee cup": SizePrior((0.05, 0.18), 0.15, 0.12, never_flat=True),
    "bottle": SizePrior((0.12, 0.45), 0.15, 0.15, never_flat=True, elongated=True),
    "laptop": SizePrior((0.26, 0.42), 0.30, 0.30, smallest_ranges=((0.0, 0.04), (0.18, 0.30))),
    "book": SizePrior((0.11, 0.40), 0.32, 0.08, flat=True),
    "box": SizePrior((0.15, 0.70), 0.60, 0.60),
    "computer mouse": SizePrior((0.08, 0.13), 0.08, 0.05),
    "camera": SizePrior((0.08, 0.20), 0.15, 0.12),
    "computer monitor": SizePrior((0.35, 0.80), 0.60, 0.30),
    "footwear": SizePrior((0.20, 0.33), 0.18, 0.14),
    "boot": SizePrior((0.22, 0.50), 0.35, 0.14),
    "high heels": SizePrior((0.20, 0.30), 0.15, 0.12),
    "chair": SizePrior((0.70, 1.10), 0.70, 0.70, portable=False, spills=True),
    "table": SizePrior((0.60, 3.00), 1.50, 1.10, portable=False),
    "desk": SizePrior((0.80, 2.20), 1.00, 0.80, portable=False),
}


def prior_of(concepts: Sequence[str]) -> list[SizePrior]:
    """The priors of the concepts that have one (case-insensitive)."""
    return [SIZE_PRIORS[c.lower()] for c in concepts if c.lower() in SIZE_PRIORS]


def sorted_extents(size_m: Sequence[float]) -> np.ndarray:
    """(3,) the box's sides, largest first."""
    return np.sort(np.asarray(size_m, dtype=np.float64).ravel()[:3])[::-1]


def consistent(prior: SizePrior, size_m: Sequence[float], tolerance_m: float, labelled: bool = False) -> bool:
    """Whether a gravity-aligned box of sides `size_m` may be an object of the prior's class (module rule).
    `labelled`: a detector named it, so it may be part of the object (a chair under a table, a mug seen only
    from above): the upper bounds hold (a part is never larger than the whole: a "box" 1.5 m long is no box,
    whatever the detector said) and its largest side is at least half the class's smallest (a part, not a
    crumb: a "chair" 0.3 m long is a piece of something else)."""
    e1, e2, e3 = sorted_extents(size_m)
    t = float(tolerance_m)
    # A detected chair takes in what its masks spill onto (the table it is pushed under): its box may be larger
    # than a chair (`spills`); a detected table's, desk's or portable thing's may not.
    upper = not (labelled and prior.spills)
    if upper and (e1 > prior.largest[1] + t or e2 > prior.middle_max + t or e3 > prior.smallest_max + t):
        return False
    if e1 < (0.5 if labelled else 1.0) * prior.largest[0] - t:
        return False
    if labelled:
        return True
    if prior.smallest_ranges and not any(lo - t <= e3 <= hi + t for lo, hi in prior.smallest_ranges):
        return False
    if prior.never_flat and e3 <= FLAT_RATIO * e2:
        return False
    if prior.flat and e3 > FLAT_RATIO * e2:
        return False
    if prior.elongated and e1 < TALL_RATIO * e2:
        return False
    return True


def typicality(prior: SizePrior, size_m: Sequence[float]) -> float:
    """|log(e1 / typical)|: 0 for an object whose largest side is the class's typical one."""
    return abs(math.log(max(float(sorted_extents(size_m)[0]), 1e-6) / prior.typical_m))


__all__ = ["SIZE_PRIORS", "SizePrior", "consistent", "prior_of", "sorted_extents", "typicality"]
