"""The report's causal section: which objects the models *use*, not just cover.

Pure: pandas frames of the analyze stage's causal, faithfulness and objects tables in,
sentences and small frames out (the page draws them).
"""

from __future__ import annotations

import html

import pandas as pd

from citylens.report.figures import causal_bars

__all__ = ["absence_lines", "coverage_vs_use", "decisive_lines", "draw_causal"]


def decisive_lines(causal: pd.DataFrame, cities: list[str]) -> list[str]:
    """Per city, the objects whose removal costs *every* model more than its control.

    An object counts for a model when its effect's interval lies above 0.
    """
    lines = []
    models = sorted(causal.model.unique())
    for city in cities:
        d = causal[causal.city == city]
        above = d[d.ci_low > 0].groupby("name").model.nunique()
        every = sorted(above[above == len(models)].index)
        if every:
            lines.append(
                f"{city}: removing {', '.join(every)} costs every model more than removing "
                "as many pixels elsewhere."
            )
    return lines


def absence_lines(causal: pd.DataFrame, cities: list[str]) -> list[str]:
    """Per (model, city) where no object's removal costs more than its control.

    Such a city is recognised by the *absence* of other cities' objects (or by what the
    segmenter does not label), and the report says so rather than hiding it.
    """
    lines = []
    for model in sorted(causal.model.unique()):
        for city in cities:
            d = causal[(causal.model == model) & (causal.city == city)]
            if len(d) and not (d.ci_low > 0).any():
                lines.append(
                    f"{model} · {city}: no object's removal costs more than its control — "
                    "recognised by absence (of other cities' objects) or by unlabelled cues."
                )
    return lines


def coverage_vs_use(
    causal: pd.DataFrame, objects: pd.DataFrame | None, theta: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Objects R_p selects whose removal costs no more than the control, and the reverse.

    Returns:
        ``(covered but not used, used but not covered)``: rows of model, city, object,
        R_p, effect and its interval.
    """
    cols = ["model", "city", "name", "r_p", "effect", "ci_low", "ci_high"]
    if objects is None or not len(objects):
        empty = pd.DataFrame(columns=cols)
        return empty, empty
    obj = objects[(objects.theta - theta).abs() < 1e-6][
        ["model", "city", "class", "r_p", "selected"]
    ]
    both = causal.merge(obj, on=["model", "city", "class"], how="left")
    both["selected"] = both.selected.fillna(False).astype(bool)
    covered_unused = both[both.selected & ~(both.ci_low > 0)]
    used_uncovered = both[~both.selected & (both.ci_low > 0)]
    return covered_unused[cols].reset_index(drop=True), used_uncovered[cols].reset_index(drop=True)


def draw_causal(out, causal, faithfulness, objects, cities: list[str], theta: float, colors):
    """The section "Does the object decide?" onto the page under construction ``out``.

    Args:
        out: The page and its files (:class:`citylens.report.page._Output`).
        causal: The causal table, or None.
        faithfulness: The faithfulness table, or None.
        objects: The objects table (R_p), or None.
        cities: The study's cities.
        theta: The θ at which R_p's selection is compared.
        colors: city -> colour.
    """
    out.page.h2("Does the object decide? (removal check)", "causal")
    if causal is None or not len(causal):
        out.page.p("No ablations: run the ablate stage.", "note")
        return
    out.page.p(
        "Each object was removed from each test image (filled from its surroundings) and "
        "the model run again; its <i>effect</i> is the drop of the true city's probability "
        "minus the drop when as many pixels are removed elsewhere (the control). "
        "Intervals resample places, not views.",
        "note",
    )
    out.figure("causal", causal_bars(causal, colors), "what removing each object costs")
    for line in decisive_lines(causal, cities) + absence_lines(causal, cities):
        out.page.p(html.escape(line))
    unused, uncovered = coverage_vs_use(causal, objects, theta)
    out.table("covered_not_used", unused, f"Covered but not used: {len(unused)} rows")
    out.table("used_not_covered", uncovered, f"Used but not covered: {len(uncovered)} rows")
    out.files["causal.csv"] = causal.to_csv(index=False).encode()
    if faithfulness is not None and len(faithfulness):
        out.page.p(
            "Faithfulness of the explanations: the area under the deletion curve (pixels "
            "removed in the order of mask_norm) against a random order; a positive gain "
            "means the explanation finds what the model needs.",
            "note",
        )
        out.table("faithfulness", faithfulness)
