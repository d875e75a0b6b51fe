"""The report's causal sentences and tables say what the numbers support, no more."""

from __future__ import annotations

import pandas as pd

from citylens.report.causal import absence_lines, coverage_vs_use, decisive_lines


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
