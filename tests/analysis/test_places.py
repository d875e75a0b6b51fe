"""The places table: per-place sums against a plain loop, and contributions that add up
to the city's R_p."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from citylens.analysis.places import key_objects, place_list, place_pixels, place_table
from citylens.analysis.ratios import r_p


def _study(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids, cities, places, lat, lon = [], [], [], [], []
    for city, (la, lo) in (("a", (51.5, -0.1)), ("b", (42.98, -81.25))):
        for p in range(6):
            for v in range(rng.integers(1, 4)):
                ids.append(f"{city}{p}-{v}")
                cities.append(city)
                places.append(f"p{p}")
                lat.append(la + 0.001 * p)
                lon.append(lo + 0.001 * p)
    lat[1] = np.nan  # one view without coordinates: its place's centre is the others'
    return ids, cities, places, np.array(lat), np.array(lon)


def test_places_pixels_and_contributions_against_a_plain_loop():
    ids, cities, places, lat, lon = _study()
    pl = place_list(ids, cities, places, lat, lon)
    assert len(pl) == 12 and list(pl.city[:6]) == ["a"] * 6
    assert pl.lat[0] == pytest.approx(51.5)
    rng = np.random.default_rng(1)
    n_cls = 5
    rows = []
    for model in ("m1", "m2"):
        for i in ids:
            n = rng.integers(0, 50, n_cls)
            m = (n * rng.uniform(0, 1, n_cls)).astype(np.int64)
            for theta in (0.5, 0.7):
                rows.append(
                    {
                        "image_id": i,
                        "model": model,
                        "theta": theta,
                        "class_pixels_in_mask": m.tolist(),
                        "class_pixels": n.tolist(),
                    }
                )
    t = pa.Table.from_pylist(rows)
    half = t.num_rows // 2
    parts = [place_pixels(t.slice(0, half), pl, 0.5), place_pixels(t.slice(half), pl, 0.5)]
    pixels = {}
    for part in parts:
        for model, (r, sums, images) in part.items():
            acc = pixels.setdefault(
                model, (np.zeros((12, n_cls), np.int64), np.zeros(12, np.int64))
            )
            acc[0][r] += sums
            acc[1][r] += images
    df = t.to_pandas()
    df = df[df.theta == 0.5]
    city_of = dict(zip(ids, cities))
    place_of = dict(zip(ids, places))
    city_n = {}
    for model in ("m1", "m2"):
        for k in range(12):
            sel = df[
                (df.model == model)
                & df.image_id.map(
                    lambda i, k=k: (city_of[i], place_of[i]) == (pl.city[k], pl.place[k])
                )
            ]
            want = np.sum(np.stack(sel.class_pixels_in_mask.to_list()), 0)
            np.testing.assert_array_equal(pixels[model][0][k], want)
            assert pixels[model][1][k] == len(sel)
        for c in ("a", "b"):
            sel = df[(df.model == model) & df.image_id.map(city_of).eq(c)]
            city_n[(model, c)] = np.sum(np.stack(sel.class_pixels.to_list()), 0)
    correct = {m: (np.arange(12) % 2, pixels[m][1]) for m in pixels}
    keys = {"a": (2, "car", True), "b": (3, "tree", False)}
    names = ("other", "wall", "car", "tree", "sky")
    table = place_table(pl, pixels, correct, city_n, keys, names).to_pandas()
    assert len(table) == 24
    for (model, city), g in table.groupby(["model", "city"]):
        k = keys[city][0]
        m_city = pixels[model][0][pl.city == city].sum(0)
        # the places' contributions add up to the city's R_p of its key object
        assert g.key_r_p.sum() == pytest.approx(r_p(m_city, city_n[(model, city)])[k], rel=1e-9)
    r = table.iloc[0]
    m0 = pixels[r.model][0][0]
    assert r.top_class == int(np.argmax(m0[1:]) + 1) and r.top_name == names[r.top_class]
    assert r.top_share == pytest.approx(m0[r.top_class] / m0[1:].sum())
    assert r.correct == 0 and table.iloc[1].correct == 1


def test_the_key_object_is_the_passing_one_with_the_largest_lead():
    distinctive = pd.DataFrame(
        {
            "city": ["a", "a", "a"],
            "theta": [0.5, 0.5, 0.7],
            "class": [2, 3, 4],
            "name": ["car", "tree", "sky"],
            "passes": [False, True, True],
            "diff": [0.5, 0.1, 0.9],
        }
    )
    means = pd.DataFrame(
        {
            "scope": ["models", "models", "models"],
            "city": ["b", "b", "b"],
            "theta": [0.5] * 3,
            "class": [0, 2, 3],
            "name": ["other", "car", "tree"],
            "r_p": [0.9, 0.3, 0.4],
            "selected": [True, True, True],
        }
    )
    assert key_objects(distinctive, means, 0.5) == {"a": (3, "tree", True), "b": (3, "tree", False)}
