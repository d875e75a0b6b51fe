"""Stage *analyze*: AR, R_p, top objects, embeddings, accuracy and agreement tables.

Agreement curves are made when the study has annotations.

Consumes the committed ``train`` record (models), ``explain`` shards (masks,
descriptors, predictions), ``overlap`` shards (pixels per class inside explanations)
and ``segment``'s vocabulary. Writes ``analyze/<run>/``: ``ar_images/`` (AR_IMAGES),
``ar_pairs.parquet`` (AR_PAIRS), ``objects.parquet`` (OBJECTS), ``top_objects.parquet``
(TOP_OBJECTS), ``embeddings.parquet`` (EMBEDDINGS), ``accuracy.parquet`` (ACCURACY),
``training.parquet`` (TRAINING: each model's curve from its ``meta.json``),
``vocabulary.csv``, with annotations ``agreement.parquet`` (AGREEMENT),
``annotated.parquet`` (ANNOTATED) and ``annotators.parquet`` (ANNOTATORS), with
``explain.methods`` the methods compared (:mod:`citylens.pipeline.compare_methods`)
and, when ingest located images, ``places.parquet`` (PLACES,
:mod:`citylens.pipeline.place_maps`).

Reducers run as Ray tasks over shards and return small partial results (per-image AR
rows, per-(model, city, θ) pixel sums), so no process ever holds the whole corpus;
the pure functions of :mod:`citylens.analysis` add them up and build the tables.
Embeddings run one task per model × descriptor (PCA settings, then t-SNE).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.analysis.accuracy import accuracy_table, training_table
from citylens.analysis.ar import pair_table
from citylens.analysis.bootstrap import Resamples, place_index
from citylens.analysis.causal import (
    causal_examples,
    causal_table,
    curve_table,
    faithfulness_table,
    object_effects,
)
from citylens.analysis.claims import ar_kinds, distinctive_objects, object_means, top_settled
from citylens.analysis.embed import embedding_table
from citylens.analysis.objects import object_tables
from citylens.analysis.reduce import (
    accuracy_sums,
    add_sums,
    ar_of_table,
    list_matrix,
    sums_of_table,
)
from citylens.pipeline.agree import study_agreement, study_vocabulary
from citylens.pipeline.committed import committed, read_manifest, read_vocabulary
from citylens.pipeline.compare_methods import study_explanations, write_methods
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.place_maps import PlaceMaps
from citylens.storage import Store, digest, read_bytes
from citylens.tables import ABLATIONS, EMBEDDINGS, model_name

__all__ = ["ar_of_shard", "embed_model", "run_analyze", "sums_of_shard"]


@ray.remote
def ar_of_shard(
    store: Store, rel: str, grid: int, out: str, cities: list[str], resamples=None
) -> tuple[dict, dict]:
    """Per-image AR for every model pair, and correct predictions, over one shard.

    Writes the per-image rows to ``out`` and returns ``({(m1, m2): [Σ AR, Σ AR², n,
    ...]}, {model: [correct, n, ...]})``, with the sums under every resample when
    ``resamples`` is given (:class:`~citylens.analysis.bootstrap.Resamples`).
    """
    cols = ["image_id", "city", "model", "pred", "cam_h", "cam_w", "mask"]
    t = store.read_table(rel, columns=cols)
    table, sums = ar_of_table(t, grid, resamples)
    store.write_table(out, table)
    return sums, accuracy_sums(t, cities, resamples)


@ray.remote
def sums_of_shard(store: Store, rel: str, resamples=None) -> tuple[dict, pa.Table]:
    """Pixel sums per (model, city, θ) and each row's top class inside its explanation."""
    return sums_of_table(store.read_table(rel), resamples)


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


