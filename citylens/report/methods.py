"""The report's "Methods compared" section (``explain.methods``): which explanation to trust.

Pure: the analyze stage's method tables in, sentences, small frames and one figure out.
"""

from __future__ import annotations

import html
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["draw_methods", "faithful_lines", "gain_bars", "ranking_summary", "top_by_method"]


def _g(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _interval(low: float, high: float) -> str:
    if any(v is None or math.isnan(v) for v in (low, high)):
        return ""
    return f" [{_g(low)}, {_g(high)}]"


def _name(r) -> str:
    own = " (the study's own)" if r.own else ""
    return f"{r.method} at {r.layer}{own}"


def faithful_lines(faithfulness: pd.DataFrame) -> list[str]:
    """Per architecture: its most faithful explanation and whether its lead is settled.

    Args:
        faithfulness: Rows of METHOD_FAITHFULNESS (best first within an architecture).
    """
    lines = []
    for arch, d in faithfulness.groupby("arch", sort=True):
        best = d[d.best].iloc[0]
        rest = d[~d.best].sort_values("deletion_gain", ascending=False)
        gain = _interval(best.deletion_gain_low, best.deletion_gain_high)
        head = (
            f"{arch}: the most faithful explanation by deletion gain is {_name(best)}, "
            f"gain {_g(best.deletion_gain)}{gain}"
        )
        if best.deletion_gain_low is not None and best.deletion_gain_low <= 0:
            head += " (its interval does not exclude 0: not shown better than a random order)"
        if not len(rest):
            lines.append(head + ".")
            continue
        r = rest.iloc[0]
        lead = (
            f"; its lead over the runner-up, {_name(r)}, is {_g(r.behind_best)}"
            f"{_interval(r.behind_best_low, r.behind_best_high)}"
        )
        verdict = (
            ": settled on this data (its lead over every other explanation has an "
            "interval above 0)."
            if best.separated
            else ": not settled on this data (the interval includes 0)."
        )
        by_insertion = d.sort_values("insertion_gain", ascending=False).iloc[0]
        if (by_insertion.method, by_insertion.layer) != (best.method, best.layer):
            verdict += (
                f" By insertion gain {_name(by_insertion)} leads instead "
                f"({_g(by_insertion.insertion_gain)}"
                f"{_interval(by_insertion.insertion_gain_low, by_insertion.insertion_gain_high)})."
            )
        lines.append(head + lead + verdict)
    return lines


def gain_bars(faithfulness: pd.DataFrame) -> Figure:
    """Deletion and insertion gains per explanation, one panel per architecture."""
    archs = sorted(faithfulness.arch.unique())
    fig, axes = plt.subplots(
        1, len(archs), figsize=(4.2 * len(archs), 2.8), layout="constrained", squeeze=False
    )
    for ax, arch in zip(axes.flat, archs):
        d = faithfulness[faithfulness.arch == arch].sort_values(["own", "method", "layer"])
        labels = [f"{m}@{la}" + (" *" if o else "") for m, la, o in zip(d.method, d.layer, d.own)]
        y = np.arange(len(d))
        for k, (col, color) in enumerate(
            (("deletion_gain", "tab:red"), ("insertion_gain", "tab:blue"))
        ):
            mean = d[col].to_numpy()
            err = np.stack([mean - d[f"{col}_low"].to_numpy(), d[f"{col}_high"].to_numpy() - mean])
            err = np.where(np.isnan(err), 0, err)
            ax.barh(y + (k - 0.5) * 0.38, mean, 0.38, xerr=err, color=color, label=col[:-5])
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_title(arch, fontsize=9)
        ax.set_xlabel("gain over a random order")
    axes[0, 0].legend(fontsize=7)
    return fig


def ranking_summary(rankings: pd.DataFrame) -> pd.DataFrame:
    """Per (architecture, method, layer): mean Spearman ρ with the causal ranking."""
    g = rankings.groupby(["arch", "method", "layer"], sort=True)
    return g.agg(
        cities=("city", "nunique"),
        mean_spearman=("spearman", "mean"),
        top_agrees=("top_agrees", lambda s: s.dropna().mean() if s.notna().any() else np.nan),
    ).reset_index()


def top_by_method(objects: pd.DataFrame, theta: float) -> pd.DataFrame:
    """Each (city, model)'s top selected object by R_p under each explanation."""
    d = objects[(objects.theta - theta).abs() < 1e-6]
    d = d[d.selected].sort_values("r_p", ascending=False)
    d = d.drop_duplicates(["city", "model", "method", "layer"])
    d = d.assign(explanation=d.method + "@" + d.layer)
    table = d.pivot_table(
        index=["city", "model"], columns="explanation", values="name", aggfunc="first"
    )
    return table.reset_index().rename_axis(columns=None)


def draw_methods(out, t, s) -> None:
    """The section "Methods compared" onto ``out`` (nothing without ``explain.methods``).

    Args:
        out: The page and its files (:class:`citylens.report.page._Output`).
        t: The report's tables: method_faithfulness, method_pairs, method_objects,
            method_rankings.
        s: The report's settings (θ).
    """
    f, pairs = t.method_faithfulness, t.method_pairs
    if pairs is None and f is None:  # explain.methods was not set
        return
    out.page.h2("Methods compared (which explanation is faithful?)", "methods")
    if f is None or not len(f):
        out.page.p(
            "No test image could be ablated (no class maps?), so no explanation's "
            "faithfulness was measured; the explanations are compared by AR only.",
            "note",
        )
    else:
        out.page.p(
            "Each model was also explained with the methods and layers of "
            "<code>explain.methods</code>. An explanation is faithful when removing the "
            "pixels it ranks first costs the model more than removing pixels in a random "
            "order (deletion gain), and restoring them first gives back more (insertion "
            "gain). Gains pool every model of the architecture over the test images; "
            "intervals resample places; the lead of the best is the paired difference over "
            "the same images, its interval widened (Bonferroni) for the number of "
            "explanations it was chosen from. The study's own explanation is marked *.",
            "note",
        )
        for line in faithful_lines(f):
            out.page.p(html.escape(line))
        out.figure("method_gains", gain_bars(f), "deletion and insertion gains per explanation")
        out.table("method_faithfulness", f)
    if t.method_rankings is not None and len(t.method_rankings):
        out.page.p(
            "Agreement of R_p's object ranking with the removal check's ranking by effect "
            "(Spearman's ρ per model and city over the objects both rank; top_agrees: the "
            "share of (model, city) where R_p's top object is the one whose removal costs "
            "most).",
            "note",
        )
        out.table("method_rankings", ranking_summary(t.method_rankings))
    if t.method_objects is not None and len(t.method_objects):
        top = top_by_method(t.method_objects, s.theta)
        out.table("method_top_objects", top, f"Top object by R_p per explanation ({len(top)} rows)")
    if t.method_pairs is not None and len(t.method_pairs):
        out.table(
            "method_pairs", t.method_pairs, f"AR between methods ({len(t.method_pairs)} pairs)"
        )
