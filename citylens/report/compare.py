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
    verdict = "settled" if r.settled else "within noise"
    return (
        f"{_fmt(getattr(r, f'{value}_a'))} → {_fmt(getattr(r, f'{value}_b'))} "
        f"({r.change:+.3f}{interval}; {verdict})"
    )


def change_lines(largest: pd.DataFrame) -> list[str]:
    """Per city, its objects whose R_p^c changed most, A → B with the change's interval."""
    lines = []
    for city, d in largest.groupby("city", sort=True):
        parts = [f"{r.name} {_change(r, 'r_p')}" for r in d.itertuples()]
        lines.append(f"{city}: " + "; ".join(parts))
    return lines


def compare_page(
    names: tuple[str, str],
    stores: tuple[str, str],
    cities: tuple[list[str], list[str]],
    theta: float,
    ci: float,
    accuracy: pd.DataFrame,
    ar: pd.DataFrame,
    objects: pd.DataFrame,
    largest: pd.DataFrame,
) -> str:
    """The comparison page (HTML text; it loads nothing).

    Args:
        names: The two studies' names (A, B).
        stores: Their stores.
        cities: Their cities.
        theta: The θ whose R_p^c is compared.
        ci: The intervals' coverage.
        accuracy: :func:`~citylens.analysis.compare.accuracy_change`.
        ar: :func:`~citylens.analysis.compare.ar_change`.
        objects: :func:`~citylens.analysis.compare.object_change`.
        largest: :func:`~citylens.analysis.compare.largest_changes` of ``objects``.
    """
    a, b = (html.escape(n) for n in names)
    page = Page(f"citylens — {names[0]} vs {names[1]}")
    shared = sorted(set(cities[0]) & set(cities[1]))
    only = [sorted(set(cities[i]) - set(cities[1 - i])) for i in (0, 1)]
    page.p(
        f"A: <b>{a}</b> ({html.escape(stores[0])}); B: <b>{b}</b> "
        f"({html.escape(stores[1])}). Cities in both: {html.escape(', '.join(shared))}"
        + "".join(
            f"; only in {side}: {html.escape(', '.join(o))}" for side, o in zip("AB", only) if o
        )
        + f". Changes are B − A, with approximate {ci:.0%} intervals from the two "
        "studies' own (independent samples, a normal approximation of each interval); "
        "<i>settled</i>: the change's interval excludes 0.",
        "summary",
    )
    page.h2("Accuracy on the explained test images", "accuracy")
    for r in accuracy.itertuples():
        page.p(html.escape(f"{r.model}: {_change(r, 'acc')}"))
    page.table(accuracy)
    page.h2("Average residual (AR) by kind", "ar")
    page.table(ar)
    page.h2(f"R_p^c, averaged over the models (θ = {theta:g})", "objects")
    for line in change_lines(largest):
        page.p(html.escape(line))
    page.table(objects, summary=f"Every object in both studies ({len(objects)} rows)")
    return page.render()
