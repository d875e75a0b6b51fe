"""Agreement curves against hand-computed values (thesis Figs 11–12)."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.analysis.agreement import (
    agreement_curve,
    derive_annotations,
    pick_labels,
)

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


def _annotated(rows):
    """ANNOTATED rows from (annotator, image, city, label1, label2, top1, top2, ratio)."""
    import pyarrow as pa

    from citylens.tables import ANNOTATED

    cols = ["annotator", "image_id", "city", "label1", "label2", "top1", "top2", "ratio"]
    d = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    d |= {"model": ["m"] * len(rows), "theta": [0.6] * len(rows), "seconds": [None] * len(rows)}
    return pa.Table.from_pydict(d, schema=ANNOTATED)


def test_agreement_table_per_annotator_city_and_pooled_by_hand():
    from citylens.analysis.agreement import agreement_table

    annotated = _annotated(
        [
            # ann a: the four explanations of COUNTS/HUMAN, cities x, x, y, y
            ("a", "i1", "x", 1, -1, 1, 2, 0.9),
            ("a", "i2", "x", 3, 4, 2, 3, 0.8),
            ("a", "i3", "y", 4, -1, 4, -1, 1.0),
            ("a", "i4", "y", 1, -1, -1, -1, 0.0),  # the segmenter labelled nothing
            # ann b: i1 "none / unclear", i3 agrees
            ("b", "i1", "x", -1, -1, 1, 2, 0.9),
            ("b", "i3", "y", 4, -1, 4, -1, 1.0),
        ]
    )
    t = agreement_table(annotated, thresholds=(0.0, 1.0)).to_pandas()
    row = t.set_index(["annotator", "city", "threshold"])
    # annotator a over all cities = test_agreement_curve_by_hand's t=0 and t=1
    assert row.loc[("a", "all", 0.0)].strict == pytest.approx(1 / 3)
    assert row.loc[("a", "all", 0.0)].lenient == pytest.approx(1.0)
    assert row.loc[("a", "all", 1.0)].strict == pytest.approx(2 / 3)
    assert row.loc[("a", "all", 1.0)][["n", "empty", "unclear"]].tolist() == [3, 1, 0]
    # a, city x: i1 picks {1,2} at 0 (strict F, lenient T), {1} at 1 (T, T); i2 picks
    # {2,3} at 0 (F; T: 3 is annotated), {2} at 1 (F, F)
    assert row.loc[("a", "x", 0.0)][["strict", "lenient"]].tolist() == [0.0, 1.0]
    assert row.loc[("a", "x", 1.0)][["strict", "lenient"]].tolist() == [0.5, 0.5]
    # b: the unclear answer is counted, not scored
    assert row.loc[("b", "all", 1.0)][["n", "unclear", "strict"]].tolist() == [1, 1, 1.0]
    # pooled: a's 3 scored + b's 1; at 1: a 2 of 3 right, b 1 of 1
    assert row.loc[("all", "all", 1.0)][["n", "unclear", "empty"]].tolist() == [4, 1, 1]
    assert row.loc[("all", "all", 1.0)].strict == pytest.approx(3 / 4)
    # one annotator: no pooled rows
    only_a = agreement_table(annotated.slice(0, 4), thresholds=(0.5,)).to_pandas()
    assert set(only_a.annotator) == {"a"}
