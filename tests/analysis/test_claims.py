"""The report's claims: AR by kind and its paired difference, averaged R_p, distinctive
objects (false discoveries controlled when there is nothing to find) and settled tops."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from citylens.analysis.bootstrap import Resamples, percentile_interval, place_index, two_sided_p
from citylens.analysis.claims import ar_kinds, distinctive_objects, object_means, top_settled
from citylens.analysis.reduce import sums_of_table
from citylens.tables import AR_KINDS, DISTINCTIVE, OBJECT_MEANS, TOP_SETTLED

ARCH = {"a-s0": "a", "a-s1": "a", "b-s0": "b", "b-s1": "b"}


def _pair_sums(rng, mean_of, n=50, n_boot=300):
    out = {}
    for pair, mean in mean_of.items():
        ar = np.clip(rng.normal(mean, 0.05, n), 0, 1)
        boot_n = rng.multinomial(n, np.full(n, 1 / n), n_boot).astype(float)
        out[pair] = [ar.sum(), (ar * ar).sum(), n, boot_n @ ar, boot_n.sum(1)]
    return out


def test_ar_kinds_average_pairs_and_test_their_paired_difference():
    rng = np.random.default_rng(0)
    means = {
        ("a-s0", "a-s1"): 0.10,
        ("b-s0", "b-s1"): 0.12,
        ("a-s0", "b-s0"): 0.30,
        ("a-s0", "b-s1"): 0.31,
        ("a-s1", "b-s0"): 0.29,
        ("a-s1", "b-s1"): 0.30,
    }
    sums = _pair_sums(rng, means)
    t = ar_kinds(sums, ARCH, 0.95, places=50)
    assert t.schema == AR_KINDS
    rows = {r["kind"]: r for r in t.to_pylist()}
    arch = [sums[p][0] / sums[p][2] for p in means if ARCH[p[0]] != ARCH[p[1]]]
    seeds = [sums[p][0] / sums[p][2] for p in means if ARCH[p[0]] == ARCH[p[1]]]
    assert rows["architectures"]["mean_ar"] == pytest.approx(np.mean(arch))
    assert rows["seeds"]["pairs"] == 2 and rows["architectures"]["pairs"] == 4
    d = rows["architectures - seeds"]
    assert d["mean_ar"] == pytest.approx(np.mean(arch) - np.mean(seeds))
    boot = {p: v[3] / v[4] for p, v in sums.items()}
    diff = np.mean([boot[p] for p in means if ARCH[p[0]] != ARCH[p[1]]], 0) - np.mean(
        [boot[p] for p in means if ARCH[p[0]] == ARCH[p[1]]], 0
    )
    low, high = percentile_interval(diff, 0.95, 50)  # expanded for 50 places
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((low, high))
    want_p = float(two_sided_p(diff, 50, np.mean(arch) - np.mean(seeds)))
    assert d["p_value"] == pytest.approx(want_p) and d["ci_low"] > 0 and want_p < 1e-4
    # seeds that disagree as much as architectures: the interval covers 0
    same = dict.fromkeys(means, 0.3)
    d = {r["kind"]: r for r in ar_kinds(_pair_sums(rng, same), ARCH).to_pylist()}
    assert d["architectures - seeds"]["ci_low"] < 0 < d["architectures - seeds"]["ci_high"]
    # one architecture only: no difference row
    only = {("a-s0", "a-s1"): sums[("a-s0", "a-s1")]}
    assert ar_kinds(only, ARCH)["kind"].to_pylist() == ["seeds"]


def _scene(rng, size: int, classes: int) -> np.ndarray:
    """A label map of random rectangles of ``classes`` classes (class 0 is background)."""
    lab = np.zeros((size, size), np.int64)
    for _ in range(4):
        c = int(rng.integers(1, classes))
        y, x = rng.integers(0, size - 3, 2)
        h, w = rng.integers(2, size // 2, 2)
        lab[y : y + h, x : x + w] = c
    return lab


def _study(rng, cities, planted=None, places=12, views=2, models=("a-s0", "b-s0"), boot=200):
    """Overlap rows of random explanations over label maps drawn alike for every city;
    ``planted`` = (city, class): that city's explanations always cover that class."""
    rows, ids, city_of, place_of = [], [], [], []
    classes = 6
    for city in cities:
        for p in range(places):
            for v in range(views):
                iid = f"{city}-{p}-{v}"
                lab = _scene(rng, 12, classes)
                ids.append(iid), city_of.append(city), place_of.append(p)
                n = np.bincount(lab.ravel(), minlength=classes)
                for model in models:
                    mask = rng.random(lab.shape) < 0.3
                    if planted and planted[0] == city:
                        mask |= lab == planted[1]
                    m = np.bincount(lab[mask], minlength=classes)
                    rows.append((iid, city, model, m.tolist(), n.tolist()))
    t = pa.table(
        {
            "image_id": [r[0] for r in rows],
            "city": [r[1] for r in rows],
            "model": [r[2] for r in rows],
            "theta": pa.array([0.6] * len(rows), pa.float32()),
            "class_pixels_in_mask": pa.array([r[3] for r in rows], pa.list_(pa.int64())),
            "class_pixels": pa.array([r[4] for r in rows], pa.list_(pa.int64())),
        }
    )
    res = Resamples(place_index(city_of, place_of), ids, boot, int(rng.integers(1 << 30)))
    return sums_of_table(t, res)[0]


