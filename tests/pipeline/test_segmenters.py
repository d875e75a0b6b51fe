"""Switching the study's segmenter: a model backend goes end to end (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.config import load_config
from citylens.data.images import load_labels as decode_labels_png
from citylens.pipeline.run import run_study
from citylens.storage import Store

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_demo_study_runs_with_ade20k_ppm_on_random_weights(local_ray, tmp_path):
    # The packaged demo study, changed only in its segmenter (and sized down for a test).
    from importlib import resources

    demo = resources.files("citylens.studies").joinpath("demo.yaml")
    cfg = load_config(
        demo,
        [
            f"store={tmp_path / 'store'}",
            "synthetic.places=6",
            "synthetic.views=3",
            "synthetic.size=96",
            "models.archs=[simple]",
            "train.epochs=1",
            "train.input_size=96",
            "analysis.pca=[5]",
            "analysis.perplexity=3",
            "segmenter.backend=ade20k-ppm",
            "segmenter.weights=random:0",
            "segmenter.scales=[64,128]",
            # a random-weight segmenter scatters many classes: remove two per image
            "ablate.max_objects=2",
            "ablate.steps=[0,0.2]",
        ],
    )
    results = {r.stage: r.status for r in run_study(cfg, progress=lambda s: None)}
    assert set(results.values()) == {"ran"}
    store = Store(cfg.store)
    seg = store.record("segment")
    assert seg["segmenter"] == "ade20k-ppm" and seg["counts"]["errors"] == 0
    table = store.read_table(store.files(f"{seg['folder']}/data", ".parquet")[0]).to_pylist()
    row = table[0]
    labels = decode_labels_png(row["labels"])
    assert labels.shape == (96, 96) == (row["seg_h"], row["seg_w"])
    assert labels.min() >= 1 and labels.max() <= 150  # channel k-1 is ADE20K class k
    np.testing.assert_array_equal(np.bincount(labels.ravel(), minlength=151), row["class_pixels"])
    ov = store.record("overlap")
    assert ov["counts"]["errors"] == 0 and ov["counts"]["rows"] > 0
    assert store.exists(f"{store.record('analyze')['folder']}/objects.parquet")
    assert store.exists("report.html")
    # switching back to ground-truth labels re-runs segmentation and what follows only
    back = load_config(cfg.to_dict(), ["segmenter.backend=labels", "segmenter.weights=null"])
    again = {r.stage: r.status for r in run_study(back, progress=lambda s: None)}
    assert [s for s, v in again.items() if v == "ran"] == [
        "segment",
        "ablate",  # it removes the segmenter's objects
        "overlap",
        "analyze",
        "report",
    ]
