"""The packaged demo study end to end, and the paper's findings on it (slow, ~12 min)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from citylens.config import load_config
from citylens.data.scenes import STYLES
from citylens.pipeline.run import STAGES
from citylens.storage import Store


@pytest.mark.slow
def test_demo_study_reproduces_the_papers_findings(tmp_path, ray_lines):
    # the removal check trimmed (3 objects, 2-step curves): its numbers are not what
    # this test checks, and the shipped demo's ~27 forwards per image cost CI minutes.
    # (A smaller corpus does not hold the findings: at 20 places per city ResNet18's
    # test accuracy fell to 0.66 on 4 test places per city.)
    overrides = [f"store={tmp_path / 'demo'}", "ablate.max_objects=3", "ablate.steps=[0,0.2]"]
    # `citylens demo` as a scheduled job runs it: stdout and stderr to a file
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "citylens"), "demo", *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=1500,
        )
    text = log.read_text()
    assert done.returncode == 0, text[-4000:]
    assert f"{len(STAGES)} stage(s) ran" in text

    # The log is citylens's: at most 5 lines of Ray's own, none at ERROR level, and it
    # says where Ray's logs are (issue 24). Before, a demo log held ~140 Ray Data lines,
    # two ERROR-level lines and a raylet warning.
    theirs, errors = ray_lines(text)
    assert len(theirs) <= 5 and not errors, "\n".join(theirs)
    assert "Ray's logs: " in text and "--verbose" in text

    cfg = load_config(resources.files("citylens.studies").joinpath("demo.yaml"), overrides)
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

    # Mixed precision (the GPU path, run here on the CPU): on trained models, bf16 and
    # fp16 trunks give masks within the tolerance explain.precision enforces.
    _reduced_precision_masks_match_fp32(store, cfg)


def _reduced_precision_masks_match_fp32(store: Store, cfg) -> None:
    import pyarrow.compute as pc
    import torch

    from citylens.cam import mask_difference
    from citylens.data.images import load_batch, normalize
    from citylens.train import load_checkpoint

    manifest = store.read_table(f"{store.record('ingest')['folder']}/manifest.parquet")
    test = manifest.filter(pc.equal(manifest["split"], "test")).slice(0, 16)
    images, ok, _ = load_batch(test["uri"].to_pylist(), cfg.train.input_size)
    cities = store.record("ingest")["cities"]
    labels = torch.tensor([cities.index(c) for c in test["city"].to_pylist()])[ok]
    x = normalize(images).contiguous(memory_format=torch.channels_last)
    for name in sorted(store.record("train")["models"]):
        model, _ = load_checkpoint(store.url(f"models/{name}"))
        model = model.to(memory_format=torch.channels_last)
        for precision in ("bf16", "fp16"):
            diff = mask_difference(model, x, labels, precision)
            assert 0 < diff < cfg.explain.mask_tolerance, (name, precision, diff)
