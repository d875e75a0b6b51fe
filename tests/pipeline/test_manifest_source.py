"""A city listed by a manifest file: ingest reads only its entries and records the refused."""

from __future__ import annotations

import pytest

from citylens.config import ConfigError, load_config
from citylens.config.validate import preflight
from citylens.pipeline.run import run_study
from citylens.storage import Store


def test_ingest_reads_only_listed_images_and_records_refused_entries(
    local_ray, three_cities, tmp_path, tiny
):
    root = three_cities / "signburg"
    listed = sorted(p.name for p in root.iterdir())[:10]
    manifest = tmp_path / "signburg.txt"
    manifest.write_text(
        "\n".join(
            [
                *listed,
                "../towerville/"
                + sorted(p.name for p in (three_cities / "towerville").iterdir())[0],
                "/etc/passwd",
                "nothere_0.png",
            ]
        )
        + "\n"
    )
    store = tmp_path / "store"
    cfg = load_config(
        None,
        [*tiny.overrides(str(store), str(three_cities)), f"cities.signburg.manifest={manifest}"],
    )
    run_study(cfg, stages=["ingest"], progress=lambda s: None)
    s = Store(str(store))
    rec = s.record("ingest")
    manifest_rows = s.read_table(f"{rec['folder']}/manifest.parquet").to_pylist()
    signburg = sorted(r["uri"].rsplit("/", 1)[1] for r in manifest_rows if r["city"] == "signburg")
    assert signburg == listed
    errors = s.read_table(f"{rec['folder']}/errors/errors.parquet").to_pylist()
    assert sorted((e["kind"], e["uri"].rsplit("/", 1)[-1]) for e in errors) == sorted(
        [
            ("outside_source", manifest.read_text().splitlines()[10].rsplit("/", 1)[1]),
            ("outside_source", "passwd"),
            ("missing", "nothere_0.png"),
        ]
    )
    c = rec["counts"]
    assert c["inputs"] == c["images"] + c["errors"] == len(listed) + 3 + c["cities"]["towerville"]

    # a different list is a different ingest: the refused entries go, images come back
    manifest.write_text("\n".join(listed[:6]) + "\n")
    run_study(cfg, stages=["ingest"], progress=lambda s: None)
    rec = s.record("ingest")
    assert rec["counts"]["errors"] == 0 and rec["counts"]["cities"]["signburg"] == 6


def test_preflight_names_a_missing_manifest(three_cities, tmp_path, tiny):
    cfg = load_config(
        None,
        [
            *tiny.overrides(str(tmp_path / "s"), str(three_cities)),
            f"cities.signburg.manifest={tmp_path}/nope.txt",
        ],
    )
    with pytest.raises(ConfigError, match=r"cities.signburg.manifest: .*nope.txt"):
        preflight(cfg)
