"""Shards written by model-holding actors: each batch's rows and errors, named by content.

A shard's name is a hash of the image ids it covers, so a retried batch rewrites the
same file instead of adding a duplicate, and a resumed stage can tell which images are
done by reading the ``image_id`` column of the shards already there.

:func:`run_sharded` is the skeleton every sharded map stage (explain, segment) shares:
resume → what is left to do → map it on Ray → check every input is covered → commit.
A stage says only what is its own: how to map a batch of to-do rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store
from citylens.tables import errors_table

__all__ = [
    "ShardCounts",
    "carry_over",
    "companions",
    "copy_file",
    "count_by_node",
    "done_image_ids",
    "reuse_earlier",
    "run_sharded",
    "shard_counts",
    "shard_name",
    "summary",
    "write_shard",
]


def shard_name(image_ids: list[str]) -> str:
    """The file name of the shard covering ``image_ids`` (whatever their order)."""
    h = hashlib.blake2b("\n".join(sorted(image_ids)).encode(), digest_size=10).hexdigest()
    return f"part-{h}.parquet"


def write_shard(
    store: Store, folder: str, image_ids: list[str], rows: pa.Table, errors: list[dict]
) -> str:
    """Write one batch's rows to ``folder/data/`` (errors, if any, to ``folder/errors/``).

    Returns:
        The shard's file name.
    """
    name = shard_name(image_ids)
    if errors:
        store.write_table(f"{folder}/errors/{name}", errors_table(errors))
    store.write_table(f"{folder}/data/{name}", rows)
    return name


def companions(store: Store, folder: str, sub: str = "methods") -> list[str]:
    """The shards of ``folder/sub`` whose data shard of the same name exists.

    A companion (e.g. the explanations ``explain.methods`` adds) is written before its
    data shard, which commits both: one left by a batch that died in between, or by a
    batch of an earlier attempt that a resumed one split differently, is not read.
    """
    done = {rel.rsplit("/", 1)[1] for rel in store.files(f"{folder}/data", ".parquet")}
    return [r for r in store.files(f"{folder}/{sub}", ".parquet") if r.rsplit("/", 1)[1] in done]


def summary(name: str, images: int, rows: int, errors: int) -> dict:
    """The one-row batch an actor returns to the driver instead of its data.

    It names the Ray node that did the work, so a stage's record can say where its
    images were processed (``nodes``: node id -> images).
    """
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    return {
        "shard": np.array([name], dtype=object),
        "images": np.array([images], np.int64),
        "rows": np.array([rows], np.int64),
        "errors": np.array([errors], np.int64),
        "node": np.array([node], dtype=object),
    }


def count_by_node(nodes: dict[str, int], batch: dict) -> None:
    """Add a batch of summaries' image counts to ``nodes`` (node id -> images)."""
    for node, n in zip(batch["node"], batch["images"]):
        nodes[str(node)] = nodes.get(str(node), 0) + int(n)


@dataclass(frozen=True)
class ShardCounts:
    """What a stage's folder holds: images with rows, rows, error rows, ids covered."""

    images: int
    rows: int
    errors: int
    covered: frozenset[str]


def shard_counts(store: Store, folder: str) -> ShardCounts:
    """Count a stage folder's shards (reads only their ``image_id`` columns)."""
    data: list[str] = []
    for rel in store.files(f"{folder}/data", ".parquet"):
        data += store.read_table(rel, columns=["image_id"])["image_id"].to_pylist()
    errs: list[str] = []
    for rel in store.files(f"{folder}/errors", ".parquet"):
        errs += store.read_table(rel, columns=["image_id"])["image_id"].to_pylist()
    covered = frozenset(i for i in data + errs if i is not None)
    return ShardCounts(len(set(data)), len(data), len(errs), covered)


def done_image_ids(store: Store, folder: str) -> set[str]:
    """Image ids already covered by complete shards (and their errors) in ``folder``."""
    return set(shard_counts(store, folder).covered)


def copy_file(store: Store, src: str, dst: str) -> None:
    """Copy one file of the store: server-side on S3, atomically (a rename) if local."""
    if not store.local:
        store.fs.copy(store.path(src), store.path(dst))
        return
    import os
    import shutil
    import uuid

    target = store.path(dst)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex}"
    shutil.copyfile(store.path(src), tmp)
    os.replace(tmp, target)


def carry_over(
    store: Store, old: str, new: str, keep: Mapping[str, str], companion: str | None = None
) -> set[str]:
    """Reuse an earlier run's rows for the images in ``keep`` (a study that grew).

    A row is kept when its image is in ``keep`` and still of the same city (an image id
    is a hash of the bytes alone: a photo moved to another city keeps it, and its rows
    name the old city). Shards of ``old/data`` whose rows are all kept are copied whole
    (server-side on S3); the kept rows of the others are written as new shards. Errors
    are not carried: those images are tried again. With ``companion`` (e.g.
    ``methods``), each shard's companion of the same name in ``old/<companion>`` goes
    along, written first as the stage itself writes it (see :func:`companions`).

    Args:
        store: The study's store.
        old: The earlier run's folder.
        new: This run's folder.
        keep: Image id -> city of the images mapped now.
        companion: A companion folder's name.

    Returns:
        The image ids now covered in ``new``.
    """
    covered: set[str] = set()
    extra = {r.rsplit("/", 1)[1]: r for r in companions(store, old, companion)} if companion else {}
    for rel in store.files(f"{old}/data", ".parquet"):
        cols = store.read_table(rel, columns=["image_id", "city"]).to_pydict()
        rows = list(zip(cols["image_id"], cols["city"]))
        mine = list(dict.fromkeys(i for i, c in rows if keep.get(i) == c))
        if not mine:
            continue
        name = rel.rsplit("/", 1)[1]
        whole = all(keep.get(i) == c for i, c in rows)
        pairs = ([(extra[name], companion)] if name in extra else []) + [(rel, "data")]
        for src, sub in pairs:  # the companion first: the data shard commits both
            if whole:
                copy_file(store, src, f"{new}/{sub}/{name}")
            else:
                table = store.read_table(src)
                table = table.filter(pc.is_in(table["image_id"], value_set=pa.array(mine)))
                store.write_table(f"{new}/{sub}/{shard_name(mine)}", table)
        covered.update(mine)
    return covered


