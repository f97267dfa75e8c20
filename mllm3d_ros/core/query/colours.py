"""Named colours: the one rule that names a colour, used by the parser, the memory's queries and the captions.

Eleven names (Berlin & Kay's basic colour terms, "Basic Color Terms", 1969): black, white, grey, red, orange,
yellow, green, blue, purple, pink, brown. One RGB value (the fused map colour of a point, [0, 255]) is
named from its value V = max(R, G, B), chroma C = max - min and hue H (HSV, degrees):
- V < 0.22: black (dark pixels have noisy hue);
- C < 0.12 (achromatic; chroma, not HSV saturation, so that a dark grey with a small tint stays grey):
  white when V >= 0.65, else grey;
- else by hue: red [345, 15), orange [15, 45) when saturation S >= 0.5 and V >= 0.6, brown [15, 45)
  otherwise (wood, tan, beige: low saturation or dark), yellow [45, 70), green [70, 165), blue
  [165, 255), purple [255, 290), pink [290, 345).
An object is not one colour: its `ColourProfile` is the share of its points under each name, and the
object *is* every colour holding at least `MIN_COLOUR_SHARE` of them (a white mug with a blue pattern is
white and may be blue), named by the largest share first. Real frames: warm light tints white surfaces
(the kitchen's mugs: chroma ~0.03, white), the red cabinets are dark red (V ~0.4, C ~0.2: red) and the
wooden table is a light, unsaturated orange (S ~0.2: brown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

NAMED_COLOURS = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
# Words an instruction may use for a named colour.
COLOUR_ALIASES = {"gray": "grey", "silver": "grey", "beige": "brown", "tan": "brown", "cyan": "blue",
                  "navy": "blue", "violet": "purple", "magenta": "pink", "maroon": "red", "gold": "yellow",
                  "golden": "yellow", "cream": "white"}
COLOUR_WORDS = NAMED_COLOURS + tuple(COLOUR_ALIASES)
MIN_COLOUR_SHARE = 0.25

_BLACK_V = 0.22
_ACHROMATIC_C = 0.12
_WHITE_V = 0.65
# (upper hue bound in degrees, name) for chromatic colours; red wraps around 345.
_HUES = ((15.0, "red"), (45.0, "orange"), (70.0, "yellow"), (165.0, "green"), (255.0, "blue"), (290.0, "purple"),
         (345.0, "pink"), (360.0, "red"))


def canonical_colour(word: str) -> str | None:
    """The named colour a word means ("gray" -> "grey"), None when it names none."""
    word = word.lower()
    if word in NAMED_COLOURS:
        return word
    return COLOUR_ALIASES.get(word)


def colour_indices(rgb: np.ndarray) -> np.ndarray:
    """(N,) int index into NAMED_COLOURS of each (N, 3) RGB value in [0, 255] (the module's rule)."""
    c = np.clip(np.asarray(rgb, dtype=np.float32).reshape(-1, 3), 0.0, 255.0) / 255.0
    v = c.max(axis=1)
    lo = c.min(axis=1)
    chroma = v - lo
    sat = np.where(v > 0, chroma / np.maximum(v, 1e-6), 0.0)
    r, g, b = c[:, 0], c[:, 1], c[:, 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(v == r, ((g - b) / safe) % 6.0, np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) * 60.0
    names = np.array([NAMED_COLOURS.index(n) for _, n in _HUES])
    out = names[np.searchsorted(np.array([h for h, _ in _HUES]), hue, side="right").clip(0, len(_HUES) - 1)]
    orange = out == NAMED_COLOURS.index("orange")
    out = np.where(orange & ((sat < 0.5) | (v < 0.6)), NAMED_COLOURS.index("brown"), out)
    achromatic = chroma < _ACHROMATIC_C
    out = np.where(achromatic, np.where(v >= _WHITE_V, NAMED_COLOURS.index("white"), NAMED_COLOURS.index("grey")), out)
    return np.where(v < _BLACK_V, NAMED_COLOURS.index("black"), out).astype(np.int64)


def colour_name(rgb: Sequence[float]) -> str:
    """The named colour of one RGB value in [0, 255]."""
    return NAMED_COLOURS[int(colour_indices(np.asarray(rgb, dtype=np.float32))[0])]


@dataclass(frozen=True)
class ColourProfile:
    """Share of an object's points under each named colour, largest first (shares sum to 1; empty: no points)."""

    shares: tuple[tuple[str, float], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The colours the object is: every name holding at least MIN_COLOUR_SHARE, largest share first."""
        named = tuple(n for n, s in self.shares if s >= MIN_COLOUR_SHARE)
        if not named and self.shares:
            named = (self.shares[0][0],)
        return named

    @property
    def dominant(self) -> str:
        return self.shares[0][0] if self.shares else ""

    def share(self, name: str) -> float:
        return dict(self.shares).get(name, 0.0)

    def is_colour(self, name: str) -> bool:
        """Whether the object is `name` (a named colour or an alias)."""
        return (canonical_colour(name) or name) in self.names

    def phrase(self) -> str:
        """"white", "white and blue" (the names, at most two)."""
        return " and ".join(self.names[:2])


def colour_profile(colors_rgb: np.ndarray) -> ColourProfile:
    """The profile of (N, 3) RGB values in [0, 255] (an object's fused map colours)."""
    idx = colour_indices(colors_rgb)
    if idx.size == 0:
        return ColourProfile(())
    counts = np.bincount(idx, minlength=len(NAMED_COLOURS)) / idx.size
    order = np.argsort(-counts, kind="stable")
    return ColourProfile(tuple((NAMED_COLOURS[i], round(float(counts[i]), 4)) for i in order if counts[i] > 0))
