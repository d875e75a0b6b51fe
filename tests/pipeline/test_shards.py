"""Companion shards are read only once their data shard commits them, and carried over
with them when a study grows."""

from __future__ import annotations

import pyarrow as pa

from citylens.pipeline.shards import carry_over, companions, shard_name, write_shard
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


def _shard(store: Store, folder: str, ids: list[str], methods: bool = True) -> str:
    rows = pa.table(
        {"image_id": ids, "city": ["a"] * len(ids), "v": [f"{folder}:{i}" for i in ids]}
    )
    if methods:  # two rows per image, as two added methods would write
        extra = pa.table({"image_id": ids * 2, "method": ["m1"] * len(ids) + ["m2"] * len(ids)})
        store.write_table(f"{folder}/methods/{shard_name(ids)}", extra)
    return write_shard(store, folder, ids, rows, [])


def test_carry_over_copies_whole_shards_filters_the_rest_and_takes_their_companions(tmp_path):
    store = Store(str(tmp_path / "store"))
    whole = _shard(store, "explain/old", ["a", "b"])
    _shard(store, "explain/old", ["c", "d"])  # d is no longer a test image
    _shard(store, "explain/old", ["e"], methods=False)
    _shard(store, "explain/old", ["x"])  # none of it kept
    _shard(store, "explain/old", ["m"])  # the same bytes, moved to city b since

    keep = {i: "a" for i in ("a", "b", "c", "e", "z")} | {"m": "b"}
    covered = carry_over(store, "explain/old", "explain/new", keep, "methods")

    assert covered == {"a", "b", "c", "e"}  # z was never explained, m's rows say city a
    data = {r.rsplit("/", 1)[1] for r in store.files("explain/new/data", ".parquet")}
    assert data == {whole, shard_name(["c"]), shard_name(["e"])}
    assert store.read_bytes(f"explain/new/data/{whole}") == store.read_bytes(
        f"explain/old/data/{whole}"
    )
    c = store.read_table(f"explain/new/data/{shard_name(['c'])}").to_pylist()
    assert c == [{"image_id": "c", "city": "a", "v": "explain/old:c"}]
    # every carried data shard that had a companion has it, filtered the same way
    got = companions(store, "explain/new")
    assert sorted(r.rsplit("/", 1)[1] for r in got) == sorted([whole, shard_name(["c"])])
    c_methods = store.read_table(f"explain/new/methods/{shard_name(['c'])}")
    assert c_methods["image_id"].to_pylist() == ["c", "c"]
    assert store.read_table(f"explain/new/methods/{whole}").num_rows == 4
    # without a companion folder named, only data moves (segment's class maps)
    carry_over(store, "explain/old", "segment/new", {"a": "a", "b": "a"})
    assert store.files("segment/new/methods", ".parquet") == []
