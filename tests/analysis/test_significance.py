"""Benjamini–Hochberg against scipy and by hand; a difference under shared resamples is
paired."""

from __future__ import annotations

import numpy as np
from scipy import stats

from citylens.analysis.bootstrap import (
    percentile_interval,
    place_index,
    place_sums,
    place_weights,
    ratio_samples,
    two_sided_p,
)
from citylens.analysis.significance import bh_q_values


def test_bh_q_values_equal_scipys_and_a_hand_computed_case():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # sorted 0.01, 0.03, 0.04, 0.20 → ·4/rank = 0.04, 0.06, 0.0533, 0.20 → running min
    # from the top: 0.04, 0.0533, 0.0533, 0.20
    np.testing.assert_allclose(bh_q_values(p), [0.04, 0.05333333, 0.05333333, 0.2])
    rng = np.random.default_rng(1)
    many = rng.uniform(0, 1, 200) ** 3
    np.testing.assert_allclose(bh_q_values(many), stats.false_discovery_control(many))
    with_nan = bh_q_values(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], stats.false_discovery_control([0.01, 0.02]))
    assert np.isnan(bh_q_values(np.array([np.nan]))).all()


def test_a_paired_difference_is_narrower_than_its_two_intervals_suggest():
    # two statistics that share most of their variation (the same images): the paired
    # difference is sure of a small gap that the two intervals, side by side, overlap on
    rng = np.random.default_rng(2)
    n = 80
    base = rng.normal(0, 1, n)
    a_x, b_x = base + 0.15 + rng.normal(0, 0.1, n), base + rng.normal(0, 0.1, n)
    idx = place_index(["c"] * n, [str(i) for i in range(n)])
    w = place_weights(idx, 2000, seed=5)
    ones = place_sums(idx, np.ones(n))
    sa = ratio_samples(w, place_sums(idx, a_x), ones)
    sb = ratio_samples(w, place_sums(idx, b_x), ones)
    la, hb = percentile_interval(sa)[0], percentile_interval(sb)[1]
    assert la < hb  # side by side they overlap
    low, high = percentile_interval(sa - sb)  # the same resamples: a paired difference
    assert low > 0 and two_sided_p(sa - sb) < 0.01
    # against scipy's paired bootstrap of the mean difference (percentile, one view
    # per place): the same interval within Monte Carlo error
    ref = stats.bootstrap(
        (a_x, b_x),
        lambda x, y: np.mean(x) - np.mean(y),
        paired=True,
        n_resamples=2000,
        confidence_level=0.95,
        method="percentile",
        rng=6,
    ).confidence_interval
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.1 * width and abs(high - ref.high) < 0.1 * width
