"""The methods-compared reducers against plain loops, scipy and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from citylens.analysis.bootstrap import percentile_interval, place_index, place_weights
from citylens.analysis.methods import (
    Explanation,
    explanations_of,
    method_faithfulness_table,
    method_object_table,
    method_pair_table,
    method_ranking_table,
    spearman,
    untraced_explanations,
)
from citylens.tables import (
    ABLATIONS,
    CAUSAL,
    METHOD_FAITHFULNESS,
    METHOD_OBJECTS,
    METHOD_PAIRS,
    OBJECTS,
    method_label,
)

STEPS = (0.0, 0.5, 1.0)
MODELS = {"r-s0": {"arch": "r", "seed": 0}, "r-s1": {"arch": "r", "seed": 1}}
OWN = {"r-s0": ("gradcam", "layer4"), "r-s1": ("gradcam", "layer4")}
ADDED = {n: [["gradcam++", "layer3"], ["hirescam", "layer4"]] for n in MODELS}


def _explanations() -> list[Explanation]:
    return explanations_of(MODELS, OWN, ADDED)


def _trapezoid(values) -> float:
    """The area under one curve at STEPS, by hand (span 1)."""
    v = list(values)
    return sum((v[i] + v[i + 1]) / 2 * (STEPS[i + 1] - STEPS[i]) for i in range(len(v) - 1))


def _curves(seed: int = 0, lead: float = 0.0):
    """Curve rows for every (image, model, order): gradcam++@layer3's deletion curve
    falls ``lead`` faster than the others'. Returns (ABLATIONS table, rows, place_of)."""
    rng = np.random.default_rng(seed)
    orders = [
        "mask",
        "random",
        method_label("gradcam++", "layer3"),
        method_label("hirescam", "layer4"),
    ]
    rows, place_of, out = [], {}, []
    for city in ("a", "b"):
        for place in range(5):
            for view in range(2):
                iid = f"{city}{place}{view}"
                place_of[iid] = f"p{place}"
                for model in MODELS:
                    row = {"image_id": iid, "city": city, "model": model}
                    for order in orders:
                        for kind in ("deletion", "insertion"):
                            start = rng.uniform(0.7, 1.0)
                            drop = rng.uniform(0.1, 0.5) + (
                                lead if order.startswith("gradcam++") and kind == "deletion" else 0
                            )
                            curve = [start, start - drop / 2, max(start - drop, 0.0)]
                            if kind == "insertion":
                                curve = curve[::-1]
                            row[(kind, order)] = curve
                            for f, p in zip(STEPS, curve):
                                out.append(
                                    {
                                        "image_id": iid,
                                        "city": city,
                                        "model": model,
                                        "target": 0,
                                        "kind": kind,
                                        "order": order,
                                        "class": -1,
                                        "of_class": -1,
                                        "step": f,
                                        "fill": "mean",
                                        "pixels": 0,
                                        "prob_before": 1.0,
                                        "logit_before": 0.0,
                                        "prob_after": p,
                                        "logit_after": 0.0,
                                    }
                                )
                    rows.append(row)
    perm = rng.permutation(len(out))  # no reader may rely on row order
    return pa.Table.from_pylist([out[i] for i in perm], schema=ABLATIONS), rows, place_of


def test_explanations_list_the_studys_own_first_and_name_their_curves():
    ex = _explanations()
    assert [(e.model, e.method, e.layer, e.own) for e in ex[:3]] == [
        ("r-s0", "gradcam", "layer4", True),
        ("r-s0", "gradcam++", "layer3", False),
        ("r-s0", "hirescam", "layer4", False),
    ]
    assert [e.order for e in ex[:3]] == ["mask", "gradcam++@layer3", "hirescam@layer4"]
    assert len({e.key for e in ex}) == len(ex) == 6


