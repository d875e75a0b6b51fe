"""The split grouped by place: from scratch as before, and kept as a study grows."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from citylens.data.splits import KnownSplits, assign_splits
from citylens.tables import SPLITS


def _reference(cities, places, ratios=(0.6, 0.2, 0.2), seed=0):
    """The split as citylens drew it before known splits existed (a plain loop)."""
    r = np.asarray(ratios) / sum(ratios)
    out = {}
    for city in sorted(set(cities)):
        groups = {}
        for i, (c, p) in enumerate(zip(cities, places)):
            if c == city:
                groups.setdefault(p, []).append(i)

        def key(p, city=city):
            return hashlib.blake2b(f"{seed}\0{city}\0{p}".encode(), digest_size=8).digest()

        count, target = np.zeros(3), r * sum(len(v) for v in groups.values())
        for rank, p in enumerate(sorted(groups, key=key)):
            k = rank if rank < 3 else int(np.argmax((target - count) / target))
            count[k] += len(groups[p])
            out.update({i: SPLITS[k] for i in groups[p]})
    return [out[i] for i in range(len(cities))]


def _corpus(n_places: int, seed: int, city: str = "c", first: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, n_places)
    places = [f"p{first + j}" for j, k in enumerate(sizes) for _ in range(k)]
    ids = [f"{p}-{i}" for i, p in enumerate(places)]
    return [city] * len(places), places, ids


def _known(cities, places, ids, split) -> KnownSplits:
    table = pa.table({"image_id": ids, "city": cities, "place": places, "split": list(split)})
    return KnownSplits.of_manifest(table)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_from_scratch_the_split_is_what_it_always_was(seed):
    cities, places, _ = _corpus(40, seed)
    cities, places = cities + ["d"] * 9, places + [f"q{i // 3}" for i in range(9)]
    assert list(assign_splits(cities, places, seed=seed)) == _reference(cities, places, seed=seed)


def test_known_splits_of_the_same_images_change_nothing():
    cities, places, ids = _corpus(30, 1)
    split = assign_splits(cities, places, seed=5)
    again = assign_splits(
        cities, places, seed=5, image_ids=ids, known=_known(cities, places, ids, split)
    )
    assert (again == split).all()


def test_a_grown_city_keeps_every_known_place_and_deals_only_the_new_ones():
    cities, places, ids = _corpus(30, 2)
    before = assign_splits(cities, places, seed=0)
    more_c, more_p, more_i = _corpus(10, 9, first=1000)  # a tenth-or-so more, new places
    grown = (cities + more_c, places + more_p, ids + more_i)
    known = _known(cities, places, ids, before)
    after = assign_splits(grown[0], grown[1], seed=0, image_ids=grown[2], known=known)
    assert (after[: len(ids)] == before).all()  # no known image moved
    # ... which dealing from scratch would not promise: there, the new places reshuffle
    scratch = assign_splits(grown[0], grown[1], seed=0)
    assert (scratch[: len(ids)] != before).any()
    # the new places still go where the city is short, so the shares stay near 6:2:2
    share = np.array([(after == s).sum() for s in SPLITS]) / len(after)
    np.testing.assert_allclose(share, [0.6, 0.2, 0.2], atol=0.06)
    assert set(after[len(ids) :]) <= set(SPLITS)


def test_a_renamed_place_keeps_its_images_split_and_train_wins_a_disagreement():
    cities = ["c"] * 6
    places = ["a", "a", "b", "b", "x", "y"]
    ids = ["i0", "i1", "i2", "i3", "i4", "i5"]
    known = KnownSplits(places={}, images={"i0": "test", "i1": "train", "i2": "val", "i3": "val"})
    out = assign_splits(cities, places, seed=0, image_ids=ids, known=known)
    assert list(out[:4]) == ["train", "train", "val", "val"]  # place a: train, not test
    # the two new places are dealt around them: test is empty, so test gets one
    assert "test" in set(out[4:])


def test_known_splits_need_the_image_ids():
    with pytest.raises(ValueError, match="image ids"):
        assign_splits(["c"] * 3, ["a", "b", "x"], known=KnownSplits({}, {}))
