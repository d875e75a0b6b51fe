"""The packaged demo study end to end, and the paper's findings on it (slow, ~7 min)."""

from __future__ import annotations

from importlib import resources

import pytest
import ray

from citylens.config import load_config
from citylens.data.scenes import STYLES
from citylens.pipeline.run import run_study
from citylens.storage import Store


@pytest.mark.slow
def test_demo_study_reproduces_the_papers_findings(tmp_path):
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=600 * 2**20,
        log_to_driver=False,
    )
    try:
        demo = resources.files("citylens.studies").joinpath("demo.yaml")
        cfg = load_config(demo, [f"store={tmp_path / 'demo'}"])
        results = run_study(cfg, progress=lambda s: None)
    finally:
        ray.shutdown()
    assert all(r.status == "ran" for r in results)
    store = Store(cfg.store)
    folder = store.record("analyze")["folder"]

    # Every model is far above chance (0.5 for two cities).
    acc = store.read_table(f"{folder}/accuracy.parquet").to_pandas()
    assert len(acc) == 8
    assert (acc.test_acc >= 0.7).all(), acc

    # Paper Table 2: architectures disagree more than seeds of one architecture.
    pairs = store.read_table(f"{folder}/ar_pairs.parquet").to_pandas()
    by_kind = pairs.groupby("kind").mean_ar.mean()
    assert by_kind["architectures"] > by_kind["seeds"] + 0.05, by_kind

    # The objects only one city has top its R_p (mean over the study's models).
    objects = store.read_table(f"{folder}/objects.parquet").to_pandas()
    sel = objects[objects.selected]
    unique = {s.name: set(s.objects) for s in STYLES[:2]}
    for city, own in unique.items():
        ranking = sel[sel.city == city].groupby("name").r_p.mean().sort_values(ascending=False)
        assert ranking.index[0] in own, (city, ranking.head())
    assert store.exists("report.html")
    # each model's Ray Train run folder goes once the model is committed
    assert store.ls("ray-train") == []
