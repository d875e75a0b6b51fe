"""Stage *report*: ``report.html`` plus the PNG and CSV of every figure and table.

Drawn from the analysis tables only. Written to ``<store>/report/`` and ``report.html``
at the store's root.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.report_assets import ReportAssets
from citylens.report.figures import (
    agreement_curves,
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
from citylens.report.html import Page, jpeg_bytes, png_array_bytes, png_bytes
from citylens.report.selection import (
    architecture_styles,
    describe_unique,
    sample_per_city,
    unique_objects,
    urban_symbols,
)
from citylens.report.thumbs import explanation_thumbnail, heat_overlay, mosaic
from citylens.tables import errors_table
from citylens.vocabulary import Vocabulary

__all__ = ["run_report"]


def _read_folder(ctx: Context, folder: str, name: str) -> pd.DataFrame | None:
    files = ctx.store.files(f"{folder}/{name}", ".parquet")
    if not files:
        return None
    return pd.concat([ctx.store.read_table(f).to_pandas() for f in files], ignore_index=True)


def _overlaps_of(ctx: Context, model: str, theta: float) -> pd.DataFrame:
    """One model's overlap rows at θ: image_id, city, class_pixels_in_mask."""
    folder = ctx.store.record("overlap")["folder"]
    cols = ["image_id", "city", "model", "theta", "class_pixels_in_mask"]
    parts = []
    for rel in ctx.store.files(f"{folder}/data", ".parquet"):
        t = ctx.store.read_table(rel, columns=cols)
        t = t.filter(pc.equal(t["model"], model))
        parts.append(t.to_pandas())
    d = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    return d[(d.theta - theta).abs() < 1e-6]


def _read(ctx: Context, folder: str, name: str) -> pd.DataFrame | None:
    rel = f"{folder}/{name}.parquet"
    return ctx.store.read_table(rel).to_pandas() if ctx.store.exists(rel) else None


