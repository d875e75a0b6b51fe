"""Stage *analyze*: reduce the tables into AR, R_p, top objects, embeddings, accuracy
and (with annotations) agreement curves.

Reducers run as Ray tasks over shards and return small partial results (per-image AR
rows, per-(model, city, θ) pixel sums), so no process ever holds the whole corpus.
Embeddings run one task per model × descriptor (PCA settings, then t-SNE).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.analysis.embed import embed
from citylens.analysis.ratios import city_objects, top_objects
from citylens.analysis.reduce import ar_of_table, list_matrix, sums_of_table
from citylens.data.images import read_bytes
from citylens.pipeline.agree import study_agreement
from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store, digest
from citylens.vocabulary import Vocabulary

__all__ = ["ar_of_shard", "pair_table", "run_analyze", "sums_of_shard"]


def _pca_label(k: int | float) -> str:
    return f"{round(k * 100)}%" if isinstance(k, float) else str(k)


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
    cols = defaultdict(list)
    for keep in pcas:
        if len(x) < 4:
            break
        pts, k = embed(x, keep, perplexity, seed)
        n = len(x)
        cols["model"] += [model] * n
        cols["descriptor"] += [descriptor] * n
        cols["pca"] += [_pca_label(keep)] * n
        cols["components"] += [k] * n
        cols["image_id"] += t["image_id"].to_pylist()
        cols["city"] += t["city"].to_pylist()
        cols["x"] += pts[:, 0].tolist()
        cols["y"] += pts[:, 1].tolist()
    return pa.table(dict(cols)) if cols else pa.table({})


def pair_table(sums: dict, arch_of: dict[str, str]) -> pa.Table:
    """Mean AR per model pair (paper Table 2) from ``{(m1, m2): [Σ AR, Σ AR², n]}``.

    ``kind`` is ``seeds`` for two seeds of one architecture, else ``architectures``.
    """
    rows = []
    for (a, b), (s, s2, n) in sorted(sums.items()):
        mean = s / n
        std = float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
        same = arch_of[a] == arch_of[b]
        rows.append(
            {
                "model_a": a,
                "model_b": b,
                "arch_a": arch_of[a],
                "arch_b": arch_of[b],
                "kind": "seeds" if same else "architectures",
                "mean_ar": float(mean),
                "std_ar": std,
                "images": int(n),
            }
        )
    return pa.Table.from_pylist(rows)


def run_analyze(ctx: Context) -> StageResult:
    cfg, store = ctx.cfg, ctx.store
    up = ctx.upstream("train", "explain", "overlap")
    grid = cfg.explain.ar_grid or cfg.train.input_size
    a = cfg.analysis
    settings = {
        "grid": grid,
        "pca": list(a.pca),
        "perplexity": a.perplexity,
        "min_mean_pixels": a.min_mean_pixels,
        "top_k": a.top_k,
        "seed": a.seed,
    }
    annotations = None
    if a.annotations:
        annotations = read_bytes(a.annotations, cfg.run.storage_options).decode()
        settings["annotations"] = digest(annotations)
        settings["agreement_thresholds"] = list(a.agreement_thresholds)
    key = ctx.key("analyze", up, settings)
    if rec := ctx.up_to_date("analyze", key):
        return StageResult("analyze", "skipped", rec)
    folder, started = ctx.begin("analyze")
    ctx.ray()
    exp_rec, ov_rec = store.record("explain"), store.record("overlap")
    models = store.record("train")["models"]
    arch_of = {n: m["arch"] for n, m in models.items()}
    seed_of = {n: m["seed"] for n, m in models.items()}
    exp_files = store.files(f"{exp_rec['folder']}/data", ".parquet")
    ov_files = store.files(f"{ov_rec['folder']}/data", ".parquet")
    voc = Vocabulary.from_csv(
        store.read_bytes(f"{store.record('segment')['folder']}/vocabulary.csv").decode(), "seg"
    )
    ctx.progress(
        f"analyze: AR over {len(exp_files)} shards, R_p over {len(ov_files)} shards, "
        f"{len(models) * 2} embeddings"
    )
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

    pair_sums: dict = defaultdict(lambda: [0.0, 0.0, 0])
    for part in ray.get(ar_refs):
        for k, (s, s2, n) in part.items():
            acc = pair_sums[k]
            acc[0] += s
            acc[1] += s2
            acc[2] += n
    if pair_sums:
        store.write_table(f"{folder}/ar_pairs.parquet", pair_table(pair_sums, arch_of))

    totals: dict = {}
    tops = []
    for sums, top in ray.get(sum_refs):
        tops.append(top)
        for k, (m, n, c) in sums.items():
            if k not in totals:
                totals[k] = [np.zeros_like(m), np.zeros_like(n), 0]
            totals[k][0] += m
            totals[k][1] += n
            totals[k][2] += c
    obj_rows, top_rows = [], []
    for (model, city, theta), (m, n, count) in sorted(totals.items()):
        co = city_objects(m, n, count, a.min_mean_pixels)
        for p in range(1, len(voc)):
            if co.mean_in_image[p] == 0:
                continue
            obj_rows.append(
                {
                    "model": model,
                    "arch": arch_of[model],
                    "seed": seed_of[model],
                    "city": city,
                    "theta": theta,
                    "class": p,
                    "name": voc.names[p],
                    "r_p": float(co.r_p[p]),
                    "mean_in_mask": float(co.mean_in_mask[p]),
                    "mean_in_image": float(co.mean_in_image[p]),
                    "selected": bool(co.selected[p]),
                    "images": count,
                }
            )
        for rank, p in enumerate(top_objects(co.mean_in_mask, a.top_k), start=1):
            top_rows.append(
                {
                    "model": model,
                    "city": city,
                    "theta": theta,
                    "rank": rank,
                    "class": p,
                    "name": voc.names[p],
                    "mean_in_mask": float(co.mean_in_mask[p]),
                }
            )
    store.write_table(f"{folder}/objects.parquet", pa.Table.from_pylist(obj_rows))
    store.write_table(f"{folder}/top_objects.parquet", pa.Table.from_pylist(top_rows))

    emb = [t for t in ray.get(emb_refs) if t.num_rows]
    if emb:
        emb = pa.concat_tables(emb)
        top = pa.concat_tables(tops)
        first = min(cfg.explain.thetas)
        top = top.filter(pc.equal(top["theta"], pa.scalar(first, pa.float32())))
        emb = emb.join(top.select(["image_id", "model", "top_class"]), ["image_id", "model"])
        store.write_table(
            f"{folder}/embeddings.parquet",
            emb.sort_by(
                [
                    ("model", "ascending"),
                    ("descriptor", "ascending"),
                    ("pca", "ascending"),
                    ("image_id", "ascending"),
                ]
            ),
        )

    acc_rows = []
    preds = (
        pa.concat_tables(
            [store.read_table(f, columns=["model", "target", "pred"]) for f in exp_files]
        )
        if exp_files
        else None
    )
    for name in sorted(models):
        rec = store.record(f"train/{name}") or {}
        row = {
            "model": name,
            "arch": arch_of[name],
            "seed": seed_of[name],
            "val_acc": rec.get("val_acc"),
            "test_acc": rec.get("test_acc"),
        }
        if preds is not None and cfg.explain.target == "true":
            sel = preds.filter(pc.equal(preds["model"], name))
            hits = pc.sum(pc.equal(sel["target"], sel["pred"]).cast(pa.int64())).as_py() or 0
            row["explained_acc"] = hits / max(sel.num_rows, 1)
            row["explained"] = sel.num_rows
        acc_rows.append(row)
    store.write_table(f"{folder}/accuracy.parquet", pa.Table.from_pylist(acc_rows))
    store.write_text(f"{folder}/vocabulary.csv", voc.to_csv())
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
