"""Stage *report*: ``report.html`` plus the PNG and CSV of every figure and table.

Drawn from the analysis tables only. Written to ``<store>/report/`` and ``report.html``
at the store's root.
"""

from __future__ import annotations

import html

import pandas as pd

from citylens.pipeline.context import Context, StageResult
from citylens.report.figures import (
    agreement_curves,
    ar_heatmap,
    city_colors,
    r_p_bars,
    tsne_by_city,
)
from citylens.report.html import Page, png_bytes

__all__ = ["run_report"]


def _read(ctx: Context, folder: str, name: str) -> pd.DataFrame | None:
    rel = f"{folder}/{name}.parquet"
    return ctx.store.read_table(rel).to_pandas() if ctx.store.exists(rel) else None


def run_report(ctx: Context) -> StageResult:
    cfg, store = ctx.cfg, ctx.store
    key = ctx.key("report", ctx.upstream("ingest", "analyze"), {"name": cfg.name})
    if (rec := ctx.up_to_date("report", key)) and store.exists("report.html"):
        return StageResult("report", "skipped", rec)
    folder, started = ctx.begin("report")
    an = store.record("analyze")["folder"]
    ingest = store.record("ingest")
    acc, pairs = _read(ctx, an, "accuracy"), _read(ctx, an, "ar_pairs")
    objects, emb = _read(ctx, an, "objects"), _read(ctx, an, "embeddings")
    tops = _read(ctx, an, "top_objects")
    cities = ingest["cities"]
    colors = city_colors(cities)
    theta = min(cfg.explain.thetas)
    page = Page(f"citylens — {cfg.name}")
    files: dict[str, bytes] = {}

    def figure(name: str, fig, alt: str) -> None:
        png = png_bytes(fig)
        files[f"{name}.png"] = png
        page.image(png, alt)

    def table(name: str, df: pd.DataFrame) -> None:
        files[f"{name}.csv"] = df.to_csv(index=False).encode()
        page.table(df)

    counts = ingest["counts"]
    errors = {
        s: (store.record(s) or {}).get("counts", {}).get("errors", 0)
        for s in ("ingest", "train", "explain", "segment", "overlap")
    }
    city_list = ", ".join(
        f'<b style="color:rgb{tuple(int(255 * c) for c in colors[c][:3])}">{html.escape(c)}</b>'
        f" ({counts['cities'].get(c, 0)} images)"
        for c in cities
    )
    summary = [
        f"Cities: {city_list}.",
        f"Images: {counts['images']} ({counts['splits']['train']} train, "
        f"{counts['splits']['val']} val, {counts['splits']['test']} test).",
        f"Models: {len(acc) if acc is not None else 0} "
        f"({', '.join(cfg.models.archs)} × seeds {list(cfg.models.seeds)}), "
        f"input {cfg.train.input_size} px; explanations at θ = {list(cfg.explain.thetas)}; "
        f"segmenter <code>{html.escape(cfg.segmenter.backend)}</code>.",
        "Skipped inputs (see the errors tables): "
        + ", ".join(f"{s} {n}" for s, n in errors.items())
        + ".",
    ]
    if tops is not None and len(tops):
        heads = []
        for city in cities:
            d = tops[(tops.city == city) & (tops.theta.round(6) == round(theta, 6))]
            if objects is not None:
                o = objects[
                    (objects.city == city)
                    & objects.selected
                    & (objects.theta.round(6) == round(theta, 6))
                ]
                best = o.groupby("name").r_p.mean().sort_values(ascending=False).head(3)
                heads.append(
                    f"<b>{html.escape(city)}</b>: "
                    + ", ".join(f"{html.escape(n)} ({v:.2f})" for n, v in best.items())
                )
            elif len(d):
                heads.append(f"<b>{html.escape(city)}</b>: {html.escape(d.name.iloc[0])}")
        summary.append("Highest R<sub>p</sub> (mean over models): " + "; ".join(heads) + ".")
    page.raw('<div class="summary">' + "".join(f"<p>{s}</p>" for s in summary) + "</div>")

    page.h2("Accuracy", "accuracy")
    if acc is not None:
        table("accuracy", acc)
    page.h2("Model disagreement (AR)", "ar")
    if pairs is not None and len(pairs):
        figure("ar_heatmap", ar_heatmap(pairs), "mean AR between models")
        kinds = pairs.groupby("kind").mean_ar.mean()
        page.p(
            "Mean AR between different architectures: "
            f"{kinds.get('architectures', float('nan')):.3f}; between seeds of one "
            f"architecture: {kinds.get('seeds', float('nan')):.3f}."
        )
        table("ar_pairs", pairs)
    page.h2("Objects: R_p per city", "objects")
    if objects is not None and len(objects):
        figure("r_p", r_p_bars(objects, theta, colors), "R_p per city")
        sel = objects[objects.selected].sort_values(
            ["city", "theta", "model", "r_p"], ascending=[True, True, True, False]
        )
        files["objects.csv"] = objects.to_csv(index=False).encode()
        page.table(sel[["city", "theta", "model", "name", "r_p", "mean_in_mask", "mean_in_image"]])
    page.h2("t-SNE of the explanations", "tsne")
    if emb is not None and len(emb):
        for pca in sorted(emb.pca.unique()):
            figure(
                f"tsne_city_pca{pca.rstrip('%')}",
                tsne_by_city(emb, pca, colors),
                f"t-SNE by city, PCA {pca}",
            )
    agreement = _read(ctx, an, "agreement")
    if agreement is not None and len(agreement):
        page.h2("Agreement with annotations", "agreement")
        figure(
            "agreement",
            agreement_curves(agreement, colors),
            "segmenter vs human annotation: strict and lenient accuracy",
        )
        ends = agreement[
            (agreement.city == "all")
            & agreement.threshold.isin([agreement.threshold.min(), agreement.threshold.max()])
        ]
        files["agreement.csv"] = agreement.to_csv(index=False).encode()
        page.table(ends)
    report = page.render()
    for name, data in files.items():
        store.write_bytes(f"{folder}/{name}", data)
    store.write_text(f"{folder}/report.html", report)
    store.write_text("report.html", report)
    rec = ctx.finish(
        "report", key, folder, started, files=sorted(files), report=store.url("report.html")
    )
    ctx.progress(f"report: {store.url('report.html')}")
    return StageResult("report", "ran", rec)
