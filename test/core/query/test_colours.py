"""The one colour rule (core/query/colours.py): named colours of RGB values and the profile of an object's points."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.query.colours import NAMED_COLOURS, canonical_colour, colour_indices, colour_name, colour_profile


@pytest.mark.parametrize("rgb, name", [
    ((230, 230, 230), "white"), ((221, 219, 212), "white"),  # a kitchen mug under warm light
    ((128, 128, 128), "grey"), ((30, 30, 30), "black"), ((20, 5, 5), "black"),
    ((200, 30, 30), "red"), ((113, 62, 63), "red"), ((94, 36, 36), "red"),  # the kitchen's red cabinets
    ((194, 176, 158), "brown"), ((120, 80, 40), "brown"),  # the wooden table, dark wood
    ((255, 140, 0), "orange"), ((230, 220, 40), "yellow"), ((20, 200, 20), "green"), ((30, 60, 220), "blue"),
    ((104, 235, 241), "blue"), ((150, 40, 200), "purple"), ((250, 150, 200), "pink"),
])
def test_the_rule_names_colours_as_a_person_would(rgb, name):
    assert colour_name(rgb) == name


def test_aliases_and_vectorised_naming():
    assert canonical_colour("gray") == canonical_colour("silver") == "grey" and canonical_colour("plastic") is None
    idx = colour_indices(np.array([[200, 30, 30], [230, 230, 230]], np.uint8))
    assert [NAMED_COLOURS[i] for i in idx] == ["red", "white"]


def test_an_object_is_every_colour_with_a_quarter_of_its_points():
    # A white mug with a blue pattern on a third of it, and a few brown table points that spilled in.
    rgb = np.array([[225, 225, 225]] * 60 + [[30, 60, 220]] * 32 + [[194, 176, 158]] * 8, np.uint8)
    profile = colour_profile(rgb)
    assert profile.names == ("white", "blue") and profile.dominant == "white"
    assert profile.is_colour("white") and profile.is_colour("blue") and not profile.is_colour("brown")
    assert profile.phrase() == "white and blue" and abs(profile.share("brown") - 0.08) < 1e-6
    assert colour_profile(np.zeros((0, 3), np.uint8)).names == ()
