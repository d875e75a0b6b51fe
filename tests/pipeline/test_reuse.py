"""Which test images the models a study takes (``models.from``) or keeps
(``train.retrain: new_city``) have seen: by image and by place (no Ray: manifests)."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa

from citylens.pipeline.reuse import TRAINED_ON, _leaked, refit_models, trained_rows
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


def _ctx(store: Store, retrain: str = "new_city"):
    said: list[str] = []
    cfg = SimpleNamespace(train=SimpleNamespace(retrain=retrain))
    return SimpleNamespace(store=store, cfg=cfg, progress=said.append, said=said)


def test_a_kept_model_is_fitted_again_only_if_a_test_image_trained_it(tmp_path):
    first = [("i1", "x", "p1", "train"), ("i2", "x", "p2", "val"), ("i3", "x", "p3", "test")]
    store = _store(tmp_path / "s", first)
    rows = trained_rows(_ctx(store))
    assert rows["image_id"].to_pylist() == ["i1", "i2"]  # train and val, not test
    for name in ("m-s0", "m-s1"):  # as the trainer copies them beside its weights
        store.write_table(f"models/{name}/{TRAINED_ON}", rows)

    # the study grew: new places, the known ones in their splits: both models are kept
    grown = [*first, ("n1", "x", "p4", "test"), ("n2", "x", "p1", "train")]
    store = _store(tmp_path / "s", grown)
    assert refit_models(_ctx(store), ["m-s0", "m-s1"]) == {}

    # a known place dealt to test (places renamed into one another) refits the model
    store = _store(tmp_path / "s", [*grown, ("n3", "x", "p2", "test")])
    ctx = _ctx(store)
    assert refit_models(ctx, ["m-s0"]) == {"m-s0": 1}
    assert "m-s0 is fitted again: 1 test image(s) trained or validated it" in ctx.said[0]
    # ... and so does a known image under a new place name
    store = _store(tmp_path / "s", [*grown, ("i1", "x", "renamed", "test")])
    assert refit_models(_ctx(store), ["m-s1"]) == {"m-s1": 1}


def test_a_model_that_does_not_say_what_it_trained_on_is_fitted_again(tmp_path):
    store = _store(tmp_path / "s", [("i1", "x", "p1", "train"), ("i3", "x", "p3", "test")])
    ctx = _ctx(store)
    assert refit_models(ctx, ["old-s0"]) == {"old-s0": -1}
    assert "does not record what it trained on" in ctx.said[0]
    # under train.retrain: always the manifest is in the key: nothing to check here
    assert refit_models(_ctx(store, "always"), ["old-s0"]) == {}


def test_taken_models_are_checked_against_what_they_recorded_they_trained_on(tmp_path):
    # the source grew under new_city and its manifest no longer lists i9, which trained m
    source = _store(tmp_path / "a", [("i1", "x", "p1", "train"), ("i3", "x", "p3", "test")])
    learnt = pa.table(
        {
            "image_id": ["i1", "i9"],
            "city": ["x", "x"],
            "place": ["p1", "p9"],
            "split": ["train"] * 2,
        }
    )
    source.write_table(f"models/m-s0/{TRAINED_ON}", learnt)
    mine = _store(tmp_path / "b", [("i9", "x", "q1", "test"), ("n1", "x", "q2", "test")])
    ctx = SimpleNamespace(store=mine)
    assert _leaked(ctx, source)[0].num_rows == 0  # the manifest alone misses it
    rows, how = _leaked(ctx, source, ["models/m-s0"])
    assert rows["image_id"].to_pylist() == ["i9"] and how == "the same image"
