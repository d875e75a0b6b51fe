"""Coordinates at ingest on the real London photos: read from the names and a CSV
manifest, bad values recorded and their images kept, and the spatially blocked split."""

from __future__ import annotations

import math
import shutil

import pytest

from citylens.config import load_config
from citylens.pipeline.run import run_study
from citylens.storage import Store
from citylens.tables import ERRORS

LONDON_REGEX = r"^.+_(?P<place>(?P<lat>-?\d+p\d+)_(?P<lon>-?\d+p\d+))_\d{6}_[a-z]+_[a-z]+$"


def _degrees(text: str) -> float:
    return float(text.replace("p", "."))


def _cell(lat: float, lon: float, block_m: float) -> tuple[int, int]:
    r = 6_371_008.8
    band = math.floor(math.radians(lat) * r / block_m)
    columns = max(1, math.floor(2 * math.pi * r * math.cos((band + 0.5) * block_m / r) / block_m))
    return band, math.floor((lon + 180.0) / 360.0 * columns) % columns


@pytest.fixture
def london(shared_data, tmp_path):
    root = tmp_path / "cities"
    for city in ("london_uk", "london_on"):
        (root / city).mkdir(parents=True)
        for src in sorted((shared_data / "london_or_london" / city).iterdir())[:40]:
            shutil.copy(src, root / city / src.name)
    # a name whose latitude is out of range, and one CSV row that is not a number
    first = sorted((root / "london_uk").iterdir())[0]
    parts = first.stem.split("_")
    parts[-5] = "95p00000"
    first.rename(first.with_name("_".join(parts) + ".jpg"))
    on = sorted(p.name for p in (root / "london_on").iterdir())
    rows = ["image,place,lat,lon"]
    for i, name in enumerate(on):
        lat, lon = name[:-4].split("_")[-5:-3]
        rows.append(f"{name},spot{i},{'north' if i == 0 else _degrees(lat)},{_degrees(lon)}")
    (tmp_path / "on.csv").write_text("\n".join(rows) + "\n")
    return root, tmp_path / "on.csv"


def _run(tmp_path, root, csv, *extra):
    cfg = load_config(
        None,
        [
            f"store={tmp_path / 'store'}",
            f"cities.london_uk.source={root / 'london_uk'}",
            f"cities.london_uk.place_regex={LONDON_REGEX}",
            f"cities.london_on.source={root / 'london_on'}",
            f"cities.london_on.manifest={csv}",
            *extra,
        ],
    )
    lines = []
    run_study(cfg, ["ingest"], progress=lines.append)
    store = Store(cfg.store)
    rec = store.record("ingest")
    manifest = store.read_table(f"{rec['folder']}/manifest.parquet").to_pylist()
    errors = store.read_table(f"{rec['folder']}/errors", schema=ERRORS).to_pylist()
    return rec, manifest, errors, lines


def test_coordinates_come_from_names_and_manifest_columns_and_bad_ones_are_recorded(
    local_ray, london, tmp_path
):
    root, csv = london
    rec, manifest, errors, lines = _run(tmp_path, root, csv)
    assert len(manifest) == 80  # nothing dropped: bad coordinates keep their image
    bad = sorted(e["uri"].rsplit("/", 1)[1] for e in errors if e["kind"] == "bad_coordinates")
    assert len(bad) == 2 and any("95p00000" in b for b in bad)
    assert {e["kind"] for e in errors} == {"bad_coordinates"}
    assert any("latitude '95p00000' is out of range" in e["message"] for e in errors)
    assert any(
        "'north' is not a number" in e["message"] and "row 1" in e["message"] for e in errors
    )
    for r in manifest:
        stem = r["uri"].rsplit("/", 1)[1][:-4]
        if any(stem in b for b in bad):
            assert r["lat"] is None and r["lon"] is None
            continue
        lat, lon = stem.split("_")[-5:-3]
        assert r["lat"] == pytest.approx(_degrees(lat)) and r["lon"] == pytest.approx(_degrees(lon))
        assert (r["city"] == "london_uk") == (r["lat"] > 50)  # lat first, lon second
    c = rec["counts"]
    assert c["inputs"] == c["images"] + c["errors"] and c["errors"] == 0
    assert c["bad_coordinates"] == 2 and c["located"] == 78
    near = rec["near_train"]
    assert near["radius_m"] == 200.0 and near["located"] == 78
    assert 0 <= near["share"] <= 1 and "share_by_place" not in near
    assert any("images located (2 with bad coordinates)" in ln for ln in lines)


def test_a_blocked_split_keeps_every_cell_in_one_split(local_ray, london, tmp_path):
    root, csv = london
    rec, manifest, _, _ = _run(tmp_path, root, csv, "split.block_m=3000")
    assert rec["split"]["block_m"] == 3000.0
    cells = {}
    for r in manifest:
        if r["lat"] is not None:
            cells.setdefault((r["city"], _cell(r["lat"], r["lon"], 3000.0)), set()).add(r["split"])
    assert len(cells) > 6 and all(len(s) == 1 for s in cells.values())
    near = rec["near_train"]
    assert near["radius_m"] == 3000.0
    assert near["share"] <= near["share_by_place"]
    assert near["median_m"] >= near["median_m_by_place"]
