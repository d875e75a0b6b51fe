"""Stage ablate on a real local Ray: its rows equal a direct single-process computation."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
import torch.nn.functional as F

from citylens.ablation import ablate_objects, deletion_curves, objects_to_remove
from citylens.config import load_config
from citylens.data.images import load_batch, load_labels, normalize
from citylens.masks import upsample_masks
from citylens.pipeline.run import run_study
from citylens.storage import Store, read_bytes
from citylens.tables import ABLATIONS
from citylens.train import load_checkpoint

from .conftest import tiny_overrides

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def study(local_ray, three_cities, tmp_path_factory):
    store = tmp_path_factory.mktemp("ablate")
    overrides = tiny_overrides(str(store), str(three_cities))
    overrides += ["ablate.max_objects=3", "ablate.min_pixels=16", "ablate.batch_size=4"]
    cfg = load_config(None, overrides)
    stages = ["ingest", "train", "explain", "segment", "ablate"]
    run_study(cfg, stages=stages, progress=lambda s: None)
    return cfg, Store(str(store))


def test_the_stages_rows_equal_a_direct_computation(study):
    cfg, store = study
    rec = store.record("ablate")
    assert rec["counts"]["inputs"] == rec["counts"]["images"] + rec["counts"]["errors"]
    table = store.read_table(f"{rec['folder']}/data", schema=ABLATIONS)
    assert table.schema == ABLATIONS
    assert table.num_rows == rec["counts"]["images"] * 2  # two models
    manifest = store.read_table(f"{store.record('ingest')['folder']}/manifest.parquet")
    uri = dict(zip(manifest["image_id"].to_pylist(), manifest["uri"].to_pylist()))
    label_uri = dict(zip(manifest["image_id"].to_pylist(), manifest["label_uri"].to_pylist()))
    cities = store.record("ingest")["cities"]
    exp = store.read_table(f"{store.record('explain')['folder']}/data")
    size = cfg.train.input_size
    rows = table.sort_by("image_id").slice(0, 4).to_pylist()
    for row in rows:
        model, _ = load_checkpoint(store.url(f"models/{row['model']}"))
        images, ok, _ = load_batch([uri[row["image_id"]]], size)
        assert ok == [0]
        lab = torch.from_numpy(load_labels(read_bytes(label_uri[row["image_id"]])).astype(float))
        lab = F.interpolate(lab[None, None], size=(size, size), mode="nearest-exact")[0].long()
        target = torch.tensor([cities.index(row["city"])])
        objects = objects_to_remove(lab, 16, 3)
        seed = zlib.crc32(row["image_id"].encode()) ^ 0

        def prepare(x):
            return normalize(x).contiguous(memory_format=torch.channels_last)

        got = ablate_objects(model, images, lab, target, prepare, objects, [seed], "inpaint")
        assert row["classes"] == got["class"].tolist()
        np.testing.assert_allclose(row["prob_removed"], got["prob_removed"], atol=1e-5)
        np.testing.assert_allclose(row["prob_control"], got["prob_control"], atol=1e-5)
        e = exp.filter(
            pc.and_(
                pc.equal(exp["image_id"], row["image_id"]), pc.equal(exp["model"], row["model"])
            )
        ).to_pylist()[0]
        mask = np.asarray(e["mask"], np.float32).reshape(e["cam_h"], e["cam_w"])
        sal = upsample_masks(mask, (size, size))[None]
        curves = deletion_curves(model, images, target, sal, prepare, "inpaint", cfg.ablate.steps)
        np.testing.assert_allclose(row["deletion"], curves["deletion"][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(row["insertion"], curves["insertion"][0].numpy(), atol=1e-5)
        assert row["prob"] == pytest.approx(row["deletion"][0], abs=1e-6)  # step 0: whole
        assert len(row["deletion_random"]) == len(cfg.ablate.steps)


def test_an_up_to_date_ablate_is_skipped(study):
    cfg, store = study
    before = store.record("ablate")
    results = run_study(cfg, stages=["ablate"], progress=lambda s: None)
    assert [r.status for r in results] == ["skipped"]
    assert store.record("ablate") == before
