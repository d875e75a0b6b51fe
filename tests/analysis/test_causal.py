"""The causal reducers against plain loops over the same rows and resamples."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from citylens.ablation import curve_area
from citylens.analysis.bootstrap import place_index, place_weights
from citylens.analysis.causal import (
    causal_examples,
    causal_table,
    curve_table,
    faithfulness_table,
    object_effects,
)
from citylens.tables import ABLATIONS, CAUSAL, FAITHFULNESS

STEPS = (0.0, 0.2, 0.4)


def _ablations(seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """Per (image, model), what it lost: plain dicts, one list entry per object."""
    rng = np.random.default_rng(seed)
    rows, place_of = [], {}
    for city in ("a", "b"):
        for place in range(6):
            for view in range(2):
                iid = f"{city}{place}{view}"
                place_of[iid] = f"p{place}"
                for model in ("m-s0", "n-s0"):
                    classes = [3, 5] if (place + view) % 3 else [5]
                    k = len(classes)
                    prob = float(rng.uniform(0.5, 1.0))
                    control = (prob - rng.uniform(0, 0.1, k)).tolist()
                    if view == 1 and place == 0:
                        control[0] = float("nan")  # no control fit
                    row = {
                        "image_id": iid,
                        "city": city,
                        "model": model,
                        "target": 0 if city == "a" else 1,
                        "prob": prob,
                        "classes": classes,
                        "pixels": rng.integers(50, 500, k).tolist(),
                        "prob_removed": (prob - rng.uniform(0, 0.4, k)).tolist(),
                        "prob_control": control,
                    }
                    for curve in ("deletion", "insertion", "deletion_random", "insertion_random"):
                        row[curve] = rng.uniform(0, 1, len(STEPS)).tolist()
                    rows.append(row)
    return rows, place_of


def _table(rows: list[dict]) -> pa.Table:
    """The long-form ABLATIONS rows of :func:`_ablations`' dicts, by a plain loop."""
    out = []
    for r in rows:
        base = {k: r[k] for k in ("image_id", "city", "model", "target")}
        base |= {"fill": "mean", "prob_before": r["prob"], "logit_before": 0.0, "logit_after": 0.0}
        for c, n, p, q in zip(r["classes"], r["pixels"], r["prob_removed"], r["prob_control"]):
            out.append(
                {
                    **base,
                    "kind": "object",
                    "order": None,
                    "class": c,
                    "of_class": c,
                    "step": n / 1e4,
                    "pixels": n,
                    "prob_after": p,
                }
            )
            out.append(
                {
                    **base,
                    "kind": "control",
                    "order": None,
                    "class": -1,
                    "of_class": c,
                    "step": n / 1e4,
                    "pixels": n,
                    "prob_after": q,
                }
            )
        for kind in ("deletion", "insertion"):
            for order, suffix in (("mask", ""), ("random", "_random")):
                for f, p in zip(STEPS, r[kind + suffix]):
                    out.append(
                        {
                            **base,
                            "kind": kind,
                            "order": order,
                            "class": -1,
                            "of_class": -1,
                            "step": f,
                            "pixels": 0,
                            "prob_after": p,
                        }
                    )
    rng = np.random.default_rng(0)
    out = [out[i] for i in rng.permutation(len(out))]  # no reader may rely on row order
    return pa.Table.from_pylist(out, schema=ABLATIONS)


def test_object_effects_are_one_entry_per_removed_object_with_its_control():
    rows, _ = _ablations()
    e = object_effects(_table(rows))
    n = sum(len(r["classes"]) for r in rows)
    assert all(len(v) == n for v in e.values())
    want = {}
    for r in rows:
        for c, n_px, p, q in zip(r["classes"], r["pixels"], r["prob_removed"], r["prob_control"]):
            want[(r["image_id"], r["model"], c)] = (n_px, r["prob"] - p, r["prob"] - q)
    for i in range(n):
        n_px, drop, control = want[(e["image_id"][i], e["model"][i], int(e["class"][i]))]
        assert e["pixels"][i] == n_px
        assert e["drop"][i] == pytest.approx(drop, abs=1e-6)
        if np.isnan(control):
            assert np.isnan(e["control_drop"][i]) and np.isnan(e["effect"][i])
        else:
            assert e["effect"][i] == pytest.approx(drop - control, abs=1e-6)


def test_causal_means_and_intervals_equal_plain_loops():
    rows, place_of = _ablations()
    e = object_effects(_table(rows))
    got = causal_table(
        e,
        place_of,
        tuple(f"c{i}" for i in range(10)),
        {"m-s0": "m", "n-s0": "n"},
        {"m-s0": 0, "n-s0": 0},
        n_boot=300,
        seed=9,
    ).to_pylist()
    assert pa.Table.from_pylist(got, schema=CAUSAL).num_rows == 2 * 2 * 2
    for r in got:
        sel = (e["city"] == r["city"]) & (e["model"] == r["model"]) & (e["class"] == r["class"])
        ok = sel & ~np.isnan(e["control_drop"])
        assert r["images"] == sel.sum() and r["controls"] == ok.sum()
        assert r["drop"] == pytest.approx(e["drop"][sel].mean())
        assert r["pixels"] == pytest.approx(e["pixels"][sel].mean())
        assert r["control_drop"] == pytest.approx(e["control_drop"][ok].mean())
        assert r["effect"] == pytest.approx(e["effect"][ok].mean())
        # the interval: the same place resamples, a mean recomputed image by image
        city_rows = e["city"] == r["city"]
        places = [place_of[i] for i in e["image_id"][city_rows]]
        idx = place_index([r["city"]] * int(city_rows.sum()), places)
        w = place_weights(idx, 300, 9)  # the city's own stream
        mine = ok[city_rows]
        eff = e["effect"][city_rows]
        means = []
        for b in range(300):
            weight = w[b, idx.of_row] * mine
            means.append((weight * np.where(mine, eff, 0)).sum() / weight.sum())
        # expanded for the n places the object has a control in (Hesterberg), by scipy
        n = len({place_of[i] for i in e["image_id"][ok]})
        tail = stats.norm.cdf(-np.sqrt(n / (n - 1)) * stats.t.ppf(0.975, n - 1))
        low, high = np.quantile(means, [tail, 1 - tail])
        assert r["ci_low"] == pytest.approx(low) and r["ci_high"] == pytest.approx(high)
        se = np.std(means, ddof=1) * np.sqrt(n / (n - 1))
        want_p = 2 * stats.t.sf(abs(r["effect"]) / se, n - 1)
        assert r["p_value"] == pytest.approx(want_p, rel=1e-6)
        assert r["places"] == len({place_of[i] for i in e["image_id"][sel]})


