"""Storage faults: a flaky S3 is retried and loses nothing; a read-only or full store
fails with a clear error and leaves earlier outputs intact."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from citylens.storage import Store, StoreWriteError


def test_a_flaky_s3_is_retried_and_loses_nothing(s3_server, flaky_s3):
    bucket = s3_server.bucket("flaky-store")
    store = Store(f"{bucket}/study", flaky_s3.options)
    tables = {
        f"shards/part-{i:03d}.parquet": pa.table({"i": list(range(i, i + 50))}) for i in range(12)
    }
    for rel, table in tables.items():
        store.write_table(rel, table)
    store.write_json("stages/x.json", {"ok": 1})
    for _ in range(2):  # listings, reads and existence checks, each through the faults
        assert store.files("shards", ".parquet") == sorted(tables)
        assert store.read_table("shards")["i"].to_pylist() == [
            v for t in tables.values() for v in t["i"].to_pylist()
        ]
        assert store.record("x") == {"ok": 1}
    assert flaky_s3.requests > 40
    assert all(n > 0 for n in flaky_s3.faults.values()), flaky_s3.faults
    # what the faults did not touch: the same objects as written straight to the server
    direct = Store(f"{bucket}/study", s3_server.options)
    assert direct.files("", "") == sorted([*tables, "stages/x.json"])


def _citylens_run(store: str, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    """``citylens run demo`` on a store behind ``endpoint``, with more ``args``."""
    cmd = [sys.executable, "-m", "citylens.cli", "run", "demo", f"store={store}"]
    cmd += [f"run.storage_options.endpoint_url={endpoint}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _store_with_outputs(store: Store) -> dict[str, bytes]:
    store.write_table("ingest/run-1/manifest.parquet", pa.table({"uri": ["a.jpg", "b.jpg"]}))
    store.commit("ingest", {"key": "k", "folder": "ingest/run-1"})
    return {rel: store.read_bytes(rel) for rel in store.files("")}


_FILL = """
import resource, sys
import numpy as np, pyarrow as pa
from citylens.storage import Store, StoreWriteError
store = Store(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))  # the disk holds 1 MiB more
try:
    store.write_table("train/run-2/big.parquet", pa.table({"x": np.arange(10**6) * 0.5}))
except StoreWriteError as err:
    print(err.message)
    sys.exit(3)
"""


def test_a_full_local_store_fails_clearly_and_keeps_earlier_outputs(tmp_path):
    store = Store(str(tmp_path / "store"))
    before = _store_with_outputs(store)
    out = subprocess.run(
        [sys.executable, "-c", _FILL, store.uri], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 3, out.stderr
    assert f"store {store.uri}: cannot write train/run-2/big.parquet" in out.stdout
    assert "File too large" in out.stdout
    assert store.files("") == sorted(before)  # no partial file left behind
    assert {rel: store.read_bytes(rel) for rel in before} == before


def test_a_read_only_s3_store_is_refused_before_any_work(
    s3_server, flaky_s3, tmp_path, small_corpus
):
    bucket = s3_server.bucket("read-only-store")
    flaky_s3.rate = 0.0
    store = Store(f"{bucket}/study", flaky_s3.options)
    before = _store_with_outputs(store)
    flaky_s3.deny_writes = ""
    with pytest.raises(StoreWriteError, match=r"cannot write stages/ingest.json \(PermissionError"):
        store.commit("ingest", {"key": "other"})
    # the CLI stops before Ray starts, naming the store
    out = _citylens_run(
        f"{bucket}/study",
        flaky_s3.endpoint,
        f"cities.a.source={small_corpus / 'towerville'}",
        f"cities.b.source={small_corpus / 'signburg'}",
    )
    assert out.returncode == 2
    assert f"store: cannot write to {bucket}/study (PermissionError" in out.stderr
    assert {rel: store.read_bytes(rel) for rel in before} == before
    assert s3_server.secret not in out.stdout + out.stderr


@pytest.mark.slow  # 39 s: a whole study on a refusing store
def test_a_store_that_refuses_a_write_mid_run_stops_it_clearly(
    s3_server, flaky_s3, small_corpus, tmp_path
):
    bucket = s3_server.bucket("refusing-store")
    flaky_s3.rate = 0.0
    store = Store(f"{bucket}/study", flaky_s3.options)
    before = _store_with_outputs(store)
    flaky_s3.deny_writes = "/stages/ingest.json"  # the work is written, its commit refused
    cities = [f"cities.{c}.source={small_corpus}/{c}" for c in ("towerville", "signburg")]
    out = _citylens_run(f"{bucket}/study", flaky_s3.endpoint, *cities, "--stages", "ingest")
    assert out.returncode == 3, out.stderr[-2000:]
    assert (
        f"citylens: stopped: store {bucket}/study: cannot write stages/ingest.json "
        "(PermissionError" in out.stderr
    )
    assert "Traceback" not in out.stderr
    assert store.read_bytes("stages/ingest.json") == before["stages/ingest.json"]
    assert (
        store.read_bytes("ingest/run-1/manifest.parquet") == before["ingest/run-1/manifest.parquet"]
    )


def test_an_unreadable_s3_object_is_recorded_by_ingest_and_decode(
    s3_server, flaky_s3, small_corpus
):
    from citylens.pipeline.decode import decode_batch
    from citylens.pipeline.ingest import probe_batch

    bucket = s3_server.bucket("unreadable-object")
    s3_server.upload(small_corpus / "signburg", f"{bucket}/signburg")
    names = sorted(p.name for p in (small_corpus / "signburg").iterdir())[:4]
    uris = [f"{bucket}/signburg/{n}" for n in names]
    flaky_s3.rate = 0.0
    flaky_s3.deny_reads = f"/signburg/{names[1]}"  # listed, but GET is denied
    rows = pa.table(
        {
            "uri": uris,
            "city": ["signburg"] * 4,
            "place": ["p"] * 4,
            "label_uri": [None] * 4,
            "image_id": [f"id{i}" for i in range(4)],
        }
    )
    probed = probe_batch(rows, flaky_s3.options).to_pylist()
    assert [r["error_kind"] for r in probed] == [None, "unreadable", None, None]
    assert "PermissionError" in probed[1]["error_message"]
    assert all(r["width"] == 64 for i, r in enumerate(probed) if i != 1)
    decoded = decode_batch(rows, 32, ["signburg"], flaky_s3.options)
    assert decoded["ok"].tolist() == [True, False, True, True]
    assert decoded["error_kind"][1] == "unreadable"
    assert decoded["image"][[0, 2, 3]].max() > 0 and decoded["image"][1].max() == 0
