"""Stage *analyze*: AR, R_p, top objects, embeddings, accuracy and agreement tables.

Agreement curves are made when the study has annotations.

Consumes the committed ``train`` record (models), ``explain`` shards (masks,
descriptors, predictions), ``overlap`` shards (pixels per class inside explanations)
and ``segment``'s vocabulary. Writes ``analyze/<run>/``: ``ar_images/`` (AR_IMAGES),
``ar_pairs.parquet`` (AR_PAIRS), ``objects.parquet`` (OBJECTS), ``top_objects.parquet``
(TOP_OBJECTS), ``embeddings.parquet`` (EMBEDDINGS), ``accuracy.parquet`` (ACCURACY),
``vocabulary.csv`` and, with annotations, ``agreement.parquet`` (AGREEMENT).

Reducers run as Ray tasks over shards and return small partial results (per-image AR
rows, per-(model, city, θ) pixel sums), so no process ever holds the whole corpus;
the pure functions of :mod:`citylens.analysis` add them up and build the tables.
Embeddings run one task per model × descriptor (PCA settings, then t-SNE).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.analysis.accuracy import accuracy_table
from citylens.analysis.ar import add_pair_sums, pair_table
from citylens.analysis.causal import (
    causal_examples,
    causal_table,
    curve_table,
    faithfulness_table,
    object_effects,
)
from citylens.analysis.embed import embedding_table
from citylens.analysis.objects import add_pixel_sums, object_tables
from citylens.analysis.reduce import ar_of_table, list_matrix, sums_of_table
from citylens.pipeline.agree import study_agreement
from citylens.pipeline.committed import committed, read_manifest, read_vocabulary
from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store, digest, read_bytes
from citylens.tables import ABLATIONS, EMBEDDINGS, model_name

__all__ = ["ar_of_shard", "embed_model", "run_analyze", "sums_of_shard"]


@ray.remote
def ar_of_shard(store: Store, rel: str, grid: int, out: str) -> dict:
    """Per-image AR for every model pair over one explanation shard.

    Writes the per-image rows to ``out`` and returns ``{(m1, m2): [Σ AR, Σ AR², n]}``.
    """
    t = store.read_table(rel, columns=["image_id", "city", "model", "cam_h", "cam_w", "mask"])
    table, sums = ar_of_table(t, grid)
    store.write_table(out, table)
    return sums


@ray.remote
def sums_of_shard(store: Store, rel: str) -> tuple[dict, pa.Table]:
    """Pixel sums per (model, city, θ) and each row's top class inside its explanation."""
    return sums_of_table(store.read_table(rel))


@ray.remote
def embed_model(
    store: Store,
    files: list[str],
    model: str,
    descriptor: str,
    pcas: list,
    perplexity: float,
    seed: int,
) -> pa.Table:
    """PCA + t-SNE of one model's descriptors, for every PCA setting."""
    parts = []
    for rel in files:
        t = store.read_table(rel, columns=["image_id", "city", "model", descriptor])
        parts.append(t.filter(pc.equal(t["model"], model)))
    t = pa.concat_tables(parts).sort_by("image_id")
    x = list_matrix(t[descriptor], np.float32) if t.num_rows else np.zeros((0, 1), np.float32)
    ids, cities = t["image_id"].to_pylist(), t["city"].to_pylist()
    return embedding_table(ids, cities, x, model, descriptor, pcas, perplexity, seed)


def _settings(ctx: Context) -> tuple[dict, str | None]:
    """The analyze stage's settings (its key) and the annotation CSV's text, if any."""
    cfg, a = ctx.cfg, ctx.cfg.analysis
    settings = {
        "grid": cfg.explain.ar_grid or cfg.train.input_size,
        "pca": list(a.pca),
        "perplexity": a.perplexity,
        "min_mean_pixels": a.min_mean_pixels,
        "top_k": a.top_k,
        "seed": a.seed,
        "bootstrap": a.bootstrap,
        "ci": a.ci,
    }
    if not a.annotations:
        return settings, None
    annotations = read_bytes(a.annotations, cfg.run.storage_options).decode()
    settings["annotations"] = digest(annotations)
    settings["agreement_thresholds"] = list(a.agreement_thresholds)
    return settings, annotations


def _embeddings(parts: list[pa.Table], tops: list[pa.Table], theta: float) -> pa.Table | None:
    """The embeddings with each image's top object at θ, sorted; None if there are none."""
    emb = [t for t in parts if t.num_rows]
    if not emb:
        return None
    top = pa.concat_tables(tops)
    top = top.filter(pc.equal(top["theta"], pa.scalar(theta, pa.float32())))
    emb = pa.concat_tables(emb).join(
        top.select(["image_id", "model", "top_class"]), ["image_id", "model"]
    )
    order = [(c, "ascending") for c in ("model", "descriptor", "pca", "image_id")]
    return emb.sort_by(order).cast(EMBEDDINGS)