@pytest.mark.parametrize("lead", [0.0, 0.3])
def test_faithfulness_gains_equal_plain_loops_and_the_best_is_found(lead):
    table, rows, place_of = _curves(1, lead)
    got = method_faithfulness_table(table, STEPS, place_of, _explanations(), n_boot=400, seed=3)
    assert got.schema == METHOD_FAITHFULNESS and got.num_rows == 3
    got = {(r["method"], r["layer"]): r for r in got.to_pylist()}
    labels = {("gradcam", "layer4"): "mask", ("gradcam++", "layer3"): "gradcam++@layer3"}
    labels[("hirescam", "layer4")] = "hirescam@layer4"
    gains = {}
    for key, order in labels.items():
        dele = [
            _trapezoid(r[("deletion", "random")]) - _trapezoid(r[("deletion", order)]) for r in rows
        ]
        ins = [
            _trapezoid(r[("insertion", order)]) - _trapezoid(r[("insertion", "random")])
            for r in rows
        ]
        gains[key] = np.asarray(dele)
        r = got[key]
        assert r["deletion_gain"] == pytest.approx(np.mean(dele))
        assert r["insertion_gain"] == pytest.approx(np.mean(ins))
        assert r["deletion_gain_low"] <= r["deletion_gain"] <= r["deletion_gain_high"]
        assert (r["models"], r["images"], r["places"]) == (2, 20, 10)
        assert r["own"] == (order == "mask")
    best = max(gains, key=lambda k: gains[k].mean())
    assert [k for k, r in got.items() if r["best"]] == [best]
    # the shortfall from the best: a paired mean and its place-bootstrap interval, by a loop
    idx = place_index(
        [r["city"] for r in sorted(rows, key=lambda r: (r["model"], r["image_id"]))],
        [place_of[r["image_id"]] for r in sorted(rows, key=lambda r: (r["model"], r["image_id"]))],
    )
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["model"], rows[i]["image_id"]))
    w = place_weights(idx, 400, 3)  # (B, places)
    for key, r in got.items():
        diff = (gains[best] - gains[key])[order]
        assert r["behind_best"] == pytest.approx(diff.mean(), rel=1e-6, abs=1e-9)
        per_place_num = np.bincount(idx.of_row, weights=diff, minlength=idx.n_places)
        per_place_den = np.bincount(idx.of_row, minlength=idx.n_places)
        samples = (w @ per_place_num) / (w @ per_place_den)
        low, high = percentile_interval(samples[:, None], 1 - 0.05 / 2, idx.n_places)  # Bonferroni
        if key != best:
            assert r["behind_best_low"] == pytest.approx(low[0], rel=1e-5)
            assert r["behind_best_high"] == pytest.approx(high[0], rel=1e-5)
    others = [k for k in got if k != best]
    assert got[best]["separated"] == all(got[k]["behind_best_low"] > 0 for k in others)
    assert all(got[k]["separated"] == (got[k]["behind_best_low"] > 0) for k in others)
    if lead:  # a clear lead is settled; identical distributions are not
        assert best == ("gradcam++", "layer3") and got[best]["separated"]
    else:
        assert not got[best]["separated"] or best != ("gradcam", "layer4")


def test_without_resamples_intervals_are_nan_and_nothing_is_settled():
    table, _, place_of = _curves(2, 0.3)
    got = method_faithfulness_table(table, STEPS, place_of, _explanations(), n_boot=0).to_pylist()
    assert all(np.isnan(r["deletion_gain_low"]) and not r["separated"] for r in got)


def test_spearman_equals_scipys_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        x = rng.integers(0, 4, n).astype(float)
        y = rng.normal(size=n)
        want = stats.spearmanr(x, y).statistic
        got = spearman(x, y)
        if np.isnan(want):
            assert np.isnan(got)
        else:
            assert got == pytest.approx(want, abs=1e-12)
    assert np.isnan(spearman([1, 2], [2, 1])) and np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _objects_row(model, method, layer, city, cls, r_p, selected=True, theta=0.6):
    return {
        "model": model,
        "arch": "r",
        "seed": 0,
        "method": method,
        "layer": layer,
        "city": city,
        "theta": theta,
        "class": cls,
        "name": f"c{cls}",
        "r_p": r_p,
        "mean_in_mask": 1.0,
        "mean_in_image": 2.0,
        "selected": selected,
        "images": 4,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "n_places": 2,
    }


