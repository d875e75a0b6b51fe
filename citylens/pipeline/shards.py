"""Shards written by model-holding actors: each batch's rows and errors, named by content.

A shard's name is a hash of the image ids it covers, so a retried batch rewrites the
same file instead of adding a duplicate, and a resumed stage can tell which images are
done by reading the ``image_id`` column of the shards already there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from citylens.storage import Store
from citylens.tables import errors_table

__all__ = [
    "ShardCounts",
    "carry_over",
    "count_by_node",
    "done_image_ids",
    "shard_counts",
    "shard_name",
    "summary",
    "write_shard",
]


def shard_name(image_ids: list[str]) -> str:
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


def carry_over(store: Store, old: str, new: str, keep: set[str]) -> set[str]:
    """Reuse an earlier run's rows for the images in ``keep`` (a study that grew).

    Shards of ``old/data`` whose images are all kept are copied whole (a server-side copy
    on S3); the kept rows of the others are written as new shards. Errors are not carried:
    those images are tried again.

    Returns:
        The image ids now covered in ``new``.
    """
    import pyarrow.compute as pc

    covered: set[str] = set()
    for rel in store.files(f"{old}/data", ".parquet"):
        ids = store.read_table(rel, columns=["image_id"])["image_id"].to_pylist()
        mine = [i for i in dict.fromkeys(ids) if i in keep]
        if not mine:
            continue
        if len(mine) == len(set(ids)):
            if store.local:
                store.fs.makedirs(store.path(f"{new}/data"), exist_ok=True)
            store.fs.copy(store.path(rel), store.path(f"{new}/data/{rel.rsplit('/', 1)[1]}"))
        else:
            rows = store.read_table(rel)
            rows = rows.filter(pc.is_in(rows["image_id"], value_set=pa.array(mine)))
            store.write_table(f"{new}/data/{shard_name(mine)}", rows)
        covered.update(mine)
    return covered
