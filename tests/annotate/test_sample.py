"""The annotation sample: stratified evenly, seeded, independent of input order."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from citylens.annotate.sample import allocate, stratified_sample


def test_allocate_by_hand():
    assert allocate([10, 10, 10], 9).tolist() == [3, 3, 3]
    # a small stratum gives all it has; its share goes to the others
    assert allocate([1, 10, 10], 9).tolist() == [1, 4, 4]
    # remainders go to the first strata in order that have room
    assert allocate([10, 10, 10], 10, order=[2, 0, 1]).tolist() == [3, 3, 4]
    assert allocate([2, 0, 5], 100).tolist() == [2, 0, 5]  # capped at what there is
    assert allocate([], 5).tolist() == []
    with pytest.raises(ValueError):
        allocate([3], -1)


def _candidates():
    strata, ids = [], []
    for model, size_of_city in (("m1", {"a": 50, "b": 8}), ("m2", {"a": 40, "b": 30})):
        for city, k in size_of_city.items():
            for theta in (0.5, 0.6):
                for i in range(k):
                    strata.append((model, city, theta))
                    ids.append(f"{city}{i}|{model}|{theta}")
    return strata, ids


def test_every_stratum_gets_an_equal_share_unless_it_is_smaller():
    strata, ids = _candidates()
    idx = stratified_sample(strata, ids, 64, seed=0)
    assert len(idx) == 64 == len(set(idx.tolist()))
    got = Counter(strata[i] for i in idx)
    assert len(got) == 8
    # 64 / 8 strata = 8 each; the smallest strata have exactly 8
    assert set(got.values()) == {8}
    idx = stratified_sample(strata, ids, 100, seed=0)
    got = Counter(strata[i] for i in idx)
    small = [s for s in got if s[:2] == ("m1", "b")]
    assert all(got[s] == 8 for s in small)  # all they have
    assert sorted(got[s] for s in got if s not in small) == [14] * 6  # (100 - 16) / 6


def test_seeded_and_independent_of_input_order():
    strata, ids = _candidates()
    a = [ids[i] for i in stratified_sample(strata, ids, 40, seed=7)]
    assert a == [ids[i] for i in stratified_sample(strata, ids, 40, seed=7)]
    perm = np.random.default_rng(0).permutation(len(ids))
    s2, i2 = [strata[i] for i in perm], [ids[i] for i in perm]
    assert a == [i2[i] for i in stratified_sample(s2, i2, 40, seed=7)]
    assert a != [ids[i] for i in stratified_sample(strata, ids, 40, seed=8)]


def test_the_order_mixes_strata():
    strata, ids = _candidates()
    order = [strata[i] for i in stratified_sample(strata, ids, 64, seed=1)]
    runs = sum(1 for x, y in zip(order, order[1:]) if x == y)
    assert runs < 20  # 8 blocks of 8 in a row would give 56


def test_fewer_candidates_than_asked_gives_them_all():
    idx = stratified_sample(["s", "s", "t"], ["x", "y", "z"], 10, seed=0)
    assert sorted(idx.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="unique"):
        stratified_sample(["s", "s"], ["x", "x"], 1)