def test_rankings_compare_r_p_with_the_causal_effects_by_hand():
    objs = [
        # R_p ranks 3 > 5 > 7; effects rank 3 > 7 > 5: ρ = 0.5, tops agree
        _objects_row("r-s0", "gradcam", "layer4", "a", 3, 0.9),
        _objects_row("r-s0", "gradcam", "layer4", "a", 5, 0.5),
        _objects_row("r-s0", "gradcam", "layer4", "a", 7, 0.1),
        _objects_row("r-s0", "gradcam", "layer4", "a", 9, 2.0, selected=False),  # not selected
        _objects_row("r-s0", "gradcam", "layer4", "a", 3, 0.0, theta=0.8),  # another θ
        # the other method ranks 7 first: reversed order ρ = -0.5, tops disagree
        _objects_row("r-s0", "hirescam", "layer4", "a", 3, 0.1),
        _objects_row("r-s0", "hirescam", "layer4", "a", 5, 0.5),
        _objects_row("r-s0", "hirescam", "layer4", "a", 7, 0.9),
        # one object only: no ρ, no verdict on the top
        _objects_row("r-s0", "hirescam", "layer4", "b", 3, 0.4),
    ]
    causal = pa.Table.from_pylist(
        [
            {"model": "r-s0", "city": "a", "class": 3, "effect": 0.30},
            {"model": "r-s0", "city": "a", "class": 5, "effect": 0.05},
            {"model": "r-s0", "city": "a", "class": 7, "effect": 0.10},
            {"model": "r-s0", "city": "a", "class": 9, "effect": 0.90},
            {"model": "r-s0", "city": "b", "class": 3, "effect": 0.20},
        ],
        schema=pa.schema(
            [(f.name, f.type) for f in CAUSAL if f.name in ("model", "city", "class", "effect")]
        ),
    )
    got = method_ranking_table(pa.Table.from_pylist(objs, schema=METHOD_OBJECTS), causal, 0.6)
    got = {(r["method"], r["city"]): r for r in got.to_pylist()}
    assert got[("gradcam", "a")]["objects"] == 3
    assert got[("gradcam", "a")]["spearman"] == pytest.approx(0.5)
    assert got[("gradcam", "a")]["top_agrees"] is True
    assert got[("hirescam", "a")]["spearman"] == pytest.approx(-0.5)
    assert got[("hirescam", "a")]["top_agrees"] is False
    assert (
        np.isnan(got[("hirescam", "b")]["spearman"])
        and got[("hirescam", "b")]["top_agrees"] is None
    )


def test_pairs_are_within_one_model_the_studys_own_first():
    ex = _explanations()
    own0, pp0, hi0 = ex[0], ex[1], ex[2]
    # sums as ar_of_table returns them, keyed in sorted key order
    sums = {
        tuple(sorted((pp0.key, own0.key))): [3.0, 5.0, 4],
        tuple(sorted((pp0.key, hi0.key))): [1.0, 0.5, 2],
    }
    got = method_pair_table(sums, ex).to_pylist()
    assert pa.Table.from_pylist(got, schema=METHOD_PAIRS).num_rows == 2
    first = next(r for r in got if r["method_a"] == "gradcam")
    assert (first["model"], first["layer_a"], first["method_b"], first["layer_b"]) == (
        "r-s0",
        "layer4",
        "gradcam++",
        "layer3",
    )
    assert first["mean_ar"] == pytest.approx(0.75) and first["std_ar"] == pytest.approx(
        np.sqrt(5 / 4 - 0.75**2)
    )
    with pytest.raises(ValueError, match="two models"):
        method_pair_table({(ex[0].key, ex[3].key): [1.0, 1.0, 1]}, ex)


def test_objects_of_an_explanation_are_named_by_method_and_layer():
    ex = _explanations()
    row = {f.name: None for f in OBJECTS}
    row |= {
        "model": ex[1].key,
        "arch": "r",
        "seed": 0,
        "city": "a",
        "theta": 0.6,
        "class": 3,
        "name": "c3",
        "r_p": 0.4,
    }
    got = method_object_table(pa.Table.from_pylist([row], schema=OBJECTS), ex).to_pylist()[0]
    assert (got["model"], got["method"], got["layer"], got["r_p"]) == (
        "r-s0",
        "gradcam++",
        "layer3",
        0.4,
    )


def test_an_architecture_with_only_its_own_explanation_is_not_ranked():
    table, _, place_of = _curves(4, 0.3)
    ex = explanations_of(MODELS, OWN, {})  # nothing added: nothing to compare
    assert method_faithfulness_table(table, STEPS, place_of, ex, n_boot=10).num_rows == 0


def test_explanations_without_curves_are_named_unless_no_image_has_any():
    table, _, place_of = _curves(5)
    ex = _explanations()
    assert untraced_explanations(table, ex) == []
    extra = [*ex, Explanation("r-s0", "r", 0, "layercam", "layer3", own=False)]
    assert untraced_explanations(table, extra) == ["layercam@layer3"]
    empty = table.slice(0, 0)  # no image could be ablated (no class maps)
    assert untraced_explanations(empty, extra) == []
    assert method_faithfulness_table(empty, STEPS, place_of, ex, n_boot=10).num_rows == 0
