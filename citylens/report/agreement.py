"""The report's "Agreement with annotations" section (thesis Figs 10–12).

Pure: the analyze stage's agreement, annotated and annotators tables and the embeddings
in; the curves, the annotators' κ and the t-SNE of the annotated explanations coloured
by the person's label beside the segmenter's out.
"""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from citylens.report.figures import agreement_curves
from citylens.report.findings import fmt_interval

__all__ = ["annotated_points", "draw_agreement", "tsne_by_annotation"]

_MODELS_SHOWN = 4  # models in the t-SNE by annotation (the ones with most annotations)


def _d_cam(emb: pd.DataFrame) -> pd.DataFrame:
    """The D_cam embeddings at the first PCA setting by name (the report's first t-SNE)."""
    d = emb[emb.descriptor == "d_cam"]
    return d[d.pca == sorted(d.pca.unique())[0]]


def annotated_points(annotated: pd.DataFrame, emb: pd.DataFrame) -> pd.DataFrame:
    """One point per annotated (model, image): its t-SNE position and both labels.

    The person's label is the main label most annotators gave (ties: the first
    annotator's in name order; -1 for "none / unclear"); the segmenter's is its top class
    inside the same explanation. Where an image was annotated at several θ, the smallest.

    Args:
        annotated: Rows of :data:`~citylens.tables.ANNOTATED`.
        emb: Rows of :data:`~citylens.tables.EMBEDDINGS` (D_cam at the first PCA
            setting in name order is used, as the report's first t-SNE figure).

    Returns:
        Columns ``model, image_id, x, y, human, segmenter, annotators``.
    """
    cols = ["model", "image_id", "x", "y", "human", "segmenter", "annotators"]
    if annotated is None or emb is None or not len(annotated) or not len(emb):
        return pd.DataFrame(columns=cols)
    e = _d_cam(emb)[["model", "image_id", "x", "y"]]
    a = annotated.sort_values(["theta", "annotator"])
    a = a[a.theta == a.groupby(["model", "image_id"]).theta.transform("min")]
    votes = a.groupby(["model", "image_id", "label1"], sort=False).annotator.agg(["count", "first"])
    votes = votes.reset_index().sort_values(
        ["model", "image_id", "count", "first"], ascending=[True, True, False, True]
    )
    human = votes.drop_duplicates(["model", "image_id"])[["model", "image_id", "label1"]]
    seg = a.drop_duplicates(["model", "image_id"])[["model", "image_id", "top1"]]
    who = a.groupby(["model", "image_id"]).annotator.nunique().rename("annotators")
    out = human.merge(seg, on=["model", "image_id"]).merge(who.reset_index())
    out = out.rename(columns={"label1": "human", "top1": "segmenter"})
    return out.merge(e, on=["model", "image_id"])[cols]


def tsne_by_annotation(
    points: pd.DataFrame, emb: pd.DataFrame, names: tuple[str, ...], top: int = 9
) -> Figure:
    """The t-SNE of annotated explanations by the person's label and the segmenter's.

    Thesis Fig 10 beside Fig 8 for the same points: one row per model, two panels
    sharing one colour per class (the ``top`` most frequent labels of both; others grey;
    "none / unclear" and "nothing labelled" black crosses). Every other explanation of
    the model is a faint dot behind them.
    """
    models = points.model.value_counts().index[:_MODELS_SHOWN].sort_values().tolist()
    both = pd.concat([points.human, points.segmenter])
    common = [c for c in both[both > 0].value_counts().index[:top]]
    cmap = plt.get_cmap("tab10")
    color = {c: cmap(k % 10) for k, c in enumerate(common)}
    fig, axes = plt.subplots(
        len(models),
        2,
        figsize=(8.4, 3.6 * len(models) + 0.9),
        layout="constrained",
        squeeze=False,
    )
    background = _d_cam(emb)
    for row, model in zip(axes, models):
        p = points[points.model == model]
        bg = background[background.model == model]
        for ax, col, title in (
            (row[0], "human", "by the annotator's main label"),
            (row[1], "segmenter", "by the segmenter's top label"),
        ):
            ax.scatter(bg.x, bg.y, s=3, color="0.9")
            rest = p[~p[col].isin(common) & (p[col] > 0)]
            ax.scatter(rest.x, rest.y, s=14, color="0.6")
            for c in common:
                d = p[p[col] == c]
                ax.scatter(d.x, d.y, s=16, color=color[c])
            nothing = p[p[col] < 0]
            ax.scatter(nothing.x, nothing.y, s=18, marker="x", color="k")
            ax.set_title(f"{model}: {len(p)} annotated, {title}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=color[c], label=names[c]) for c in common
    ] + [
        plt.Line2D([], [], marker="o", ls="", color="0.6", label="other classes"),
        plt.Line2D([], [], marker="x", ls="", color="k", label="none / unclear / unlabelled"),
        plt.Line2D([], [], marker="o", ls="", color="0.9", label="not annotated"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle("t-SNE of annotated explanations (D_cam): the person's label and the segmenter's")
    return fig


def _kappa_lines(kappa: pd.DataFrame) -> list[str]:
    lines = []
    for r in kappa.itertuples():
        lines.append(
            f"{r.annotator_a} and {r.annotator_b}: κ = {r.kappa:.2f}"
            f"{fmt_interval(r.ci_low, r.ci_high)} on the main label over {r.n} explanations "
            f"({r.places} places resampled); the same main label {r.observed:.0%}, the same "
            f"labels {r.same_labels:.0%}, a label in common {r.any_label:.0%}."
        )
    return lines


def draw_agreement(out, t, colors: dict) -> None:
    """The section: curves, the annotators' κ, the t-SNE by annotation (nothing without)."""
    agreement, kappa, annotated = t.agreement, t.annotators, t.annotated
    if agreement is None or not len(agreement):
        return
    if "annotator" not in agreement:  # a table analyze wrote before annotators were kept
        agreement = agreement.assign(annotator="annotations", unclear=0)
    out.page.h2("Agreement with annotations", "agreement")
    pooled = agreement[agreement.annotator == "all"]
    curves = pooled if len(pooled) else agreement
    out.figure(
        "agreement",
        agreement_curves(curves, colors),
        "segmenter vs human annotation: strict and lenient accuracy",
    )
    who = sorted(set(agreement.annotator) - {"all"})
    unclear = int((annotated.label1 < 0).sum()) if annotated is not None else 0
    out.page.p(
        html.escape(
            f"Annotations by {len(who)} annotator(s) ({', '.join(who)})"
            + ("; the curves pool them all" if len(who) > 1 else "")
            + f". {unclear} answer(s) of 'none / unclear' are left out of the accuracies."
        ),
        "note",
    )
    ends = agreement[
        (agreement.city == "all")
        & agreement.threshold.isin([agreement.threshold.min(), agreement.threshold.max()])
    ]
    out.files["agreement.csv"] = agreement.to_csv(index=False).encode()
    out.page.table(ends)
    if kappa is not None and len(kappa):
        out.page.p(
            "<b>Between annotators</b> (Cohen's κ; a segmenter cannot be expected to agree "
            "with one person more than people agree with each other):"
        )
        for line in _kappa_lines(kappa):
            out.page.p(html.escape(line))
        out.table("annotators", kappa)
    points = annotated_points(annotated, t.embeddings)
    if len(points):
        out.figure(
            "tsne_annotation",
            tsne_by_annotation(points, t.embeddings, t.names),
            "t-SNE of the annotated explanations by the annotator's label and the segmenter's",
        )
