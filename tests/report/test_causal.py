"""The report's causal sentences and tables say what the numbers support, no more."""

from __future__ import annotations

import numpy as np
import pandas as pd

from citylens.report.causal import (
    absence_lines,
    coverage_vs_use,
    decisive_lines,
    large_region_lines,
    removal_pictures,
)


def _causal() -> pd.DataFrame:
    rows = []
    for model in ("a-s0", "b-s0"):
        # signburg: signboard decisive for both; towerville: nothing beats its control
        rows.append(("signburg", model, 44, "signboard", 0.3, 0.2, 0.4))
        rows.append(("signburg", model, 3, "sky", 0.0, -0.02, 0.03))
        rows.append(("towerville", model, 49, "skyscraper", 0.05, -0.01, 0.1))
    rows.append(("signburg", "a-s0", 33, "fence", 0.1, 0.05, 0.2))  # one model only
    return pd.DataFrame(
        rows, columns=["city", "model", "class", "name", "effect", "ci_low", "ci_high"]
    )


def test_decisive_objects_are_those_every_model_needs():
    lines = decisive_lines(_causal(), ["signburg", "towerville"])
    assert lines == [
        "signburg: removing signboard costs every model more than removing as many "
        "pixels elsewhere."
    ]


def test_a_city_no_object_decides_is_reported_as_recognised_by_absence():
    lines = absence_lines(_causal(), ["signburg", "towerville"])
    assert len(lines) == 2 and all("towerville" in x and "absence" in x for x in lines)


def test_coverage_against_use():
    objects = pd.DataFrame(
        {
            "model": ["a-s0", "a-s0", "a-s0"],
            "city": ["towerville", "signburg", "signburg"],
            "class": [49, 44, 33],
            "theta": [0.6, 0.6, 0.6],
            "r_p": [0.8, 0.7, 0.1],
            "selected": [True, True, False],
        }
    )
    unused, uncovered = coverage_vs_use(_causal(), objects, 0.6)
    assert unused[["model", "city", "name"]].values.tolist() == [
        ["a-s0", "towerville", "skyscraper"]
    ]
    names = sorted(uncovered.name + "/" + uncovered.model)
    assert names == ["fence/a-s0", "signboard/b-s0"]  # b-s0 has no R_p row: not selected


def test_effects_of_large_regions_are_flagged_as_possibly_the_fills():
    c = _causal()
    c["pixels"] = [2000.0, 100.0, 900.0, 2000.0, 100.0, 900.0, 300.0]  # of a 100 x 100 image
    lines = large_region_lines(c, 100, share=0.1)
    # signboard (20 %) beats its control for both models: flagged; fence (3 %) and the
    # skyscraper (interval covers 0) are not
    assert len(lines) == 1 and lines[0].startswith("signburg · signboard: costs 2 model(s)")
    assert "20 % of the image" in lines[0]
    assert large_region_lines(c.drop(columns="pixels"), 100) == []


class _Assets:
    """Images of one colour per image id, a class map with class 7 in the top half."""

    def __init__(self):
        self.asked = set()

    def load_labels(self, ids):
        self.asked |= ids

    def removed(self, image_id, cls, how):
        if image_id == "gone":
            return None
        img = np.full((8, 8, 3), 100, np.uint8)
        out = img.copy()
        out[:4] = 0 if cls == 7 else 100
        return img, out


def test_removal_pictures_caption_what_the_model_said_and_skip_unreadable_images():
    ex = pd.DataFrame(
        {
            "image_id": ["i1", "gone", "i2"],
            "city": ["signburg", "signburg", "towerville"],
            "model": ["a-s0"] * 3,
            "class": [7, 7, 3],
            "prob": [0.93, 0.9, 0.8],
            "prob_removed": [0.12, 0.1, 0.7],
            "prob_control": [0.9, 0.9, float("nan")],
        }
    )
    assets = _Assets()
    names = tuple(f"c{i}" for i in range(10))
    grid = removal_pictures(ex, names, assets, "inpaint", {"signburg": "red"})
    assert assets.asked == {"i1", "gone", "i2"}
    assert grid["row_labels"] == [
        "signburg · c7\nP 0.93 → 0.12, control 0.90",
        "towerville · c3\nP 0.80 → 0.70",
    ]
    assert grid["row_colors"] == ["red", "k"]
    assert [len(r) for r in grid["tiles"]] == [2, 2] and grid["tiles"][0][1][:4].max() == 0
    assert grid["col_labels"] == ["image", "object removed (inpaint)"]
    assert removal_pictures(ex.iloc[:0], names, assets, "inpaint", {}) is None
