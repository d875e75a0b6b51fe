"""Changes between two studies, and their intervals, against hand computation."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from citylens.analysis.compare import (
    accuracy_change,
    change_interval,
    largest_changes,
    object_change,
)


def test_the_change_interval_combines_two_independent_intervals():
    z = NormalDist().inv_cdf(0.975)  # 1.95996...
    # A: 0.5 ± 0.1, B: 0.8 ± 0.2 (half-widths of 95 % intervals): se 0.1/z and 0.2/z
    change, low, high = change_interval([0.5], [0.4], [0.6], [0.8], [0.6], [1.0], 0.95)
    half = z * np.sqrt((0.1 / z) ** 2 + (0.2 / z) ** 2)  # = √0.05
    assert change[0] == pytest.approx(0.3)
    assert half == pytest.approx(np.sqrt(0.05))
    assert (low[0], high[0]) == pytest.approx((0.3 - half, 0.3 + half))
    # without intervals: NaN, never a verdict
    _, low, high = change_interval([0.5], [np.nan], [np.nan], [0.8], [0.6], [1.0])
    assert np.isnan(low[0]) and np.isnan(high[0])


def test_accuracy_is_compared_for_the_models_both_studies_have():
    a = pd.DataFrame(
        {
            "model": ["m-s0", "n-s0"],
            "acc": [0.80, 0.70],
            "ci_low": [0.75, 0.6],
            "ci_high": [0.85, 0.8],
        }
    )
    b = pd.DataFrame(
        {
            "model": ["m-s0", "k-s0"],
            "acc": [0.95, 0.5],
            "ci_low": [0.93, 0.4],
            "ci_high": [0.97, 0.6],
        }
    )
    got = accuracy_change(a, b)
    assert got.model.tolist() == ["m-s0"]
    r = got.iloc[0]
    assert r.change == pytest.approx(0.15) and r.verdict == "settled"  # ±0.054: excludes 0
    assert r.acc_a == 0.80 and r.acc_b == 0.95


def _means(rows):
    return pd.DataFrame(
        [
            {
                "scope": s,
                "city": c,
                "theta": t,
                "class": k,
                "name": n,
                "r_p": v,
                "ci_low": v - w,
                "ci_high": v + w,
            }
            for s, c, t, k, n, v, w in rows
        ]
    )


def test_objects_join_on_city_and_class_at_one_theta_and_the_largest_changes_lead():
    a = _means(
        [
            ("models", "x", 0.6, 3, "car", 0.40, 0.05),
            ("models", "x", 0.6, 5, "tree", 0.20, 0.05),
            ("models", "x", 0.6, 7, "sign", 0.30, 0.05),
            ("models", "x", 0.8, 3, "car", 0.90, 0.05),  # another θ
            ("resnet18", "x", 0.6, 3, "car", 0.00, 0.05),  # another scope
            ("models", "y", 0.6, 3, "car", 0.10, 0.01),
        ]
    )
    b = _means(
        [
            ("models", "x", 0.6, 3, "car", 0.42, 0.05),
            ("models", "x", 0.6, 5, "tree", 0.60, 0.05),
            ("models", "x", 0.6, 7, "sign", 0.10, 0.05),
            ("models", "y", 0.6, 3, "car", 0.12, 0.01),
            ("models", "y", 0.6, 9, "wall", 0.50, 0.01),  # only in B: not compared
        ]
    )
    got = object_change(a, b, 0.6)
    assert list(zip(got.city, got.name)) == [
        ("x", "car"),
        ("x", "tree"),
        ("x", "sign"),
        ("y", "car"),
    ]
    assert got.change.tolist() == pytest.approx([0.02, 0.40, -0.20, 0.02])
    # y's ±0.014 excludes 0.02
    assert got.verdict.tolist() == ["within noise", "settled", "settled", "settled"]
    top = largest_changes(got, k=2)
    assert list(zip(top.city, top.name)) == [("x", "tree"), ("x", "sign"), ("y", "car")]


def test_studies_with_models_of_their_own_add_the_spread_between_models_or_do_not_judge():
    acc = pd.DataFrame({"model": ["m-s0"], "acc": [0.8], "ci_low": [0.75], "ci_high": [0.85]})
    better = acc.assign(acc=0.95, ci_low=0.93, ci_high=0.97)
    assert accuracy_change(acc, better, same_models=False).verdict.tolist() == ["not judged"]
    a = _means([("models", "x", 0.6, 3, "car", 0.40, 0.01)]).assign(sd=0.1, models=4)
    b = _means([("models", "x", 0.6, 3, "car", 0.50, 0.01)]).assign(sd=0.1, models=4)
    same = object_change(a, b, 0.6, same_models=True).iloc[0]
    own = object_change(a, b, 0.6, same_models=False).iloc[0]
    assert same.verdict == "settled"  # ±0.014 around +0.10
    z = NormalDist().inv_cdf(0.975)
    half = z * np.sqrt(2 * (0.01 / z) ** 2 + 2 * 0.1**2 / 4)  # + sd²/models per study
    assert own.change_high - own.change == pytest.approx(half)
    assert own.verdict == "settled" if own.change_low > 0 else own.verdict == "within noise"
    one = object_change(a.assign(models=1, sd=np.nan), b, 0.6, same_models=False).iloc[0]
    assert one.verdict == "not judged"  # one model: no spread to add
    _, low, _ = change_interval([0.5], [np.nan], [np.nan], [0.8], [0.6], [1.0])
    assert np.isnan(low[0])