def _causal(ctx: Context, folder: str, names, arch_of: dict, seed_of: dict) -> None:
    """The causal check's tables: what removing each object costs, and faithfulness."""
    store, a = ctx.store, ctx.cfg.analysis
    table = store.read_table(f"{committed(store, 'ablate')['folder']}/data", schema=ABLATIONS)
    manifest = read_manifest(store, ["image_id", "place"])
    place_of = dict(zip(manifest["image_id"].to_pylist(), manifest["place"].to_pylist()))
    effects = object_effects(table)
    boot = {"n_boot": a.bootstrap, "ci": a.ci, "seed": a.seed}
    causal = causal_table(effects, place_of, names, arch_of, seed_of, **boot)
    store.write_table(f"{folder}/causal.parquet", causal)
    showcase = model_name(ctx.cfg.models.archs[0], ctx.cfg.models.seeds[0])
    examples = causal_examples(effects, causal, showcase, per_city=2)
    store.write_table(f"{folder}/causal_examples.parquet", examples)
    store.write_table(f"{folder}/curves.parquet", curve_table(table))
    steps = tuple(ctx.cfg.ablate.steps)
    store.write_table(
        f"{folder}/faithfulness.parquet", faithfulness_table(table, steps, place_of, **boot)
    )


def run_analyze(ctx: Context) -> StageResult:
    """Reduce a study's explanations and overlaps into the analysis tables.

    The module docstring says what it reads and writes.
    """
    cfg, store, a = ctx.cfg, ctx.store, ctx.cfg.analysis
    settings, annotations = _settings(ctx)
    key = ctx.key("analyze", ctx.upstream("train", "explain", "ablate", "overlap"), settings)
    if rec := ctx.up_to_date("analyze", key):
        return StageResult("analyze", "skipped", rec)
    folder, started = ctx.begin("analyze")
    ctx.ray()
    exp_rec = committed(store, "explain")
    models = committed(store, "train")["models"]
    exp_files = store.files(f"{exp_rec['folder']}/data", ".parquet")
    ov_files = store.files(f"{committed(store, 'overlap')['folder']}/data", ".parquet")
    voc = read_vocabulary(store)
    ctx.progress(
        f"analyze: AR over {len(exp_files)} shards, R_p over {len(ov_files)} shards, "
        f"{len(models) * 2} embeddings"
    )
    grid = settings["grid"]
    ar_refs = [
        ar_of_shard.remote(store, f, grid, f"{folder}/ar_images/{f.rsplit('/', 1)[1]}")
        for f in exp_files
    ]
    sum_refs = [sums_of_shard.remote(store, f) for f in ov_files]
    emb_refs = [
        embed_model.remote(store, exp_files, m, d, list(a.pca), a.perplexity, a.seed)
        for m in sorted(models)
        for d in ("d_cam", "d_short")
    ]
    arch_of = {n: m["arch"] for n, m in models.items()}
    pair_sums: dict = {}
    for part in ray.get(ar_refs):
        add_pair_sums(pair_sums, part)
    if pair_sums:
        store.write_table(f"{folder}/ar_pairs.parquet", pair_table(pair_sums, arch_of))
    totals: dict = {}
    tops = []
    for sums, top in ray.get(sum_refs):
        tops.append(top)
        add_pixel_sums(totals, sums)
    seed_of = {n: m["seed"] for n, m in models.items()}
    objects, top_objects = object_tables(
        totals, voc.names, arch_of, seed_of, a.min_mean_pixels, a.top_k
    )
    store.write_table(f"{folder}/objects.parquet", objects)
    store.write_table(f"{folder}/top_objects.parquet", top_objects)
    emb = _embeddings(ray.get(emb_refs), tops, min(cfg.explain.thetas))
    if emb is not None:
        store.write_table(f"{folder}/embeddings.parquet", emb)
    cols = ["model", "target", "pred"]
    preds = (
        pa.concat_tables([store.read_table(f, columns=cols) for f in exp_files])
        if exp_files
        else None
    )
    trained = {n: {**m, **(store.record(f"train/{n}") or {})} for n, m in models.items()}
    acc = accuracy_table(trained, preds, cfg.explain.target == "true")
    store.write_table(f"{folder}/accuracy.parquet", acc)
    store.write_text(f"{folder}/vocabulary.csv", voc.to_csv())
    _causal(ctx, folder, voc.names, arch_of, seed_of)
    counts = {
        "inputs": int(exp_rec["counts"]["images"]),  # every explained image is reduced
        "images": int(exp_rec["counts"]["images"]),
        "errors": 0,
        "models": len(models),
        "pairs": len(models) * (len(models) - 1) // 2,
    }
    if annotations is not None:
        table, unmatched = study_agreement(
            store, annotations, a.agreement_thresholds, a.annotations
        )
        store.write_table(f"{folder}/agreement.parquet", table)
        counts["annotations_unmatched"] = len(unmatched)
        ctx.progress(
            f"analyze: agreement with {a.annotations}: {table.num_rows} curve points, "
            f"{len(unmatched)} annotated image(s) not in the study"
        )
    rec = ctx.finish("analyze", key, folder, started, counts=counts)
    return StageResult("analyze", "ran", rec)
