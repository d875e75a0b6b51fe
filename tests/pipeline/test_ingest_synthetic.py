"""The synthetic corpus a study without cities generates (no Ray needed to list it)."""

from __future__ import annotations

from citylens.config import load_config
from citylens.pipeline.context import Context
from citylens.pipeline.ingest import resolve_cities
from citylens.storage import Store

_SMALL = ["synthetic.places=3", "synthetic.views=1", "synthetic.size=32"]


def test_a_null_city_joins_the_synthetic_cities_when_asked(tmp_path):
    store = Store(str(tmp_path / "a"))
    cfg = load_config(None, [f"store={store.uri}", *_SMALL, "synthetic.null_city=true"])
    cities = resolve_cities(Context(cfg, store, progress=lambda _: None))
    assert list(cities) == ["towerville", "signburg", "nullham"]
    assert store.read_json("corpus/synthetic.json")["null_city"] is True
    assert len(store.files("corpus/nullham", ".jpg")) == 3


def test_without_it_the_corpus_record_is_as_before(tmp_path):
    store = Store(str(tmp_path / "b"))
    cfg = load_config(None, [f"store={store.uri}", *_SMALL])
    assert list(resolve_cities(Context(cfg, store, progress=lambda _: None))) == [
        "towerville",
        "signburg",
    ]
    assert "null_city" not in store.read_json("corpus/synthetic.json")
