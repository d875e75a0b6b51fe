"""The causal check's reducers: what removing each object costs, against its control.

From the ablations table (one row per image and model, a list per removed object):

- **effect** of an object for one image = (drop of the target probability when the
  object is removed) − (drop when its control — as many pixels elsewhere — is removed).
  Per (model, city, object): the mean drop, the mean control drop and the mean effect
  over the images that have the object, with a place-clustered bootstrap interval and
  a two-sided p-value of "effect = 0" (:mod:`citylens.analysis.bootstrap`).
- **faithfulness** of a model's explanations per city: the area under its deletion
  curve (lower: removing what the explanation marks first costs the model sooner)
  against the random order's, and the same for insertion (higher is better).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.ablation import curve_area
from citylens.analysis.bootstrap import (
    percentile_interval,
    place_index,
    place_sums,
    place_weights,
    ratio_samples,
    safe_ratio,
    two_sided_p,
)
from citylens.tables import CAUSAL, CAUSAL_EXAMPLES, CURVES, FAITHFULNESS

__all__ = [
    "causal_examples",
    "causal_table",
    "curve_areas",
    "curve_table",
    "faithfulness_table",
    "object_effects",
]


def object_effects(ablations: pa.Table) -> dict[str, np.ndarray]:
    """One entry per (image, model, removed object), its control beside it.

    Args:
        ablations: Rows of :data:`~citylens.tables.ABLATIONS` (the object and control
            rows are used; a control is matched to its object by image, model and
            ``of_class``).

    Returns:
        Columns ``image_id, city, model, class``, ``pixels`` (removed, at the models'
        input size) and float64 ``prob`` (whole image), ``drop`` (whole-image minus
        object-removed probability), ``control_drop`` (NaN where no control fit) and
        ``effect`` (their difference); sorted by image, model and class.
    """
    keys = ["image_id", "model", "of_class"]
    objects = ablations.filter(pc.equal(ablations["kind"], "object")).select(
        [*keys, "city", "pixels", "prob_before", "prob_after"]
    )
    controls = ablations.filter(pc.equal(ablations["kind"], "control")).select(
        [*keys, "prob_after"]
    )
    controls = controls.rename_columns([*keys, "prob_control"])
    both = objects.join(controls, keys=keys, join_type="left outer").sort_by(
        [(k, "ascending") for k in keys]
    )

    def col(name: str, dtype=np.float64) -> np.ndarray:
        return both[name].to_numpy(zero_copy_only=False).astype(dtype)

    prob = col("prob_before")
    drop = prob - col("prob_after")
    control = prob - col("prob_control")  # NaN where no control fit (or none was joined)
    return {
        "image_id": np.asarray(both["image_id"].to_pylist(), dtype=object),
        "city": np.asarray(both["city"].to_pylist(), dtype=object),
        "model": np.asarray(both["model"].to_pylist(), dtype=object),
        "class": col("of_class", np.int64),
        "pixels": col("pixels", np.int64),
        "prob": prob,
        "drop": drop,
        "control_drop": control,
        "effect": drop - control,
    }


def causal_table(
    effects: dict[str, np.ndarray],
    place_of: dict[str, str],
    names: tuple[str, ...],
    arch_of: dict[str, str],
    seed_of: dict[str, int],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pa.Table:
    """Mean drop, control drop and effect per (model, city, object), with intervals.

    Args:
        effects: :func:`object_effects`.
        place_of: image id -> place (views of a place are resampled together).
        names: The vocabulary's class names.
        arch_of: model -> architecture.
        seed_of: model -> seed.
        n_boot: Bootstrap resamples (0: no intervals, NaN).
        ci: Interval coverage.
        seed: Bootstrap seed (each city draws from its own stream).

    Returns:
        A table with schema :data:`~citylens.tables.CAUSAL`, sorted by model, city and
        effect (largest first).
    """
    rows = []
    for city in sorted(set(effects["city"].tolist())):
        sel = effects["city"] == city
        e = {k: v[sel] for k, v in effects.items()}
        idx = place_index([city] * int(sel.sum()), [place_of[i] for i in e["image_id"]])
        groups = sorted(set(zip(e["model"].tolist(), e["class"].tolist())))
        col = {g: j for j, g in enumerate(groups)}
        g_of = np.asarray([col[(m, c)] for m, c in zip(e["model"], e["class"])], np.int64)
        ok = ~np.isnan(e["control_drop"])
        one_hot = np.zeros((len(g_of), len(groups)))
        one_hot[np.arange(len(g_of)), g_of] = 1.0
        n_all = place_sums(idx, one_hot)
        n_ok = place_sums(idx, one_hot * ok[:, None])
        sums = {
            "pixels": place_sums(idx, one_hot * e["pixels"][:, None]),
            "drop": place_sums(idx, one_hot * e["drop"][:, None]),
            "control_drop": place_sums(idx, one_hot * np.where(ok, e["control_drop"], 0)[:, None]),
            "effect": place_sums(idx, one_hot * np.where(ok, e["effect"], 0)[:, None]),
        }
        means = {
            "pixels": sums["pixels"].sum(0) / n_all.sum(0),
            "drop": sums["drop"].sum(0) / n_all.sum(0),
            "control_drop": safe_ratio(sums["control_drop"].sum(0), n_ok.sum(0)),
            "effect": safe_ratio(sums["effect"].sum(0), n_ok.sum(0)),
        }
        places = (n_all > 0).sum(0)
        if n_boot:
            w = place_weights(idx, n_boot, seed)  # the city's own stream
            samples = ratio_samples(w, sums["effect"], n_ok)
            # expanded for the places the object is in, as every other interval
            units = (n_ok > 0).sum(0)
            low, high = percentile_interval(samples, ci, units)
            p = two_sided_p(samples, units, means["effect"])
        else:
            low = high = p = np.full(len(groups), np.nan)
        for j, (model, cls) in enumerate(groups):
            rows.append(
                {
                    "model": model,
                    "arch": arch_of[model],
                    "seed": int(seed_of[model]),
                    "city": city,
                    "class": int(cls),
                    "name": names[cls],
                    "images": int(n_all[:, j].sum()),
                    "places": int(places[j]),
                    "controls": int(n_ok[:, j].sum()),
                    "pixels": float(means["pixels"][j]),
                    "drop": float(means["drop"][j]),
                    "control_drop": float(means["control_drop"][j]),
                    "effect": float(means["effect"][j]),
                    "ci_low": float(low[j]),
                    "ci_high": float(high[j]),
                    "p_value": float(p[j]),
                }
            )
    rows.sort(key=lambda r: (r["model"], r["city"], -_nan_low(r["effect"]), r["class"]))
    return pa.Table.from_pylist(rows, schema=CAUSAL)


def causal_examples(
    effects: dict[str, np.ndarray], causal: pa.Table, model: str, per_city: int = 2
) -> pa.Table:
    """The report's before/after pictures: where the most decisive object cost most.

    Per city, the images where removing the city's most decisive object (largest
    effect for ``model``) cost ``model`` most.

    Args:
        effects: :func:`object_effects`.
        causal: :func:`causal_table` (its order: effect, largest first, per city).
        model: The model pictured.
        per_city: Images per city.

    Returns:
        Columns ``image_id, city, model, class, prob, prob_removed, prob_control``
        (``prob_control`` NaN where no control fit), cities in order, largest effect
        first.
    """
    rows = []
    c = causal.filter(pc.equal(causal["model"], model)).to_pylist()
    best: dict[str, int] = {}
    for r in c:  # the first row of a city is its largest effect
        if r["city"] not in best and not np.isnan(r["effect"]):
            best[r["city"]] = r["class"]
    for city, cls in sorted(best.items()):
        sel = np.flatnonzero(
            (effects["model"] == model) & (effects["city"] == city) & (effects["class"] == cls)
        )
        score = np.where(np.isnan(effects["effect"][sel]), -np.inf, effects["effect"][sel])
        for i in sel[np.argsort(-score, kind="stable")[:per_city]]:
            prob = float(effects["prob"][i])
            rows.append(
                {
                    "image_id": str(effects["image_id"][i]),
                    "city": city,
                    "model": model,
                    "class": int(cls),
                    "prob": prob,
                    "prob_removed": prob - float(effects["drop"][i]),
                    "prob_control": prob - float(effects["control_drop"][i]),
                }
            )
    return pa.Table.from_pylist(rows, schema=CAUSAL_EXAMPLES)


def _nan_low(x: float) -> float:
    return -np.inf if np.isnan(x) else x


def _curves(ablations: pa.Table, n_steps: int, explanation: str = "mask") -> dict[str, np.ndarray]:
    """Per (image, model): ``image_id, model, city`` and each curve as ``(n, n_steps)``.

    Curves ``deletion``, ``insertion`` (in the order of ``explanation``: ``mask``, the
    study's own, or an added one's label) and ``deletion_random``, ``insertion_random``.
    """
    keys = ["model", "image_id"]
    out: dict[str, np.ndarray] = {}
    for kind in ("deletion", "insertion"):
        for order, suffix in ((explanation, ""), ("random", "_random")):
            t = ablations.filter(
                pc.and_(pc.equal(ablations["kind"], kind), pc.equal(ablations["order"], order))
            ).select([*keys, "city", "step", "prob_after"])
            t = t.sort_by([(k, "ascending") for k in [*keys, "step"]])
            if t.num_rows % n_steps:
                raise ValueError(f"{kind} curves ({order}) do not all have {n_steps} steps")
            values = t["prob_after"].to_numpy().astype(np.float64).reshape(-1, n_steps)
            out[kind + suffix] = values
            first = t.take(np.arange(0, t.num_rows, n_steps))
            for k in ("image_id", "model", "city"):
                ids = np.asarray(first[k].to_pylist(), dtype=object)
                if k in out and not np.array_equal(out[k], ids):
                    raise ValueError(f"the {kind} curves ({order}) cover other images")
                out[k] = ids
    return out


_KEYS = ("image_id", "model", "city")


def curve_areas(
    ablations: pa.Table, steps: tuple[float, ...], explanation: str = "mask"
) -> dict[str, np.ndarray]:
    """Per (image, model), sorted by model and image: the areas under its curves.

    Args:
        ablations: Rows of :data:`~citylens.tables.ABLATIONS`.
        steps: The curves' fractions of the image removed.
        explanation: The ``order`` of the explanation's curves: ``mask`` (the study's
            own) or an added explanation's :func:`~citylens.tables.method_label`.

    Returns:
        ``image_id, model, city`` (object arrays) and float64 ``deletion, insertion``
        (in the explanation's order), ``deletion_random, insertion_random``.
    """
    curves = _curves(ablations, len(steps), explanation)
    return {k: v if k in _KEYS else curve_area(steps, v) for k, v in curves.items()}


def faithfulness_table(
    ablations: pa.Table,
    steps: tuple[float, ...],
    place_of: dict[str, str],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pa.Table:
    """Deletion and insertion areas per (model, city), the explanation's against random.

    ``deletion_gain`` = random deletion area − explanation's (positive: removing what
    the explanation marks first costs the model more than removing pixels at random);
    ``insertion_gain`` = explanation's insertion area − random's. Each with a
    place-clustered interval.

    Args:
        ablations: Rows of :data:`~citylens.tables.ABLATIONS`.
        steps: The curves' fractions of the image removed.
        place_of: image id -> place.
        n_boot: Bootstrap resamples (0: no intervals).
        ci: Interval coverage.
        seed: Bootstrap seed.

    Returns:
        A table with schema :data:`~citylens.tables.FAITHFULNESS`.
    """
    areas = curve_areas(ablations, steps)
    model, city, ids = areas["model"], areas["city"], areas["image_id"].tolist()
    rows = []
    for c in sorted(set(city.tolist())):
        for m in sorted(set(model[city == c].tolist())):
            sel = np.flatnonzero((city == c) & (model == m))
            idx = place_index([c] * len(sel), [place_of[ids[i]] for i in sel])
            a = {k: v[sel] for k, v in areas.items() if k not in _KEYS}
            gains = np.stack(
                [a["deletion_random"] - a["deletion"], a["insertion"] - a["insertion_random"]], 1
            )
            num, den = place_sums(idx, gains), place_sums(idx, np.ones((len(sel), 1)))
            if n_boot:
                w = place_weights(idx, n_boot, seed)  # every model: the same resamples
                low, high = percentile_interval(ratio_samples(w, num, den), ci, idx.n_places)
            else:
                low = high = np.full(2, np.nan)
            rows.append(
                {
                    "model": m,
                    "city": c,
                    "images": len(sel),
                    "places": idx.n_places,
                    "deletion": float(a["deletion"].mean()),
                    "deletion_random": float(a["deletion_random"].mean()),
                    "insertion": float(a["insertion"].mean()),
                    "insertion_random": float(a["insertion_random"].mean()),
                    "deletion_gain": float(gains[:, 0].mean()),
                    "deletion_gain_low": float(low[0]),
                    "deletion_gain_high": float(high[0]),
                    "insertion_gain": float(gains[:, 1].mean()),
                    "insertion_gain_low": float(low[1]),
                    "insertion_gain_high": float(high[1]),
                }
            )
    return pa.Table.from_pylist(rows, schema=FAITHFULNESS)


def curve_table(ablations: pa.Table) -> pa.Table:
    """Mean target probability per (model, city, curve, order, step).

    Args:
        ablations: Rows of :data:`~citylens.tables.ABLATIONS` (the curve rows are used).

    Returns:
        A table with schema :data:`~citylens.tables.CURVES`, sorted by its keys.
    """
    keys = ["model", "city", "kind", "order", "step"]
    curves = ablations.filter(pc.is_in(ablations["kind"], pa.array(["deletion", "insertion"])))
    t = (
        curves.select([*keys, "prob_after"])
        .group_by(keys)
        .aggregate([("prob_after", "mean"), ("prob_after", "count")])
    )
    t = t.rename_columns([*keys, "prob", "images"]).sort_by([(k, "ascending") for k in keys])
    return t.select([f.name for f in CURVES]).cast(CURVES)