def run_report(ctx: Context) -> StageResult:
    cfg, store = ctx.cfg, ctx.store
    settings = {
        "name": cfg.name,
        "showcase": f"{cfg.models.archs[0]}-s{cfg.models.seeds[0]}",
        "mosaic": cfg.analysis.mosaic,
        "seed": cfg.analysis.seed,
        "version": 3,  # bump when the report's content changes
    }
    key = ctx.key("report", ctx.upstream("ingest", "explain", "overlap", "analyze"), settings)
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
    rgb = {c: tuple(int(255 * v) for v in colors[c][:3]) for c in cities}
    theta = min(cfg.explain.thetas)
    a_seed = cfg.analysis.seed
    voc = Vocabulary.from_csv(store.read_bytes(f"{an}/vocabulary.csv").decode(), "report")
    showcase = settings["showcase"]  # the thesis shows VGG11's explanations
    unique = unique_objects(objects, theta) if objects is not None and len(objects) else {}
    manifest = store.read_table(f"{ingest['folder']}/manifest.parquet")
    assets = ReportAssets(store, manifest, cfg.run.storage_options)
    test_images = (
        manifest.filter(pc.equal(manifest["split"], "test"))
        .select(["image_id", "city"])
        .to_pandas()
    )
    page = Page(f"citylens — {cfg.name}")
    files: dict[str, bytes] = {}

    def figure(name: str, fig, alt: str) -> None:
        png = png_bytes(fig)
        files[f"{name}.png"] = png
        page.image(png, alt)

    def picture(name: str, array: np.ndarray, alt: str) -> None:
        # full-quality PNG beside the page; the page embeds a JPEG to stay light
        files[f"{name}.png"] = png_array_bytes(array)
        page.image(jpeg_bytes(array), alt, mime="image/jpeg")

    def table(name: str, df: pd.DataFrame, summary: str | None = None) -> None:
        files[f"{name}.csv"] = df.to_csv(index=False).encode()
        page.table(df, summary=summary)

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
        (
            "Test accuracy (chance "
            f"{1 / max(len(cities), 1):.2f}): "
            + ", ".join(
                f"{arch} {g.test_acc.mean():.2f}"
                for arch, g in acc.groupby("arch", sort=False)
                if g.test_acc.notna().any()
            )
            + " (mean over seeds)."
            if acc is not None and "test_acc" in acc
            else "No accuracy table."
        ),
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
        table("ar_pairs", pairs, f"AR of all {len(pairs)} model pairs")
        ar_images = _read_folder(ctx, an, "ar_images")
        if ar_images is not None and len(ar_images):
            figure("ar_distributions", ar_distributions(ar_images), "AR distribution per pair")

    page.h2("Weighted masks side by side", "masks")
    have = set(acc.model) if acc is not None else set()
    models = [
        m for m in (f"{a}-s{s}" for a in cfg.models.archs for s in cfg.models.seeds) if m in have
    ]
    grid_ids = sample_per_city(test_images, 2, cfg.analysis.seed)
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
        figure(
            "mask_grid",
            image_grid(rows, labels, ["image", *models], "Grad-CAM masks (mask_norm)", row_colors),
            "weighted masks of every model over sample test images",
        )

    page.h2("t-SNE of the explanations", "tsne")
    if emb is not None and len(emb):
        for pca in sorted(emb.pca.unique()):
            tag = pca.rstrip("%")
            figure(
                f"tsne_city_pca{tag}", tsne_by_city(emb, pca, colors), f"t-SNE by city, PCA {pca}"
            )
            if emb.top_class.notna().any():
                figure(
                    f"tsne_class_pca{tag}",
                    tsne_by_class(emb, pca, voc.names),
                    f"t-SNE by top object, PCA {pca}",
                )
        mos = emb[(emb.model == showcase) & (emb.descriptor == "d_cam")]
        mos = mos[mos.pca == sorted(mos.pca.unique())[0]] if len(mos) else mos
        picked = sample_per_city(mos, max(1, cfg.analysis.mosaic // max(len(cities), 1)), a_seed)
        assets.load({(i, showcase) for i in picked.image_id})
        thumbs, pts, borders = [], [], []
        for r in picked.itertuples():
            got = assets.pair(r.image_id, showcase)
            if got:
                thumbs.append(explanation_thumbnail(*got, theta, size=80))
                pts.append((r.x, r.y))
                borders.append(rgb[r.city])
        if thumbs:
            cells = int(np.ceil(np.sqrt(len(thumbs) * 1.6)))
            canvas = mosaic(np.asarray(pts), thumbs, borders, cells=cells)
            picture(
                "tsne_mosaic",
                canvas,
                f"t-SNE mosaic of {len(thumbs)} visual explanations of {showcase}",
            )
            page.p(
                f"{len(thumbs)} visual explanations of {showcase} (D_cam, PCA "
                f"{mos.pca.iloc[0] if len(mos) else ''}, θ = {theta}) placed at their t-SNE "
                "positions; frames in city colours.",
                "note",
            )

    page.h2("Objects", "objects")
    if objects is None or not len(objects):
        page.p(
            "No class maps: every image lacked one (see the segment stage's errors). "
            "Objects need a segmenter: ground-truth label maps (cities.&lt;name&gt;.labels) "
            "or a model (segmenter.backend, e.g. ade20k-ppm with CSAIL's weights).",
            "note",
        )
    if tops is not None and len(tops):
        figure("top_objects", top_objects_bars(tops, colors), "top objects per city and θ")
    if objects is not None and len(objects):
        for line in describe_unique(unique, objects, theta):
            page.p(html.escape(line))
        figure("r_p", r_p_bars(objects, theta, colors), "R_p per city, by model")
        figure("r_p_seeds", r_p_by_seed(objects, theta, colors), "R_p per city, by seed")
        sel = objects[objects.selected].sort_values(
            ["city", "theta", "model", "r_p"], ascending=[True, True, True, False]
        )
        files["objects.csv"] = objects.to_csv(index=False).encode()
        page.table(
            sel[["city", "theta", "model", "name", "r_p", "mean_in_mask", "mean_in_image"]],
            summary=f"R_p of the {len(sel)} selected (model, city, θ, object) rows",
        )

    page.h2("Galleries", "galleries")
    if emb is not None and len(emb):
        per_image = emb[(emb.model == showcase)].drop_duplicates("image_id")
        for name, title, chosen in (
            (
                "gallery_symbols",
                "Urban symbols: explanations most covered by objects only this city has",
                urban_symbols(_overlaps_of(ctx, showcase, theta), unique, voc.names, 6),
            ),
            (
                "gallery_architecture",
                "Architecture styles: building-dominated explanations",
                architecture_styles(per_image, voc.names, 6, a_seed),
            ),
        ):
            assets.load({(i, showcase) for i in chosen.image_id})
            g_rows, g_labels, g_colors = [], [], []
            for city, g in chosen.groupby("city", sort=True):
                tiles = [
                    explanation_thumbnail(*got, theta, size=120)
                    for i in g.image_id
                    if (got := assets.pair(i, showcase))
                ]
                if tiles:
                    g_rows.append(tiles)
                    g_labels.append(city)
                    g_colors.append(colors[city])
            if g_rows:
                figure(
                    name, image_grid(g_rows, g_labels, [], f"{title} ({showcase})", g_colors), title
                )
            else:
                page.p(f"{title}: none in this study.", "note")

    if assets.unreadable:
        page.p(
            f"{len(assets.unreadable)} image(s) could not be read for the pictures above "
            "(moved or deleted since the study ran) and are left out of them; e.g. "
            + html.escape(next(iter(assets.unreadable.values()))),
            "note",
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
    unreadable = [
        {
            "image_id": iid,
            "uri": assets.uri.get(iid),
            "stage": "report",
            "kind": "unreadable",
            "message": why,
        }
        for iid, why in sorted(assets.unreadable.items())
    ]
    store.write_table(f"{folder}/errors/errors.parquet", errors_table(unreadable))
    for name, data in files.items():
        store.write_bytes(f"{folder}/{name}", data)
    store.write_text(f"{folder}/report.html", report)
    store.write_text("report.html", report)
    pictured = len(assets.images)  # images the pictures asked for
    counts = {"inputs": pictured, "images": pictured - len(unreadable), "errors": len(unreadable)}
    rec = ctx.finish(
        "report",
        key,
        folder,
        started,
        files=sorted(files),
        report=store.url("report.html"),
        counts=counts,
    )
    ctx.progress(f"report: {store.url('report.html')}")
    return StageResult("report", "ran", rec)
