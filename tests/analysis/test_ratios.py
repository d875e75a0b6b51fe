import numpy as np
import pytest

from citylens.analysis.ratios import city_objects, r_p, sum_by_city, top_objects


def test_r_p_by_hand_with_an_absent_class():
    # Two images of city A, classes: 0 other, 1 road, 2 fence (never in A).
    m = np.array([[0, 5, 0], [0, 1, 0]])
    n = np.array([[10, 10, 0], [5, 10, 0]])
    got = r_p(m.sum(0), n.sum(0))
    assert got[0] == 0.0
    assert got[1] == pytest.approx(6 / 20)
    assert np.isnan(got[2])


def test_city_objects_selection_and_grouping():
    m = np.array([[0, 300, 10, 0], [0, 100, 30, 50], [50, 0, 200, 0]])
    n = np.array([[400, 400, 20, 10], [400, 200, 60, 100], [300, 0, 400, 0]])
    cities = np.array(["a", "a", "b"])
    sums = sum_by_city(m, n, cities)
    assert sums["a"][2] == 2 and sums["b"][2] == 1
    a = city_objects(*sums["a"], min_mean_pixels=100)
    np.testing.assert_allclose(a.r_p, [0 / 800, 400 / 600, 40 / 80, 50 / 110])
    np.testing.assert_allclose(a.mean_in_mask, [0, 200, 20, 25])
    assert a.selected.tolist() == [False, True, False, False]
    b = city_objects(*sums["b"], min_mean_pixels=100)
    assert np.isnan(b.r_p[1]) and np.isnan(b.r_p[3])  # classes absent from city b
    assert b.selected.tolist() == [False, False, True, False]  # 'other' never selected
    assert top_objects(a.mean_in_mask) == [1, 3, 2]
    assert top_objects(b.mean_in_mask, k=5) == [2]


def test_inconsistent_counts_are_refused():
    with pytest.raises(ValueError, match="exceed"):
        r_p(np.array([5]), np.array([4]))
