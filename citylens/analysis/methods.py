"""Explanation methods compared (``explain.methods``): how alike, what they cover, how faithful.

Every model of a study has its own explanation (``explain.method`` at its layer) and,
with ``explain.methods``, more of them (:class:`Explanation`). These reducers put them
side by side:

- **AR between methods** of one model: the average residual of two of its
  explanations (the paper's AR, a kind beside architectures and seeds).
- **R_p per method**: the objects table, one explanation at a time.
- **Faithfulness per method**, from the causal check's curves: the deletion gain (area
  under the random order's deletion curve minus the explanation's) and the insertion
  gain, over all of an architecture's models and test images, with place-bootstrap
  intervals, and each explanation's paired shortfall from the architecture's best.
- **Agreement with the causal ranking**: Spearman's ρ between R_p's ranking of a
  city's objects and the ranking by causal effect (what removing each costs).

Explanations are keyed by an opaque string inside these functions (:attr:`Explanation.key`)
and always mapped back through the :class:`Explanation` itself, never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.analysis.ar import pair_table
from citylens.analysis.bootstrap import (
    percentile_interval,
    place_index,
    place_sums,
    place_weights,
    ratio_samples,
)
from citylens.analysis.causal import curve_areas
from citylens.tables import (
    METHOD_FAITHFULNESS,
    METHOD_OBJECTS,
    METHOD_PAIRS,
    METHOD_RANKINGS,
    method_label,
)

__all__ = [
    "Explanation",
    "explanations_of",
    "method_faithfulness_table",
    "method_object_table",
    "method_pair_table",
    "method_ranking_table",
    "spearman",
    "untraced_explanations",
]


@dataclass(frozen=True)
class Explanation:
    """One of a model's explanations: a CAM method at a named layer.

    Attributes:
        model: The model's name.
        arch: Its architecture.
        seed: Its seed.
        method: The CAM method.
        layer: The named layer.
        own: The study's own explanation (the one every other table is made from).
    """

    model: str
    arch: str
    seed: int
    method: str
    layer: str
    own: bool

    @property
    def order(self) -> str:
        """Its curves' ``order`` in the ablations table: ``mask`` for the study's own."""
        return "mask" if self.own else method_label(self.method, self.layer)

    @property
    def key(self) -> str:
        """An opaque key, unique in the study (never parsed back)."""
        return f"{self.model}\x00{self.method}\x00{self.layer}"


def explanations_of(
    models: dict[str, dict], own: dict[str, tuple[str, str]], compared: dict[str, list]
) -> list[Explanation]:
    """Every explanation of every model, the study's own first, models sorted.

    Args:
        models: model name -> ``{"arch", "seed", ...}`` (the train record's).
        own: model name -> ``(method, layer)`` of the study's own explanation.
        compared: model name -> the ``[method, layer]`` pairs ``explain.methods`` added.
    """
    out = []
    for name in sorted(models):
        arch, seed = models[name]["arch"], int(models[name]["seed"])
        out.append(Explanation(name, arch, seed, *own[name], own=True))
        for method, layer in compared.get(name, []):
            out.append(Explanation(name, arch, seed, method, layer, own=False))
    return out


def method_pair_table(
    sums: dict, explanations: list[Explanation], ci: float = 0.95, places=None
) -> pa.Table:
    """Mean AR between two explanations of one model, per model and pair.

    Args:
        sums: ``{(key_a, key_b): [Σ AR, Σ AR², n, ...]}`` as
            :func:`~citylens.analysis.reduce.ar_of_table` returns over tables whose
            ``model`` column holds :attr:`Explanation.key` (one model's at a time).
        explanations: The study's explanations.
        ci: Interval coverage.
        places: The number of test places resampled.

    Returns:
        A table with schema :data:`~citylens.tables.METHOD_PAIRS`.
    """
    of = {e.key: e for e in explanations}
    pairs = pair_table(sums, {k: e.arch for k, e in of.items()}, ci, places).to_pylist()
    rows = []
    for p in pairs:
        a, b = of[p["model_a"]], of[p["model_b"]]
        if a.model != b.model:
            raise ValueError(f"AR between methods of two models: {a.model}, {b.model}")
        if b.own:  # the study's own explanation first
            a, b = b, a
        rows.append(
            {
                "model": a.model,
                "arch": a.arch,
                "method_a": a.method,
                "layer_a": a.layer,
                "method_b": b.method,
                "layer_b": b.layer,
                **{k: p[k] for k in ("mean_ar", "std_ar", "images", "ci_low", "ci_high")},
                "n_places": p["n_places"],
            }
        )
    rows.sort(key=lambda r: (r["model"], r["method_a"], r["layer_a"], r["method_b"], r["layer_b"]))
    return pa.Table.from_pylist(rows, schema=METHOD_PAIRS)


def method_object_table(objects: pa.Table, explanations: list[Explanation]) -> pa.Table:
    """The objects table of every explanation, each row naming its method and layer.

    Args:
        objects: Rows of :data:`~citylens.tables.OBJECTS` whose ``model`` is an
            :attr:`Explanation.key` (``object_tables`` over sums keyed so).
        explanations: The study's explanations.

    Returns:
        A table with schema :data:`~citylens.tables.METHOD_OBJECTS`.
    """
    of = {e.key: e for e in explanations}
    rows = []
    for r in objects.to_pylist():
        e = of[r["model"]]
        rows.append({**r, "model": e.model, "method": e.method, "layer": e.layer})
    return pa.Table.from_pylist(rows, schema=METHOD_OBJECTS)


def _interval(idx, values: np.ndarray, n_boot: int, ci: float, seed: int):
    """Place-bootstrap intervals of the column means of ``values`` (n, k)."""
    if not n_boot:
        return np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    w = place_weights(idx, n_boot, seed)
    num, den = place_sums(idx, values), place_sums(idx, np.ones((len(values), 1)))
    return percentile_interval(ratio_samples(w, num, den), ci, idx.n_places)


def method_faithfulness_table(
    ablations: pa.Table,
    steps: tuple[float, ...],
    place_of: dict[str, str],
    explanations: list[Explanation],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pa.Table:
    """Deletion and insertion gains per (architecture, method, layer), and the best.

    For each architecture, every explanation's per-image gains (random order's deletion
    area − the explanation's; the explanation's insertion area − random's) over all of
    the architecture's models and explained test images, their means with
    place-clustered intervals (a place's images of every model resampled together), and
    each one's paired shortfall in deletion gain from the best one's, its interval at
    Bonferroni's coverage ``1 - (1 - ci) / (k - 1)`` for ``k`` explanations (the best is
    chosen on the same data). An architecture with one explanation is left out.

    Args:
        ablations: Rows of :data:`~citylens.tables.ABLATIONS`.
        steps: The curves' fractions of the image removed.
        place_of: image id -> place.
        explanations: The study's explanations.
        n_boot: Bootstrap resamples (0: no intervals).
        ci: Interval coverage.
        seed: Bootstrap seed.

    Returns:
        A table with schema :data:`~citylens.tables.METHOD_FAITHFULNESS`, best first
        within each architecture.
    """
    rows = []
    for arch in sorted({e.arch for e in explanations}):
        kinds = sorted(
            {(e.method, e.layer, e.own) for e in explanations if e.arch == arch},
            key=lambda k: (not k[2], k[0], k[1]),
        )
        if len(kinds) < 2:  # only the study's own: nothing to compare it with
            continue
        models = sorted({e.model for e in explanations if e.arch == arch})
        mine = ablations.filter(pc.is_in(ablations["model"], pa.array(models, pa.string())))
        gains, first = [], None
        for method, layer, own in kinds:
            order = "mask" if own else method_label(method, layer)
            a = curve_areas(mine, steps, order)
            if first is None:
                first = a
            elif not (
                np.array_equal(a["model"], first["model"])
                and np.array_equal(a["image_id"], first["image_id"])
            ):
                raise ValueError(f"{arch}: the curves of {order} cover other images")
            gains.append(
                np.stack(
                    [a["deletion_random"] - a["deletion"], a["insertion"] - a["insertion_random"]],
                    1,
                )
            )
        if first is None or not len(first["image_id"]):
            continue
        ids = first["image_id"].tolist()
        idx = place_index(first["city"].tolist(), [place_of[i] for i in ids])
        g = np.stack(gains, 1)  # (rows, explanations, 2)
        means = g.mean(0)
        best = int(np.argmax(means[:, 0]))
        behind = g[:, best : best + 1, 0] - g[:, :, 0]  # (rows, explanations)
        low, high = _interval(idx, g.reshape(len(g), -1), n_boot, ci, seed)
        low, high = low.reshape(-1, 2), high.reshape(-1, 2)
        # the best is chosen on the same data: its lead over each of the k - 1 others is
        # judged at Bonferroni's coverage, so "settled" holds for all of them at once
        family = 1 - (1 - ci) / (len(kinds) - 1)
        b_low, b_high = _interval(idx, behind, n_boot, family, seed)
        separated = b_low > 0
        others = [j for j in range(len(kinds)) if j != best]
        for j, (method, layer, own) in enumerate(kinds):
            is_best = j == best
            rows.append(
                {
                    "arch": arch,
                    "method": method,
                    "layer": layer,
                    "own": own,
                    "models": len(models),
                    "images": len(set(ids)),
                    "places": idx.n_places,
                    "deletion_gain": float(means[j, 0]),
                    "deletion_gain_low": float(low[j, 0]),
                    "deletion_gain_high": float(high[j, 0]),
                    "insertion_gain": float(means[j, 1]),
                    "insertion_gain_low": float(low[j, 1]),
                    "insertion_gain_high": float(high[j, 1]),
                    "best": is_best,
                    "behind_best": float(behind[:, j].mean()),
                    "behind_best_low": float(b_low[j]),
                    "behind_best_high": float(b_high[j]),
                    # the best: settled when its lead over every other one is
                    "separated": bool(
                        all(separated[k] for k in others) if is_best else separated[j]
                    ),
                }
            )
        rows[-len(kinds) :] = sorted(rows[-len(kinds) :], key=lambda r: not r["best"])
    return pa.Table.from_pylist(rows, schema=METHOD_FAITHFULNESS)


def untraced_explanations(ablations: pa.Table, explanations: list[Explanation]) -> list[str]:
    """The ``order`` of each explanation the ablations have no curves of, sorted.

    Empty when no image has curves at all (none could be ablated: e.g. no test image has
    a class map), where there is nothing to compare and the faithfulness table is empty;
    otherwise a missing explanation means the ablations predate ``explain.methods``.
    """
    traced = set(ablations["order"].drop_null().unique().to_pylist())
    return sorted({e.order for e in explanations} - traced) if traced else []


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (ties get average ranks).

    NaN with fewer than 3 values or a constant one.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``v``, ties sharing their average rank."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    uniq, inverse = np.unique(v, return_inverse=True)
    total = np.bincount(inverse, weights=ranks)
    return (total / np.bincount(inverse))[inverse]


def method_ranking_table(method_objects: pa.Table, causal: pa.Table, theta: float) -> pa.Table:
    """Per (model, method, layer, city): R_p's object ranking against the causal one.

    Over the city's objects that R_p selects (enough pixels inside explanations) and the
    causal check measured, Spearman's ρ between R_p and the causal effect, and whether
    R_p's top object is the one whose removal costs most.

    Args:
        method_objects: Rows of :data:`~citylens.tables.METHOD_OBJECTS`.
        causal: Rows of :data:`~citylens.tables.CAUSAL`.
        theta: The θ whose explanations are compared.

    Returns:
        A table with schema :data:`~citylens.tables.METHOD_RANKINGS`.
    """
    effect = {
        (r["model"], r["city"], r["class"]): r["effect"]
        for r in causal.select(["model", "city", "class", "effect"]).to_pylist()
        if r["effect"] is not None and not np.isnan(r["effect"])
    }
    groups: dict[tuple, list] = {}
    for r in method_objects.to_pylist():
        if not r["selected"] or abs(r["theta"] - theta) > 1e-6:
            continue
        e = effect.get((r["model"], r["city"], r["class"]))
        if e is not None and not np.isnan(r["r_p"]):
            key = (r["model"], r["arch"], r["method"], r["layer"], r["city"])
            groups.setdefault(key, []).append((r["class"], r["r_p"], e))
    rows = []
    for (model, arch, method, layer, city), objs in sorted(groups.items()):
        objs.sort()
        rp, eff = np.array([o[1] for o in objs]), np.array([o[2] for o in objs])
        rows.append(
            {
                "model": model,
                "arch": arch,
                "method": method,
                "layer": layer,
                "city": city,
                "theta": float(theta),
                "objects": len(objs),
                "spearman": spearman(rp, eff),
                "top_agrees": bool(np.argmax(rp) == np.argmax(eff)) if len(objs) > 1 else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=METHOD_RANKINGS)
