"""What committed stages wrote, read back: the one place that knows where each lies.

Stages, commands (``citylens agree``) and the report read another stage's output only
through these functions, never by spelling its folder layout out again, so a stage
never imports another stage to reach its tables.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from citylens.storage import Store
from citylens.tables import OVERLAPS
from citylens.vocabulary import Vocabulary

__all__ = ["committed", "read_manifest", "read_overlaps", "read_vocabulary"]


def committed(store: Store, stage: str) -> dict:
    """A committed stage's record.

    Raises:
        RuntimeError: the stage never committed in this store.
    """
    rec = store.record(stage)
    if rec is None:
        raise RuntimeError(f"the study at {store.url()} has no '{stage}' stage yet; run it first")
    return rec


def read_manifest(store: Store, columns: list[str] | None = None) -> pa.Table:
    """The committed manifest (schema :data:`~citylens.tables.MANIFEST`) or its columns."""
    return store.read_table(f"{committed(store, 'ingest')['folder']}/manifest.parquet", columns)


def read_vocabulary(store: Store) -> Vocabulary:
    """The vocabulary the committed segment stage labelled with (class 0 is ``other``)."""
    rel = f"{committed(store, 'segment')['folder']}/vocabulary.csv"
    return Vocabulary.from_csv(store.read_bytes(rel).decode(), rel)


def read_overlaps(
    store: Store, columns: list[str], image_ids: list[str] | None = None, model: str | None = None
) -> pa.Table:
    """Committed overlap rows, filtered shard by shard (never the whole table in memory).

    Args:
        store: Study store.
        columns: Columns of :data:`~citylens.tables.OVERLAPS` to read (with ``model``
            among them when filtering by model).
        image_ids: Only these images' rows (None: every image).
        model: Only this model's rows (None: every model).
    """
    folder = committed(store, "overlap")["folder"]
    wanted = None if image_ids is None else pa.array(image_ids, pa.string())
    parts = []
    for rel in store.files(f"{folder}/data", ".parquet"):
        t = store.read_table(rel, columns=columns)
        if model is not None:
            t = t.filter(pc.equal(t["model"], model))
        if wanted is not None:
            t = t.filter(pc.is_in(t["image_id"], value_set=wanted))
        parts.append(t)
    return pa.concat_tables(parts) if parts else OVERLAPS.empty_table().select(columns)
