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


# --- the spatially blocked split --------------------------------------------------------

LONDON = (51.5, -0.12)


def _grid(n: int, spacing_m: float, views: int = 2, first: int = 0, city: str = "c"):
    """Places on an n × n grid ``spacing_m`` apart around central London, ``views`` each."""
    dlat = np.degrees(spacing_m / 6_371_008.8)
    dlon = dlat / np.cos(np.radians(LONDON[0]))
    cities, places, ids, lat, lon = [], [], [], [], []
    for a in range(n):
        for b in range(n):
            place = f"p{first + a * n + b}"
            for v in range(views):
                cities.append(city)
                places.append(place)
                ids.append(f"{place}-{v}")
                lat.append(LONDON[0] + a * dlat)
                lon.append(LONDON[1] + b * dlon)
    return cities, places, ids, np.asarray(lat), np.asarray(lon)


def _cell_reference(lat: float, lon: float, block_m: float) -> tuple[int, int]:
    """One point's cell by scalar math: bands of block_m metres of latitude, each cut into
    as many equal columns as fit block_m metres along its middle parallel."""
    import math

    r = 6_371_008.8
    band = math.floor(math.radians(lat) * r / block_m)
    middle = (band + 0.5) * block_m / r
    columns = max(1, math.floor(2 * math.pi * r * math.cos(middle) / block_m))
    return band, math.floor((lon + 180.0) / 360.0 * columns) % columns


def test_no_cell_straddles_splits_and_the_cells_are_block_m_on_the_ground():
    cities, places, ids, lat, lon = _grid(20, 60.0)
    split = assign_splits(cities, places, seed=0, lat=lat, lon=lon, block_m=250.0)
    by_cell = {}
    for s, a, b in zip(split, lat, lon):
        by_cell.setdefault(_cell_reference(a, b, 250.0), set()).add(s)
    assert len(by_cell) >= 9
    assert all(len(v) == 1 for v in by_cell.values())  # one split per cell
    share = np.array([(split == s).mean() for s in SPLITS])
    np.testing.assert_allclose(share, [0.6, 0.2, 0.2], atol=0.1)
    # a cell is 250 m north-south and between 250 and 251 m east-west here
    from citylens.data.coords import cell_of

    south = np.degrees(250.0 / 6_371_008.8)
    c = cell_of(np.array([51.5, 51.5 + south]), np.array([-0.12, -0.12]), 250.0)
    assert c[1, 0] - c[0, 0] == 1
    west = np.degrees(250.0 / (6_371_008.8 * np.cos(np.radians(51.5))))
    c = cell_of(np.array([51.5, 51.5]), np.array([-0.12, -0.12 + 1.004 * west]), 250.0)
    assert c[1, 1] - c[0, 1] == 1


def test_the_blocked_split_is_deterministic_and_independent_of_input_order():
    cities, places, ids, lat, lon = _grid(12, 80.0)
    a = assign_splits(cities, places, seed=3, lat=lat, lon=lon, block_m=300.0)
    perm = np.random.default_rng(0).permutation(len(places))
    b = assign_splits(
        np.asarray(cities)[perm],
        np.asarray(places)[perm],
        seed=3,
        lat=lat[perm],
        lon=lon[perm],
        block_m=300.0,
    )
    assert (b == a[perm]).all()
    other = assign_splits(cities, places, seed=4, lat=lat, lon=lon, block_m=300.0)
    assert (other != a).any()  # the seed matters


def _blocked_and_known(cities, places, ids, lat, lon, block_m: float = 300.0):
    """A blocked split from scratch, and the KnownSplits its manifest would give."""
    split = assign_splits(cities, places, seed=0, lat=lat, lon=lon, block_m=block_m)
    table = pa.table(
        {
            "image_id": ids,
            "city": cities,
            "place": places,
            "split": list(split),
            "lat": lat,
            "lon": lon,
        }
    )
    return split, KnownSplits.of_manifest(table, block_m=block_m)


