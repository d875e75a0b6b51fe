from importlib import resources
from pathlib import Path

import pytest

from citylens.config import load_config

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted((REPO / "jobs" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_example_studies_are_valid(path):
    cfg = load_config(path)
    assert cfg.name and cfg.store


def test_packaged_demo_study_is_valid_and_small():
    cfg = load_config(resources.files("citylens.studies").joinpath("demo.yaml"))
    assert cfg.models.archs == ("vgg11", "resnet18", "simple", "simpler")
    assert cfg.models.seeds == (0, 1)
    assert cfg.cities == {} and cfg.synthetic.size == cfg.train.input_size == 96


def test_london_place_regex_groups_views_of_one_spot(shared_data):
    from citylens.data.manifest import scan_city

    cfg = load_config(REPO / "jobs/examples/london.yaml")
    city = cfg.cities["london_uk"]
    found, _ = scan_city(
        "london_uk", str(shared_data / "london_or_london/london_uk"), city.place_regex
    )
    places = {s.place for s in found}
    assert len(found) == 600 and 500 < len(places) < 600
    assert all("p" in p and "_" in p for p in places)  # lat_lon pairs
