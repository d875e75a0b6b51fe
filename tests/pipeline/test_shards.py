"""Companion shards are read only once their data shard commits them."""

from __future__ import annotations

import pyarrow as pa

from citylens.pipeline.shards import companions, shard_name, write_shard
from citylens.storage import Store


def test_a_companion_without_its_data_shard_is_not_read(tmp_path):
    store = Store(str(tmp_path / "store"))
    rows = pa.table({"image_id": ["a"]})
    done, orphan = shard_name(["a"]), shard_name(["b"])
    store.write_table(f"explain/r/methods/{done}", rows)
    store.write_table(f"explain/r/methods/{orphan}", rows)  # its batch died before committing
    assert companions(store, "explain/r") == []
    write_shard(store, "explain/r", ["a"], rows, [])
    assert companions(store, "explain/r") == [f"explain/r/methods/{done}"]
    assert companions(store, "explain/none") == []