NAMES = ("other", "sky", "road", "tree", "sign", "tower")
PLACES = {"x": 12, "y": 12}


def test_with_nothing_to_find_few_repetitions_have_any_discovery():
    rng = np.random.default_rng(7)
    reps = 100
    any_pass = 0
    for _ in range(reps):
        t = distinctive_objects(_study(rng, ("x", "y")), NAMES, 0.0, 0.95, 0.05, PLACES)
        any_pass += bool(np.any(t["passes"].to_numpy(zero_copy_only=False)))
    # Benjamini–Hochberg at 0.05 under the global null: P(any discovery) ≤ 0.05; allow
    # the Monte Carlo error of 100 repetitions (binomial sd ≈ 0.022)
    print(f"{any_pass} of {reps} null repetitions had a discovery")
    assert any_pass / reps <= 0.05 + 2 * 0.022


def test_a_planted_object_passes_and_is_tested_against_the_other_city():
    rng = np.random.default_rng(8)
    t = distinctive_objects(
        _study(rng, ("x", "y"), planted=("x", 4)), NAMES, 0.0, 0.95, 0.05, PLACES
    )
    assert t.schema == DISTINCTIVE
    rows = {(r["city"], r["name"]): r for r in t.to_pylist()}
    sign = rows[("x", "sign")]
    assert sign["passes"] and sign["against"] == "y" and sign["diff"] > 0.3
    assert sign["ci_low"] > 0 and sign["q_value"] <= 0.05
    assert not any(r["passes"] for (c, _), r in rows.items() if c == "y")
    q = t["q_value"].to_numpy()
    assert np.all(q >= t["p_value"].to_numpy() - 1e-12)


def test_object_means_average_models_and_the_seeds_of_one_architecture():
    rng = np.random.default_rng(9)
    models = ("a-s0", "a-s1", "b-s0")
    totals = _study(rng, ("x", "y"), models=models)
    t = object_means(totals, NAMES, ARCH, 0.0, 0.95, {"x": 12, "y": 12})
    assert t.schema == OBJECT_MEANS
    assert sorted(set(t["scope"].to_pylist())) == ["a", "models"]  # b has one seed
    for r in t.to_pylist():
        members = models if r["scope"] == "models" else ("a-s0", "a-s1")
        per = [
            totals[(m, r["city"], 0.6)][0][r["class"]] / totals[(m, r["city"], 0.6)][1][r["class"]]
            for m in members
        ]
        assert r["r_p"] == pytest.approx(np.mean(per)) and r["models"] == len(members)
        assert r["sd"] == pytest.approx(np.std(per, ddof=1))
        assert r["ci_low"] <= r["r_p"] + 0.05 and r["ci_high"] >= r["r_p"] - 0.05
        assert r["n_places"] == 12


def test_a_top_object_is_settled_only_when_its_gap_to_the_runner_up_is_sure():
    rng = np.random.default_rng(10)
    clear = top_settled(_study(rng, ("x", "y"), planted=("x", 4)), NAMES, 0.0, 0.95, PLACES)
    assert clear.schema == TOP_SETTLED
    x = [r for r in clear.to_pylist() if r["city"] == "x"]
    assert all(r["top_name"] == "sign" and r["settled"] and r["diff_low"] > 0 for r in x)
    # nothing planted: the tops are random; most are not settled
    tie = top_settled(_study(rng, ("x", "y")), NAMES, 0.0, 0.95, PLACES).to_pylist()
    assert sum(r["settled"] for r in tie) <= len(tie) // 2
    assert all(r["top_r_p"] >= r["second_r_p"] for r in tie)
