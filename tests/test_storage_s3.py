"""The store and every URI reader against a real S3 API (moto's server on 127.0.0.1)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from citylens.config import load_config
from citylens.config.validate import preflight
from citylens.data.manifest import scan_city
from citylens.models import build_model, load_state_dict
from citylens.segment.model import find_csail_weights, weights_fingerprint
from citylens.storage import Store, read_bytes
from citylens.train import load_checkpoint, save_checkpoint


def test_store_round_trip_on_s3(s3_server):
    root = s3_server.bucket("store-unit") + "/study"
    store = Store(root, s3_server.options)
    assert not store.local and store.url("a") == "s3://store-unit/study/a"
    store.write_json("stages/x.json", {"k": 1})
    store.write_table("t/data/p1.parquet", pa.table({"x": [1, 2]}))
    store.write_table("t/data/p2.parquet", pa.table({"x": [3]}))
    # a second Store (as a Ray worker would build) sees what the first wrote, and the
    # first sees what the second adds: listings are never stale
    again = Store(root, s3_server.options)
    assert again.read_json("stages/x.json") == {"k": 1}
    assert again.read_table("t/data").column("x").to_pylist() == [1, 2, 3]
    again.write_table("t/data/p3.parquet", pa.table({"x": [4]}))
    assert store.files("t", ".parquet")[-1] == "t/data/p3.parquet"
    store.commit("ingest", {"folder": "ingest/r2"})
    for run in ("r1", "r2"):
        store.write_bytes(f"ingest/{run}/x", b"1")
    store.prune("ingest", keep=["r2"])
    assert store.ls("ingest") == ["r2"] and store.record("ingest")["folder"] == "ingest/r2"


def test_cities_checkpoints_and_weights_read_from_s3(s3_server, small_corpus, tmp_path):
    bucket = s3_server.bucket("inputs-unit")
    opts = s3_server.options
    s3_server.upload(small_corpus / "signburg", f"{bucket}/cities/signburg")
    found, _ = scan_city(
        "signburg", f"{bucket}/cities/signburg", r"^(?P<place>.+)_\d+$", None, opts
    )
    local, _ = scan_city("signburg", str(small_corpus / "signburg"), r"^(?P<place>.+)_\d+$")
    assert [s.uri.rsplit("/", 1)[1] for s in found] == [s.uri.rsplit("/", 1)[1] for s in local]
    assert found[0].uri.startswith("s3://inputs-unit/cities/signburg/")
    assert read_bytes(found[0].uri, opts) == read_bytes(local[0].uri)
    # a trained checkpoint written to and read back from S3 (weights_only load)
    model = build_model("simpler", 2, 96)
    save_checkpoint(f"{bucket}/models/m", model, {"seed": 0}, opts)
    again, meta = load_checkpoint(f"{bucket}/models/m", "cpu", opts)
    assert meta["arch"] == "simpler"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)
    # starting weights and segmenter weights given as s3:// URIs
    torch.save(model.state_dict(), tmp_path / "init.pt")
    s3_server.fs().put(str(tmp_path / "init.pt"), "inputs-unit/weights/init.pt")
    assert set(load_state_dict(f"{bucket}/weights/init.pt", opts)) == set(model.state_dict())
    for part in ("encoder", "decoder"):
        s3_server.fs().pipe(f"inputs-unit/csail/{part}_epoch_20.pth", b"x" * 10)
    enc, dec = find_csail_weights(f"{bucket}/csail", opts)
    assert enc.endswith("encoder_epoch_20.pth") and dec.endswith("decoder_epoch_20.pth")
    fp = weights_fingerprint(f"{bucket}/csail", opts)
    assert fp["encoder_epoch_20.pth"][0] == 10


def test_preflight_names_an_unreachable_bucket_and_config_hides_options(s3_server):
    good = s3_server.bucket("preflight-unit")
    opts = [f"run.storage_options.endpoint_url={s3_server.options['endpoint_url']}"]
    cfg = load_config(None, [f"store={good}/study", *opts])
    assert cfg.to_dict()["run"]["storage_options"] == {"endpoint_url": "<set>"}
    bad = load_config(None, ["store=s3://no-such-bucket-here/study", *opts])
    with pytest.raises(Exception, match="store: cannot write to s3://no-such-bucket-here"):
        preflight(bad)


def test_study_config_read_from_s3(s3_server):
    from citylens.config import ConfigError

    bucket = s3_server.bucket("configs-unit")
    s3_server.fs().pipe("configs-unit/studies/tokyo.yaml", b"name: tokyo\ntrain: {epochs: 7}\n")
    endpoint = f"run.storage_options.endpoint_url={s3_server.options['endpoint_url']}"
    cfg = load_config(f"{bucket}/studies/tokyo.yaml", [endpoint, "train.lr=0.001"])
    assert (cfg.name, cfg.train.epochs, cfg.train.lr) == ("tokyo", 7, 0.001)
    with pytest.raises(ConfigError, match="study config s3://configs-unit/nope.yaml does not"):
        load_config(f"{bucket}/nope.yaml", [endpoint])
