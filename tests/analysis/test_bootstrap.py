"""Place-clustered bootstrap: against scipy's bootstrap where they must agree, and where
clustering must make a difference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from citylens.analysis.bootstrap import (
    expanded_tail,
    percentile_interval,
    place_index,
    place_sums,
    place_weights,
    ratio_samples,
    row_weights,
    two_sided_p,
)


def _index(places_per_city: dict[str, int], views: int = 1):
    cities, places = [], []
    for c, n in places_per_city.items():
        for p in range(n):
            cities += [c] * views
            places += [f"p{p}"] * views
    return place_index(cities, places)


def test_places_are_resampled_within_their_city_and_a_city_keeps_its_count():
    idx = _index({"a": 5, "b": 3})
    assert idx.n_places == 8 and idx.cities == ["a", "b"]
    w = place_weights(idx, 200, seed=1)
    assert w.shape == (200, 8) and w.dtype == np.uint8
    a = idx.city_of_place == "a"
    assert (w[:, a].sum(1) == 5).all() and (w[:, ~a].sum(1) == 3).all()
    assert np.array_equal(w, place_weights(idx, 200, seed=1))
    assert not np.array_equal(w, place_weights(idx, 200, seed=2))
    # the same place name in two cities is two places
    assert len(set(idx.of_row.tolist())) == 8


def test_with_one_view_per_place_it_agrees_with_scipys_percentile_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, 300)
    idx = place_index(["c"] * 300, [str(i) for i in range(300)])
    w = place_weights(idx, 4000, seed=3)
    samples = ratio_samples(w, place_sums(idx, x), place_sums(idx, np.ones(300)))
    low, high = percentile_interval(samples, 0.95)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=4000, confidence_level=0.95, method="percentile", rng=4
    ).confidence_interval
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.08 * width and abs(high - ref.high) < 0.08 * width
    assert low < x.mean() < high


def test_views_of_one_place_count_as_one_observation():
    # every place's 4 views are identical: the clustered bootstrap of the mean is exactly
    # that of the place means, and wider than an image-level bootstrap pretends
    rng = np.random.default_rng(5)
    per_place = rng.normal(0, 1, 60)
    views = 4
    x = np.repeat(per_place, views)
    rows = _index({"c": 60}, views=views)
    places = _index({"c": 60}, views=1)
    w = place_weights(rows, 2000, seed=7)
    assert np.array_equal(w, place_weights(places, 2000, seed=7))
    clustered = ratio_samples(w, place_sums(rows, x), place_sums(rows, np.ones(len(x))))
    by_place = ratio_samples(w, place_sums(places, per_place), np.ones(60))
    np.testing.assert_allclose(clustered, by_place)
    naive = stats.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", rng=8)
    lo, hi = percentile_interval(clustered)
    naive_width = naive.confidence_interval.high - naive.confidence_interval.low
    assert (hi - lo) > 1.6 * naive_width  # ~ sqrt(4) = 2 wider


def test_ratio_samples_broadcast_and_leave_empty_resamples_undefined():
    w = np.array([[2, 0], [1, 1], [0, 2]])
    num = np.array([[1.0, 10.0], [3.0, 30.0]])  # (P=2, 2 statistics)
    den = np.array([[1.0], [0.0]])  # the second place has no images
    got = ratio_samples(w, num, den)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got[0], [1.0, 10.0])
    np.testing.assert_allclose(got[1], [4.0, 40.0])
    assert np.isnan(got[2]).all()
    low, high = percentile_interval(got, 0.5)
    assert np.all(low <= high)


def test_two_sided_p_of_a_difference():
    rng = np.random.default_rng(0)
    assert two_sided_p(np.full(999, 0.3)) == pytest.approx(2 / 1000)
    assert two_sided_p(rng.normal(0, 1, 5000)) > 0.8
    shifted = rng.normal(2.0, 1.0, 20000)  # 2 sd from 0: p ≈ 2 · Φ(-2) ≈ 0.0455
    assert two_sided_p(shifted) == pytest.approx(2 * stats.norm.cdf(-2.0), abs=0.01)
    with pytest.raises(ValueError):
        percentile_interval(shifted, 1.0)


def test_row_weights_make_a_resampled_sum_one_product_and_cities_have_their_own_stream():
    # hand-computed: 3 places of city a with 2 views each, values 1..6
    idx = place_index(["a"] * 6, ["p0", "p0", "p1", "p1", "p2", "p2"])
    x = np.arange(1.0, 7.0)
    w = np.array([[2, 0, 1], [0, 3, 0]], np.uint8)
    got = row_weights(w, idx.of_row) @ x
    # resample 1: p0 twice (1+2)·2, p2 once (5+6) → 17; resample 2: p1 three times → 21
    assert got.tolist() == [17.0, 21.0]
    np.testing.assert_allclose(got, w @ place_sums(idx, x))
    # a city's weights do not depend on which other cities the study has
    both = _index({"a": 4, "b": 6})
    alone = _index({"a": 4})
    wa = place_weights(both, 50, seed=7)[:, both.city_of_place == "a"]
    assert np.array_equal(wa, place_weights(alone, 50, seed=7))


def test_expanded_intervals_and_p_values_follow_students_t_for_few_places():
    # the tail cut off each side: Φ(−sqrt(n/(n−1))·t_{n−1, 0.975}) (Hesterberg 2015)
    for n in (3, 12, 40):
        want = stats.norm.cdf(-np.sqrt(n / (n - 1)) * stats.t.ppf(0.975, n - 1))
        assert expanded_tail(0.05, n) == pytest.approx(want)
    assert expanded_tail(0.05, 10**6) == pytest.approx(0.025, abs=1e-5)
    assert np.isnan(expanded_tail(0.05, 1))
    rng = np.random.default_rng(8)
    samples = rng.normal(0.3, 0.1, (2000, 2))
    plain = percentile_interval(samples)
    wide = percentile_interval(samples, 0.95, np.array([5, 10**6]))
    assert wide[0][0] < plain[0][0] and wide[1][0] > plain[1][0]  # few places: wider
    assert wide[0][1] == pytest.approx(plain[0][1], abs=2e-3)  # many: the same
    # the p-value: a t-test on the bootstrap's standard error, expanded alike
    se = samples[:, 0].std(ddof=1) * np.sqrt(12 / 11)
    want = 2 * stats.t.sf(0.3 / se, 11)
    assert two_sided_p(samples[:, 0], 12, 0.3) == pytest.approx(want)
    sure = rng.normal(0.3, 0.03, 2000)  # every resample above 0
    assert two_sided_p(sure, 12, 0.3) < 1e-6 < 2 / 2001 == two_sided_p(sure)  # finer than 1/B
    assert np.isnan(two_sided_p(samples[:, 0], 1, 0.3))


def test_weighted_place_sums_equal_row_weights_times_values():
    from citylens.analysis.bootstrap import row_weights, weighted_place_sums

    rng = np.random.default_rng(5)
    weights = rng.integers(0, 4, size=(7, 5)).astype(np.uint8)
    of_row = rng.integers(0, 5, size=23)
    values = rng.integers(0, 100, size=(23, 3))
    want = row_weights(weights, of_row) @ values
    np.testing.assert_array_equal(weighted_place_sums(weights, of_row, values), want)
    np.testing.assert_allclose(
        weighted_place_sums(weights, of_row, values[:, 0] * 0.1), want[:, 0] * 0.1, rtol=1e-12
    )
    assert weighted_place_sums(weights, of_row[:0], values[:0]).shape == (7, 3)
