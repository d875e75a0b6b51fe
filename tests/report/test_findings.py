"""The findings box claims only what each interval or test supports."""

from __future__ import annotations

import pandas as pd

from citylens.report.findings import accuracy_line, ar_claim, distinctive_lines, passing, top_lines


def _kinds(diff_low: float, diff_high: float, p: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kind": ["architectures", "seeds", "architectures - seeds"],
            "pairs": [4, 2, 6],
            "mean_ar": [0.30, 0.12, 0.18],
            "ci_low": [0.27, 0.10, diff_low],
            "ci_high": [0.33, 0.14, diff_high],
            "p_value": [None, None, p],
            "n_places": [40, 40, 40],
        }
    )


def test_the_ar_claim_is_made_only_when_its_interval_excludes_zero():
    sure = ar_claim(_kinds(0.14, 0.22, 0.0001))
    assert "architectures disagree more than seeds" in sure and "p < 0.001" in sure
    assert "+0.180 [0.140, 0.220]" in sure
    unsure = ar_claim(_kinds(-0.02, 0.30, 0.2))
    assert "not significant" in unsure and "cannot say" in unsure
    assert "disagree more than seeds (" not in unsure
    assert "seeds disagree more" in ar_claim(_kinds(-0.3, -0.1, 0.001))
    assert ar_claim(_kinds(0.1, 0.2, 0.01).iloc[:2]) is None  # one kind only: no claim


def _distinctive() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "city": ["x", "x", "y"],
            "theta": [0.6, 0.6, 0.6],
            "class": [4, 2, 3],
            "name": ["sign", "road", "tree"],
            "r_p": [0.8, 0.3, 0.4],
            "against": ["y", "y", None],
            "baseline": [0.2, 0.25, 0.3],
            "only_here": [False, False, True],
            "diff": [0.6, 0.05, 0.1],
            "ci_low": [0.5, -0.02, -0.01],
            "ci_high": [0.7, 0.12, 0.2],
            "p_value": [1e-5, 0.2, 0.08],
            "q_value": [3e-5, 0.2, 0.12],
            "passes": [True, False, False],
        }
    )


def test_only_objects_that_pass_are_named_distinctive():
    d = _distinctive()
    assert passing(d, 0.6) == {"x": ["sign"]}
    lines = distinctive_lines(d, 0.6)
    assert lines[0].startswith("3 selected (city, object) pairs tested") and "1 pass" in lines[0]
    assert "sign (R_p 0.80, +0.60 [0.50, 0.70] over y, q < 0.001)" in lines[1]
    assert "road" not in lines[1]
    assert lines[2] == "y: no object passes; none is named as distinctive."
    assert passing(None, 0.6) == {} and distinctive_lines(d, 0.8) == [
        lines[0]
        .replace("3 selected", "0 selected")
        .replace("1 pass", "0 pass")
        .replace("0.6", "0.8")
    ]


def test_unsettled_top_objects_are_named_and_accuracy_carries_its_interval():
    settled = pd.DataFrame(
        {
            "model": ["a-s0", "b-s0"],
            "city": ["x", "x"],
            "theta": [0.6, 0.6],
            "top_name": ["sign", "road"],
            "top_r_p": [0.8, 0.41],
            "second_name": ["road", "sign"],
            "second_r_p": [0.3, 0.39],
            "settled": [True, False],
        }
    )
    (line,) = top_lines(settled, 0.6)
    assert line.startswith("x: 1 of 2 models put")
    assert "not settled for b-s0 (road 0.41 vs sign 0.39)" in line and "a-s0 (" not in line
    acc = pd.DataFrame({"model": ["a-s0"], "acc": [0.9], "ci_low": [0.8], "ci_high": [0.96]})
    assert accuracy_line(acc) == "Test accuracy (explained test images): a-s0 0.90 [0.80, 0.96]"
    assert accuracy_line(None) is None
