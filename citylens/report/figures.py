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

__all__ = [
    "agreement_curves",
    "ar_distributions",
    "ar_heatmap",
    "causal_bars",
    "city_colors",
    "image_grid",
    "r_p_bars",
    "r_p_by_seed",
    "top_objects_bars",
    "tsne_by_city",
    "tsne_by_class",
]


def city_colors(cities: list[str]) -> dict[str, tuple]:
    """A fixed colour per city (sorted order), the same in every figure."""
    cmap = plt.get_cmap("tab10" if len(cities) <= 10 else "tab20")
    return {c: cmap(i % cmap.N) for i, c in enumerate(sorted(cities))}


def ar_heatmap(pairs: pd.DataFrame) -> Figure:
    """Mean AR between every two models (paper Table 2) as an annotated heatmap.

    Each cell shows its place-bootstrap interval when the table has one.
    """
    models = sorted(set(pairs.model_a) | set(pairs.model_b))
    idx = {m: i for i, m in enumerate(models)}
    mat = np.full((len(models), len(models)), np.nan)
    ci = {}
    for r in pairs.itertuples():
        mat[idx[r.model_a], idx[r.model_b]] = mat[idx[r.model_b], idx[r.model_a]] = r.mean_ar
        if not pd.isna(getattr(r, "ci_low", np.nan)):
            ci[(idx[r.model_a], idx[r.model_b])] = ci[(idx[r.model_b], idx[r.model_a])] = (
                r.ci_low,
                r.ci_high,
            )
    np.fill_diagonal(mat, 0.0)
    size = 1.0 + 0.75 * len(models)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=max(0.5, float(np.nanmax(mat))))
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right")
    ax.set_yticks(range(len(models)), models)
    for i in range(len(models)):
        for j in range(len(models)):
            if i != j and not np.isnan(mat[i, j]):
                low_high = ci.get((i, j))
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.3f}"
                    + (f"\n[{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else ""),
                    ha="center",
                    va="center",
                    fontsize=8 if not low_high else 6.5,
                    color="white" if mat[i, j] < 0.3 else "black",
                )
    fig.colorbar(im, ax=ax, label="mean AR over test images")
    ax.set_title("Model disagreement: mean average residual (AR)")
    return fig


def _yerr(rows: pd.DataFrame, names: list[str]) -> np.ndarray | None:
    """``(2, n)`` error-bar lengths of ``r_p`` from ``ci_low/ci_high`` (None without)."""
    if "ci_low" not in rows or rows.ci_low.isna().all():
        return None
    r = np.array([rows.r_p.get(n, np.nan) for n in names], np.float64)
    lo = np.array([rows.ci_low.get(n, np.nan) for n in names], np.float64)
    hi = np.array([rows.ci_high.get(n, np.nan) for n in names], np.float64)
    return np.nan_to_num(np.clip(np.stack([r - lo, hi - r]), 0, None))


def r_p_bars(objects: pd.DataFrame, theta: float, colors: dict[str, tuple]) -> Figure:
    """R_p^c of the selected objects, one panel per city, bars grouped by model.

    The place-bootstrap intervals are error bars (when the table has them).
    """
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
            ax.bar(
                np.arange(len(names)) + k * width,
                vals,
                width,
                label=model,
                color=shades[k],
                yerr=_yerr(dm, names),
                error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.25"},
            )
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


def _tsne_panels(d: pd.DataFrame, legend_height: float) -> tuple[Figure, list]:
    """A descriptor × model grid of t-SNE panels.

    Axes are named but have no ticks: t-SNE coordinates have no units.

    Returns:
        ``(figure, [(axes, model, descriptor, that panel's rows), ...])``.
    """
    models, descs = sorted(d.model.unique()), sorted(d.descriptor.unique())
    fig, axes = plt.subplots(
        len(descs),
        len(models),
        figsize=(2.6 * len(models) + 1, 2.6 * len(descs) + legend_height),
        layout="constrained",
        squeeze=False,
    )
    panels = []
    for i, desc in enumerate(descs):
        for j, model in enumerate(models):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("t-SNE 1", fontsize=7)
            ax.set_ylabel("t-SNE 2", fontsize=7)
            panels.append((ax, model, desc, d[(d.model == model) & (d.descriptor == desc)]))
    return fig, panels


def tsne_by_city(emb: pd.DataFrame, pca: str, colors: dict[str, tuple]) -> Figure:
    """t-SNE of every model × descriptor at one PCA setting, coloured by city."""
    fig, panels = _tsne_panels(emb[emb.pca == pca], legend_height=0.6)
    for ax, model, desc, dm in panels:
        for city, dc in dm.groupby("city"):
            ax.scatter(dc.x, dc.y, s=6, color=colors[city], label=city, alpha=0.8)
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


