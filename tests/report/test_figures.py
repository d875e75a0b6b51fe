"""Figures draw what the tables say (checked on the artists, not by eye)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from citylens.report.figures import ar_distributions, image_grid, top_objects_bars, tsne_by_class


def test_ar_distributions_one_panel_per_pair_with_its_mean():
    df = pd.DataFrame(
        {
            "model_a": ["a-s0"] * 3 + ["a-s0"] * 2,
            "model_b": ["a-s1"] * 3 + ["b-s0"] * 2,
            "ar": [0.1, 0.2, 0.3, 0.5, 0.7],
        }
    )
    fig = ar_distributions(df)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["a-s0 vs a-s1\nmean 0.200", "a-s0 vs b-s0\nmean 0.600"]
    counts = [sum(p.get_height() for p in ax.patches) for ax in fig.axes if ax.patches]
    assert counts == [3, 2]


def test_top_objects_bars_average_models_and_rank():
    tops = pd.DataFrame(
        {
            "model": ["m1", "m2", "m1", "m2"],
            "city": ["A"] * 4,
            "theta": [0.6] * 4,
            "name": ["road", "road", "sky", "sky"],
            "mean_in_mask": [10.0, 30.0, 5.0, 7.0],
        }
    )
    ax = top_objects_bars(tops, {"A": (1, 0, 0, 1)}).axes[0]
    widths = {t.get_text(): p.get_width() for t, p in zip(ax.get_yticklabels(), ax.patches)}
    assert widths == {"road": 20.0, "sky": 6.0}


def test_tsne_by_class_names_the_common_classes():
    emb = pd.DataFrame(
        {
            "pca": ["50"] * 6,
            "model": ["m"] * 6,
            "descriptor": ["d_cam"] * 6,
            "x": np.arange(6.0),
            "y": np.arange(6.0),
            "top_class": [2, 2, 2, 0, 7, 7],
        }
    )
    names = tuple(f"c{k}" for k in range(10))
    fig = tsne_by_class(emb, "50", names, top=2)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["c2", "c7", "other classes"]
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("t-SNE 1", "t-SNE 2")


def test_image_grid_shapes():
    tile = np.zeros((8, 8, 3), np.uint8)
    fig = image_grid([[tile, tile], [tile]], ["r1", "r2"], ["a", "b"], "t")
    assert len(fig.axes) == 4 and fig.axes[0].get_ylabel() == "r1"
    assert not fig.axes[3].axison  # the empty cell is hidden