def test_a_grown_blocked_city_keeps_its_cells_splits():
    cities, places, ids, lat, lon = _grid(12, 80.0)
    before, known = _blocked_and_known(cities, places, ids, lat, lon)
    # new places: half beside known ones (in known cells), half far away (new cells)
    nc, np_, ni, nlat, nlon = _grid(6, 80.0, first=1000)
    nlat = nlat + np.degrees(20.0 / 6_371_008.8)  # 20 m north of known places
    fc, fp, fi, flat, flon = _grid(6, 80.0, first=2000)
    flat = flat + 0.05  # ~5.5 km north: cells nobody has seen
    grown_lat = np.concatenate([lat, nlat, flat])
    grown_lon = np.concatenate([lon, nlon, flon])
    after = assign_splits(
        cities + nc + fc,
        places + np_ + fp,
        seed=0,
        image_ids=ids + ni + fi,
        known=known,
        lat=grown_lat,
        lon=grown_lon,
        block_m=300.0,
    )
    assert (after[: len(ids)] == before).all()
    cell_split = {_cell_reference(a, b, 300.0): s for s, a, b in zip(before, lat, lon)}
    for s, a, b in zip(after[len(ids) : len(ids) + len(ni)], nlat, nlon):
        if (cell := _cell_reference(a, b, 300.0)) in cell_split:
            assert s == cell_split[cell]
    far = after[len(ids) + len(ni) :]
    assert len(set(far)) >= 2  # new cells are dealt, not all put in one split
    by_cell = {}
    for s, a, b in zip(after, grown_lat, grown_lon):
        by_cell.setdefault(_cell_reference(a, b, 300.0), set()).add(s)
    assert all(len(v) == 1 for v in by_cell.values())


def test_the_blocked_split_takes_test_images_away_from_train_ones():
    from citylens.data.coords import nearest_train_m

    cities, places, ids, lat, lon = _grid(24, 40.0, views=1)
    by_place = assign_splits(cities, places, seed=0)
    blocked = assign_splits(cities, places, seed=0, lat=lat, lon=lon, block_m=200.0)
    d_place = nearest_train_m(lat, lon, by_place, np.asarray(cities))
    d_block = nearest_train_m(lat, lon, blocked, np.asarray(cities))
    # by place, almost every test spot has a train spot at the grid's 40 m
    assert np.mean(d_place <= 40.5) > 0.8
    # blocked, only spots at a cell's edge do
    assert np.mean(d_block <= 40.5) < 0.5 * np.mean(d_place <= 40.5)
    assert np.median(d_block) > 1.5 * np.median(d_place)


def test_places_without_coordinates_stay_units_of_their_own_and_too_few_cells_is_an_error():
    cities, places, ids, lat, lon = _grid(6, 80.0)
    lat[:8], lon[:8] = np.nan, np.nan  # places p0..p3 unknown
    split = assign_splits(cities, places, seed=0, lat=lat, lon=lon, block_m=300.0)
    assert set(split) == set(SPLITS)
    with pytest.raises(ValueError, match=r"cell\(s\) of split.block_m = 5000 m"):
        c, p, _, la, lo = _grid(4, 50.0)
        assign_splits(c, p, lat=la, lon=lo, block_m=5000.0)


def test_a_known_place_whose_centre_moves_keeps_its_cell():
    cities, places, ids, lat, lon = _grid(10, 80.0, views=1)
    before, known = _blocked_and_known(cities, places, ids, lat, lon)
    # every known place gets a new view 250 m north: its centre moves 125 m, over
    # borders for some; a new place is put right beside each moved centre
    step = np.degrees(250.0 / 6_371_008.8)
    more_lat = lat + step
    mid_lat = lat + step / 2
    grown = assign_splits(
        cities * 3,
        places + places + [f"n{i}" for i in range(len(places))],
        seed=0,
        image_ids=ids + [f"{i}-x" for i in ids] + [f"n{i}" for i in range(len(places))],
        known=known,
        lat=np.concatenate([lat, more_lat, mid_lat]),
        lon=np.concatenate([lon, lon, lon]),
        block_m=300.0,
    )
    n = len(ids)
    assert (grown[:n] == before).all() and (grown[n : 2 * n] == before).all()
    # each cell of the known layout still holds one split among the known places
    by_cell = {}
    for s, a, b in zip(grown[:n], lat, lon):
        by_cell.setdefault(_cell_reference(a, b, 300.0), set()).add(s)
    assert all(len(v) == 1 for v in by_cell.values())