def ar_distributions(ar_images: pd.DataFrame, kind_of: dict | None = None) -> Figure:
    """Histogram of per-image AR for each model pair (thesis Fig 3), architectures vs seeds.

    Args:
        ar_images: Rows of :data:`~citylens.tables.AR_IMAGES`.
        kind_of: ``(model_a, model_b)`` -> ``"seeds"`` or ``"architectures"`` (the
            ar_pairs table's ``kind``); pairs it does not name are drawn as architectures.
    """
    kind_of = kind_of or {}
    pairs = sorted(ar_images.groupby(["model_a", "model_b"]).groups)
    cols = min(4, max(len(pairs), 1))
    rows = max(1, -(-len(pairs) // cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.0 * cols, 2.3 * rows + 0.5), layout="constrained", squeeze=False
    )
    bins = np.linspace(0, 1, 41)
    for ax, (a, b) in zip(axes.flat, pairs):
        d = ar_images[(ar_images.model_a == a) & (ar_images.model_b == b)].ar
        same_arch = kind_of.get((a, b)) == "seeds"
        ax.hist(d, bins=bins, color="tab:orange" if same_arch else "tab:blue")
        ax.set_title(f"{a} vs {b}\nmean {d.mean():.3f}", fontsize=8)
        ax.set_xlabel("AR", fontsize=8)
        ax.set_ylabel("images", fontsize=8)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    fig.suptitle("Per-image AR per model pair (blue: architectures, orange: seeds)")
    return fig


def top_objects_bars(tops: pd.DataFrame, colors: dict[str, tuple]) -> Figure:
    """Mean pixels of the top objects inside explanations, per city and θ (thesis Fig 7).

    Models are averaged: the mean over models of each object's mean pixels in masks.
    """
    d = tops.groupby(["city", "theta", "name"], as_index=False).mean_in_mask.mean()
    cities, thetas = sorted(d.city.unique()), sorted(d.theta.unique())
    fig, axes = plt.subplots(
        len(thetas),
        len(cities),
        figsize=(3.6 * len(cities), 2.8 * len(thetas) + 0.4),
        layout="constrained",
        squeeze=False,
    )
    for i, theta in enumerate(thetas):
        for j, city in enumerate(cities):
            ax = axes[i, j]
            g = d[(d.city == city) & (d.theta == theta)].nlargest(8, "mean_in_mask")
            ax.barh(g.name[::-1], g.mean_in_mask[::-1], color=colors[city])
            ax.set_title(f"{city}, θ = {theta:.2f}", fontsize=9, color=colors[city])
            ax.set_xlabel("mean pixels inside the explanation", fontsize=8)
            ax.tick_params(labelsize=8)
    fig.suptitle("Top objects inside the visual explanations")
    return fig


def r_p_by_seed(objects: pd.DataFrame, theta: float, colors: dict[str, tuple]) -> Figure:
    """R_p^c of the selected objects per city, bars per architecture, one hatch per seed."""
    sel = objects[(objects.theta.round(6) == round(theta, 6)) & objects.selected]
    cities, archs = sorted(objects.city.unique()), sorted(objects.arch.unique())
    seeds = sorted(objects.seed.unique())
    fig, axes = plt.subplots(
        len(cities),
        len(archs),
        figsize=(3.2 * len(archs), 2.8 * len(cities) + 0.4),
        layout="constrained",
        squeeze=False,
        sharey=True,
    )
    shades = plt.get_cmap("Greys")(np.linspace(0.35, 0.85, max(len(seeds), 1)))
    for i, city in enumerate(cities):
        names = (
            sel[sel.city == city].groupby("name").r_p.mean().sort_values(ascending=False).index[:6]
        )
        for j, arch in enumerate(archs):
            ax = axes[i, j]
            width = 0.8 / max(len(seeds), 1)
            for k, seed in enumerate(seeds):
                dm = sel[(sel.city == city) & (sel.arch == arch) & (sel.seed == seed)]
                dm = dm.set_index("name")
                vals = [dm.r_p.get(n, np.nan) for n in names]
                ax.bar(
                    np.arange(len(names)) + k * width,
                    vals,
                    width,
                    color=shades[k],
                    label=f"seed {seed}",
                    yerr=_yerr(dm, names),
                    error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "0.2"},
                )
            ax.set_xticks(
                np.arange(len(names)) + 0.4 - width / 2, names, rotation=40, ha="right", fontsize=7
            )
            ax.set_ylim(0, 1)
            ax.set_title(f"{city} — {arch}", fontsize=9, color=colors[city])
        axes[i, 0].set_ylabel("$R_p^c$")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"$R_p^c$ per seed of each architecture (θ = {theta})")
    return fig


