"""The report's "Where in the city" and "Leakage audit" sections.

Pure: the ingest record's ``near_train`` figures, the analyze stage's places table and
the baseline stage's table in; paragraphs, maps, a table and ``places.geojson`` out.
"""

from __future__ import annotations

import html

import pandas as pd

from citylens.report.maps import by_place, place_maps, places_geojson

__all__ = ["baseline_lines", "draw_leakage", "draw_where", "near_train_line"]


def near_train_line(near: dict | None) -> str | None:
    """How close test images lie to train images of their city (ingest's figures)."""
    if not near or near.get("share") is None:
        return None
    r = near["radius_m"]
    line = (
        f"{near['share']:.1%} of the {near['test_located']} located test images have a "
        f"training image of their city within {r:g} m"
        + (
            f" (median distance {near['median_m']:.0f} m)"
            if near.get("median_m") is not None
            else ""
        )
    )
    if near.get("share_by_place") is not None:
        median = near.get("median_m_by_place")
        line += (
            f"; with the split by place it would be {near['share_by_place']:.1%}"
            + (f" (median {median:.0f} m)" if median is not None else "")
            + f": the split is blocked in {r:g}-m cells, so only spots on either side of a "
            "cell border (or places without coordinates) remain that close"
        )
    else:
        line += (
            ". The split is by place, not blocked: near-duplicate spots can straddle train "
            "and test (set split.block_m to group places into cells)"
        )
    return line + "."


def draw_where(out, t, s, colors: dict) -> None:
    """Maps per located city and ``places.geojson`` (nothing without coordinates)."""
    line = near_train_line(t.near_train)
    places = t.places
    if line is None and (places is None or not len(places)):
        return
    out.page.h2("Where in the city", "where")
    if line:
        out.page.p(html.escape(line))
    if places is None or not len(places):
        return
    pooled = by_place(places)
    out.files["places.geojson"] = places_geojson(places, t.place_ar).encode()
    out.page.p(
        "Each point is a located test place (the centre of its test images), in metres "
        f"from the city's centre; θ = {s.theta}. Left: the object with most pixels inside "
        "its explanations (the one most models name). Middle: places some model "
        "misclassified. Right: the place's share of the city's R_p of its most "
        "discriminative object (mean over models; the shares of a city's test places add "
        "up to its R_p, less the share of places without coordinates, which are not "
        "mapped). Every place's numbers per model are in places.geojson beside this "
        "page (WGS84; opens as it is in QGIS or kepler.gl).",
        "note",
    )
    for i, city in enumerate(t.cities):
        mine = pooled[pooled.city == city]
        if not len(mine):
            continue
        key = mine.key_name.dropna()
        fig = place_maps(mine, city, colors[city], key.iloc[0] if len(key) else None)
        out.figure(f"map_{i}", fig, f"maps of {city}'s test places")


def baseline_lines(baselines: pd.DataFrame | None, accuracy: pd.DataFrame | None) -> list[str]:
    """Each baseline's test accuracy beside the models', with the verdict."""
    if baselines is None or not len(baselines):
        return []
    models = None
    if accuracy is not None and "test_acc" in accuracy and accuracy.test_acc.notna().any():
        models = accuracy.test_acc.dropna()
    lines = []
    for r in baselines.itertuples():
        line = (
            f"{r.baseline} ({r.features} features): {r.accuracy:.2f} "
            f"[{r.ci_low:.2f}, {r.ci_high:.2f}] on {r.n_test} test images"
        )
        if isinstance(r.detail, str) and r.detail:
            line += f" ({r.detail})"
        if models is not None and r.baseline != "majority city":
            best = float(models.max())
            if r.ci_high >= best:
                line += (
                    f" — as good as the best model ({best:.2f}): what it sees may be what "
                    "the models use"
                )
            elif r.accuracy > r.chance + 0.05:
                line += (
                    f" — above chance ({r.chance:.2f}), below the models "
                    f"({models.min():.2f}–{best:.2f})"
                )
        lines.append(line + ".")
    return lines


def draw_leakage(out, t) -> None:
    """The leakage audit: trivial baselines' accuracy next to the models'."""
    lines = baseline_lines(t.baselines, t.accuracy)
    if not lines:
        return
    out.page.h2("Leakage audit", "leakage")
    out.page.p(
        "Logistic regressions fitted on the train split and scored on the test split, on "
        "what a CNN should not need to tell the cities apart: each image's mean colour, "
        "its colour histogram, and the metadata words and years in its file name (when "
        "the names carry any). Intervals resample test places. A baseline near the "
        "models' accuracy means the corpus itself separates the cities on that cue.",
        "note",
    )
    for line in lines:
        out.page.p(html.escape(line))
    out.table("baselines", t.baselines, "the leakage baselines")