def _settings(ctx: Context) -> tuple[dict, list[tuple[str, str]]]:
    """The analyze stage's settings (its key) and the annotation CSVs' ``(uri, text)``."""
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
        "tables": 2,  # bump when analyze writes new tables (2: training curves)
    }
    if coords := (ctx.store.record("ingest") or {}).get("coords"):
        settings["coords"] = coords  # the places table maps them
    if not a.annotations:
        return settings, []
    files = [(uri, read_bytes(uri, cfg.run.storage_options).decode()) for uri in a.annotations]
    settings["annotations"] = [digest(text) for _, text in files]
    settings["agreement_thresholds"] = list(a.agreement_thresholds)
    return settings, files


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


def _each(refs: list):
    """Each task's result in turn, each reference dropped once read.

    The driver holds one partial result at a time, however many shards there are.
    """
    while refs:
        yield ray.get(refs.pop(0))


def _ar_tables(store: Store, folder: str, refs: list, arch_of: dict, ci: float, places):
    """Add up the AR tasks' results, write the AR tables; return the accuracy sums."""
    pair_sums: dict = {}
    acc_sums: dict = {}
    for pairs, hits in _each(refs):
        add_sums(pair_sums, pairs)
        add_sums(acc_sums, hits)
    if pair_sums:
        store.write_table(f"{folder}/ar_pairs.parquet", pair_table(pair_sums, arch_of, ci, places))
        store.write_table(f"{folder}/ar_kinds.parquet", ar_kinds(pair_sums, arch_of, ci, places))
    return acc_sums


def _resamples(ctx: Context) -> Resamples | None:
    """The study's place resamples over the test split (None with bootstrap 0)."""
    a = ctx.cfg.analysis
    if not a.bootstrap:
        return None
    m = read_manifest(ctx.store, ["image_id", "city", "place", "split"])
    m = m.filter(pc.equal(m["split"], "test"))
    index = place_index(m["city"].to_pylist(), m["place"].to_pylist())
    return Resamples(index, m["image_id"].to_pylist(), a.bootstrap, a.seed)


def _claims(store: Store, folder: str, totals: dict, names, arch_of: dict, a, by_city) -> tuple:
    """The averaged R_p, the distinctive-object tests and the settled top objects.

    Returns:
        ``(object means, distinctive)`` tables.
    """
    means = object_means(totals, names, arch_of, a.min_mean_pixels, a.ci, by_city)
    store.write_table(f"{folder}/object_means.parquet", means)
    distinctive = distinctive_objects(totals, names, a.min_mean_pixels, a.ci, 0.05, by_city)
    store.write_table(f"{folder}/distinctive.parquet", distinctive)
    store.write_table(
        f"{folder}/top_settled.parquet",
        top_settled(totals, names, a.min_mean_pixels, a.ci, by_city),
    )
    return means, distinctive


def _accuracy(ctx: Context, folder: str, models: dict, acc_sums: dict, places) -> None:
    """The accuracy table and each model's training curve."""
    store, a = ctx.store, ctx.cfg.analysis
    trained = {n: {**m, **(store.record(f"train/{n}") or {})} for n, m in models.items()}
    acc = accuracy_table(trained, acc_sums, ctx.cfg.explain.target == "true", a.ci, places)
    store.write_table(f"{folder}/accuracy.parquet", acc)
    metas = {
        n: json.loads(store.read_bytes(f"{r.get('folder', f'models/{n}')}/meta.json"))
        for n, r in trained.items()
    }
    store.write_table(f"{folder}/training.parquet", training_table(metas))


def _causal(ctx: Context, folder: str, names, arch_of: dict, seed_of: dict) -> tuple:
    """The causal check's tables: what removing each object costs, and faithfulness.

    Returns:
        ``(the ablations table, image id -> place, the causal table)``.
    """
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
    return table, place_of, causal


