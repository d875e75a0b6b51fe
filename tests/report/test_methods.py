"""The report's methods section: what it says follows the intervals, nothing more."""

from __future__ import annotations

import numpy as np
import pandas as pd

from citylens.report.methods import faithful_lines, ranking_summary, top_by_method


def _row(method, layer, own, gain, low, high, best, behind, b_low, b_high, separated, ins=0.1):
    return {
        "arch": "resnet18",
        "method": method,
        "layer": layer,
        "own": own,
        "models": 2,
        "images": 40,
        "places": 10,
        "deletion_gain": gain,
        "deletion_gain_low": low,
        "deletion_gain_high": high,
        "insertion_gain": ins,
        "insertion_gain_low": ins - 0.01,
        "insertion_gain_high": ins + 0.01,
        "best": best,
        "behind_best": behind,
        "behind_best_low": b_low,
        "behind_best_high": b_high,
        "separated": separated,
    }


def test_a_settled_lead_is_called_settled_and_an_unsettled_one_is_not():
    settled = pd.DataFrame(
        [
            _row("gradcam++", "layer3", False, 0.2, 0.15, 0.25, True, 0.0, 0.0, 0.0, True),
            _row("gradcam", "layer4", True, 0.1, 0.05, 0.15, False, 0.1, 0.04, 0.16, True),
        ]
    )
    (line,) = faithful_lines(settled)
    assert line.startswith(
        "resnet18: the most faithful explanation by deletion gain is gradcam++ at layer3"
    )
    assert "runner-up, gradcam at layer4 (the study's own), is 0.1 [0.04, 0.16]" in line
    assert "settled on this data" in line and "not settled" not in line
    unsettled = settled.assign(separated=False)
    unsettled.loc[1, ["behind_best_low"]] = -0.02
    (line,) = faithful_lines(unsettled)
    assert "not settled on this data" in line


def test_a_best_not_shown_above_random_and_a_different_insertion_leader_are_said():
    df = pd.DataFrame(
        [
            _row(
                "hirescam", "layer3", False, 0.02, -0.01, 0.05, True, 0.0, 0.0, 0.0, False, ins=0.05
            ),
            _row(
                "gradcam",
                "layer4",
                True,
                0.01,
                -0.02,
                0.04,
                False,
                0.01,
                -0.01,
                0.03,
                False,
                ins=0.3,
            ),
        ]
    )
    (line,) = faithful_lines(df)
    assert "not shown better than a random order" in line
    assert "By insertion gain gradcam at layer4 (the study's own) leads instead" in line


def test_top_objects_per_explanation_and_the_ranking_summary():
    objects = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "method": ["gradcam", "gradcam", "hirescam", "hirescam"],
            "layer": ["l4"] * 4,
            "city": ["a"] * 4,
            "theta": [0.6] * 4,
            "name": ["car", "tree", "car", "tree"],
            "r_p": [0.2, 0.5, 0.9, 0.1],
            "selected": [True, True, True, True],
        }
    )
    top = top_by_method(objects, 0.6)
    assert top.to_dict("records") == [
        {"city": "a", "model": "m", "gradcam@l4": "tree", "hirescam@l4": "car"}
    ]
    rankings = pd.DataFrame(
        {
            "arch": ["r", "r", "r"],
            "method": ["g", "g", "g"],
            "layer": ["l"] * 3,
            "city": ["a", "b", "c"],
            "spearman": [0.5, np.nan, 1.0],
            "top_agrees": [True, None, False],
        }
    )
    s = ranking_summary(rankings).iloc[0]
    assert s.cities == 3 and s.mean_spearman == 0.75 and s.top_agrees == 0.5


def test_without_ablations_the_section_says_so_and_still_shows_ar_between_methods():
    from types import SimpleNamespace

    from citylens.report.methods import draw_methods
    from citylens.report.page import _Output

    pairs = pd.DataFrame(
        {"model": ["m"], "method_a": ["gradcam"], "method_b": ["hirescam"], "mean_ar": [0.37]}
    )
    t = SimpleNamespace(
        method_faithfulness=pd.DataFrame(),
        method_pairs=pairs,
        method_rankings=None,
        method_objects=None,
    )
    out = _Output("x")
    draw_methods(out, t, SimpleNamespace(theta=0.6))
    page = out.page.render()
    assert 'id="methods"' in page and "No test image could be ablated" in page
    assert "hirescam" in page and "most faithful" not in page
    none = _Output("y")
    draw_methods(none, SimpleNamespace(method_faithfulness=None, method_pairs=None), None)
    assert 'id="methods"' not in none.page.render()  # no explain.methods: no section
