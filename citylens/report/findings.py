"""The report's findings, written from the numbers and their tests.

Each function turns one analyze table into sentences that claim only what its interval
or test supports: a difference whose interval covers 0 is "not significant", an object
that does not pass the Benjamini–Hochberg test is not named as distinctive, and a top
object whose lead over the runner-up is not sure is "not settled". Text is plain (the
page escapes it).
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = [
    "accuracy_line",
    "ar_claim",
    "distinctive_lines",
    "fmt_interval",
    "passing",
    "top_lines",
]


def fmt_interval(low: float, high: float, digits: int = 2) -> str:
    """``[low, high]``, or an empty string when the interval is undefined."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    return f" [{low:.{digits}f}, {high:.{digits}f}]"


def _p(p: float, name: str = "p") -> str:
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {p:.3f}"


def ar_claim(kinds: pd.DataFrame | None, ci: float = 0.95) -> str | None:
    """The paper's claim — architectures disagree more than seeds — as the test found it.

    Args:
        kinds: The ``ar_kinds`` table (None or without a difference row: no claim).
        ci: The intervals' coverage (for the sentence).

    Returns:
        One sentence, or None.
    """
    if kinds is None or not len(kinds):
        return None
    rows = kinds.set_index("kind")
    if "architectures - seeds" not in rows.index:
        return None
    a, s, d = (rows.loc[k] for k in ("architectures", "seeds", "architectures - seeds"))
    head = (
        f"Mean AR between architectures {a.mean_ar:.3f}{fmt_interval(a.ci_low, a.ci_high, 3)}, "
        f"between seeds of one architecture {s.mean_ar:.3f}"
        f"{fmt_interval(s.ci_low, s.ci_high, 3)}; difference {d.mean_ar:+.3f}"
        f"{fmt_interval(d.ci_low, d.ci_high, 3)}"
    )
    if math.isnan(d.ci_low):
        return head + " (no interval: the bootstrap is off)."
    level = f"{round(100 * ci)} %"
    if d.ci_low > 0:
        return head + f", {_p(d.p_value)}: architectures disagree more than seeds ({level})."
    if d.ci_high < 0:
        return head + f", {_p(d.p_value)}: seeds disagree more than architectures ({level})."
    return (
        head + f", {_p(d.p_value)}: not significant — the {level} interval covers 0, so this "
        "study cannot say whether architectures disagree more than seeds."
    )


def passing(distinctive: pd.DataFrame | None, theta: float) -> dict[str, list[str]]:
    """City -> the objects that pass the distinctive-object test at θ, largest diff first."""
    if distinctive is None or not len(distinctive):
        return {}
    d = distinctive[(distinctive.theta.round(6) == round(theta, 6)) & distinctive.passes]
    return {c: g.sort_values("diff", ascending=False).name.tolist() for c, g in d.groupby("city")}


def distinctive_lines(distinctive: pd.DataFrame | None, theta: float) -> list[str]:
    """Per city: the objects whose R_p^c (mean over models) is surely above the others'.

    Args:
        distinctive: The ``distinctive`` table.
        theta: The θ the page ranks objects at.

    Returns:
        Sentences; the first says how many objects were tested and how many pass.
    """
    if distinctive is None or not len(distinctive):
        return []
    d = distinctive[distinctive.theta.round(6) == round(theta, 6)]
    lines = [
        f"{len(d)} selected (city, object) pairs tested at θ = {theta}; {int(d.passes.sum())} "
        "pass (R_p above every other city's — or, for an object no other city has, above "
        "the share of the city's pixels the explanations cover — at a false discovery rate "
        "of 5 %, Benjamini–Hochberg)."
    ]
    for city, g in d.groupby("city"):
        ok = g[g.passes].sort_values("diff", ascending=False)
        if len(ok):
            parts = [
                f"{r.name} (R_p {r.r_p:.2f}, {r.diff:+.2f}{fmt_interval(r.ci_low, r.ci_high)} "
                f"over {r.against if isinstance(r.against, str) else 'coverage'}, "
                f"{_p(r.q_value, 'q')})"
                for r in ok.itertuples()
            ]
            lines.append(f"{city}: " + "; ".join(parts) + ".")
        else:
            lines.append(f"{city}: no object passes; none is named as distinctive.")
    return lines


def top_lines(settled: pd.DataFrame | None, theta: float) -> list[str]:
    """Per city: how many models agree on the top object, and which rankings are unsure.

    Args:
        settled: The ``top_settled`` table.
        theta: The θ the page ranks objects at.

    Returns:
        Sentences, one per city.
    """
    if settled is None or not len(settled):
        return []
    d = settled[settled.theta.round(6) == round(theta, 6)]
    lines = []
    for city, g in d.groupby("city"):
        counts = g.top_name.value_counts()
        top, n = counts.index[0], int(counts.iloc[0])
        line = f"{city}: {n} of {len(g)} models put {top} first"
        unsure = g[~g.settled]
        if len(unsure):
            line += (
                "; not settled for "
                + ", ".join(
                    f"{r.model} ({r.top_name} {r.top_r_p:.2f} vs {r.second_name} "
                    f"{r.second_r_p:.2f})"
                    for r in unsure.itertuples()
                )
                + ": their top object's lead over the runner-up is within the interval"
            )
        lines.append(line + ".")
    return lines


def accuracy_line(acc: pd.DataFrame | None) -> str | None:
    """Each model's test accuracy with its interval."""
    if acc is None or "acc" not in acc or acc.acc.isna().all():
        return None
    return "Test accuracy (explained test images): " + ", ".join(
        f"{r.model} {r.acc:.2f}{fmt_interval(r.ci_low, r.ci_high)}"
        for r in acc.itertuples()
        if not pd.isna(r.acc)
    )
