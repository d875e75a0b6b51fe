"""Which test images of a study the models it takes (``models.from``) have seen: by image
and by place (no Ray: two stores' manifests)."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa

from citylens.pipeline.train import _leaked
from citylens.storage import Store


def _store(path, rows):
    """A store with a committed ingest manifest of ``(image_id, city, place, split)``."""
    store = Store(str(path))
    cols = ["image_id", "city", "place", "split"]
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})
    table = table.append_column("uri", pa.array([f"/x/{r[0]}.jpg" for r in rows]))
    store.write_table("ingest/r/manifest.parquet", table)
    store.commit("ingest", {"folder": "ingest/r"})
    return store


def test_a_test_image_the_models_saw_is_found_by_image_then_by_place(tmp_path):
    source = _store(
        tmp_path / "a",
        [("i1", "x", "p1", "train"), ("i2", "x", "p2", "val"), ("i3", "x", "p3", "test")],
    )
    # the same bytes in this study's test split
    mine = _store(tmp_path / "b", [("i1", "x", "p9", "test"), ("n1", "x", "p3", "test")])
    rows, how = _leaked(SimpleNamespace(store=mine), source)
    assert rows["image_id"].to_pylist() == ["i1"] and how == "the same image"
    # new photos, but of places the models trained (p1) or validated (p2) on
    mine = _store(
        tmp_path / "c",
        [
            ("n2", "x", "p1", "test"),
            ("n3", "x", "p2", "test"),
            ("n4", "y", "p1", "test"),
            ("n5", "x", "p1", "train"),
        ],
    )
    rows, how = _leaked(SimpleNamespace(store=mine), source)
    # a place is one city's: y's p1 is another place; p1 in train here is not explained
    assert rows["image_id"].to_pylist() == ["n2", "n3"] and how == "a place"
    # only the source's test places: nothing leaked
    mine = _store(tmp_path / "d", [("n6", "x", "p3", "test")])
    assert _leaked(SimpleNamespace(store=mine), source)[0].num_rows == 0