def _agreement(ctx: Context, folder: str, files: list[tuple[str, str]]) -> dict:
    """The agreement tables of the study's annotations; returns their counts."""
    a = ctx.cfg.analysis
    got = study_agreement(
        ctx.store,
        files,
        study_vocabulary(ctx.store, ctx.cfg),
        a.agreement_thresholds,
        a.bootstrap,
        a.seed,
        a.ci,
    )
    ctx.store.write_table(f"{folder}/agreement.parquet", got.curves)
    ctx.store.write_table(f"{folder}/annotated.parquet", got.annotated)
    ctx.store.write_table(f"{folder}/annotators.parquet", got.annotators)
    who = sorted({x.annotator for x in got.annotations})
    ctx.progress(
        f"analyze: {len(got.annotations)} annotation(s) by {len(who)} annotator(s) from "
        f"{len(files)} file(s) match {got.annotated.num_rows} explanation(s); "
        f"{len(got.unmatched)} name no image of the study, {len(got.unexplained)} no "
        "explanation of it"
    )
    return {
        "annotations_unmatched": len(got.unmatched),
        "annotations_unexplained": len(got.unexplained),
        "annotators": len(who),
    }


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
    resamples = _resamples(ctx)
    places = sum(resamples.places_of_city.values()) if resamples else None
    by_city = resamples.places_of_city if resamples else None
    res_ref = ray.put(resamples)
    cities = committed(store, "ingest")["cities"]
    ar_refs = [
        ar_of_shard.remote(
            store, f, grid, f"{folder}/ar_images/{f.rsplit('/', 1)[1]}", cities, res_ref
        )
        for f in exp_files
    ]
    sum_refs = [sums_of_shard.remote(store, f, res_ref) for f in ov_files]
    maps = PlaceMaps.start(store, ov_files, min(cfg.explain.thetas))  # the report's θ
    emb_refs = [
        embed_model.remote(store, exp_files, m, d, list(a.pca), a.perplexity, a.seed)
        for m in sorted(models)
        for d in ("d_cam", "d_short")
    ]
    arch_of = {n: m["arch"] for n, m in models.items()}
    acc_sums = _ar_tables(store, folder, ar_refs, arch_of, a.ci, places)
    totals, tops = {}, []
    for sums, top in _each(sum_refs):
        tops.append(top)
        add_sums(totals, sums)
    seed_of = {n: m["seed"] for n, m in models.items()}
    objects, top_objects = object_tables(
        totals, voc.names, arch_of, seed_of, a.min_mean_pixels, a.top_k, a.ci, by_city
    )
    store.write_table(f"{folder}/objects.parquet", objects)
    store.write_table(f"{folder}/top_objects.parquet", top_objects)
    means, distinctive = _claims(store, folder, totals, voc.names, arch_of, a, by_city)
    if maps is not None:
        places_table = maps.table(exp_files, cities, totals, means, distinctive, voc.names)
        store.write_table(f"{folder}/places.parquet", places_table)
    emb = _embeddings(ray.get(emb_refs), tops, min(cfg.explain.thetas))
    if emb is not None:
        store.write_table(f"{folder}/embeddings.parquet", emb)
    _accuracy(ctx, folder, models, acc_sums, places)
    store.write_text(f"{folder}/vocabulary.csv", voc.to_csv())
    causal = _causal(ctx, folder, voc.names, arch_of, seed_of)
    counts = {
        "inputs": int(exp_rec["counts"]["images"]),  # every explained image is reduced
        "images": int(exp_rec["counts"]["images"]),
        "errors": 0,
        "models": len(models),
        "pairs": len(models) * (len(models) - 1) // 2,
    }
    if explanations := study_explanations(store):
        ctx.progress(f"analyze: {len(explanations)} explanations of {len(models)} models compared")
        counts |= write_methods(
            store, folder, explanations, totals, voc.names, cfg, resamples, causal
        )
    if annotations:
        counts |= _agreement(ctx, folder, annotations)
    rec = ctx.finish("analyze", key, folder, started, counts=counts)
    return StageResult("analyze", "ran", rec)