def reuse_earlier(
    ctx: Context,
    stage: str,
    ids: Mapping[str, str],
    earlier: str | None,
    companion: str | None = None,
    what: str = "images' rows",
) -> Callable[[str, bool], dict]:
    """A :func:`run_sharded` ``prepare`` that carries an earlier run's rows for ``ids`` over.

    Args:
        ctx: The study.
        stage: The stage (for its messages).
        ids: Image id -> city of the images the stage maps now.
        earlier: The folder of the stage's previous run if its rows still hold (the same
            models, settings and upstream rows per image; only the set of images
            changed), else None. Ignored with ``--force``.
        companion: See :func:`carry_over`.
        what: What is reused, for the message.

    Returns:
        ``prepare(folder, resumed) -> {"reused": images carried over}``; a resumed attempt
        reads its count back (its copies are already there).
    """
    store = ctx.store

    def prepare(folder: str, resumed: bool) -> dict:
        if resumed and store.exists(f"{folder}/reused.json"):
            reused = store.read_json(f"{folder}/reused.json")["reused"]
        elif earlier is not None and not ctx.force:
            # (again, if an interrupted attempt died while carrying over: copies are whole)
            reused = len(carry_over(store, earlier, folder, ids, companion))
            ctx.progress(f"{stage}: {reused} {what} reused from the previous run")
        else:
            reused = 0
        store.write_json(f"{folder}/reused.json", {"reused": reused})
        return {"reused": reused}

    return prepare


def _not_in(rows: pa.Table, done: set[str]) -> pa.Table:
    return rows.filter(
        pc.invert(pc.is_in(rows["image_id"], value_set=pa.array(sorted(done), pa.string())))
    )


def run_sharded(
    ctx: Context,
    stage: str,
    key: str,
    inputs: pa.Table,
    map_todo: Callable[[str, pa.Table], object],
    prepare: Callable[[str, bool], dict] | None = None,
    batch_size: int = 1,
    counts: dict | None = None,
    processed: str = "done",
    **record,
) -> StageResult:
    """Run a sharded map stage whose key is not up to date, resumably, and commit it.

    An interrupted attempt with the same key is resumed in its own folder (its shards
    are whole: only the rest is mapped). Afterwards every input must be covered by a
    shard's rows or its errors, or nothing is committed.

    Args:
        ctx: The study being run.
        stage: The stage's name (its folder and record).
        key: The stage's key.
        inputs: Rows to map (with ``image_id``), one per image.
        map_todo: ``(folder, rows to do) -> Ray Dataset`` of the shards' one-row
            :func:`summary` batches; called (with Ray started) only when rows are left.
        prepare: ``(folder, resumed) -> counts`` run first, e.g. to carry rows over from
            an earlier run into ``folder``; its counts join the record's (with
            ``reused``, the record also counts the ``fresh`` images mapped by this run).
        batch_size: The stage's batch size (progress is printed about every 20 batches).
        counts: More counts of the stage's record (beside inputs, images, rows, errors).
        processed: What the stage does to an image, for messages (``explained``).
        **record: More fields of the stage's record.

    Raises:
        RuntimeError: the shards do not cover every input once, as rows or errors.
    """
    store, n = ctx.store, inputs.num_rows
    folder, started, resumed = ctx.resume(stage, key)
    extra = dict(counts or {}) | (prepare(folder, resumed) if prepare is not None else {})
    done = done_image_ids(store, folder)
    todo = _not_in(inputs, done) if done else inputs
    if resumed:
        ctx.progress(f"{stage}: resuming, {n - todo.num_rows} images already done")
    nodes: dict[str, int] = {}
    if todo.num_rows:
        ctx.ray()
        seen = 0
        for batch in map_todo(folder, todo).iter_batches(batch_size=None, batch_format="numpy"):
            count_by_node(nodes, batch)
            seen += int(batch["images"].sum() + batch["errors"].sum())
            if seen % (20 * batch_size) < batch_size or seen == todo.num_rows:
                ctx.progress(f"{stage}: {seen}/{todo.num_rows} images")
    got = shard_counts(store, folder)
    if got.images + got.errors != n or len(got.covered) != n:
        reused = f" (incl. {extra['reused']} reused)" if "reused" in extra else ""
        raise RuntimeError(
            f"{stage}: {n} inputs but {got.images} {processed}{reused} + {got.errors} "
            f"errors ({len(got.covered)} covered by shards)"
        )
    done_counts = {"inputs": n, "images": got.images, "rows": got.rows, "errors": got.errors}
    if "reused" in extra:  # the images this run mapped, beside those carried over
        extra["fresh"] = got.images - extra["reused"]
    rec = ctx.finish(stage, key, folder, started, counts=done_counts | extra, nodes=nodes, **record)
    return StageResult(stage, "ran", rec)