def test_a_clear_effect_has_an_interval_above_zero_and_a_small_p():
    rows, place_of = _ablations()
    for row in rows:  # removing class 3 costs 0.3 more than its control, everywhere
        row["prob_control"] = [row["prob"] if np.isnan(p) else p for p in row["prob_control"]]
        row["prob_removed"] = [
            p - (0.3 if c == 3 else 0.0) for p, c in zip(row["prob_control"], row["classes"])
        ]
    got = causal_table(
        object_effects(_table(rows)),
        place_of,
        tuple(f"c{i}" for i in range(10)),
        {"m-s0": "m", "n-s0": "n"},
        {"m-s0": 0, "n-s0": 0},
        n_boot=200,
    )
    for r in got.to_pylist():
        if r["class"] == 3:
            assert r["effect"] == pytest.approx(0.3, abs=1e-5)
            assert r["ci_low"] > 0.29 and r["p_value"] < 0.02
        else:
            assert r["effect"] == pytest.approx(0.0, abs=1e-5)


def test_faithfulness_areas_and_gains_equal_plain_loops():
    wide, place_of = _ablations(1)
    got = faithfulness_table(_table(wide), STEPS, place_of, n_boot=100)
    assert got.schema == FAITHFULNESS and got.num_rows == 4
    for r in got.to_pylist():
        rows = [x for x in wide if x["city"] == r["city"] and x["model"] == r["model"]]
        dele = curve_area(STEPS, np.asarray([x["deletion"] for x in rows]))
        rand = curve_area(STEPS, np.asarray([x["deletion_random"] for x in rows]))
        assert r["deletion"] == pytest.approx(dele.mean())
        assert r["deletion_gain"] == pytest.approx((rand - dele).mean())
        assert r["deletion_gain_low"] <= r["deletion_gain"] <= r["deletion_gain_high"]
        assert r["images"] == len(rows) and r["places"] == 6


def test_examples_are_each_citys_most_decisive_object_where_it_cost_most():
    wide, place_of = _ablations()
    e = object_effects(_table(wide))
    names = tuple(f"c{i}" for i in range(10))
    causal = causal_table(e, place_of, names, {"m-s0": "m", "n-s0": "n"}, {"m-s0": 0, "n-s0": 0})
    got = causal_examples(e, causal, "n-s0", per_city=3).to_pylist()
    assert [r["city"] for r in got] == ["a"] * 3 + ["b"] * 3
    c = causal.to_pandas()
    for city in ("a", "b"):
        d = c[(c.model == "n-s0") & (c.city == city)]
        best = int(d.loc[d.effect.idxmax(), "class"])
        mine = [r for r in got if r["city"] == city]
        assert {r["class"] for r in mine} == {best}
        # a plain loop over the rows: the three largest effects of that object
        effects = []
        for row in wide:
            if row["model"] != "n-s0" or row["city"] != city:
                continue
            for k, cls in enumerate(row["classes"]):
                ctrl = row["prob_control"][k]
                if cls == best and not np.isnan(ctrl):
                    effects.append((ctrl - row["prob_removed"][k], row["image_id"], row))
        effects.sort(key=lambda t: -t[0])
        assert [r["image_id"] for r in mine] == [iid for _, iid, _ in effects[:3]]
        for r, (_, _, row) in zip(mine, effects):
            k = row["classes"].index(best)
            assert r["prob"] == pytest.approx(row["prob"])
            assert r["prob_removed"] == pytest.approx(row["prob_removed"][k])
            assert r["prob_control"] == pytest.approx(row["prob_control"][k])


def test_a_curve_missing_a_step_is_refused():
    wide, place_of = _ablations(1)
    table = _table(wide)
    kinds = np.asarray(table["kind"].to_pylist())
    keep = np.ones(table.num_rows, bool)
    keep[np.flatnonzero(kinds == "insertion")[0]] = False
    with pytest.raises(ValueError, match="insertion curves"):
        faithfulness_table(table.filter(pa.array(keep)), STEPS, place_of, n_boot=0)


def test_curve_means_equal_a_plain_loop():
    wide, _ = _ablations(2)
    got = curve_table(_table(wide)).to_pylist()
    assert len(got) == 2 * 2 * 2 * 2 * len(STEPS)  # models × cities × kinds × orders × steps
    for r in got:
        suffix = "" if r["order"] == "mask" else "_random"
        rows = [x for x in wide if x["model"] == r["model"] and x["city"] == r["city"]]
        values = [x[r["kind"] + suffix][STEPS.index(pytest.approx(r["step"]))] for x in rows]
        assert r["images"] == len(rows)
        assert r["prob"] == pytest.approx(np.mean(values), rel=1e-6)
