"""Agreement curves against hand-computed values (thesis Figs 11–12)."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.analysis.agreement import (
    agreement_curve,
    derive_annotations,
    parse_annotations,
    pick_labels,
)
from citylens.vocabulary import ade20k

# pixels per class inside four explanations; classes 0 (other) .. 4
COUNTS = np.array(
    [
        [0, 6, 3, 1, 0],  # top 1, runner-up 2, (6+3)/10 = 0.9
        [5, 0, 4, 4, 2],  # other ignored; tie 2/3 -> 2 first; (4+4)/10 = 0.8
        [0, 0, 0, 0, 7],  # one class only: no runner-up; ratio 1
        [9, 0, 0, 0, 0],  # nothing labelled: empty
    ]
)
HUMAN = np.array([[1, -1], [3, 4], [4, -1], [1, -1]])


def test_pick_labels_by_hand():
    p = pick_labels(COUNTS)
    np.testing.assert_array_equal(p.top1, [1, 2, 4, -1])
    np.testing.assert_array_equal(p.top2, [2, 3, -1, -1])
    np.testing.assert_allclose(p.ratio, [0.9, 0.8, 1.0, 0.0])


def test_agreement_curve_by_hand():
    curve = agreement_curve(pick_labels(COUNTS), HUMAN, thresholds=(0.0, 0.85, 1.0))
    # t=0:    picks {1,2} {2,3} {4}: strict F F T, lenient T T T
    # t=0.85: picks {1,2} {2}   {4}: strict F F T, lenient T F T
    # t=1:    picks {1}   {2}   {4}: strict T F T, lenient T F T
    np.testing.assert_allclose(curve["strict"], [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(curve["lenient"], [1.0, 2 / 3, 2 / 3])
    assert curve["n"] == 3 and curve["empty"] == 1


def test_strict_rises_and_lenient_falls_with_the_threshold():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(400, 12)) * (rng.random((400, 12)) < 0.4)
    human = derive_annotations(counts + rng.integers(0, 15, size=counts.shape), similar=0.6)
    curve = agreement_curve(pick_labels(counts), human)
    assert np.all(np.diff(curve["strict"]) >= 0) and np.all(np.diff(curve["lenient"]) <= 0)
    assert curve["strict"][-1] > curve["strict"][0] and curve["lenient"][0] > curve["lenient"][-1]
    # at threshold 1 only top-1 is picked: strict and lenient agree
    assert curve["strict"][-1] == pytest.approx(curve["lenient"][-1])


def test_derive_annotations_by_hand():
    np.testing.assert_array_equal(
        derive_annotations(COUNTS, similar=0.5), [[1, 2], [2, 3], [4, -1], [-1, -1]]
    )
    np.testing.assert_array_equal(derive_annotations(COUNTS, similar=0.6)[0], [1, -1])


def test_ground_truth_segmenter_agrees_with_derived_annotations_at_threshold_one():
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 100, size=(50, 8))
    curve = agreement_curve(pick_labels(counts), derive_annotations(counts))
    assert curve["strict"][-1] == 1.0 and curve["lenient"][0] == 1.0


def test_parse_annotations_names_and_indices():
    voc = ade20k()
    rows = parse_annotations("image,label1,label2\na.jpg,building,Sky\nb.jpg,44,\n", voc)
    assert rows[0].image == "a.jpg" and rows[0].labels == (2, 3)
    assert rows[1].labels == (44,)


@pytest.mark.parametrize(
    "text,match",
    [
        ("image,label1\na.jpg,castle\n", "line 2, label1: 'castle'"),
        ("image,label1\na.jpg,151\n", "line 2, label1: '151'"),
        ("img,label\na.jpg,sky\n", "needs columns image, label1"),
        ("image,label1\n,sky\n", "line 2: needs an image"),
    ],
)
def test_parse_annotations_names_the_bad_entry(text, match):
    with pytest.raises(ValueError, match=match):
        parse_annotations(text, ade20k(), "ann.csv")
