"""Stage *report*: ``report.html`` plus the PNG and CSV of every figure and table.

Consumes the committed ``analyze`` tables (accuracy, ar_pairs, ar_kinds, ar_images,
objects, object_means, distinctive, top_settled, top_objects, embeddings, agreement,
annotated, annotators, causal, causal_examples, faithfulness, curves, training,
vocabulary, places), the ``baseline`` stage's leakage baselines, ingest's near-train figures,
the manifest, the showcase model's overlap rows and, for the pictures, a sample of
images with their explanation masks and (removal pictures) their class maps.
Writes ``report/<run>/`` (``report.html``, every figure's PNG and table's CSV,
``places.geojson`` for a located study, and an
errors table of pictures whose image could not be read) and ``report.html`` at the
store's root. The page itself is built by the pure :func:`citylens.report.page.build_report`.
"""

from __future__ import annotations

import pandas as pd

from citylens.pipeline.committed import committed, read_manifest, read_overlaps
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.report_assets import ReportAssets
from citylens.report.page import ReportSettings, ReportTables, build_report
from citylens.storage import Store, digest
from citylens.tables import error_row, errors_table, model_name
from citylens.vocabulary import Vocabulary

__all__ = ["run_report"]

_COUNTED = (
    "ingest",
    "baseline",
    "train",
    "explain",
    "segment",
    "overlap",
)  # stages whose errors it sums


def _read(store: Store, folder: str, name: str) -> pd.DataFrame | None:
    """``<folder>/<name>.parquet``, or every shard of ``<folder>/<name>/``; None if absent."""
    rel = f"{folder}/{name}.parquet"
    if store.exists(rel):
        return store.read_table(rel).to_pandas()
    files = store.files(f"{folder}/{name}", ".parquet")
    if not files:
        return None
    return pd.concat([store.read_table(f).to_pandas() for f in files], ignore_index=True)


_METHOD_TABLES = ("method_pairs", "method_objects", "method_faithfulness", "method_rankings")


def _tables(ctx: Context, settings: ReportSettings, manifest) -> ReportTables:
    """Everything the page is drawn from, read from the committed stages."""
    store = ctx.store
    an = committed(store, "analyze")["folder"]
    ingest = committed(store, "ingest")
    voc = Vocabulary.from_csv(store.read_bytes(f"{an}/vocabulary.csv").decode(), "report")
    emb = _read(store, an, "embeddings")
    showcase = None
    if emb is not None and len(emb):  # the galleries' overlaps: only when they are drawn
        cols = ["image_id", "city", "model", "theta", "class_pixels_in_mask"]
        ov = read_overlaps(store, cols, model=settings.showcase).to_pandas()
        showcase = ov[(ov.theta - settings.theta).abs() < 1e-6]
    test = manifest.to_pandas()
    places = _read(store, an, "places")
    ar_images = _read(store, an, "ar_images")
    place_ar = None
    if places is not None and ar_images is not None and len(ar_images):
        where = test[test.split == "test"][["image_id", "city", "place"]]
        place_ar = (
            ar_images.merge(where, on=["image_id", "city"]).groupby(["city", "place"]).ar.mean()
        )
    baseline = _current_baseline(store)
    return ReportTables(
        cities=ingest["cities"],
        counts=ingest["counts"],
        errors={s: (store.record(s) or {}).get("counts", {}).get("errors", 0) for s in _COUNTED},
        names=voc.names,
        test_images=test[test.split == "test"][["image_id", "city"]].reset_index(drop=True),
        accuracy=_read(store, an, "accuracy"),
        ar_pairs=_read(store, an, "ar_pairs"),
        ar_images=ar_images,
        objects=_read(store, an, "objects"),
        top_objects=_read(store, an, "top_objects"),
        embeddings=emb,
        agreement=_read(store, an, "agreement"),
        annotated=_read(store, an, "annotated"),
        annotators=_read(store, an, "annotators"),
        causal=_read(store, an, "causal"),
        causal_examples=_read(store, an, "causal_examples"),
        faithfulness=_read(store, an, "faithfulness"),
        curves=_read(store, an, "curves"),
        showcase_overlaps=showcase,
        ar_kinds=_read(store, an, "ar_kinds"),
        object_means=_read(store, an, "object_means"),
        distinctive=_read(store, an, "distinctive"),
        top_settled=_read(store, an, "top_settled"),
        training=_read(store, an, "training"),
        **{n: _read(store, an, n) for n in _METHOD_TABLES},
        places=places,
        place_ar=place_ar,
        near_train=ingest.get("near_train"),
        baselines=_read(store, baseline["folder"], "baselines") if baseline else None,
    )


def _current_baseline(store: Store) -> dict | None:
    """The baseline stage's record, if it was made from the committed manifest."""
    rec, ingest = store.record("baseline"), store.record("ingest")
    if rec is None or ingest is None or rec.get("ingest") != ingest.get("output"):
        return None
    return rec


def _layers_explained(store: Store) -> tuple[str, ...]:
    """``"resnet18 layer4 (3×3)"`` per architecture, from explain's record and the models."""
    import json

    rec = store.record("explain") or {}
    seen = {}
    for name in rec.get("models", []):
        meta = json.loads(store.read_bytes(f"models/{name}/meta.json"))
        layer = (rec.get("layers") or {}).get(name, meta["target_layer"])
        size = (meta.get("layers") or {}).get(layer, meta["cam_size"])
        seen[meta["arch"]] = f"{meta['arch']} {layer} ({size[0]}×{size[1]})"
    return tuple(seen.values())


def run_report(ctx: Context) -> StageResult:
    """Draw the study's report from its analysis tables (see the module docstring)."""
    cfg, store = ctx.cfg, ctx.store
    settings = ReportSettings(
        name=cfg.name,
        archs=tuple(cfg.models.archs),
        seeds=tuple(cfg.models.seeds),
        input_size=cfg.train.input_size,
        thetas=tuple(cfg.explain.thetas),
        segmenter=cfg.segmenter.backend,
        showcase=model_name(cfg.models.archs[0], cfg.models.seeds[0]),  # the thesis: VGG11's
        mosaic=cfg.analysis.mosaic,
        seed=cfg.analysis.seed,
        fill=cfg.ablate.fill,
        method=(store.record("explain") or {}).get("method", "gradcam"),
        layers=_layers_explained(store),
    )
    key_settings = {
        "name": cfg.name,
        "showcase": settings.showcase,
        "mosaic": cfg.analysis.mosaic,
        "seed": cfg.analysis.seed,
        "version": 7,  # bump when the report's content changes (7: maps, leakage audit)
    }
    up = ctx.upstream("ingest", "explain", "overlap", "analyze")
    if _current_baseline(store) is not None:
        up |= ctx.upstream("baseline")
    ingest = store.record("ingest") or {}
    if "coords" in ingest:  # the maps and near-train figures (not in ingest's output)
        key_settings["coords"] = ingest["coords"]
        key_settings["near_train"] = digest(ingest.get("near_train"))
    key = ctx.key("report", up, key_settings)
    if (rec := ctx.up_to_date("report", key)) and store.exists("report.html"):
        return StageResult("report", "skipped", rec)
    folder, started = ctx.begin("report")
    manifest = read_manifest(store)
    assets = ReportAssets(store, manifest, cfg.run.storage_options)
    report, files = build_report(_tables(ctx, settings, manifest), settings, assets)
    unreadable = [
        error_row("report", "unreadable", why, iid, assets.uri.get(iid))
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
