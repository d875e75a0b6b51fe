"""``explain.methods`` on a real local Ray (slow): each added explanation is made, counted,
traced along the removal curves and compared, and every number equals a direct computation
from the stage outputs it comes from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from citylens.ablation import curve_area
from citylens.analysis.ar import average_residual
from citylens.cam import explain_batch
from citylens.config import load_config
from citylens.data.images import load_batch, load_labels, normalize
from citylens.masks import explanation
from citylens.overlap import class_pixels_in_masks
from citylens.pipeline.run import run_study
from citylens.pipeline.shards import companions
from citylens.storage import Store, read_bytes
from citylens.train import load_checkpoint

from .conftest import copy_store, tiny_overrides

# slow: re-runs explain, ablate, overlap, analyze and report of the session's tiny study
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ADDED = {"gradcam++@conv3": ("gradcam++", "conv3"), "hirescam@conv2": ("hirescam", "conv2")}


@pytest.fixture(scope="module")
def study(tiny_study, local_ray, three_cities, tmp_path_factory):
    store = copy_store(tiny_study, tmp_path_factory.mktemp("methods") / "store")
    overrides = tiny_overrides(str(store), str(three_cities))
    cfg = load_config(None, [*overrides, "explain.methods=[gradcam++,hirescam@previous]"])
    ran = {r.stage: r.status for r in run_study(cfg, progress=lambda s: None)}
    assert ran == {
        "ingest": "skipped",
        "baseline": "skipped",
        "train": "skipped",
        "explain": "ran",  # an added method is a new key
        "segment": "skipped",
        "ablate": "ran",
        "overlap": "ran",
        "analyze": "ran",
        "report": "ran",
    }
    return cfg, Store(str(store))


def _read(store, stage, name):
    return store.read_table(f"{store.record(stage)['folder']}/{name}").to_pandas()


def test_each_added_explanation_equals_a_direct_computation(study):
    cfg, store = study
    rec = store.record("explain")
    assert rec["compared"] == {m: [list(p) for p in ADDED.values()] for m in rec["models"]}
    data = store.files(f"{rec['folder']}/data", ".parquet")
    assert len(companions(store, rec["folder"])) == len(data)
    own, added = _read(store, "explain", "data"), _read(store, "explain", "methods")
    assert len(added) == 2 * len(own)
    manifest = _read(store, "ingest", "manifest.parquet").set_index("image_id")
    for method, layer in ADDED.values():
        rows = added[(added.model == "simpler-s1") & (added.method == method)].head(3)
        assert (rows.layer == layer).all()
        images, _, _ = load_batch([manifest.uri[i] for i in rows.image_id], cfg.train.input_size)
        model, meta = load_checkpoint(store.url("models/simpler-s1"))
        targets = torch.tensor([meta["cities"].index(c) for c in rows.city])
        direct = explain_batch(model, normalize(images), targets, method, layer)
        got = np.stack([np.asarray(m, np.float32) for m in rows["mask"]])
        np.testing.assert_allclose(got, direct.mask.flatten(1).numpy(), atol=1e-5)


def test_added_overlaps_equal_a_direct_count(study):
    cfg, store = study
    added = _read(store, "explain", "methods").set_index(["image_id", "model", "method"])
    ov = _read(store, "overlap", "methods")
    seg_errors = store.record("overlap")["counts"]["errors"]
    assert len(ov) == (len(added) - 2 * seg_errors) * len(cfg.explain.thetas)
    manifest = _read(store, "ingest", "manifest.parquet").set_index("image_id")
    for _, row in ov.iloc[[0, 7]].iterrows():
        e = added.loc[(row.image_id, row.model, row.method)]
        labels = load_labels(read_bytes(manifest.label_uri[row.image_id]))
        mask = np.asarray(e["mask"], np.float32).reshape(e.cam_h, e.cam_w)
        inside = explanation(mask, labels.shape, row.theta).numpy()
        want = class_pixels_in_masks(labels, inside[None], len(row.class_pixels))[0]
        np.testing.assert_array_equal(row.class_pixels_in_mask, want)


def test_every_added_explanation_has_its_curves_and_the_analysis_follows(study):
    cfg, store = study
    abl = _read(store, "ablate", "data")
    curves = abl[abl.kind.isin(["deletion", "insertion"])]
    assert set(curves.order) == {"mask", "random", *ADDED}
    per = curves.groupby(["image_id", "model", "kind"]).order.nunique()
    assert (per == 4).all()
    # R_p of the study's own explanation is the objects table's, row for row
    mo, objects = (
        _read(store, "analyze", "method_objects.parquet"),
        _read(store, "analyze", "objects.parquet"),
    )
    mine = mo[(mo.method == "gradcam") & (mo.layer == "conv3")].drop(columns=["method", "layer"])
    keys = ["model", "city", "theta", "class"]
    pd.testing.assert_frame_equal(
        mine.sort_values(keys).reset_index(drop=True)[objects.columns],
        objects.sort_values(keys).reset_index(drop=True),
    )
    assert set(zip(mo.method, mo.layer)) == {("gradcam", "conv3"), *ADDED.values()}
    # AR between the own and an added explanation of one model, from the masks directly
    pairs = _read(store, "analyze", "method_pairs.parquet")
    assert len(pairs) == 2 * 3  # two models × three pairs of their three explanations
    assert ((pairs.method_a == "gradcam") | (pairs.method_b != "gradcam")).all()  # own first
    own = _read(store, "explain", "data")
    added = _read(store, "explain", "methods")
    a = own[own.model == "simpler-s0"].sort_values("image_id")
    b = added[(added.model == "simpler-s0") & (added.method == "hirescam")].sort_values("image_id")
    assert a.image_id.tolist() == b.image_id.tolist()

    def masks(d):
        return np.stack(
            [
                np.asarray(m, np.float32).reshape(h, w)
                for m, h, w in zip(d["mask"], d.cam_h, d.cam_w)
            ]
        )

    grid = (cfg.train.input_size, cfg.train.input_size)
    ar = average_residual(masks(a), masks(b), grid)
    np.testing.assert_allclose(ar, average_residual(masks(b), masks(a), grid), atol=1e-6)
    row = pairs[(pairs.model == "simpler-s0") & (pairs.method_b == "hirescam")].iloc[0]
    assert row.method_a == "gradcam" and row.images == len(ar)
    assert row.mean_ar == pytest.approx(ar.mean())
    # faithfulness of each explanation: its curves against random, over both models
    f = _read(store, "analyze", "method_faithfulness.parquet")
    assert len(f) == 3 and f.best.sum() == 1 and f.own.sum() == 1
    steps = tuple(cfg.ablate.steps)
    for _, r in f.iterrows():
        order = "mask" if r.own else f"{r.method}@{r.layer}"

        def area(kind, o):
            d = curves[(curves.kind == kind) & (curves.order == o)].sort_values(
                ["model", "image_id", "step"]
            )
            return curve_area(steps, d.prob_after.to_numpy(np.float64).reshape(-1, len(steps)))

        gain = area("deletion", "random") - area("deletion", order)
        assert r.deletion_gain == pytest.approx(gain.mean())
        assert r.images == len(gain) // 2  # both models explained every image
    rankings = _read(store, "analyze", "method_rankings.parquet")
    assert set(zip(rankings.method, rankings.layer)) <= {("gradcam", "conv3"), *ADDED.values()}
    assert rankings.spearman.dropna().between(-1, 1).all()


def test_the_report_names_the_most_faithful_explanation_in_chromium(study, tmp_path, dump_dom):
    _, store = study
    page = tmp_path / "report.html"
    page.write_bytes(store.read_bytes("report.html"))
    dom = dump_dom(page)
    start = dom.index('id="methods"')
    section = dom[start : start + 20_000]
    assert "simpler: the most faithful explanation by deletion gain is" in section
    assert "settled on this data" in section  # or "not settled": either is a verdict
    assert 'alt="deletion and insertion gains per explanation"' in section
