"""The page of ``citylens compare``: two studies' accuracy, AR and R_p^c side by side.

Pure: the frames of :mod:`citylens.analysis.compare` in, one self-contained HTML page out.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from citylens.report.html import Page

__all__ = ["change_lines", "compare_page"]


def _fmt(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.3f}"


def _change(r, value: str) -> str:
    interval = "" if math.isnan(r.change_low) else f" [{r.change_low:+.3f}, {r.change_high:+.3f}]"
    change = "–" if math.isnan(r.change) else f"{r.change:+.3f}"
    return (
        f"{_fmt(getattr(r, f'{value}_a'))} → {_fmt(getattr(r, f'{value}_b'))} "
        f"({change}{interval}; {r.verdict})"
    )


def change_lines(largest: pd.DataFrame) -> list[str]:
    """Per city, its objects whose R_p^c changed most, A → B with the change's interval."""
    lines = []
    for city, d in largest.groupby("city", sort=True):
        parts = [f"{r.name} {_change(r, 'r_p')}" for r in d.itertuples()]
        lines.append(f"{city}: " + "; ".join(parts))
    return lines


def _only(a: list[str], b: list[str]) -> str:
    out = [
        f"only in {side}: {', '.join(sorted(set(x) - set(y)))}"
        for side, x, y in (("A", a, b), ("B", b, a))
        if set(x) - set(y)
    ]
    return ("; " + "; ".join(out)) if out else ""


def compare_page(
    names: tuple[str, str],
    stores: tuple[str, str],
    cities: tuple[list[str], list[str]],
    models: tuple[list[str], list[str]],
    same_models: bool,
    theta: float | None,
    ci: float,
    sections: dict[str, pd.DataFrame],
) -> str:
    """The comparison page (HTML text; it loads nothing).

    Args:
        names: The two studies' names (A, B).
        stores: Their stores.
        cities: Their cities.
        models: Their models' names.
        same_models: Both use the same trained models.
        theta: The θ whose R_p^c is compared (None: no shared θ).
        ci: The intervals' coverage.
        sections: ``accuracy``, ``ar``, ``objects`` and ``largest`` (each absent when
            either study lacks its table): :mod:`citylens.analysis.compare`'s frames.
    """
    a, b = (html.escape(n) for n in names)
    page = Page(f"citylens — {names[0]} vs {names[1]}")
    shared = sorted(set(cities[0]) & set(cities[1]))
    noise = (
        "Both studies use the same trained models: the intervals are the image sampling's."
        if same_models
        else "The studies trained their own models: the intervals cover image sampling, "
        "and for R_p^c also the spread between each study's models; a change of one "
        "model's accuracy or of AR also holds training noise they cannot measure, so it "
        "is <i>not judged</i>."
    )
    page.p(
        f"A: <b>{a}</b> ({html.escape(stores[0])}); B: <b>{b}</b> "
        f"({html.escape(stores[1])}). Cities in both: {html.escape(', '.join(shared))}"
        + html.escape(_only(*cities))
        + f". Changes are B − A, with approximate {ci:.0%} intervals from the two "
        "studies' own (independent samples, a normal approximation of each interval); "
        f"<i>settled</i>: the change's interval excludes 0. {noise}"
        + (
            " The cities differ, so chance accuracy differs too."
            if set(cities[0]) != set(cities[1])
            else ""
        ),
        "summary",
    )
    missing = (
        "Not in both studies' analysis tables (one model makes no AR pairs, a study "
        "without class maps no R_p, and a store from an older citylens may lack a table)."
    )
    page.h2("Accuracy on the explained test images", "accuracy")
    if "accuracy" in sections:
        for r in sections["accuracy"].itertuples():
            page.p(html.escape(f"{r.model}: {_change(r, 'acc')}"))
        only = _only(*models).lstrip("; ")
        if only:
            page.p(html.escape(f"Models {only}."), "note")
        page.table(sections["accuracy"])
    else:
        page.p(missing, "note")
    page.h2("Average residual (AR) by kind", "ar")
    page.table(sections["ar"]) if "ar" in sections else page.p(missing, "note")
    title = "R_p^c, averaged over the models" + (f" (θ = {theta:g})" if theta is not None else "")
    page.h2(title, "objects")
    if "objects" in sections:
        for line in change_lines(sections["largest"]):
            page.p(html.escape(line))
        objects = sections["objects"]
        page.table(objects, summary=f"Every object in both studies ({len(objects)} rows)")
    else:
        page.p(missing + " Or no θ in common.", "note")
    return page.render()
