"""Unique objects and gallery picks on hand-made tables."""

from __future__ import annotations

import pandas as pd

from citylens.report.selection import (
    architecture_styles,
    describe_unique,
    sample_per_city,
    unique_objects,
    urban_symbols,
)


def _objects():
    rows = []
    # two models; city A: skyscraper (both models), road (both); B: fence (both), road (both),
    # plant (one model only: below quorum 0.75)
    for model in ("m1", "m2"):
        rows += [
            ("A", model, "skyscraper", 0.5, True),
            ("A", model, "road", 0.3, True),
            ("B", model, "fence", 0.4 if model == "m1" else 0.2, True),
            ("B", model, "road", 0.2, True),
            ("B", model, "plant", 0.1, model == "m1"),
        ]
    df = pd.DataFrame(rows, columns=["city", "model", "name", "r_p", "selected"])
    df["theta"] = 0.6
    return df


def test_unique_objects_by_hand():
    assert unique_objects(_objects(), 0.6, quorum=0.75) == {"A": ["skyscraper"], "B": ["fence"]}
    # with quorum 0.5 one model suffices: plant joins B, ordered by mean R_p
    assert unique_objects(_objects(), 0.6, quorum=0.5)["B"] == ["fence", "plant"]
    lines = describe_unique({"A": ["skyscraper"], "B": []}, _objects(), 0.6)
    assert lines[0] == "Only A has skyscraper (R_p 0.50) among its discriminative objects."
    assert lines[1].startswith("B has no discriminative object")


def test_galleries_by_unique_object_share_and_by_top_class():
    names = ("other", "building", "skyscraper", "fence", "road")
    counts = pd.DataFrame(
        {
            "image_id": ["a1", "a2", "a3", "b1", "b2", "b3"],
            "city": ["A", "A", "A", "B", "B", "B"],
            # pixels per class 0..4 inside each explanation
            "class_pixels_in_mask": [
                [9, 5, 5, 0, 0],  # A: skyscraper 5/10 = 0.5 (other ignored)
                [0, 0, 1, 0, 9],  # A: 0.1 < min_share
                [0, 2, 8, 0, 0],  # A: 0.8
                [0, 1, 0, 3, 0],  # B: fence 0.75
                [0, 0, 4, 0, 0],  # B: skyscraper is not B's symbol
                [0, 0, 0, 0, 0],  # B: empty
            ],
        }
    )
    unique = {"A": ["skyscraper"], "B": ["fence"]}
    sym = urban_symbols(counts, unique, names, per_city=5)
    assert sym.image_id.tolist() == ["a3", "a1", "b1"]
    assert sym.share.tolist() == [0.8, 0.5, 0.75]
    assert urban_symbols(counts, unique, names, per_city=1).image_id.tolist() == ["a3", "b1"]
    tops = pd.DataFrame(
        {
            "image_id": ["a1", "a2", "a3", "b1", "b2", "b3"],
            "city": list("AAABBB"),
            "top_class": [2, 4, 1, 3, 2, 1],
        }
    )
    arch = architecture_styles(tops, names, per_city=5)
    assert sorted(arch.image_id) == ["a1", "a3", "b2", "b3"]


def test_sample_per_city_is_balanced_and_seeded():
    df = pd.DataFrame(
        {"image_id": [f"i{k:02d}" for k in range(30)], "city": ["A"] * 20 + ["B"] * 10}
    )
    s1, s2 = sample_per_city(df, 4, seed=1), sample_per_city(df, 4, seed=1)
    assert s1.city.value_counts().to_dict() == {"A": 4, "B": 4}
    assert s1.image_id.tolist() == s2.image_id.tolist()
    assert sample_per_city(df, 4, seed=2).image_id.tolist() != s1.image_id.tolist()


def test_architecture_styles_skips_images_without_a_class_map():
    names = ("other", "building")
    tops = pd.DataFrame(
        {"image_id": ["a", "b"], "city": ["A", "A"], "top_class": [1.0, float("nan")]}
    )
    assert architecture_styles(tops, names, per_city=5).image_id.tolist() == ["a"]
