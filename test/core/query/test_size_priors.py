"""Size priors of everyday objects: may an object of this size be of a class (naming by geometry)."""

from __future__ import annotations

from mllm3d_ros.core.query.size_priors import SIZE_PRIORS, consistent, prior_of, sorted_extents, typicality


def test_size_priors_hold_both_ways():
    mug, box, chair = SIZE_PRIORS["mug"], SIZE_PRIORS["box"], SIZE_PRIORS["chair"]
    assert consistent(mug, (0.09, 0.12, 0.10), 0.03) and not consistent(mug, (0.5, 0.3, 0.3), 0.03)
    assert not consistent(mug, (0.16, 0.12, 0.02), 0.0)  # flat: a coaster, not a mug
    assert consistent(box, (0.42, 0.33, 0.09), 0.03) and not consistent(box, (1.5, 0.6, 0.9), 0.03)
    # A labelled instance may be part of its object (smaller), never larger, and not a crumb of it.
    assert consistent(chair, (0.5, 0.4, 0.6), 0.03, labelled=True) and not consistent(chair, (0.5, 0.4, 0.6), 0.03)
    assert not consistent(chair, (0.3, 0.2, 0.1), 0.03, labelled=True)
    assert typicality(box, (0.32, 0.2, 0.1)) < typicality(box, (0.16, 0.15, 0.06))
    # Consistency is orientation-free: a bottle lying down is a bottle.
    bottle = SIZE_PRIORS["bottle"]
    assert consistent(bottle, (0.08, 0.08, 0.3), 0.0) and consistent(bottle, (0.3, 0.08, 0.08), 0.0)
    assert not consistent(bottle, (0.3, 0.25, 0.08), 0.0)  # not elongated: a tray, not a bottle


def test_prior_lookup_is_by_concept_name_and_sides_are_sorted():
    assert prior_of(["Mug", "Coffee cup", "Person"]) == [SIZE_PRIORS["mug"], SIZE_PRIORS["coffee cup"]]
    assert list(sorted_extents((0.1, 0.3, 0.2))) == [0.3, 0.2, 0.1]
    assert SIZE_PRIORS["box"].portable and not SIZE_PRIORS["table"].portable


def test_a_laptop_is_closed_or_open_not_in_between():
    laptop = SIZE_PRIORS["laptop"]
    assert consistent(laptop, (0.34, 0.24, 0.02), 0.01) and consistent(laptop, (0.34, 0.25, 0.24), 0.01)
    assert not consistent(laptop, (0.42, 0.33, 0.09), 0.01)  # a 9 cm tall tray-sized box is neither
    assert not consistent(laptop, (0.40, 0.28, 0.09), 0.01)
    assert consistent(laptop, (0.40, 0.28, 0.09), 0.01, labelled=True)  # a detected laptop may be seen in part


def test_a_detected_chair_may_be_larger_than_its_class_a_table_or_a_box_not():
    chair, box, table = SIZE_PRIORS["chair"], SIZE_PRIORS["box"], SIZE_PRIORS["table"]
    assert not consistent(table, (2.5, 1.57, 1.14), 0.03, labelled=True)  # a counter run called "Table"
    assert consistent(chair, (1.54, 0.75, 0.56), 0.03, labelled=True)  # a chair with the table it is under
    assert not consistent(chair, (1.54, 0.75, 0.56), 0.03)
    assert not consistent(box, (1.54, 0.75, 0.56), 0.03, labelled=True)
