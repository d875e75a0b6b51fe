"""Cohen's κ between annotators against scikit-learn's, and its place-bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from citylens.analysis.annotations import Annotation
from citylens.analysis.annotators import annotator_table, cohen_kappa


def test_kappa_equals_scikit_learns():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(-1, 5, 60)
        b = np.where(rng.random(60) < 0.6, a, rng.integers(-1, 5, 60))
        assert float(cohen_kappa(a, b)) == pytest.approx(cohen_kappa_score(a, b))


def test_weighted_kappa_equals_scikit_learns_sample_weight():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, 40)
    b = np.where(rng.random(40) < 0.5, a, rng.integers(0, 4, 40))
    w = rng.integers(0, 4, size=(5, 40)).astype(float)
    got = cohen_kappa(a, b, w)
    want = [cohen_kappa_score(a, b, sample_weight=row) for row in w]
    np.testing.assert_allclose(got, want)


def test_kappa_by_hand_and_undefined_cases():
    # 2x2: agree on 3 of 4; A says x 2/4, B says x 3/4: p_e = .5*.75 + .5*.25 = .5
    assert float(cohen_kappa(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))) == pytest.approx(
        (0.75 - 0.5) / 0.5
    )
    assert np.isnan(cohen_kappa(np.array([2, 2]), np.array([2, 2])))  # p_e = 1


def _ann(who, image, labels, model="m", theta=0.6):
    return Annotation(image=image, labels=labels, model=model, theta=theta, annotator=who)


def test_the_pair_table_by_hand():
    place_of = {f"i{k}": ("c1" if k < 4 else "c2", f"p{k // 2}") for k in range(8)}
    anns = [
        _ann("ana", "i0", (2,)),
        _ann("ana", "i1", (2, 3)),
        _ann("ana", "i2", ()),
        _ann("ana", "i3", (5,)),
        _ann("ana", "i4", (7,)),
        _ann("bo", "i0", (2,)),
        _ann("bo", "i1", (3, 2)),  # same set, another main label
        _ann("bo", "i2", ()),  # both "none / unclear": agreement
        _ann("bo", "i3", (6, 5)),
        _ann("bo", "i5", (7,)),  # only bo: not shared
        _ann("cy", "i9", (7,)),  # shares nothing with anyone: no row
    ]
    t = annotator_table(anns, place_of | {"i9": ("c2", "p9")}, n_boot=200, seed=3).to_pylist()
    assert len(t) == 1
    r = t[0]
    assert (r["annotator_a"], r["annotator_b"], r["n"], r["places"]) == ("ana", "bo", 4, 2)
    a, b = np.array([2, 2, -1, 5]), np.array([2, 3, -1, 6])
    assert r["observed"] == pytest.approx(0.5)
    assert r["kappa"] == pytest.approx(cohen_kappa_score(a, b))
    assert r["same_labels"] == pytest.approx(3 / 4)  # i0, i1 (as sets), i2
    assert r["any_label"] == pytest.approx(1.0)  # i3 shares 5
    assert r["ci_low"] <= r["kappa"] <= r["ci_high"] or np.isnan(r["ci_low"])


def test_the_interval_resamples_places_and_covers_the_kappa():
    rng = np.random.default_rng(5)
    place_of, anns = {}, []
    for p in range(40):
        truth = int(rng.integers(0, 4))
        for v in range(3):  # three views of each place, labelled alike
            iid = f"{p}-{v}"
            place_of[iid] = ("c", f"p{p}")
            anns.append(_ann("a", iid, (truth,)))
            other = truth if rng.random() < 0.7 else int(rng.integers(0, 4))
            anns.append(_ann("b", iid, (other,)))
    (r,) = annotator_table(anns, place_of, n_boot=500, seed=0).to_pylist()
    assert r["places"] == 40 and r["n"] == 120
    assert r["ci_low"] < r["kappa"] < r["ci_high"]
    assert 0.05 < r["ci_high"] - r["ci_low"] < 0.6
    (again,) = annotator_table(anns, place_of, n_boot=500, seed=0).to_pylist()
    assert again == r  # seeded
    (plain,) = annotator_table(anns, place_of, n_boot=0).to_pylist()
    assert np.isnan(plain["ci_low"]) and plain["kappa"] == r["kappa"]
