"""Models the train stage keeps or takes instead of fitting them.

* ``train.retrain: new_city``: a model's key digests the cities and the split settings,
  not the manifest, so images added to known cities keep the study's models. Each model
  records the rows it learnt from (``models/<name>/trained_on.parquet``), and a model
  is kept only while none of them is a test image.
* ``models.from``: another study's models are copied in; nothing is trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import pyarrow as pa
import pyarrow.compute as pc

from citylens.errors import InputError
from citylens.pipeline.committed import read_manifest
from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store, digest
from citylens.tables import errors_table

__all__ = [
    "TRAINED_ON",
    "city_data",
    "data_key",
    "refit_models",
    "take_models",
    "trained_rows",
]


def trained_rows(ctx: Context) -> pa.Table:
    """The manifest rows a model fitted now learns from: train and val, by image id.

    Columns ``image_id, city, place, split``; what ``models/<name>/trained_on.parquet``
    records once the model is committed.
    """
    rows = read_manifest(ctx.store, ["image_id", "city", "place", "split"])
    rows = rows.filter(pc.is_in(rows["split"], pa.array(["train", "val"])))
    return rows.sort_by("image_id")


def city_data(ctx: Context) -> dict:
    """The data a model's ``city_key`` digests: the cities in class order, the split."""
    return {"cities": ctx.store.record("ingest")["cities"], "split": asdict(ctx.cfg.split)}


def data_key(ctx: Context, rows: pa.Table) -> dict:
    """What of the study's data a model's key digests (``train.retrain``).

    ``always``: the manifest (every image and its split), as ingest's output.
    ``new_city``: the cities and split settings and the ``rows`` it learns from
    (:func:`trained_rows`), so a model fitted again on other rows gets another key
    (and explanations of the earlier one are not carried over); whether a committed
    model is kept is decided by its ``city_key`` (no rows in it) and
    :func:`refit_models`.
    """
    if ctx.cfg.train.retrain == "new_city":
        return {**city_data(ctx), "trained_on": digest(rows.to_pydict())}
    return ctx.upstream("ingest")


TRAINED_ON = "trained_on.parquet"  # beside model.pt: the train and val rows it learnt from


def refit_models(ctx: Context, names: list[str]) -> dict[str, int]:
    """``new_city``: which of the up-to-date models ``names`` must be fitted again, and why.

    A model is kept only if the rows it learnt from are recorded and none of them is
    now a test image, by id or by place (a known place keeps its split, so this holds
    unless places were renamed into one another). A model without the record (trained
    before it existed) is fitted again too: nothing could show its test images unseen.

    Returns:
        Model name -> test images it trained or validated on (-1: no record).
    """
    if ctx.cfg.train.retrain != "new_city" or not names:
        return {}  # ``always``: a model's key digests the manifest itself
    test = read_manifest(ctx.store, ["image_id", "city", "place", "split"])
    test = test.filter(pc.equal(test["split"], "test"))
    rows = list(zip(*(test[k].to_pylist() for k in ("image_id", "city", "place"))))
    out = {}
    for name in names:
        rel = f"models/{name}/{TRAINED_ON}"
        if not ctx.store.exists(rel):
            out[name] = -1
            ctx.progress(f"train: {name} is fitted again: it does not record what it trained on")
            continue
        seen = ctx.store.read_table(rel)
        places = set(zip(seen["city"].to_pylist(), seen["place"].to_pylist()))
        ids = set(seen["image_id"].to_pylist())
        n = sum(i in ids or (c, p) in places for i, c, p in rows)
        if n:
            out[name] = n
            ctx.progress(
                f"train: {name} is fitted again: {n} test image(s) trained or validated it"
            )
    return out


def _leaked(ctx: Context, source: Store, folders: Sequence[str] = ()) -> tuple[pa.Table, str]:
    """This study's test rows that trained or validated the source's models.

    By image (the same bytes) or by place: the split is drawn over places because two
    photos of one place look alike, so a new photo of a place the models trained on
    flatters them too. What the models learnt from is what they record beside their
    weights (``folders``: theirs in the source), else the source's manifest's train and
    val rows (a source that grew under ``new_city`` may have dropped some since).
    Returns the rows and how they matched.
    """
    recorded = [f"{f}/{TRAINED_ON}" for f in folders]
    if recorded and all(source.exists(r) for r in recorded):
        src = pa.concat_tables([source.read_table(r) for r in recorded])
    else:
        src = source.read_table(f"{source.record('ingest')['folder']}/manifest.parquet")
        src = src.filter(pc.is_in(src["split"], pa.array(["train", "val"])))
    test = read_manifest(ctx.store, ["image_id", "uri", "city", "place", "split"])
    test = test.filter(pc.equal(test["split"], "test"))
    same = test.filter(pc.is_in(test["image_id"], value_set=src["image_id"].combine_chunks()))
    if same.num_rows:
        return same, "the same image"
    seen = {(c, p) for c, p in zip(src["city"].to_pylist(), src["place"].to_pylist())}
    at = [(c, p) in seen for c, p in zip(test["city"].to_pylist(), test["place"].to_pylist())]
    return test.filter(pa.array(at, pa.bool_())), "a place"


def take_models(ctx: Context) -> StageResult:
    """``models.from``: copy the other study's models into this store; train nothing.

    Its key is the source and each model's training key there, so a model retrained in
    the source store is taken again. A test image of this study that trained or
    validated them is refused (InputError): their accuracy on it would flatter them.
    """
    from citylens.config.models_from import check_models_from

    store, uri = ctx.store, ctx.cfg.models.source
    taken = check_models_from(ctx.cfg)
    source = Store(uri, ctx.cfg.run.storage_options)
    # checked on every run, up to date or not: this study's images may have changed
    leaked, how = _leaked(ctx, source, [m["folder"] for m in taken.values()])
    if leaked.num_rows:
        raise InputError(
            f"models.from: {leaked.num_rows} test image(s) of this study show {how} that "
            f"trained or validated {uri}'s models (e.g. {leaked['uri'][0]}): their accuracy "
            "and explanations there would flatter the models; leave those places out or "
            "train this study's own"
        )
    key = digest({"from": uri, "models": {n: m["key"] for n, m in sorted(taken.items())}})
    if rec := ctx.up_to_date("train", key):
        return StageResult("train", "skipped", rec)
    folder, started = ctx.begin("train")
    for name, m in sorted(taken.items()):
        for file in ("model.pt", "meta.json"):
            store.write_bytes(f"models/{name}/{file}", source.read_bytes(f"{m['folder']}/{file}"))
        # the source's accuracies are on its own splits: kept, under their own names
        was = {k: m["record"].get(k) for k in ("val_acc", "test_acc", "best_epoch")}
        store.commit(
            f"train/{name}",
            {"key": m["key"], "folder": f"models/{name}", "from": uri, "source": was},
        )
        ctx.progress(f"train: {name} taken from {uri}")
    store.write_table(f"{folder}/errors/errors.parquet", errors_table([]))
    models = {n: {"arch": m["arch"], "seed": m["seed"], "key": m["key"]} for n, m in taken.items()}
    rec = ctx.finish(
        "train",
        key,
        folder,
        started,
        models=models,
        models_from=uri,
        counts={"inputs": 0, "images": 0, "errors": 0, "models": len(taken), "trained": 0},
    )
    return StageResult("train", "ran", rec)
