"""Inputs that used to finish with a wrong answer stop or are recorded at ingest, on a
real local Ray: a city with no usable image, the same photo in two cities, and which
copy of a duplicate is kept."""

from __future__ import annotations

import shutil

import pytest

from citylens.cli import main
from citylens.config import load_config
from citylens.errors import InputError
from citylens.pipeline.run import run_study
from citylens.storage import Store
from citylens.tables import ERRORS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _copy(three_cities, root, *cities):
    for city in cities:
        shutil.copytree(three_cities / city, root / city)
        shutil.copytree(three_cities / "labels" / city, root / "labels" / city)


def _manifest(store: Store):
    rec = store.record("ingest")
    return store.read_table(f"{rec['folder']}/manifest.parquet").to_pylist()


def _errors(store: Store):
    rec = store.record("ingest")
    return store.read_table(f"{rec['folder']}/errors", schema=ERRORS).to_pylist()


def test_a_city_without_usable_images_stops_before_training(
    local_ray, three_cities, tiny, tmp_path, capsys
):
    root = tmp_path / "cities"
    _copy(three_cities, root, "towerville")
    (root / "signburg").mkdir()
    (root / "labels" / "signburg").mkdir(parents=True)
    for i in range(6):  # image names, no image inside: every file refused at ingest
        (root / "signburg" / f"p{i:05d}_00.jpg").write_text("not a photo")
    overrides = tiny.overrides(str(tmp_path / "store"), str(root))
    code = main(["run", "demo", *overrides])
    stderr = capsys.readouterr().err
    err = stderr.splitlines()[-1]  # before it: Ray Data's own log lines
    assert code == 2 and "Traceback" not in stderr
    assert err.startswith("citylens: stopped: ingest: a city needs usable images in at least 3")
    assert "signburg: 0 usable of 6 listed, in 0 place(s) (refused: 6 not_an_image)" in err
    assert "towerville" not in err.split("needs")[1]  # the city that is fine is not blamed
    store = Store(str(tmp_path / "store"))
    assert store.record("ingest") is None and store.record("train") is None  # nothing trained
    where = err.rsplit(" listed in ", 1)[1].rstrip(".")
    errors = store.read_table(where[len(store.uri) + 1 :], schema=ERRORS).to_pylist()
    assert sorted(e["kind"] for e in errors) == ["not_an_image"] * 6

    cfg = load_config(None, overrides)
    with pytest.raises(InputError):
        run_study(cfg, ["ingest"], progress=lambda s: None)


def test_the_same_photo_in_two_cities_is_in_neither(local_ray, three_cities, tiny, tmp_path):
    root = tmp_path / "cities"
    _copy(three_cities, root, "towerville", "signburg")
    shared = sorted((root / "towerville").iterdir())[:2]
    for i, src in enumerate(shared):  # a scraper saved two towerville photos under signburg too
        shutil.copy(src, root / "signburg" / f"p{90 + i:05d}_00.jpg")
    cfg = load_config(None, tiny.overrides(str(tmp_path / "store"), str(root)))
    run_study(cfg, ["ingest"], progress=lambda s: None)
    store = Store(cfg.store)
    names = {r["uri"].split("/cities/")[1] for r in _manifest(store)}
    bad = {e["uri"].split("/cities/")[1]: e["kind"] for e in _errors(store)}
    expected = {f"towerville/{p.name}" for p in shared} | {
        f"signburg/p{90 + i:05d}_00.jpg" for i in range(2)
    }
    assert bad == dict.fromkeys(expected, "duplicate_across_cities")
    assert not names & expected
    assert store.record("ingest")["counts"]["inputs"] == len(names) + len(bad)


def test_a_duplicate_keeps_the_original_with_its_label_map(local_ray, three_cities, tiny, tmp_path):
    root = tmp_path / "cities"
    _copy(three_cities, root, "towerville", "signburg")
    original = sorted((root / "towerville").iterdir())[0]
    shutil.copy(original, root / "towerville" / "dup copy.jpg")  # sorts first, no label, no place
    cfg = load_config(None, tiny.overrides(str(tmp_path / "store"), str(root)))
    run_study(cfg, ["ingest"], progress=lambda s: None)
    store = Store(cfg.store)
    kept = {r["uri"].rsplit("/", 1)[1]: r for r in _manifest(store)}
    assert original.name in kept and "dup copy.jpg" not in kept
    assert kept[original.name]["label_uri"] and kept[original.name]["place"] == original.stem[:6]
    (dup,) = _errors(store)
    assert dup["kind"] == "duplicate" and dup["uri"].endswith("/dup copy.jpg")
    assert original.name in dup["message"] and "label map" in dup["message"]
