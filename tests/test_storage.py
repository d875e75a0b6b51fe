import pyarrow as pa
import pytest

from citylens.storage import Store, digest


def test_paths_urls_and_json(tmp_path):
    store = Store(str(tmp_path / "s"))
    assert store.local and store.url("a/b") == f"{tmp_path}/s/a/b"
    store.write_json("stages/x.json", {"k": 1})
    assert store.read_json("stages/x.json") == {"k": 1}
    assert Store(f"file://{tmp_path}/s").read_json("stages/x.json") == {"k": 1}


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    store = Store(str(tmp_path))
    store.write_bytes("a/b.bin", b"x" * 1000)
    store.write_bytes("a/b.bin", b"y")  # overwrite in place
    assert store.read_bytes("a/b.bin") == b"y"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin"]


def test_tables_and_folders(tmp_path):
    store = Store(str(tmp_path))
    t1 = pa.table({"x": [1, 2]})
    t2 = pa.table({"x": [3]})
    store.write_table("t/data/p1.parquet", t1)
    store.write_table("t/data/p2.parquet", t2)
    assert store.read_table("t/data").column("x").to_pylist() == [1, 2, 3]
    assert store.files("t", ".parquet") == ["t/data/p1.parquet", "t/data/p2.parquet"]
    schema = pa.schema([("x", pa.int64())])
    (tmp_path / "empty").mkdir()
    assert store.read_table("empty", schema=schema).num_rows == 0
    with pytest.raises(FileNotFoundError):
        store.read_table("empty")


def test_records_commit_and_prune(tmp_path):
    store = Store(str(tmp_path))
    assert store.record("ingest") is None
    for run in ("r1", "r2", "r3"):
        store.write_bytes(f"ingest/{run}/x", b"1")
    store.commit("ingest", {"key": "k", "folder": "ingest/r3"})
    store.prune("ingest", keep=["r3"])
    assert store.ls("ingest") == ["r3"]
    assert store.record("ingest") == {"stage": "ingest", "key": "k", "folder": "ingest/r3"}


def test_store_pickles_for_workers(tmp_path):
    import pickle

    store = Store(str(tmp_path), {"anon": False})
    again = pickle.loads(pickle.dumps(store))
    assert again.uri == store.uri and again.options == {"anon": False}


def test_digest_is_order_independent():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
