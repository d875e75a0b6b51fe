"""The report page, built from the analysis tables: pure, no store, no Ray.

:func:`build_report` takes the tables the *report* stage read (as pandas frames), the
study's settings and an assets object that hands out the few images and masks the
pictures need, and returns the HTML page and every figure's PNG and table's CSV.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from citylens.report.agreement import draw_agreement
from citylens.report.causal import draw_causal
from citylens.report.figures import (
    ar_distributions,
    ar_heatmap,
    city_colors,
    image_grid,
    r_p_bars,
    r_p_by_seed,
    top_objects_bars,
    tsne_by_city,
    tsne_by_class,
)
from citylens.report.findings import (
    accuracy_line,
    ar_claim,
    distinctive_lines,
    fmt_interval,
    passing,
    top_lines,
)
from citylens.report.html import Page, jpeg_bytes, png_array_bytes, png_bytes
from citylens.report.methods import draw_methods
from citylens.report.selection import (
    architecture_styles,
    describe_unique,
    sample_per_city,
    unique_objects,
    urban_symbols,
)
from citylens.report.thumbs import explanation_thumbnail, heat_overlay, mosaic
from citylens.report.training import training_curves
from citylens.report.where import draw_leakage, draw_where
from citylens.tables import model_name

__all__ = ["Assets", "ReportSettings", "ReportTables", "build_report"]


class Assets(Protocol):
    """What the pictures need: images and masks of (image id, model) pairs, on demand.

    :class:`citylens.pipeline.report_assets.ReportAssets` reads them from a store.
    """

    images: dict[str, np.ndarray | None]  # image id -> square uint8 (S, S, 3), None if unread
    unreadable: dict[str, str]  # image id -> why it is not in the pictures

    def load(self, pairs: set[tuple[str, str]]) -> None:
        """Read the masks of ``(image_id, model)`` pairs and their images."""

    def pair(self, image_id: str, model: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(image (S, S, 3) uint8, mask_norm (h, w))``, or None if either is missing."""

    def load_labels(self, ids: set[str]) -> None:
        """Read the class maps of ``ids`` and their images."""

    def removed(self, image_id: str, cls: int, how: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(image, image with class cls filled by how)`` (S, S, 3) uint8, or None."""


@dataclass(frozen=True)
class ReportTables:
    """The tables a report is drawn from (None: the table was not written).

    Attributes:
        cities: The study's cities, in class order.
        counts: The ingest stage's counts (``images``, ``splits``, ``cities``).
        errors: stage -> inputs it recorded in its errors table.
        names: The vocabulary's class names.
        test_images: ``image_id, city`` of the test split.
        accuracy, ar_pairs, ar_images, objects, top_objects, embeddings, agreement,
            annotated, annotators, causal, causal_examples, faithfulness, curves, ar_kinds,
            object_means, distinctive, top_settled, training, method_pairs, method_objects,
            method_faithfulness, method_rankings: The analyze stage's tables.
        showcase_overlaps: The showcase model's overlap rows at the smallest θ
            (``image_id, city, model, theta, class_pixels_in_mask``), for the galleries.
        places: The analyze stage's places table (located studies only).
        place_ar: ``(city, place) -> mean AR`` of the located test places.
        near_train: The ingest record's ``near_train`` figures.
        baselines: The baseline stage's leakage baselines.
    """

    cities: list[str]
    counts: dict
    errors: dict[str, int]
    names: tuple[str, ...]
    test_images: pd.DataFrame
    accuracy: pd.DataFrame | None = None
    ar_pairs: pd.DataFrame | None = None
    ar_images: pd.DataFrame | None = None
    objects: pd.DataFrame | None = None
    top_objects: pd.DataFrame | None = None
    embeddings: pd.DataFrame | None = None
    agreement: pd.DataFrame | None = None
    annotated: pd.DataFrame | None = None
    annotators: pd.DataFrame | None = None
    causal: pd.DataFrame | None = None
    causal_examples: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    faithfulness: pd.DataFrame | None = None
    showcase_overlaps: pd.DataFrame | None = None
    ar_kinds: pd.DataFrame | None = None
    object_means: pd.DataFrame | None = None
    distinctive: pd.DataFrame | None = None
    top_settled: pd.DataFrame | None = None
    training: pd.DataFrame | None = None
    method_pairs: pd.DataFrame | None = None
    method_objects: pd.DataFrame | None = None
    method_faithfulness: pd.DataFrame | None = None
    method_rankings: pd.DataFrame | None = None
    places: pd.DataFrame | None = None
    place_ar: pd.Series | None = None
    near_train: dict | None = None
    baselines: pd.DataFrame | None = None


@dataclass(frozen=True)
class ReportSettings:
    """What the page says about the study and how it samples its pictures."""

    name: str
    archs: tuple[str, ...]
    seeds: tuple[int, ...]
    input_size: int
    thetas: tuple[float, ...]
    segmenter: str
    showcase: str  # the model whose explanations the mosaic and galleries show
    mosaic: int  # explanations in the t-SNE mosaic
    seed: int  # sampling seed
    fill: str = "inpaint"  # how ablate filled removed objects (its pictures redo it)
    method: str = "gradcam"  # the CAM method explain used
    layers: tuple[str, ...] = ()  # "arch layer (h×w)" each architecture was explained at

    @property
    def theta(self) -> float:
        """The θ the pictures and object rankings use: the smallest."""
        return min(self.thetas)


def _present(df: pd.DataFrame | None) -> bool:
    return df is not None and len(df) > 0


class _Output:
    """The page under construction and the files written beside it."""

    def __init__(self, title: str) -> None:
        self.page = Page(title)
        self.files: dict[str, bytes] = {}

    def figure(self, name: str, fig, alt: str) -> None:
        png = png_bytes(fig)
        self.files[f"{name}.png"] = png
        self.page.image(png, alt)

    def picture(self, name: str, array: np.ndarray, alt: str) -> None:
        # full-quality PNG beside the page; the page embeds a JPEG to stay light
        self.files[f"{name}.png"] = png_array_bytes(array)
        self.page.image(jpeg_bytes(array), alt, mime="image/jpeg")

    def table(self, name: str, df: pd.DataFrame, summary: str | None = None) -> None:
        self.files[f"{name}.csv"] = df.to_csv(index=False).encode()
        self.page.table(df, summary=summary)


def build_report(
    t: ReportTables, s: ReportSettings, assets: Assets
) -> tuple[str, dict[str, bytes]]:
    """The report page and the files beside it.

    Returns:
        ``(report.html text, file name -> bytes)`` (every figure's PNG, every table's CSV).
    """
    out = _Output(f"citylens — {s.name}")
    colors = city_colors(t.cities)
    unique = unique_objects(t.objects, s.theta) if _present(t.objects) else {}
    if _present(t.distinctive):  # only what passes the test is named as distinctive
        passed = passing(t.distinctive, s.theta)
        unique = {c: [n for n in names if n in passed.get(c, [])] for c, names in unique.items()}
    _summary(out, t, s, colors)
    _findings(out, t, s)
    _accuracy_and_ar(out, t)
    draw_leakage(out, t)
    _mask_grid(out, t, s, assets, colors)
    _tsne(out, t, s, assets, colors)
    _objects(out, t, s, colors, unique)
    draw_causal(out, t, s, assets, colors)
    draw_methods(out, t, s)
    draw_where(out, t, s, colors)
    _galleries(out, t, s, assets, colors, unique)
    if assets.unreadable:
        out.page.p(
            f"{len(assets.unreadable)} image(s) could not be read for the pictures above "
            "(moved or deleted since the study ran) and are left out of them; e.g. "
            + html.escape(next(iter(assets.unreadable.values()))),
            "note",
        )
    draw_agreement(out, t, colors)
    return out.page.render(), out.files


def _summary(out: _Output, t: ReportTables, s: ReportSettings, colors: dict) -> None:
    counts, acc = t.counts, t.accuracy
    city_list = ", ".join(
        f'<b style="color:rgb{tuple(int(255 * c) for c in colors[c][:3])}">{html.escape(c)}</b>'
        f" ({counts['cities'].get(c, 0)} images)"
        for c in t.cities
    )
    lines = [
        f"Cities: {city_list}.",
        f"Images: {counts['images']} ({counts['splits']['train']} train, "
        f"{counts['splits']['val']} val, {counts['splits']['test']} test).",
        f"Models: {len(acc) if acc is not None else 0} "
        f"({', '.join(s.archs)} × seeds {list(s.seeds)}), "
        f"input {s.input_size} px; explanations: <code>{html.escape(s.method)}</code>"
        + (f" at {html.escape(', '.join(s.layers))}" if s.layers else "")
        + f", θ = {list(s.thetas)}; segmenter <code>{html.escape(s.segmenter)}</code>.",
        (
            f"Test accuracy (chance {1 / max(len(t.cities), 1):.2f}): "
            + ", ".join(
                f"{arch} {g.test_acc.mean():.2f}"
                for arch, g in acc.groupby("arch", sort=False)
                if g.test_acc.notna().any()
            )
            + " (mean over seeds)."
            if acc is not None and "test_acc" in acc and acc.test_acc.notna().any()
            else (
                "Test accuracy: see the Findings (models taken from another study: "
                "measured on this study's explained test images)."
                if acc is not None
                else "No accuracy table."
            )
        ),
        "Skipped inputs (see the errors tables): "
        + ", ".join(f"{stage} {n}" for stage, n in t.errors.items())
        + ".",
    ]
    if _present(t.top_objects):
        lines.append(
            "Highest R<sub>p</sub> (mean over models): " + "; ".join(_heads(t, s.theta)) + "."
        )
    out.page.raw('<div class="summary">' + "".join(f"<p>{x}</p>" for x in lines) + "</div>")


def _findings(out: _Output, t: ReportTables, s: ReportSettings) -> None:
    """The findings box: each headline claim with its interval and test."""
    lines = [
        x
        for x in (
            accuracy_line(t.accuracy),
            ar_claim(t.ar_kinds),
            *distinctive_lines(t.distinctive, s.theta),
            *top_lines(t.top_settled, s.theta),
        )
        if x
    ]
    if lines and not _present(t.distinctive) and not _present(t.objects):
        lines.append(  # say why there are no object claims, rather than be silent
            "No object findings: no test image has a class map (segmenter "
            f"'{s.segmenter}'; see the segment stage's errors table), so R_p and its tests "
            "are not computed."
        )
    if not lines:
        return
    out.page.h2("Findings", "findings")
    out.page.raw(
        '<div class="findings">' + "".join(f"<p>{html.escape(x)}</p>" for x in lines) + "</div>"
    )


def _heads(t: ReportTables, theta: float) -> list[str]:
    """Per city, its three objects of highest R_p (mean over models) at θ."""
    tops, objects, heads = t.top_objects, t.objects, []
    for city in t.cities:
        d = tops[(tops.city == city) & (tops.theta.round(6) == round(theta, 6))]
        if objects is not None:
            o = objects[
                (objects.city == city)
                & objects.selected
                & (objects.theta.round(6) == round(theta, 6))
            ]
            best = o.groupby("name").r_p.mean().sort_values(ascending=False).head(3)
            ci = _mean_intervals(t.object_means, city, theta)
            heads.append(
                f"<b>{html.escape(city)}</b>: "
                + ", ".join(
                    f"{html.escape(n)} ({v:.2f}{fmt_interval(*ci.get(n, (None, None)))})"
                    for n, v in best.items()
                )
            )
        elif len(d):
            heads.append(f"<b>{html.escape(city)}</b>: {html.escape(d.name.iloc[0])}")
    return heads


def _mean_intervals(means: pd.DataFrame | None, city: str, theta: float) -> dict:
    """Object name -> (ci_low, ci_high) of its R_p averaged over every model."""
    if means is None or not len(means):
        return {}
    d = means[
        (means.scope == "models") & (means.city == city) & (means.theta.round(6) == round(theta, 6))
    ]
    return {r.name: (r.ci_low, r.ci_high) for r in d.itertuples()}


def _accuracy_and_ar(out: _Output, t: ReportTables) -> None:
    out.page.h2("Accuracy", "accuracy")
    if t.accuracy is not None:
        acc = t.accuracy
        unused = [c for c in ("explained_acc", "explained") if c in acc and acc[c].isna().all()]
        out.table("accuracy", acc.drop(columns=unused))
    if _present(t.training):
        out.figure("training", training_curves(t.training), "training curves per model")
        out.files["training.csv"] = t.training.to_csv(index=False).encode()
    out.page.h2("Model disagreement (AR)", "ar")
    pairs = t.ar_pairs
    if not _present(pairs):
        return
    out.figure("ar_heatmap", ar_heatmap(pairs), "mean AR between models")
    claim = ar_claim(t.ar_kinds)
    if claim is None:
        kinds = pairs.groupby("kind").mean_ar.mean()
        claim = (
            "Mean AR between different architectures: "
            f"{kinds.get('architectures', float('nan')):.3f}; between seeds of one "
            f"architecture: {kinds.get('seeds', float('nan')):.3f}."
        )
    out.page.p(html.escape(claim))
    out.table("ar_pairs", pairs, f"AR of all {len(pairs)} model pairs")
    if _present(t.ar_images):
        kind_of = dict(zip(zip(pairs.model_a, pairs.model_b), pairs.kind))
        out.figure(
            "ar_distributions", ar_distributions(t.ar_images, kind_of), "AR distribution per pair"
        )


def _mask_grid(
    out: _Output, t: ReportTables, s: ReportSettings, assets: Assets, colors: dict
) -> None:
    out.page.h2("Weighted masks side by side", "masks")
    have = set(t.accuracy.model) if t.accuracy is not None else set()
    models = [m for m in (model_name(a, seed) for a in s.archs for seed in s.seeds) if m in have]
    grid_ids = sample_per_city(t.test_images, 2, s.seed)
    assets.load({(i, m) for i in grid_ids.image_id for m in models})
    rows, labels, row_colors = [], [], []
    for iid, city in zip(grid_ids.image_id, grid_ids.city):
        img = assets.images.get(iid)
        if img is None:
            continue
        tiles = [img]
        for m in models:
            got = assets.pair(iid, m)
            tiles.append(heat_overlay(*got) if got else np.full_like(img, 255))
        rows.append(tiles)
        labels.append(f"{city}\n{iid[:8]}")
        row_colors.append(colors[city])
    if rows:
        out.figure(
            "mask_grid",
            image_grid(rows, labels, ["image", *models], "Grad-CAM masks (mask_norm)", row_colors),
            "weighted masks of every model over sample test images",
        )


def _tsne(out: _Output, t: ReportTables, s: ReportSettings, assets: Assets, colors: dict) -> None:
    out.page.h2("t-SNE of the explanations", "tsne")
    emb = t.embeddings
    if not _present(emb):
        return
    for pca in sorted(emb.pca.unique()):
        tag = pca.rstrip("%")
        out.figure(
            f"tsne_city_pca{tag}", tsne_by_city(emb, pca, colors), f"t-SNE by city, PCA {pca}"
        )
        if emb.top_class.notna().any():
            out.figure(
                f"tsne_class_pca{tag}",
                tsne_by_class(emb, pca, t.names),
                f"t-SNE by top object, PCA {pca}",
            )
    mos = emb[(emb.model == s.showcase) & (emb.descriptor == "d_cam")]
    mos = mos[mos.pca == sorted(mos.pca.unique())[0]] if len(mos) else mos
    picked = sample_per_city(mos, max(1, s.mosaic // max(len(t.cities), 1)), s.seed)
    assets.load({(i, s.showcase) for i in picked.image_id})
    rgb = {c: tuple(int(255 * v) for v in colors[c][:3]) for c in t.cities}
    thumbs, pts, borders = [], [], []
    for r in picked.itertuples():
        got = assets.pair(r.image_id, s.showcase)
        if got:
            thumbs.append(explanation_thumbnail(*got, s.theta, size=80))
            pts.append((r.x, r.y))
            borders.append(rgb[r.city])
    if not thumbs:
        return
    cells = int(np.ceil(np.sqrt(len(thumbs) * 1.6)))
    canvas = mosaic(np.asarray(pts), thumbs, borders, cells=cells)
    out.picture(
        "tsne_mosaic", canvas, f"t-SNE mosaic of {len(thumbs)} visual explanations of {s.showcase}"
    )
    out.page.p(
        f"{len(thumbs)} visual explanations of {s.showcase} (D_cam, PCA "
        f"{mos.pca.iloc[0] if len(mos) else ''}, θ = {s.theta}) placed at their t-SNE "
        "positions; frames in city colours.",
        "note",
    )


def _objects(out: _Output, t: ReportTables, s: ReportSettings, colors: dict, unique) -> None:
    out.page.h2("Objects", "objects")
    objects = t.objects
    if not _present(objects):
        out.page.p(
            "No class maps: every image lacked one (see the segment stage's errors). "
            "Objects need a segmenter: ground-truth label maps (cities.&lt;name&gt;.labels) "
            "or a model (segmenter.backend, e.g. ade20k-ppm with CSAIL's weights).",
            "note",
        )
    if _present(t.top_objects):
        out.figure(
            "top_objects", top_objects_bars(t.top_objects, colors), "top objects per city and θ"
        )
    if not _present(objects):
        return
    for line in describe_unique(unique, objects, s.theta):
        out.page.p(html.escape(line))
    if _present(t.distinctive):
        out.page.p(
            "Objects named as one city's own are those that pass the distinctive-object "
            "test (Findings); the others may differ by chance.",
            "note",
        )
        out.table("distinctive", t.distinctive, "the distinctive-object tests")
    if _present(t.object_means):
        out.table("object_means", t.object_means, "R_p averaged over models and over seeds")
    out.figure("r_p", r_p_bars(objects, s.theta, colors), "R_p per city, by model")
    out.figure("r_p_seeds", r_p_by_seed(objects, s.theta, colors), "R_p per city, by seed")
    sel = objects[objects.selected].sort_values(
        ["city", "theta", "model", "r_p"], ascending=[True, True, True, False]
    )
    out.files["objects.csv"] = objects.to_csv(index=False).encode()
    out.page.table(
        sel[["city", "theta", "model", "name", "r_p", "mean_in_mask", "mean_in_image"]],
        summary=f"R_p of the {len(sel)} selected (model, city, θ, object) rows",
    )


def _galleries(
    out: _Output, t: ReportTables, s: ReportSettings, assets: Assets, colors: dict, unique
) -> None:
    out.page.h2("Galleries", "galleries")
    emb = t.embeddings
    if not _present(emb):
        return
    per_image = emb[(emb.model == s.showcase)].drop_duplicates("image_id")
    overlaps = t.showcase_overlaps
    if overlaps is None:
        overlaps = pd.DataFrame(columns=["image_id", "city", "class_pixels_in_mask"])
    for name, title, chosen in (
        (
            "gallery_symbols",
            "Urban symbols: explanations most covered by objects only this city has",
            urban_symbols(overlaps, unique, t.names, 6),
        ),
        (
            "gallery_architecture",
            "Architecture styles: building-dominated explanations",
            architecture_styles(per_image, t.names, 6, s.seed),
        ),
    ):
        assets.load({(i, s.showcase) for i in chosen.image_id})
        g_rows, g_labels, g_colors = [], [], []
        for city, g in chosen.groupby("city", sort=True):
            tiles = [
                explanation_thumbnail(*got, s.theta, size=120)
                for i in g.image_id
                if (got := assets.pair(i, s.showcase))
            ]
            if tiles:
                g_rows.append(tiles)
                g_labels.append(city)
                g_colors.append(colors[city])
        if g_rows:
            grid = image_grid(g_rows, g_labels, [], f"{title} ({s.showcase})", g_colors)
            out.figure(name, grid, title)
        else:
            out.page.p(f"{title}: none in this study.", "note")
