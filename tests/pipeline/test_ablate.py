"""Stage ablate on a real local Ray: its rows equal a direct single-process computation
(slow)."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
import torch
import torch.nn.functional as F

from citylens.ablation import ablate_objects, ablation_rows, deletion_curves, objects_to_remove
from citylens.config import load_config
from citylens.data.images import load_batch, load_labels, normalize
from citylens.masks import upsample_masks
from citylens.pipeline.run import run_study
from citylens.storage import Store, read_bytes
from citylens.tables import ABLATIONS
from citylens.train import load_checkpoint

from .conftest import copy_store, tiny_overrides

# slow: a study of its own (~90 s); the fast suite's full study runs ablate too
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def study(tiny_study, local_ray, three_cities, tmp_path_factory):
    # the session's finished tiny study; the settings below re-run its ablate stage only
    store = copy_store(tiny_study, tmp_path_factory.mktemp("ablate") / "store")
    overrides = tiny_overrides(str(store), str(three_cities))
    overrides += ["ablate.min_pixels=16", "ablate.batch_size=4", "ablate.steps=[0,0.1,0.3]"]
    cfg = load_config(None, overrides)
    stages = ["ingest", "train", "explain", "segment", "ablate"]
    ran = {r.stage: r.status for r in run_study(cfg, stages=stages, progress=lambda s: None)}
    assert ran == {**dict.fromkeys(stages[:-1], "skipped"), "ablate": "ran"}
    return cfg, Store(str(store))


def test_the_stages_rows_equal_a_direct_computation(study):
    cfg, store = study
    rec = store.record("ablate")
    assert rec["counts"]["inputs"] == rec["counts"]["images"] + rec["counts"]["errors"]
    table = store.read_table(f"{rec['folder']}/data", schema=ABLATIONS)
    assert table.schema == ABLATIONS
    df = table.to_pandas()
    pairs = df.groupby(["image_id", "model"]).size()
    assert len(pairs) == rec["counts"]["images"] * 2  # every image × both models
    manifest = store.read_table(f"{store.record('ingest')['folder']}/manifest.parquet")
    uri = dict(zip(manifest["image_id"].to_pylist(), manifest["uri"].to_pylist()))
    label_uri = dict(zip(manifest["image_id"].to_pylist(), manifest["label_uri"].to_pylist()))
    cities = store.record("ingest")["cities"]
    exp = store.read_table(f"{store.record('explain')['folder']}/data")
    size, steps = cfg.train.input_size, tuple(cfg.ablate.steps)
    for iid, name in sorted(pairs.index)[:4]:
        mine = df[(df.image_id == iid) & (df.model == name)]
        model, _ = load_checkpoint(store.url(f"models/{name}"))
        images, ok, _ = load_batch([uri[iid]], size)
        assert ok == [0]
        lab = torch.from_numpy(load_labels(read_bytes(label_uri[iid])).astype(float))
        lab = F.interpolate(lab[None, None], size=(size, size), mode="nearest-exact")[0].long()
        city = mine.city.iloc[0]
        target = torch.tensor([cities.index(city)])
        objects = objects_to_remove(lab, 16, 3)
        seed = zlib.crc32(iid.encode()) ^ 0

        def prepare(x):
            return normalize(x).contiguous(memory_format=torch.channels_last)

        got = ablate_objects(model, images, lab, target, prepare, objects, [seed], "inpaint")
        e = exp.filter(
            pc.and_(pc.equal(exp["image_id"], iid), pc.equal(exp["model"], name))
        ).to_pylist()[0]
        mask = np.asarray(e["mask"], np.float32).reshape(e["cam_h"], e["cam_w"])
        sal = upsample_masks(mask, (size, size))[None]
        args = (model, images, target, sal, prepare, "inpaint", steps)
        curves = {"mask": deletion_curves(*args), "random": deletion_curves(*args, True, [seed])}
        want = pd.DataFrame(
            ablation_rows([iid], [city], name, target.numpy(), got, curves, steps, "inpaint", size)
        )
        key = ["kind", "order", "of_class", "step"]
        a = mine.sort_values(key, na_position="first").reset_index(drop=True)
        b = want.sort_values(key, na_position="first").reset_index(drop=True)
        assert len(a) == len(b) == 2 * len(objects[0]) + 4 * len(steps)
        for col in ("kind", "order", "class", "of_class", "pixels", "fill", "target"):
            assert a[col].tolist() == b[col].tolist(), col
        for col in ("step", "prob_before", "logit_before", "prob_after", "logit_after"):
            np.testing.assert_allclose(a[col], b[col], atol=1e-5, err_msg=col)
        deletion = a[(a.kind == "deletion") & (a.order == "mask")]
        assert deletion.prob_after.iloc[0] == pytest.approx(a.prob_before.iloc[0], abs=1e-6)


def test_an_up_to_date_ablate_is_skipped(study):
    cfg, store = study
    before = store.record("ablate")
    results = run_study(cfg, stages=["ablate"], progress=lambda s: None)
    assert [r.status for r in results] == ["skipped"]
    assert store.record("ablate") == before
