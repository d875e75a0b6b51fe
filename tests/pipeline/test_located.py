"""A located study end to end on a real local Ray: the tiny study's cities listed by CSV
manifests with coordinates, then the places table, the maps, places.geojson, the
leakage audit and the page in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from citylens.config import load_config
from citylens.pipeline.run import run_study
from citylens.storage import Store

pytestmark = pytest.mark.slow  # ~2 min: a second ingest, analyze and report of the tiny study

CENTRES = {"towerville": (51.5, -0.12), "signburg": (42.98, -81.25)}


@pytest.fixture(scope="module")
def located(tiny_study, local_ray, three_cities, tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("located")
    store = tiny.copy(tiny_study, root / "store")
    overrides = tiny.overrides(str(store), str(three_cities))
    rng = np.random.default_rng(0)
    for city, (lat, lon) in CENTRES.items():
        rows, spots = ["image,place,lat,lon"], {}
        for f in sorted((three_cities / city).iterdir()):
            place = f.stem.rsplit("_", 1)[0]  # the tiny study's place regex, spelt out
            spot = spots.setdefault(
                place, (lat + rng.uniform(-0.01, 0.01), lon + rng.uniform(-0.015, 0.015))
            )
            rows.append(f"{f.name},{place},{spot[0]:.6f},{spot[1]:.6f}")
        (root / f"{city}.csv").write_text("\n".join(rows) + "\n")
        overrides.append(f"cities.{city}.manifest={root / f'{city}.csv'}")
    cfg = load_config(None, overrides)
    ran = {r.stage: r.status for r in run_study(cfg, progress=lambda s: None)}
    return cfg, Store(str(store)), ran


def test_coordinates_alone_rerun_only_the_maps_side(located):
    _, store, ran = located
    # same places, so the same split: ingest's output and every model are unchanged
    assert ran["ingest"] == "ran" and ran["train"] == "skipped" and ran["explain"] == "skipped"
    assert ran["analyze"] == "ran" and ran["report"] == "ran"
    assert store.record("ingest")["counts"]["located"] == store.record("ingest")["counts"]["images"]


def test_the_places_table_and_geojson_agree_with_the_manifest(located):
    _, store, _ = located
    places = store.read_table(f"{store.record('analyze')['folder']}/places.parquet").to_pandas()
    rec = store.record("ingest")
    manifest = store.read_table(f"{rec['folder']}/manifest.parquet").to_pandas()
    test = manifest[manifest.split == "test"]
    assert set(zip(places.city, places.place)) == set(zip(test.city, test.place))
    for (city, place), g in test.groupby(["city", "place"]):
        row = places[(places.city == city) & (places.place == place)].iloc[0]
        assert row.lat == pytest.approx(g.lat.iloc[0]) and row.images == len(g)
    geo = json.loads(store.read_bytes(f"{store.record('report')['folder']}/places.geojson"))
    assert geo["type"] == "FeatureCollection" and "crs" not in geo
    assert len(geo["features"]) == len(set(zip(test.city, test.place)))
    for f in geo["features"]:
        lon, lat = f["geometry"]["coordinates"]
        c_lat, c_lon = CENTRES[f["properties"]["city"]]
        assert abs(lat - c_lat) < 0.02 and abs(lon - c_lon) < 0.02  # [lon, lat]
        models = [k.split(":", 1)[1] for k in f["properties"] if k.startswith("correct:")]
        assert len(models) == 2


def test_the_report_shows_the_maps_and_the_leakage_audit_in_chromium(located, dump_dom):
    _, store, _ = located
    folder = store.record("report")["folder"]
    files = store.record("report")["files"]
    assert {"map_0.png", "map_1.png", "places.geojson", "baselines.csv"} <= set(files)
    dom = dump_dom(Path(store.path("report.html")))
    assert 'id="where"' in dom and 'id="leakage"' in dom
    assert "located test images have a training image of their city within 200 m" in dom
    assert "colour histogram" in dom and "majority city" in dom
    baselines = store.read_table(f"{store.record('baseline')['folder']}/baselines.parquet")
    assert store.exists(f"{folder}/map_0.png")
    assert baselines.num_rows >= 3
