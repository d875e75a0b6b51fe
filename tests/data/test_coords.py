"""Coordinates: parsing the London names' conventions, checking ranges, distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from citylens.data.coords import (
    CoordinateError,
    coordinates,
    local_metres,
    nearest_train_m,
    parse_degrees,
    place_centres,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("51p36285", 51.36285),
        ("-0p45047", -0.45047),
        ("m0p45047", -0.45047),
        ("42.96", 42.96),
        ("-81.27474", -81.27474),
        ("+3", 3.0),
        ("0p5", 0.5),
    ],
)
def test_degrees_in_the_forms_file_names_use(text, value):
    assert parse_degrees(text) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("text", ["", "abc", "51p3p2", "1e5", "nan", "inf", "--3", "m-3"])
def test_what_is_not_a_number_of_degrees_is_refused(text):
    with pytest.raises(CoordinateError):
        parse_degrees(text)


def test_coordinates_are_checked_for_range_and_completeness():
    assert coordinates("51p5", "m0p1") == (51.5, -0.1)
    assert coordinates(None, None) is None and coordinates("", " ") is None
    for lat, lon, why in [
        ("91", "0", "latitude '91' is out of range"),
        ("0", "180p5", "longitude '180p5' is out of range"),
        ("51p5", "", "one of them is missing"),
        ("x", "1", "not a number"),
    ]:
        with pytest.raises(CoordinateError, match=why):
            coordinates(lat, lon)
    assert coordinates(-90.0, 180.0) == (-90.0, 180.0)


def _haversine(a, b, c, d):
    r = 6_371_008.8
    p1, p2 = math.radians(a), math.radians(c)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(d - b) / 2) ** 2
    )
    return 2 * r * math.asin(math.sqrt(h))


def test_nearest_train_distance_against_a_plain_loop():
    rng = np.random.default_rng(0)
    n = 60
    lat = 51.5 + rng.uniform(-0.02, 0.02, n)
    lon = -0.1 + rng.uniform(-0.03, 0.03, n)
    city = np.where(np.arange(n) < 40, "uk", "on")
    split = rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2])
    lat[3] = np.nan  # unlocated: neither a query nor a neighbour
    got = nearest_train_m(lat, lon, split, city)
    want = []
    for i in range(n):
        if split[i] != "test" or np.isnan(lat[i]):
            continue
        ds = [
            _haversine(lat[i], lon[i], lat[j], lon[j])
            for j in range(n)
            if split[j] == "train" and city[j] == city[i] and not np.isnan(lat[j])
        ]
        want.append(min(ds) if ds else math.inf)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_centres_and_local_metres():
    c = place_centres(
        np.array([10.0, 20.0, 0.0, 0.0]),
        np.array([179.0, 179.0, 179.5, -179.5]),
        np.array([0, 0, 1, 1]),
        3,
    )
    assert c[0, 0] == pytest.approx(15.0, abs=0.1)
    assert abs(c[1, 1]) == pytest.approx(180.0)  # across the antimeridian, not 0
    assert np.isnan(c[2]).all()
    x, y = local_metres(
        np.array([51.5, 51.5, 51.5 + np.degrees(1000 / 6_371_008.8)]),
        np.array(
            [-0.1, -0.1 + np.degrees(1000 / (6_371_008.8 * math.cos(math.radians(51.5)))), -0.1]
        ),
    )
    assert x[1] - x[0] == pytest.approx(1000.0, rel=2e-3)
    assert y[2] - y[0] == pytest.approx(1000.0, rel=1e-6)
