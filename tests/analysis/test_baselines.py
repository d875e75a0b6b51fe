"""Leakage baselines: a planted colour shortcut is found, file-name metadata is read, and
a corpus without a shortcut stays at chance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from citylens.analysis.baselines import (
    HIST_BINS,
    baseline_table,
    colour_features,
    name_tokens,
    token_matrix,
)


def test_colour_features_against_a_plain_loop():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    f = colour_features(img)
    assert f.shape == (3 + HIST_BINS**3,)
    np.testing.assert_allclose(f[:3], img.reshape(-1, 3).mean(0) / 255, rtol=1e-6)
    hist = np.zeros(HIST_BINS**3)
    for r, g, b in img.reshape(-1, 3):
        hist[(r // 64) * 16 + (g // 64) * 4 + b // 64] += 1
    np.testing.assert_allclose(f[3:], hist / 35, rtol=1e-6)


def test_london_names_give_season_year_and_sharpness_but_not_the_place_or_id():
    name = "/d/london_uk/-8P1hGlqt_SP_Uw-jKmU2A_51p36285_0p02573_201410_fall_sharp.jpg"
    toks = name_tokens(name, "51p36285_0p02573", "london_uk")
    assert toks == ["year 2014", "month 10", "fall", "sharp"]
    assert name_tokens("/x/p00012_03.png", "p00012", "towerville") == []


def _corpus(n_places: int, shortcut: bool, seed: int = 0):
    """Two cities of noise images; with ``shortcut`` city b's are tinted red."""
    rng = np.random.default_rng(seed)
    feats, cities, places, split, tokens = [], [], [], [], []
    for city in ("a", "b"):
        for p in range(n_places):
            s = ("train", "val", "test")[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
            for _ in range(2):
                img = rng.integers(0, 256, (16, 16, 3)).astype(np.int64)
                if shortcut and city == "b":
                    img[..., 0] = np.clip(img[..., 0] + 60, 0, 255)
                feats.append(colour_features(img.astype(np.uint8)))
                cities.append(city)
                places.append(f"{city}{p}")
                split.append(s)
                season = rng.choice(["summer", "winter"])
                tokens.append([str(season)])
    return np.stack(feats), tokens, cities, places, split


def test_a_planted_colour_shortcut_is_found_and_an_absent_one_is_not():
    t = baseline_table(*_corpus(60, shortcut=True), n_boot=200).to_pandas().set_index("baseline")
    assert t.loc["mean colour", "accuracy"] > 0.9
    assert t.loc["colour histogram", "accuracy"] > 0.9
    assert t.loc["mean colour", "ci_low"] > 0.8
    assert t.loc["file-name tokens", "accuracy"] < 0.7  # the seasons were drawn at random
    assert t.loc["majority city", "features"] == 0
    plain = baseline_table(*_corpus(60, shortcut=False), n_boot=200).to_pandas()
    plain = plain.set_index("baseline")
    acc = plain.loc["mean colour", "accuracy"]
    n = int(plain.loc["mean colour", "n_test"])
    # against chance: a binomial test does not reject 0.5 at the 1 % level
    assert stats.binomtest(round(acc * n), n, 0.5).pvalue > 0.01
    assert plain.loc["mean colour", "ci_low"] < 0.5 + 0.1


def test_a_season_confound_in_the_names_is_found():
    feats, tokens, cities, places, split = _corpus(60, shortcut=False, seed=1)
    tokens = [["summer" if (c == "a") == (i % 4 != 0) else "winter"] for i, c in enumerate(cities)]
    t = baseline_table(feats, tokens, cities, places, split, n_boot=200).to_pandas()
    row = t.set_index("baseline").loc["file-name tokens"]
    assert row.accuracy == pytest.approx(0.75, abs=0.1)
    assert "summer" in row.detail or "winter" in row.detail


def test_rare_tokens_are_dropped():
    train = np.array([True] * 100)
    x, vocab = token_matrix([["common"]] * 99 + [["rare"]], train, min_share=0.02)
    assert vocab == ["common"] and x.shape == (100, 1)