def tsne_by_class(emb: pd.DataFrame, pca: str, names: tuple[str, ...], top: int = 9) -> Figure:
    """t-SNE coloured by each image's top segment class inside its explanation (thesis Fig 8).

    The ``top`` most frequent classes get distinct colours (tab10), the rest light grey;
    class 0 means the explanation was empty.
    """
    d = emb[(emb.pca == pca) & emb.top_class.notna()]
    d = d.assign(top_class=d.top_class.astype(int))
    common = d.top_class.value_counts().index[:top].tolist()
    cmap = plt.get_cmap("tab10")
    color = {c: ("0.15" if c == 0 else cmap(k % 10)) for k, c in enumerate(common)}
    label = {c: ("empty explanation" if c == 0 else names[c]) for c in common}
    fig, panels = _tsne_panels(d, legend_height=0.8)
    for ax, model, desc, dm in panels:
        rest = dm[~dm.top_class.isin(common)]
        ax.scatter(rest.x, rest.y, s=5, color="0.82")
        for c in common:
            dc = dm[dm.top_class == c]
            ax.scatter(dc.x, dc.y, s=6, color=color[c])
        ax.set_title(f"{model}\n{desc}, PCA {pca}", fontsize=8)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=color[c], label=label[c]) for c in common
    ] + [plt.Line2D([], [], marker="o", ls="", color="0.82", label="other classes")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5))
    fig.suptitle("t-SNE of Grad-CAM descriptors, coloured by the top object in the explanation")
    return fig


def image_grid(
    tiles: list[list[np.ndarray]],
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    row_colors: list | None = None,
) -> Figure:
    """A grid of uint8 images with row and column labels (mask grids, galleries)."""
    rows, cols = len(tiles), max((len(r) for r in tiles), default=1)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(1.7 * cols + 0.6, 1.7 * rows + 0.6),
        layout="constrained",
        squeeze=False,
    )
    for i, row in enumerate(tiles):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j])
            else:
                ax.axis("off")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=8, color=row_colors[i] if row_colors else "k")
    fig.suptitle(title)
    return fig


def causal_bars(causal: pd.DataFrame, colors: dict[str, tuple], top: int = 8) -> Figure:
    """What removing each object costs each model beyond its control, per city.

    One panel per city: the ``top`` objects by mean effect over models, bars grouped by
    model, with each bar's place-clustered interval.
    """
    cities = sorted(causal.city.unique())
    models = sorted(causal.model.unique())
    fig, axes = plt.subplots(
        len(cities), 1, figsize=(10, 3.2 * len(cities)), layout="constrained", squeeze=False
    )
    shades = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, max(len(models), 1)))
    width = 0.8 / max(len(models), 1)
    for ax, city in zip(axes[:, 0], cities):
        d = causal[causal.city == city]
        names = d.groupby("name").effect.mean().sort_values(ascending=False).index[:top].tolist()
        for k, model in enumerate(models):
            dm = d[d.model == model].set_index("name")
            vals = np.array([dm.effect.get(n, np.nan) for n in names], float)
            low = np.array([dm.ci_low.get(n, np.nan) for n in names], float)
            high = np.array([dm.ci_high.get(n, np.nan) for n in names], float)
            err = np.nan_to_num(np.stack([vals - low, high - vals]), nan=0.0).clip(min=0)
            x = np.arange(len(names)) + k * width
            ax.bar(x, vals, width, yerr=err, capsize=2, label=model, color=shades[k])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
        ax.set_ylabel("drop − control drop")
        ax.set_title(
            f"{city}: what removing each object costs the model beyond removing as many "
            "pixels elsewhere",
            color=colors[city],
        )
    axes[0, 0].legend(ncol=min(len(models), 4), fontsize=8, loc="upper right")
    return fig


def faithfulness_curves(curves: pd.DataFrame) -> Figure:
    """Deletion and insertion curves per model (mean over its cities' images).

    One panel per model: the target probability as pixels are removed (deletion) or
    restored into a filled image (insertion), in the study's own explanation's order
    (solid) and a random one (dashed); the orders of ``explain.methods``' explanations
    are left to the methods section.
    """
    curves = curves[curves.order.isin(["mask", "random"])]
    models = sorted(curves.model.unique())
    cols = min(len(models), 4)
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(3.2 * cols, 2.6 * rows),
        layout="constrained",
        squeeze=False,
        sharey=True,
    )
    style = {"deletion": "tab:red", "insertion": "tab:blue"}
    for ax, model in zip(axes.flat, models):
        d = curves[curves.model == model]
        for (kind, order), g in d.groupby(["kind", "order"], sort=True):
            # the mean over cities, each city weighted by its images
            m = g.groupby("step").apply(lambda x: np.average(x.prob, weights=x.images))
            ax.plot(
                m.index,
                m.values,
                color=style[kind],
                ls="-" if order == "mask" else "--",
                label=f"{kind}, {'explanation' if order == 'mask' else 'random'}",
            )
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("share of the image")
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(models) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("P(true city)")
    axes[0, 0].legend(fontsize=7)
    return fig
