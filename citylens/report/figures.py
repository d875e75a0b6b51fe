"""Figures of a study, each drawn from analysis tables only (pandas in, Figure out).

One colour per city across every figure (:func:`city_colors`), labelled axes, legends.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["agreement_curves", "ar_heatmap", "city_colors", "r_p_bars", "tsne_by_city"]


def city_colors(cities: list[str]) -> dict[str, tuple]:
    """A fixed colour per city (sorted order), the same in every figure."""
    cmap = plt.get_cmap("tab10" if len(cities) <= 10 else "tab20")
    return {c: cmap(i % cmap.N) for i, c in enumerate(sorted(cities))}


def ar_heatmap(pairs: pd.DataFrame) -> Figure:
    """Mean AR between every two models (paper Table 2) as an annotated heatmap."""
    models = sorted(set(pairs.model_a) | set(pairs.model_b))
    idx = {m: i for i, m in enumerate(models)}
    mat = np.full((len(models), len(models)), np.nan)
    for r in pairs.itertuples():
        mat[idx[r.model_a], idx[r.model_b]] = mat[idx[r.model_b], idx[r.model_a]] = r.mean_ar
    np.fill_diagonal(mat, 0.0)
    size = 1.0 + 0.75 * len(models)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=max(0.5, float(np.nanmax(mat))))
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right")
    ax.set_yticks(range(len(models)), models)
    for i in range(len(models)):
        for j in range(len(models)):
            if i != j and not np.isnan(mat[i, j]):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if mat[i, j] < 0.3 else "black",
                )
    fig.colorbar(im, ax=ax, label="mean AR over test images")
    ax.set_title("Model disagreement: mean average residual (AR)")
    return fig


def r_p_bars(objects: pd.DataFrame, theta: float, colors: dict[str, tuple]) -> Figure:
    """R_p^c of the selected objects, one panel per city, bars grouped by model."""
    sel = objects[(objects.theta.round(6) == round(theta, 6)) & objects.selected]
    cities = sorted(objects.city.unique())
    fig, axes = plt.subplots(
        len(cities), 1, figsize=(10, 3.2 * len(cities)), layout="constrained", squeeze=False
    )
    models = sorted(objects.model.unique())
    shades = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, max(len(models), 1)))
    for ax, city in zip(axes[:, 0], cities):
        d = sel[sel.city == city]
        names = d.groupby("name").r_p.mean().sort_values(ascending=False).index.tolist()
        width = 0.8 / max(len(models), 1)
        for k, model in enumerate(models):
            dm = d[d.model == model].set_index("name")
            vals = [dm.r_p.get(n, np.nan) for n in names]
            ax.bar(np.arange(len(names)) + k * width, vals, width, label=model, color=shades[k])
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
        ax.set_ylabel("$R_p^c$")
        ax.set_ylim(0, 1)
        ax.set_title(
            f"{city}: objects inside the visual explanations (θ = {theta})", color=colors[city]
        )
        if not names:
            ax.text(
                0.5,
                0.5,
                "no object passes the selection threshold",
                ha="center",
                transform=ax.transAxes,
            )
    axes[0, 0].legend(ncol=min(len(models), 4), fontsize=8, loc="upper right")
    return fig


def tsne_by_city(emb: pd.DataFrame, pca: str, colors: dict[str, tuple]) -> Figure:
    """t-SNE of every model × descriptor at one PCA setting, coloured by city."""
    d = emb[emb.pca == pca]
    models = sorted(d.model.unique())
    descs = sorted(d.descriptor.unique())
    fig, axes = plt.subplots(
        len(descs),
        len(models),
        figsize=(2.6 * len(models) + 1, 2.6 * len(descs) + 0.6),
        layout="constrained",
        squeeze=False,
    )
    for i, desc in enumerate(descs):
        for j, model in enumerate(models):
            ax = axes[i, j]
            dm = d[(d.model == model) & (d.descriptor == desc)]
            for city, dc in dm.groupby("city"):
                ax.scatter(dc.x, dc.y, s=6, color=colors[city], label=city, alpha=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            k = int(dm.components.iloc[0]) if len(dm) else 0
            ax.set_title(f"{model}\n{desc}, PCA {pca} ({k} comp.)", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=n) for n, c in colors.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(colors), 6))
    fig.suptitle("t-SNE of Grad-CAM descriptors, coloured by city")
    return fig


def agreement_curves(agreement: pd.DataFrame, colors: dict[str, tuple]) -> Figure:
    """Strict and lenient accuracy vs the second-label threshold (thesis Figs 11–12).

    One panel per kind; a line per city and θ (models averaged), the same city colours.
    """
    d = agreement[(agreement.city != "all") & (agreement.n > 0)]
    d = d.groupby(["city", "theta", "threshold"], as_index=False)[["strict", "lenient"]].mean()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained", sharey=True)
    styles = ["-", "--", ":", "-."]
    thetas = sorted(d.theta.unique())
    for ax, kind, title in (
        (axes[0], "strict", "strict: every picked label is annotated"),
        (axes[1], "lenient", "lenient: any picked label is annotated"),
    ):
        for (city, theta), g in d.groupby(["city", "theta"]):
            ax.plot(
                g.threshold,
                g[kind],
                styles[thetas.index(theta) % len(styles)],
                color=colors.get(city, "k"),
                label=f"{city}, θ={theta:.2f}",
            )
        ax.set_xlabel("threshold for a second label")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy vs annotation")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Segmenter labels vs human annotation")
    return fig
