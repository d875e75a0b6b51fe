"""The report's causal section: which objects the models *use*, not just cover.

Pure: pandas frames of the analyze stage's causal, faithfulness and objects tables in,
sentences and small frames out (the page draws them).
"""

from __future__ import annotations

import html

import pandas as pd

from citylens.report.figures import causal_bars, faithfulness_curves, image_grid

__all__ = [
    "absence_lines",
    "coverage_vs_use",
    "decisive_lines",
    "draw_causal",
    "large_region_lines",
    "removal_pictures",
]


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


def large_region_lines(causal: pd.DataFrame, input_size: int, share: float = 0.1) -> list[str]:
    """Objects that cost more than their control but cover over ``share`` of the image.

    Filling a region that large makes an image no model saw in training (a street
    without its road), and its control — as many pixels elsewhere — breaks the scene
    less; such an effect may be the fill's, not the object's. The report says so.
    """
    if "pixels" not in causal:
        return []
    d = causal[(causal.ci_low > 0) & (causal.pixels > share * input_size**2)]
    lines = []
    for (city, name), g in d.groupby(["city", "name"], sort=True):
        pct = 100 * g.pixels.mean() / input_size**2
        lines.append(
            f"{city} · {name}: costs {len(g)} model(s) more than its control, but covers "
            f"{pct:.0f} % of the image — a fill that large is itself a change the models "
            "never saw; read this effect with care."
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


def removal_pictures(examples: pd.DataFrame, names, assets, fill: str, colors) -> dict | None:
    """Rows of (image, object removed) with what the model said, for :func:`image_grid`.

    Returns:
        ``image_grid``'s keyword arguments, or None when no example could be pictured.
    """
    if not len(examples):
        return None
    assets.load_labels(set(examples.image_id))
    tiles, labels, row_colors = [], [], []
    for r in examples.to_dict("records"):
        got = assets.removed(r["image_id"], int(r["class"]), fill)
        if got is None:
            continue
        control = "" if pd.isna(r["prob_control"]) else f", control {r['prob_control']:.2f}"
        tiles.append(list(got))
        labels.append(
            f"{r['city']} · {names[int(r['class'])]}\n"
            f"P {r['prob']:.2f} → {r['prob_removed']:.2f}{control}"
        )
        row_colors.append(colors.get(r["city"], "k"))
    if not tiles:
        return None
    return {
        "tiles": tiles,
        "row_labels": labels,
        "col_labels": ["image", f"object removed ({fill})"],
        "title": f"Removing each city's most decisive object ({examples.model.iloc[0]})",
        "row_colors": row_colors,
    }


def draw_causal(out, t, s, assets, colors) -> None:
    """The section "Does the object decide?" onto the page under construction ``out``.

    Args:
        out: The page and its files (:class:`citylens.report.page._Output`).
        t: The report's tables (:class:`citylens.report.page.ReportTables`): causal,
            causal_examples, faithfulness, curves, objects, cities, names.
        s: The report's settings (θ of R_p's selection, the fill).
        assets: Images and class maps on demand (:class:`citylens.report.page.Assets`).
        colors: city -> colour.
    """
    causal, faithfulness = t.causal, t.faithfulness
    out.page.h2("Does the object decide? (removal check)", "causal")
    if causal is None or not len(causal):
        out.page.p("No ablations: run the ablate stage.", "note")
        return
    out.page.p(
        f"Each object was removed from each test image (fill: {html.escape(s.fill)}) and "
        "the model run again; its <i>effect</i> is the drop of the true city's probability "
        "minus the drop when as many pixels are removed elsewhere (the control). "
        "Intervals resample places, not views. A fill can itself be a cue the model never "
        "saw in training, most of all where it replaces a large part of the image.",
        "note",
    )
    out.figure("causal", causal_bars(causal, colors), "what removing each object costs")
    for line in decisive_lines(causal, t.cities) + absence_lines(causal, t.cities):
        out.page.p(html.escape(line))
    for line in large_region_lines(causal, s.input_size):
        out.page.p(html.escape(line), "note")
    unused, uncovered = coverage_vs_use(causal, t.objects, s.theta)
    out.table("covered_not_used", unused, f"Covered but not used: {len(unused)} rows")
    out.table("used_not_covered", uncovered, f"Used but not covered: {len(uncovered)} rows")
    out.files["causal.csv"] = causal.to_csv(index=False).encode()
    ex = t.causal_examples
    grid = removal_pictures(ex, t.names, assets, s.fill, colors) if ex is not None else None
    if grid:
        out.figure("causal_examples", image_grid(**grid), "images before and after removal")
        out.page.p(
            "The pictures redo the fill at the page's size from the segmenter's class "
            "map; the probabilities are the ones the ablate stage measured.",
            "note",
        )
    if faithfulness is not None and len(faithfulness):
        out.page.p(
            "Faithfulness of the explanations: the area under the deletion curve (pixels "
            "removed in the order of mask_norm) against a random order; a positive gain "
            "means the explanation finds what the model needs.",
            "note",
        )
        if t.curves is not None and len(t.curves):
            out.figure("curves", faithfulness_curves(t.curves), "deletion and insertion curves")
        out.table("faithfulness", faithfulness)
