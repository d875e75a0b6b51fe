"""The claims a report makes, each with an interval and a test.

All statistics come from the same place resamples (one ``(B, P)`` weight matrix per
study, :mod:`citylens.analysis.bootstrap`), so each difference here is paired:

- **AR by kind**: the mean over model pairs of each pair's mean AR, for pairs of two
  architectures and pairs of two seeds of one architecture, and the difference
  ``architectures − seeds`` (the paper's claim that architectures disagree more).
- **R_p^c averaged over models** (``scope = "models"``) and over the seeds of one
  architecture (``scope = <arch>``), with the spread across the models averaged.
- **Distinctive objects**: for each object selected in a city (its mean pixels inside
  explanations, averaged over models, above the threshold), ``diff`` = the city's
  averaged R_p minus the highest averaged R_p of any other city where the object
  occurs; an object no other city has is compared with the share of the city's pixels
  that explanations cover at all (what R_p would be if explanations ignored objects).
  Benjamini–Hochberg over every object tested; an object *passes* when ``diff > 0``
  and its q-value is at most ``alpha``.
- **Top objects per model**: the object with the highest R_p among those selected, the
  runner-up, and whether the top one is *settled* (the interval of their paired
  difference excludes 0).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylens.analysis.bootstrap import percentile_interval, safe_ratio, two_sided_p
from citylens.analysis.significance import bh_q_values
from citylens.tables import AR_KINDS, DISTINCTIVE, OBJECT_MEANS, TOP_SETTLED

__all__ = ["ar_kinds", "distinctive_objects", "object_means", "top_settled"]


def _interval(samples: np.ndarray | None, ci: float, n_units=None) -> tuple[float, float]:
    if samples is None:
        return float("nan"), float("nan")
    low, high = percentile_interval(samples, ci, n_units)
    return float(low), float(high)


def _p(samples: np.ndarray | None, n_units=None, estimate=None) -> float:
    if samples is None or np.all(np.isnan(samples)):
        return float("nan")
    return float(two_sided_p(samples, n_units, estimate))


def ar_kinds(sums: dict, arch_of: dict[str, str], ci: float = 0.95, places=None) -> pa.Table:
    """Mean AR of architecture pairs and of seed pairs, and their paired difference.

    Args:
        sums: ``{(m1, m2): [Σ AR, Σ AR², n, Σ_w AR (B,), Σ_w n (B,)]}`` (the resampled
            entries may be missing: then no intervals).
        arch_of: model -> architecture.
        ci: Interval coverage.
        places: Test places resampled (``n_places``).

    Returns:
        A table with schema :data:`~citylens.tables.AR_KINDS`: a row per kind present
        and, when both are, a row ``architectures − seeds`` with its p-value.
    """
    point: dict[str, list[float]] = {"architectures": [], "seeds": []}
    boot: dict[str, list[np.ndarray]] = {"architectures": [], "seeds": []}
    for (a, b), values in sorted(sums.items()):
        kind = "seeds" if arch_of[a] == arch_of[b] else "architectures"
        point[kind].append(values[0] / values[2])
        if len(values) > 3 and len(values[3]):
            boot[kind].append(safe_ratio(values[3], values[4]))
    rows, samples = [], {}
    for kind in ("architectures", "seeds"):
        if not point[kind]:
            continue
        samples[kind] = np.mean(boot[kind], axis=0) if boot[kind] else None
        low, high = _interval(samples[kind], ci, places)
        rows.append(
            {
                "kind": kind,
                "pairs": len(point[kind]),
                "mean_ar": float(np.mean(point[kind])),
                "ci_low": low,
                "ci_high": high,
                "p_value": None,
                "n_places": places,
            }
        )
    if len(rows) == 2:
        d = samples["architectures"] - samples["seeds"] if samples["seeds"] is not None else None
        low, high = _interval(d, ci, places)
        rows.append(
            {
                "kind": "architectures - seeds",
                "pairs": rows[0]["pairs"] + rows[1]["pairs"],
                "mean_ar": rows[0]["mean_ar"] - rows[1]["mean_ar"],
                "ci_low": low,
                "ci_high": high,
                "p_value": (
                    _p(d, places, rows[0]["mean_ar"] - rows[1]["mean_ar"])
                    if d is not None
                    else None
                ),
                "n_places": places,
            }
        )
    return pa.Table.from_pylist(rows, schema=AR_KINDS)


def _scopes(models: list[str], arch_of: dict[str, str]) -> dict[str, list[str]]:
    """``models`` (all), then each architecture with more than one seed."""
    out = {"models": sorted(models)}
    for arch in sorted({arch_of[m] for m in models}):
        members = sorted(m for m in models if arch_of[m] == arch)
        if len(members) > 1:
            out[arch] = members
    return out


def _averaged(totals: dict, members: list[str], city: str, theta: float):
    """Mean over models of R_p (C,), its sd, mean pixels in explanations, and samples."""
    keys = [(m, city, theta) for m in members if (m, city, theta) in totals]
    if not keys:
        return None
    r = np.stack([safe_ratio(totals[k][0], totals[k][1]) for k in keys])
    in_mask = np.mean([np.asarray(totals[k][0], np.float64) / totals[k][2] for k in keys], 0)
    in_image = np.asarray(totals[keys[0]][1], np.float64) / totals[keys[0]][2]
    has_boot = all(len(totals[k]) > 3 and len(totals[k][3]) for k in keys)
    boot = (
        np.mean([safe_ratio(totals[k][3], totals[k][4]) for k in keys], axis=0)
        if has_boot
        else None
    )
    # the share of the city's pixels inside explanations, whatever the object
    cover = np.mean([totals[k][0].sum() / max(totals[k][1].sum(), 1) for k in keys])
    cover_boot = (
        np.mean([safe_ratio(totals[k][3].sum(1), totals[k][4].sum(1)) for k in keys], axis=0)
        if has_boot
        else None
    )
    sd = r.std(axis=0, ddof=1) if len(keys) > 1 else np.full(r.shape[1], np.nan)
    return {
        "r_p": r.mean(0),
        "sd": sd,
        "in_mask": in_mask,
        "in_image": in_image,
        "boot": boot,
        "cover": cover,
        "cover_boot": cover_boot,
        "models": len(keys),
    }


def object_means(
    totals: dict,
    names: tuple[str, ...],
    arch_of: dict[str, str],
    min_mean_pixels: float,
    ci: float = 0.95,
    places_of_city: dict[str, int] | None = None,
) -> pa.Table:
    """R_p^c averaged over all models and over the seeds of each architecture.

    Args:
        totals: ``{(model, city, θ): [Σ M, Σ N, images, Σ_w M, Σ_w N, Σ_w images]}``
            (the resampled entries may be missing: then no intervals).
        names: The vocabulary's class names.
        arch_of: model -> architecture.
        min_mean_pixels: Selection threshold on the averaged mean pixels inside
            explanations.
        ci: Interval coverage.
        places_of_city: city -> its test places.

    Returns:
        A table with schema :data:`~citylens.tables.OBJECT_MEANS`.
    """
    models = sorted({k[0] for k in totals})
    rows = []
    for scope, members in _scopes(models, arch_of).items():
        for city, theta in sorted({(k[1], k[2]) for k in totals}):
            avg = _averaged(totals, members, city, theta)
            if avg is None:
                continue
            n_units = (places_of_city or {}).get(city)
            low, high = (
                percentile_interval(avg["boot"], ci, n_units)
                if avg["boot"] is not None
                else (np.full(len(names), np.nan),) * 2
            )
            for p in range(1, len(names)):
                if avg["in_image"][p] == 0:
                    continue
                rows.append(
                    {
                        "scope": scope,
                        "city": city,
                        "theta": theta,
                        "class": p,
                        "name": names[p],
                        "models": avg["models"],
                        "r_p": float(avg["r_p"][p]),
                        "sd": float(avg["sd"][p]),
                        "ci_low": float(low[p]),
                        "ci_high": float(high[p]),
                        "mean_in_mask": float(avg["in_mask"][p]),
                        "selected": bool(avg["in_mask"][p] > min_mean_pixels),
                        "n_places": (places_of_city or {}).get(city),
                    }
                )
    return pa.Table.from_pylist(rows, schema=OBJECT_MEANS)


def distinctive_objects(
    totals: dict,
    names: tuple[str, ...],
    min_mean_pixels: float,
    ci: float = 0.95,
    alpha: float = 0.05,
    places_of_city: dict[str, int] | None = None,
) -> pa.Table:
    """Is each selected object's R_p^c (averaged over models) above the other cities'?

    Args:
        totals: As for :func:`object_means`.
        names: The vocabulary's class names.
        min_mean_pixels: Which objects are tested (averaged mean pixels inside
            explanations above it).
        ci: Interval coverage.
        alpha: The false discovery rate the ``passes`` column controls.
        places_of_city: city -> its test places; the intervals are expanded for the
            fewest places of the cities compared (None: plain percentile intervals).

    Returns:
        A table with schema :data:`~citylens.tables.DISTINCTIVE`, one row per tested
        (city, θ, object), sorted by city, θ and diff (largest first).
    """
    models = sorted({k[0] for k in totals})
    rows = []
    for theta in sorted({k[2] for k in totals}):
        cities = sorted({k[1] for k in totals if k[2] == theta})
        avg = {c: _averaged(totals, models, c, theta) for c in cities}
        for city in cities:
            mine = avg[city]
            for p in np.flatnonzero(mine["in_mask"] > min_mean_pixels):
                if p == 0:
                    continue
                others = [c for c in cities if c != city and avg[c]["in_image"][p] > 0]
                if others:
                    best = max(others, key=lambda c: avg[c]["r_p"][p])
                    baseline, against = avg[best]["r_p"][p], best
                    base_boot = (
                        np.nanmax(np.stack([avg[c]["boot"][:, p] for c in others]), axis=0)
                        if mine["boot"] is not None
                        else None
                    )
                else:
                    baseline, against = mine["cover"], None
                    base_boot = mine["cover_boot"]
                diff = float(mine["r_p"][p] - baseline)
                samples = mine["boot"][:, p] - base_boot if mine["boot"] is not None else None
                units = None
                if places_of_city:
                    units = min(places_of_city[c] for c in [city, *others])
                low, high = _interval(samples, ci, units)
                p_value = _p(samples, units, diff)
                rows.append(
                    {
                        "city": city,
                        "theta": theta,
                        "class": int(p),
                        "name": names[p],
                        "r_p": float(mine["r_p"][p]),
                        "against": against,
                        "baseline": float(baseline),
                        "only_here": against is None,
                        "diff": diff,
                        "ci_low": low,
                        "ci_high": high,
                        "p_value": p_value,
                    }
                )
    q = bh_q_values(np.array([r["p_value"] for r in rows], np.float64))
    for r, qv in zip(rows, q):
        r["q_value"] = float(qv)
        r["passes"] = bool(r["diff"] > 0 and qv <= alpha)
    rows.sort(key=lambda r: (r["city"], r["theta"], -r["diff"], r["class"]))
    return pa.Table.from_pylist(rows, schema=DISTINCTIVE)


def top_settled(
    totals: dict,
    names: tuple[str, ...],
    min_mean_pixels: float,
    ci: float = 0.95,
    places_of_city: dict[str, int] | None = None,
) -> pa.Table:
    """Per (model, city, θ): the top object by R_p, the runner-up, and is it settled.

    Objects are ranked among those selected; the top one is settled when the interval
    of its paired difference with the runner-up excludes 0.

    Args:
        totals: As for :func:`object_means`.
        names: The vocabulary's class names.
        min_mean_pixels: An object is ranked when its mean pixels inside the model's
            explanations exceed this.
        ci: Interval coverage.
        places_of_city: city -> its test places (expanded intervals; None: plain).

    Returns:
        A table with schema :data:`~citylens.tables.TOP_SETTLED` (no row where fewer
        than one object is selected; a lone selected object is settled by default).
    """
    rows = []
    for (model, city, theta), sums in sorted(totals.items()):
        m, n, count = sums[:3]
        r = safe_ratio(m, n)
        chosen = [p for p in range(1, len(names)) if m[p] / count > min_mean_pixels and n[p] > 0]
        if not chosen:
            continue
        ranked = sorted(chosen, key=lambda p: (-r[p], p))
        top = ranked[0]
        second = ranked[1] if len(ranked) > 1 else None
        low = high = float("nan")
        if second is not None and len(sums) > 3 and len(sums[3]):
            boot = safe_ratio(sums[3], sums[4])
            units = (places_of_city or {}).get(city)
            low, high = _interval(boot[:, top] - boot[:, second], ci, units)
        settled = second is None or (low > 0)
        rows.append(
            {
                "model": model,
                "city": city,
                "theta": theta,
                "top_class": int(top),
                "top_name": names[top],
                "top_r_p": float(r[top]),
                "second_class": int(second) if second is not None else None,
                "second_name": names[second] if second is not None else None,
                "second_r_p": float(r[second]) if second is not None else None,
                "diff_low": low,
                "diff_high": high,
                "settled": bool(settled),
            }
        )
    return pa.Table.from_pylist(rows, schema=TOP_SETTLED)
