"""Maps of a synthetic located city, and places.geojson checked against RFC 7946."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from citylens.report.figures import city_colors
from citylens.report.maps import by_place, place_maps, places_geojson


def _places(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A synthetic city 3 km across: two models, a few objects, some misclassified."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        lat, lon = 51.5 + rng.uniform(-0.013, 0.013), -0.12 + rng.uniform(-0.02, 0.02)
        for model in ("simple-s0", "resnet18-s0"):
            top = ["car", "tree", "house"][k % 3] if k % 7 else None
            explained = int(rng.integers(1, 4))
            rows.append(
                {
                    "model": model,
                    "city": "london_uk",
                    "place": f"p{k}",
                    "lat": lat,
                    "lon": lon,
                    "images": explained,
                    "explained": explained,
                    "correct": explained if k % 5 else 0,
                    "top_class": -1 if top is None else 1,
                    "top_name": top,
                    "top_share": None if top is None else 0.5,
                    "key_class": 2,
                    "key_name": "car",
                    "key_r_p": float(rng.uniform(0, 0.05)),
                }
            )
    rows.append({**rows[0], "place": "unlocated", "lat": None, "lon": None})
    return pd.DataFrame(rows)


def test_by_place_pools_the_models():
    p = _places()
    pooled = by_place(p)
    assert len(pooled) == 40  # the unlocated place is not mapped
    row = pooled[pooled.place == "p5"].iloc[0]
    assert row.wrong == 1.0  # both models wrong on every view
    assert pooled[pooled.place == "p7"].iloc[0].top_name is None or pd.isna(
        pooled[pooled.place == "p7"].iloc[0].top_name
    )
    mine = p[(p.place == "p1")]
    assert row is not None and pooled[pooled.place == "p1"].iloc[0].key_r_p == pytest.approx(
        mine.key_r_p.mean()
    )


def test_the_map_figure_has_three_framed_panels_and_a_scale_bar(tmp_path):
    pooled = by_place(_places())
    color = city_colors(["london_uk"])["london_uk"]
    fig = place_maps(pooled, "london_uk", color, "car")
    axes = fig.axes
    assert len(axes) >= 3  # the third panel's colour bar is a fourth
    panels = axes[:3]
    assert "top object" in panels[0].get_title()
    assert "misclassified" in panels[1].get_title()
    assert "'car'" in panels[2].get_title()
    for ax in panels:
        assert tuple(ax.spines["left"].get_edgecolor()) == pytest.approx(tuple(color))
        labels = [t.get_text() for t in ax.texts]
        assert any(t.endswith(" m") or t.endswith(" km") for t in labels)
    legend = [t.get_text() for t in panels[0].get_legend().get_texts()]
    assert any(t.startswith("car (") for t in legend)
    # east-west extent of the points in metres: ~2.8 km for 0.04° of longitude at 51.5°
    x = panels[0].collections[0].get_offsets()[:, 0]
    assert np.ptp(x) < 2800
    fig.savefig(tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 10_000


def _check_rfc7946(doc: dict) -> None:
    """The parts of RFC 7946 a points file must meet (an independent checker)."""
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert isinstance(doc["features"], list)
    for f in doc["features"]:
        assert f["type"] == "Feature"
        assert set(f) <= {"type", "geometry", "properties", "id", "bbox"}
        g = f["geometry"]
        assert g["type"] == "Point" and len(g["coordinates"]) in (2, 3)
        lon, lat = g["coordinates"][:2]
        assert all(isinstance(v, float | int) and math.isfinite(v) for v in (lon, lat))
        assert -180 <= lon <= 180 and -90 <= lat <= 90
        assert f["properties"] is None or isinstance(f["properties"], dict)


def test_places_geojson_is_rfc_7946_with_lon_first():
    p = _places()
    ar = pd.Series({("london_uk", "p1"): 0.25})
    text = places_geojson(p, ar)

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    doc = json.loads(text, parse_constant=refuse)
    _check_rfc7946(doc)
    assert len(doc["features"]) == 40
    f = next(x for x in doc["features"] if x["properties"]["place"] == "p1")
    src = p[(p.place == "p1")].iloc[0]
    assert f["geometry"]["coordinates"] == [pytest.approx(src.lon), pytest.approx(src.lat)]
    props = f["properties"]
    assert props["city"] == "london_uk" and props["split"] == "test"
    assert props["top_object:simple-s0"] == "tree" and props["key_object"] == "car"
    assert props["correct:resnet18-s0"] == 1.0 and props["ar"] == 0.25
    assert props["key_r_p:simple-s0"] == pytest.approx(src.key_r_p)
    p5 = next(x for x in doc["features"] if x["properties"]["place"] == "p5")["properties"]
    assert p5["correct:simple-s0"] == 0.0 and p5["ar"] is None
