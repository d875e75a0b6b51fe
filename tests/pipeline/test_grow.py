"""A finished two-city study grows: a third city, or new images in one city; only what
depends on them is redone (slow)."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from PIL import Image

from citylens.config import load_config
from citylens.pipeline.run import run_study
from citylens.storage import Store
from citylens.train import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _test_split(store: Store) -> dict[str, str]:
    m = store.read_table(f"{store.record('ingest')['folder']}/manifest.parquet")
    m = m.filter(pc.equal(m["split"], "test"))
    return dict(zip(m["image_id"].to_pylist(), m["city"].to_pylist()))


def test_a_new_city_reuses_ingest_and_class_maps_and_retrains(
    tiny_study, local_ray, three_cities, tiny, tmp_path
):
    store_uri = str(tiny.copy(tiny_study, tmp_path / "store"))  # a finished two-city study
    two = load_config(None, tiny.overrides(store_uri, str(three_cities)))
    assert {r.status for r in run_study(two, progress=lambda s: None)} == {"skipped"}
    store = Store(store_uri)
    before = {s: store.record(s) for s in ("ingest", "segment")}
    old_test = _test_split(store)
    old_maps = store.read_table(f"{before['segment']['folder']}/data").to_pandas()

    cities = ("towerville", "signburg", "treeham")
    three = load_config(None, tiny.overrides(store_uri, str(three_cities), cities))
    messages: list[str] = []
    results = {r.stage: r.status for r in run_study(three, progress=messages.append)}

    # every stage depends on the set of cities, so every stage ran ...
    assert set(results.values()) == {"ran"}
    # ... but the unchanged cities were not listed-and-hashed again,
    assert any("towerville: unchanged" in m for m in messages)
    assert any("signburg: unchanged" in m for m in messages)
    assert any("treeham: hashing and probing" in m for m in messages)
    assert not any("towerville: hashing" in m or "signburg: hashing" in m for m in messages)
    # their split stayed as it was (a place never moves between train and test),
    new_test = _test_split(store)
    assert old_test.items() <= new_test.items()
    assert set(new_test.values()) == set(cities)
    # their class maps were reused, not recomputed; only treeham's were segmented,
    seg = store.record("segment")
    n_new = sum(c == "treeham" for c in new_test.values())
    assert seg["counts"]["reused"] == len(old_test)
    assert sum(seg["nodes"].values()) == n_new
    maps = store.read_table(f"{seg['folder']}/data").to_pandas().set_index("image_id")
    for _, row in old_maps.iterrows():
        assert maps.loc[row.image_id, "labels"] == row.labels
    # the models were retrained for three cities,
    for seed in (0, 1):
        model, meta = load_checkpoint(store.url(f"models/simpler-s{seed}"))
        assert set(meta["cities"]) == set(cities) and meta["num_classes"] == 3
        assert model.num_classes == 3
    # and the analysis and the report now speak of three cities.
    objects = store.read_table(f"{store.record('analyze')['folder']}/objects.parquet")
    assert set(objects["city"].to_pylist()) == set(cities)
    report = store.read_bytes("report.html").decode()
    assert all(city in report for city in cities)

    # Run again unchanged: nothing at all is recomputed.
    again = {r.stage: r.status for r in run_study(three, progress=lambda s: None)}
    assert set(again.values()) == {"skipped"}


def test_adding_images_to_one_city_redoes_ingest_and_what_depends_on_it(
    tiny_study, local_ray, three_cities, tiny, tmp_path
):
    store_uri = str(tiny.copy(tiny_study, tmp_path / "store"))  # a finished two-city study
    cfg = load_config(None, tiny.overrides(store_uri, str(three_cities)))
    messages: list[str] = []
    # A new place: a mirrored copy of an existing view, so its bytes (and id) are new.
    src = sorted((three_cities / "signburg").glob("*.*"))[0]
    extra = three_cities / "signburg" / f"zz_new_00{src.suffix}"
    Image.open(src).transpose(Image.FLIP_LEFT_RIGHT).save(extra)
    try:
        results = {r.stage: r.status for r in run_study(cfg, progress=messages.append)}
        assert results["ingest"] == "ran" and results["train"] == "ran"
        assert any("towerville: unchanged" in m for m in messages)
        assert any("signburg: hashing and probing 17 images" in m for m in messages)
        m = Store(store_uri).read_table(
            f"{Store(store_uri).record('ingest')['folder']}/manifest.parquet"
        )
        assert m.num_rows == 33 and any("zz_new_00" in u for u in m["uri"].to_pylist())
    finally:
        extra.unlink()


def _add_places(root, city: str, n: int) -> list[str]:
    """``n`` new places of two views in ``city``: mirrored copies of known views (new
    bytes, so new image ids) with their label maps mirrored the same way."""
    names = []
    views = sorted((root / city).glob("*.jpg"))
    for j in range(n):
        for v in range(2):
            src = views[(2 * j + v) % len(views)]
            stem = f"zz{j:03d}_{v:02d}"
            Image.open(src).transpose(Image.FLIP_LEFT_RIGHT).save(root / city / f"{stem}.jpg")
            label = root / "labels" / city / f"{src.stem}.png"
            Image.open(label).transpose(Image.FLIP_LEFT_RIGHT).save(
                root / "labels" / city / f"{stem}.png"
            )
            names.append(stem)
    return names


def test_new_images_under_retrain_new_city_keep_the_models_and_explain_only_those(
    tiny_study, local_ray, three_cities, tiny, tmp_path
):
    import shutil

    store_uri = str(tiny.copy(tiny_study, tmp_path / "store"))  # trained under `always`
    root = tmp_path / "cities"
    shutil.copytree(three_cities, root)
    store = Store(store_uri)
    old = {s: store.record(s) for s in ("ingest", "train", "explain", "segment", "overlap")}
    old_test = _test_split(store)
    old_shards = store.files(f"{old['explain']['folder']}/data", ".parquet")
    weights = {s: store.read_bytes(f"models/simpler-s{s}/model.pt") for s in (0, 1)}
    _add_places(root, "signburg", 5)
    _add_places(root, "towerville", 2)

    cfg = load_config(None, [*tiny.overrides(store_uri, str(root)), "train.retrain=new_city"])
    messages: list[str] = []
    results = {r.stage: r.status for r in run_study(cfg, progress=messages.append)}

    assert results["ingest"] == "ran"
    ingest = store.record("ingest")
    assert ingest["counts"]["kept_split"] == old["ingest"]["counts"]["images"]
    new_test = _test_split(store)
    assert old_test.items() <= new_test.items()  # every known test image is still one
    added = set(new_test) - set(old_test)
    assert added, "none of the new places was dealt to test: nothing new to explain"
    # no model was fitted: same weights, same output, so explain knew them
    train = store.record("train")
    assert train["counts"]["trained"] == 0 and not any("fitting" in m for m in messages)
    assert train["output"] == old["train"]["output"]
    assert all(store.read_bytes(f"models/simpler-s{s}/model.pt") == weights[s] for s in (0, 1))
    # explain explained only the new test images, and carried the rest over
    explain = store.record("explain")
    assert explain["counts"]["reused"] == len(old_test)
    assert explain["counts"]["fresh"] == len(added)
    assert explain["counts"]["images"] == len(new_test)
    assert sum(explain["nodes"].values()) == len(added)  # images mapped on Ray
    segment = store.record("segment")
    assert segment["counts"]["reused"] == len(old_test)
    assert segment["counts"]["fresh"] == len(added)
    ablate = store.record("ablate")  # the causal check too: only the new images
    assert (ablate["counts"]["reused"], ablate["counts"]["fresh"]) == (len(old_test), len(added))
    # overlap reused every shard of the old explanations, computed the new ones
    overlap = store.record("overlap")
    assert overlap["counts"]["reused_shards"] == len(old_shards)
    assert overlap["counts"]["inputs"] == explain["counts"]["rows"]
    # the reducers ran on everything: the report counts every test image
    assert results["analyze"] == "ran" and results["report"] == "ran"
    objects = store.read_table(f"{store.record('analyze')['folder']}/objects.parquet")
    assert set(objects["city"].to_pylist()) == {"towerville", "signburg"}

    # run again unchanged: nothing runs
    again = {r.stage: r.status for r in run_study(cfg, progress=lambda s: None)}
    assert set(again.values()) == {"skipped"}

    # a model that cannot show what it trained on is fitted again, on today's rows; it
    # is another model now, so nothing made with the old one is carried over
    store.rm("models/simpler-s1/trained_on.parquet")
    messages.clear()
    run_study(cfg, progress=messages.append)
    assert any("simpler-s1 is fitted again" in m for m in messages)
    refit = store.record("train")
    assert refit["counts"]["trained"] == 1 and refit["output"] != train["output"]
    assert store.read_bytes("models/simpler-s0/model.pt") == weights[0]
    learnt = store.read_table("models/simpler-s1/trained_on.parquet")
    m = store.read_table(f"{ingest['folder']}/manifest.parquet")
    assert sorted(learnt["image_id"].to_pylist()) == sorted(
        i for i, sp in zip(m["image_id"].to_pylist(), m["split"].to_pylist()) if sp != "test"
    )
    assert store.record("explain")["counts"]["reused"] == 0
