"""Stage *baseline*: the leakage audit's trivial classifiers, beside the models.

Consumes the committed manifest. Decodes every train and test image once (Ray Data,
one task per batch), keeps its mean colour and colour histogram
(:func:`citylens.analysis.baselines.colour_features`, on a 64-px copy), reads the
metadata words and years of its file name, and fits the baselines
(:func:`citylens.analysis.baselines.baseline_table`). Writes ``baseline/<run>/``:
``features.parquet`` (BASELINE_FEATURES rows of the decoded images),
``baselines.parquet`` (BASELINES) and ``errors/`` (images that could not be decoded:
they are left out of the baselines, and recorded). Depends on ingest only, so a new
analysis or model never decodes the corpus again.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.analysis.baselines import baseline_table, colour_features, name_tokens
from citylens.analysis.reduce import list_matrix
from citylens.data.images import decode_rgb, failure_of, resize_rgb
from citylens.pipeline.committed import read_manifest
from citylens.pipeline.context import Context, StageResult
from citylens.storage import read_bytes
from citylens.tables import BASELINE_FEATURES, error_row, errors_table

__all__ = ["features_batch", "run_baseline"]

_SIZE = 64  # the colour statistics of a 64-px copy differ from the full image's by < 1 %


def features_batch(batch: pa.Table, storage_options: dict) -> pa.Table:
    """Colour features of a batch of images; unreadable ones get an error kind instead."""
    out = {f.name: [] for f in BASELINE_FEATURES}
    for row in batch.to_pylist():
        feats, kind, message = None, None, None
        try:
            rgb = decode_rgb(read_bytes(row["uri"], storage_options), name=row["uri"])
            feats = colour_features(resize_rgb(rgb, _SIZE)).tolist()
        except Exception as err:  # noqa: BLE001 (failure_of re-raises what is not per-image)
            kind, message = failure_of(err)
        for k, v in (
            ("image_id", row["image_id"]),
            ("city", row["city"]),
            ("features", feats),
            ("error_kind", kind),
            ("error_message", message),
        ):
            out[k].append(v)
    return pa.table(out, schema=BASELINE_FEATURES)


def run_baseline(ctx: Context) -> StageResult:
    """Fit and score the leakage baselines (see the module docstring)."""
    store, a = ctx.store, ctx.cfg.analysis
    settings = {"size": _SIZE, "bootstrap": a.bootstrap, "ci": a.ci, "seed": a.seed, "version": 1}
    key = ctx.key("baseline", ctx.upstream("ingest"), settings)
    if rec := ctx.up_to_date("baseline", key):
        return StageResult("baseline", "skipped", rec)
    folder, started = ctx.begin("baseline")
    manifest = read_manifest(store, ["image_id", "uri", "city", "place", "split"])
    manifest = manifest.filter(pc.is_in(manifest["split"], value_set=pa.array(["train", "test"])))
    ctx.progress(f"baseline: colour features of {manifest.num_rows} train and test images")
    ctx.ray()
    items = manifest.select(["image_id", "uri", "city"])
    ds = ray.data.from_arrow(items).repartition(max(1, min(items.num_rows // 256, 200)))
    ds = ds.map_batches(
        features_batch,
        batch_format="pyarrow",
        batch_size=64,
        fn_kwargs={"storage_options": ctx.cfg.run.storage_options},
    )
    parts = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    feats = (
        pa.concat_tables(parts).cast(BASELINE_FEATURES)
        if parts
        else BASELINE_FEATURES.empty_table()
    )
    bad = feats.filter(pc.invert(pc.is_null(feats["error_kind"])))
    uri_of = dict(zip(manifest["image_id"].to_pylist(), manifest["uri"].to_pylist()))
    errors = [
        error_row(
            "baseline",
            r["error_kind"],
            r["error_message"],
            r["image_id"],
            uri_of.get(r["image_id"]),
        )
        for r in bad.to_pylist()
    ]
    store.write_table(f"{folder}/errors/errors.parquet", errors_table(errors))
    good = feats.filter(pc.is_null(feats["error_kind"]))
    store.write_table(f"{folder}/features.parquet", good)
    rows = manifest.to_pandas().set_index("image_id").loc[good["image_id"].to_pylist()]
    x = (
        list_matrix(good["features"], np.float32)
        if good.num_rows
        else np.zeros((0, 67), np.float32)
    )
    tokens = [name_tokens(u, p, c) for u, p, c in zip(rows.uri, rows.place, rows.city)]
    table = baseline_table(
        x,
        tokens,
        rows.city.to_numpy(),
        rows.place.to_numpy(),
        rows.split.to_numpy(),
        n_boot=a.bootstrap,
        ci=a.ci,
        seed=a.seed,
    )
    store.write_table(f"{folder}/baselines.parquet", table)
    counts = {"inputs": manifest.num_rows, "images": good.num_rows, "errors": len(errors)}
    rec = ctx.finish(
        "baseline", key, folder, started, counts=counts, ingest=ctx.upstream("ingest")["ingest"]
    )
    for r in table.to_pylist():
        ctx.progress(f"baseline: {r['baseline']}: test accuracy {r['accuracy']:.2f}")
    return StageResult("baseline", "ran", rec)
