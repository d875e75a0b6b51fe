"""The report's agreement section: the points of Fig 10 and what the section says."""

from __future__ import annotations

import pandas as pd

from citylens.report.agreement import annotated_points, draw_agreement, tsne_by_annotation
from citylens.report.page import _Output


def _annotated():
    rows = [
        # annotator, image, model, θ, label1, label2, top1
        ("ana", "i1", "m", 0.6, 2, -1, 2),
        ("bo", "i1", "m", 0.6, 3, -1, 2),
        ("cy", "i1", "m", 0.6, 3, -1, 2),  # two of three say 3
        ("ana", "i2", "m", 0.5, 7, -1, 7),  # the smallest θ wins
        ("ana", "i2", "m", 0.6, 4, -1, 4),
        ("bo", "i3", "m", 0.6, -1, -1, -1),  # none / unclear; the segmenter: nothing
        ("ana", "i4", "m", 0.6, 5, -1, 6),
        ("bo", "i4", "m", 0.6, 6, -1, 6),  # a tie: ana's (first by name)
        ("ana", "i9", "m", 0.6, 5, -1, 6),  # not in the embeddings: no point
    ]
    cols = ["annotator", "image_id", "model", "theta", "label1", "label2", "top1"]
    d = pd.DataFrame(rows, columns=cols)
    return d.assign(city="c", seconds=None, top2=-1, ratio=1.0)


def _embeddings():
    rows = []
    for pca in ("50", "90%"):
        for k, iid in enumerate(["i1", "i2", "i3", "i4", "i5"]):
            for desc in ("d_cam", "d_short"):
                shift = 100 if pca == "90%" or desc == "d_short" else 0
                rows.append(("m", desc, pca, 10, iid, "c", k + shift, -k, 2))
    cols = ["model", "descriptor", "pca", "components", "image_id", "city", "x", "y", "top_class"]
    return pd.DataFrame(rows, columns=cols)


def test_the_points_by_hand():
    p = annotated_points(_annotated(), _embeddings()).set_index("image_id")
    assert sorted(p.index) == ["i1", "i2", "i3", "i4"]
    assert p.loc["i1"][["human", "segmenter", "annotators"]].tolist() == [3, 2, 3]
    assert p.loc["i2"][["human", "segmenter"]].tolist() == [7, 7]
    assert p.loc["i3"][["human", "segmenter"]].tolist() == [-1, -1]
    assert p.loc["i4"][["human", "segmenter"]].tolist() == [5, 6]
    # positions: D_cam at the first PCA setting by name ("50")
    assert p.loc["i2"][["x", "y"]].tolist() == [1, -1]


def test_the_section_says_kappa_and_draws_fig_10():
    names = tuple(f"class{k}" for k in range(10))
    curves = pd.DataFrame(
        {
            "annotator": ["ana", "bo", "all"],
            "model": "m",
            "city": "all",
            "theta": 0.6,
            "threshold": 1.0,
            "n": [3, 2, 5],
            "empty": 0,
            "unclear": [0, 1, 1],
            "strict": [0.5, 0.5, 0.5],
            "lenient": [0.5, 0.5, 0.5],
        }
    )
    curves = pd.concat([curves, curves.assign(city="c")], ignore_index=True)
    kappa = pd.DataFrame(
        [
            {
                "annotator_a": "ana",
                "annotator_b": "bo",
                "n": 2,
                "places": 2,
                "observed": 0.5,
                "kappa": 0.2,
                "ci_low": -0.3,
                "ci_high": 0.7,
                "same_labels": 0.5,
                "any_label": 1.0,
            }
        ]
    )

    class T:
        agreement, annotators, annotated = curves, kappa, _annotated()
        embeddings = _embeddings()

    T.names = names
    out = _Output("t")
    draw_agreement(out, T, {"c": (0.1, 0.2, 0.3, 1.0)})
    page = out.page.render()
    assert "ana and bo: κ = 0.20 [-0.30, 0.70]" in page
    assert "over 2 explanations (2 places resampled)" in page
    assert "Annotations by 2 annotator(s) (ana, bo); the curves pool them all" in page
    assert "1 answer(s) of &#x27;none / unclear&#x27;" in page
    assert {"agreement.png", "agreement.csv", "annotators.csv", "tsne_annotation.png"} <= set(
        out.files
    )
    fig = tsne_by_annotation(annotated_points(_annotated(), _embeddings()), _embeddings(), names)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "class3" in labels and "none / unclear / unlabelled" in labels


def test_no_annotations_no_section():
    class T:
        agreement = annotators = annotated = embeddings = None

    out = _Output("t")
    draw_agreement(out, T, {})
    assert out.files == {} and "agreement" not in out.page.render()


def test_an_agreement_table_from_before_annotators_still_draws():
    old = pd.DataFrame(
        {
            "model": "m",
            "city": ["c", "all"],
            "theta": 0.6,
            "threshold": 1.0,
            "n": 3,
            "empty": 0,
            "strict": 0.5,
            "lenient": 0.7,
        }
    )

    class T:
        agreement, annotators, annotated, embeddings = old, None, None, None
        names = ("other",)

    out = _Output("t")
    draw_agreement(out, T, {"c": (0.1, 0.2, 0.3, 1.0)})
    assert "agreement.png" in out.files and "Annotations by 1 annotator(s)" in out.page.render()
