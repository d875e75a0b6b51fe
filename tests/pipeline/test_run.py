"""The study on a real local Ray: every stage, skip logic, growth, and the wiring."""

from __future__ import annotations

import json
import shutil
from html import unescape as html_unescape

import numpy as np
import pyarrow.compute as pc
import pytest
import ray
import torch
from PIL import Image

from citylens.cam import explain_batch, grad_cam
from citylens.cli import main
from citylens.config import dump_config, load_config
from citylens.data.images import load_batch, load_labels, normalize
from citylens.data.images import load_labels as decode_labels_png
from citylens.masks import explanation
from citylens.overlap import class_pixels, class_pixels_in_masks
from citylens.pipeline.cluster import start_local
from citylens.pipeline.run import STAGES, run_study
from citylens.storage import Store, read_bytes
from citylens.tables import ERRORS
from citylens.train import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def local_ray():
    start_local(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 2**20,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cities(tmp_path_factory, small_corpus):
    """The small synthetic corpus laid out as a user's real dataset folders."""
    root = tmp_path_factory.mktemp("data")
    for city in ("towerville", "signburg"):
        shutil.copytree(small_corpus / city, root / city)
        shutil.copytree(small_corpus / "labels" / city, root / "labels" / city)
    return root


def _config(store, cities, *extra):
    overrides = [f"store={store}", "name=test-study"]
    for city in ("towerville", "signburg"):
        overrides += [
            f"cities.{city}.source={cities / city}",
            f"cities.{city}.labels={cities / 'labels' / city}",
            f"cities.{city}.place_regex=^(?P<place>.+)_\\d+$",
        ]
    overrides += [
        "models.archs=[resnet18,simple]",
        "models.seeds=[0,1]",
        "train.epochs=1",
        "train.input_size=96",
        "explain.batch_size=8",
        "ablate.max_objects=3",
        "ablate.steps=[0,0.2]",
        "ablate.batch_size=8",
        "analysis.min_mean_pixels=5",
        "analysis.pca=[10,0.9]",
        "analysis.perplexity=5",
        *extra,
    ]
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def study(local_ray, cities, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    cfg = _config(store, cities)
    results = run_study(cfg, progress=lambda s: None)
    return cfg, Store(str(store)), results


def _table(store, stage, name):
    return store.read_table(f"{store.record(stage)['folder']}/{name}")


def test_every_stage_ran_and_wrote_its_outputs(study):
    cfg, store, results = study
    assert [r.stage for r in results] == list(STAGES)
    assert all(r.status == "ran" for r in results)
    manifest = _table(store, "ingest", "manifest.parquet")
    test = manifest.filter(pc.equal(manifest["split"], "test"))
    n_test = test.num_rows
    assert manifest.num_rows == 72 and n_test > 0
    for name in ("resnet18-s0", "resnet18-s1", "simple-s0", "simple-s1"):
        assert store.exists(f"models/{name}/model.pt")
        assert store.exists(f"models/{name}/meta.json")
    exp = _table(store, "explain", "data")
    assert exp.num_rows == 4 * n_test
    assert set(exp["image_id"].to_pylist()) == set(test["image_id"].to_pylist())
    seg = _table(store, "segment", "data")
    assert seg.num_rows == n_test
    ov = _table(store, "overlap", "data")
    assert ov.num_rows == 4 * n_test * len(cfg.explain.thetas)
    for name in ("ar_pairs", "objects", "top_objects", "embeddings", "accuracy"):
        assert store.exists(f"{store.record('analyze')['folder']}/{name}.parquet"), name
    # the training curves are each model's meta.json history, epoch by epoch
    curves = _table(store, "analyze", "training.parquet").to_pandas()
    for name, rows in curves.groupby("model"):
        meta = json.loads(store.read_bytes(f"models/{name}/meta.json"))
        assert rows.val_acc.tolist() == [h["val_acc"] for h in meta["history"]]
        assert rows[rows.best].epoch.tolist() == [meta["best_epoch"]]
    assert sorted(curves.model.unique()) == sorted(store.record("train")["models"])
    report = store.read_bytes("report.html").decode()
    assert "t-SNE" in report and "Model disagreement" in report
    # the summary says which method explained each architecture, at which layer
    assert "<code>gradcam</code> at resnet18 layer4 (3×3), simple conv4 (2×2)" in report


_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const broken = imgs.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt);
  const out = document.createElement("pre");
  out.id = "citylens-check";
  out.textContent = JSON.stringify({
    images: imgs.length, broken: broken,
    alts: imgs.map((i) => i.alt),
    sections: [...document.querySelectorAll("h2[id]")].map((h) => h.id),
  });
  document.body.appendChild(out);
});
</script>"""
_CHROMIUM = [
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--virtual-time-budget=20000",
]


def test_report_renders_in_headless_chromium_with_every_image_and_section(study, tmp_path):
    import json
    import re
    import subprocess

    _, store, _ = study
    page = tmp_path / "report.html"
    page.write_text(store.read_bytes("report.html").decode().replace("</body>", _CHECK + "</body>"))
    dom = subprocess.run(
        [*_CHROMIUM, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    found = re.search(r'<pre id="citylens-check">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    check = json.loads(html_unescape(found.group(1)))
    assert check["broken"] == [] and check["images"] >= 10
    sections = ("findings", "accuracy", "ar", "masks", "tsne", "objects", "causal", "galleries")
    for section in sections:
        assert section in check["sections"]
    # the findings box: accuracy with its interval, the architectures-vs-seeds test
    box = dom[dom.index('class="findings"') :]
    assert "Test accuracy (explained test images): resnet18-s0 " in box
    assert "Mean AR between architectures" in box and "p " in box
    alts = ("t-SNE mosaic", "weighted masks", "AR distribution", "R_p per city, by seed")
    alts += ("what removing each object costs", "images before and after removal")
    alts += ("deletion and insertion curves", "training curves per model")
    for alt in alts:
        assert any(alt in a for a in check["alts"]), alt
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*_CHROMIUM, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.shape == (2400, 1280) and pixels.std() > 10  # not a blank page


def test_removal_pictures_fill_the_object_and_keep_every_other_pixel(study):
    from citylens.pipeline.report_assets import ReportAssets

    _, store, _ = study
    an = store.record("analyze")["folder"]
    examples = store.read_table(f"{an}/causal_examples.parquet").to_pylist()
    assert {r["city"] for r in examples} == {"towerville", "signburg"}
    manifest = store.read_table(f"{store.record('ingest')['folder']}/manifest.parquet")
    assets = ReportAssets(store, manifest, {})
    r = examples[0]
    assets.load_labels({r["image_id"]})
    image, removed = assets.removed(r["image_id"], r["class"], "mean")
    assert image.shape == removed.shape == (160, 160, 3) and removed.dtype == np.uint8
    lab = torch.from_numpy(assets.labels[r["image_id"]].astype(np.float32))[None, None]
    inside = (
        torch.nn.functional.interpolate(lab, size=(160, 160), mode="nearest-exact")[0, 0]
        == r["class"]
    ).numpy()
    assert inside.any() and (removed[~inside] == image[~inside]).all()
    mean = image[~inside].astype(np.float64).mean(0)  # the mean fill: one colour inside
    np.testing.assert_allclose(
        removed[inside].astype(np.float64),
        np.broadcast_to(np.round(mean), removed[inside].shape),
        atol=0.51,
    )
    assert assets.removed("no-such-image", r["class"], "mean") is None


def test_pixel_sums_of_a_shard_without_class_maps_are_empty(study, tmp_path):
    from citylens.pipeline.analyze import sums_of_shard
    from citylens.tables import OVERLAPS

    store = Store(str(tmp_path))
    store.write_table("empty.parquet", OVERLAPS.empty_table())
    sums, tops = ray.get(sums_of_shard.remote(store, "empty.parquet"))
    assert sums == {} and tops.num_rows == 0 and "top_class" in tops.column_names


def test_inputs_equal_processed_plus_errors_in_every_stage(study):
    _, store, _ = study
    for stage in STAGES:
        counts = store.record(stage)["counts"]
        done = counts["explanations" if stage == "overlap" else "images"]
        assert counts["inputs"] == done + counts["errors"] and counts["inputs"] > 0, stage
        errors = store.read_table(f"{store.record(stage)['folder']}/errors", schema=ERRORS)
        assert errors.num_rows == counts["errors"], stage
    n_manifest = store.record("ingest")["counts"]["images"]
    assert store.record("train")["counts"]["inputs"] == n_manifest  # every split decoded


def test_second_run_recomputes_nothing(study):
    cfg, store, _ = study
    before = {s: store.record(s) for s in STAGES}
    results = run_study(cfg, progress=lambda s: None)
    assert [r.status for r in results] == ["skipped"] * len(STAGES)
    after = {s: store.record(s) for s in STAGES}
    assert after == before  # same keys, same folders, same finish times: nothing re-ran


def test_an_up_to_date_study_runs_without_ray(study, tmp_path):
    """Nothing to do: no stage starts or joins Ray. RAY_ADDRESS names a port nobody
    listens on, so a run that touched Ray would fail there."""
    import os
    import subprocess
    import sys

    cfg, store, _ = study
    study_yaml = tmp_path / "study.yaml"
    study_yaml.write_text(dump_config(cfg))
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    out = subprocess.run(
        [sys.executable, "-m", "citylens.cli", "run", str(study_yaml)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "0 stage(s) ran (none)" in out.stdout
    assert out.stdout.count("up to date, skipped") == len(STAGES)


def test_pipeline_explanations_equal_a_direct_grad_cam(study):
    cfg, store, _ = study
    exp = _table(store, "explain", "data").to_pandas()
    manifest = _table(store, "ingest", "manifest.parquet").to_pandas()
    rows = exp[exp.model == "resnet18-s1"].head(3)
    uris = [manifest.set_index("image_id").uri[i] for i in rows.image_id]
    images, _, _ = load_batch(uris, cfg.train.input_size)
    model, meta = load_checkpoint(store.url("models/resnet18-s1"))
    targets = torch.tensor([meta["cities"].index(c) for c in rows.city])
    direct = grad_cam(model, normalize(images), targets)
    got = np.stack([np.asarray(m, np.float32) for m in rows["mask"]])
    np.testing.assert_allclose(got, direct.mask.flatten(1).numpy(), atol=1e-5)
    np.testing.assert_array_equal(rows.target, targets.numpy())


def test_another_method_and_layer_rerun_explain_and_equal_a_direct_computation(study, tmp_path):
    cfg, store, _ = study
    copy = shutil.copytree(store.path(""), tmp_path / "store")
    other = load_config(
        cfg.to_dict(), [f"store={copy}", "explain.method=gradcam++", "explain.layer=previous"]
    )
    ran = {r.stage: r.status for r in run_study(other, ["explain"], progress=lambda s: None)}
    assert ran == {"explain": "ran"}  # a new method or layer is a new key
    store2 = Store(str(copy))
    rec = store2.record("explain")
    assert rec["method"] == "gradcam++"
    assert rec["layers"] == {
        "resnet18-s0": "layer3",
        "resnet18-s1": "layer3",
        "simple-s0": "conv3",
        "simple-s1": "conv3",
    }
    exp = _table(store2, "explain", "data").to_pandas()
    manifest = _table(store2, "ingest", "manifest.parquet").to_pandas().set_index("image_id")
    for name in ("resnet18-s1", "simple-s0"):
        rows = exp[exp.model == name].head(3)
        images, _, _ = load_batch([manifest.uri[i] for i in rows.image_id], cfg.train.input_size)
        model, meta = load_checkpoint(store2.url(f"models/{name}"))
        targets = torch.tensor([meta["cities"].index(c) for c in rows.city])
        direct = explain_batch(model, normalize(images), targets, "gradcam++", rec["layers"][name])
        h, w = meta["layers"][rec["layers"][name]]
        assert (rows.cam_h == h).all() and (rows.cam_w == w).all()
        assert direct.mask.shape[1:] == (h, w) and h > meta["cam_size"][0]  # finer
        got = np.stack([np.asarray(m, np.float32) for m in rows["mask"]])
        np.testing.assert_allclose(got, direct.mask.flatten(1).numpy(), atol=1e-5)


def test_pipeline_overlaps_equal_a_direct_count(study):
    cfg, store, _ = study
    exp = _table(store, "explain", "data").to_pandas().set_index(["image_id", "model"])
    ov = _table(store, "overlap", "data").to_pandas()
    seg = _table(store, "segment", "data").to_pandas().set_index("image_id")
    manifest = _table(store, "ingest", "manifest.parquet").to_pandas().set_index("image_id")
    row = ov.iloc[5]
    e = exp.loc[(row.image_id, row.model)]
    labels = load_labels(read_bytes(manifest.label_uri[row.image_id]))
    np.testing.assert_array_equal(decode_labels_png(seg.labels[row.image_id]), labels)
    mask = np.asarray(e["mask"], np.float32).reshape(e.cam_h, e.cam_w)
    inside = explanation(mask, labels.shape, row.theta).numpy()
    want = class_pixels_in_masks(labels, inside[None], 151)[0]
    np.testing.assert_array_equal(row.class_pixels_in_mask, want)
    np.testing.assert_array_equal(row.class_pixels, class_pixels(labels, 151))
    assert row.mask_pixels == inside.sum()


def test_changing_theta_reruns_only_what_depends_on_it(study):
    cfg, store, _ = study
    cfg2 = load_config(cfg.to_dict(), ["explain.thetas=[0.5,0.6]"])
    results = {r.stage: r.status for r in run_study(cfg2, progress=lambda s: None)}
    assert results == {
        "ingest": "skipped",
        "baseline": "skipped",
        "train": "skipped",
        "explain": "skipped",
        "segment": "skipped",
        "ablate": "skipped",  # removal does not depend on θ
        "overlap": "ran",
        "analyze": "ran",
        "report": "ran",
    }
    ov = _table(store, "overlap", "data")
    assert sorted(set(np.round(ov["theta"].to_numpy(), 3))) == [0.5, 0.6]
    run_study(cfg, progress=lambda s: None)  # back to the module's settings


def test_agreement_with_annotations_derived_from_ground_truth(study, tmp_path):
    cfg, store, _ = study
    study_yaml = tmp_path / "study.yaml"
    study_yaml.write_text(dump_config(cfg))
    ann, out = tmp_path / "ann.csv", tmp_path / "agreement.csv"
    # a model whose explanations at θ cover pixels in both cities (a one-epoch model's
    # Grad-CAM of a city it never predicts can be zero everywhere)
    ov = _table(store, "overlap", "data").to_pandas()
    ov = ov[(ov.theta - min(cfg.explain.thetas)).abs() < 1e-6]
    ov = ov.assign(covered=ov.class_pixels_in_mask.map(sum) > 0)
    per_city = ov[ov.covered].groupby("model").city.nunique()
    model = sorted(per_city[per_city == 2].index)[0]
    assert main(["annotate", str(study_yaml), "--model", model, "--out", str(ann)]) == 0
    lines = ann.read_text().splitlines()
    # one line per test image whose explanation at θ covers some pixels
    covered = int(ov[ov.model == model].covered.sum())
    assert lines[0] == "image,label1,label2,model,theta" and len(lines) - 1 == covered >= 5
    assert main(["agree", str(study_yaml), str(ann), "--out", str(out)]) == 0
    import pandas as pd

    curves = pd.read_csv(out)
    own = curves[(curves.model == model) & (curves.n > 0)]
    assert set(own.city) == {"towerville", "signburg", "all"}
    # the study's segmenter is the ground truth the annotations came from: top-1 always
    # matches, so strict accuracy reaches 1 when only top-1 is picked, lenient is 1 always
    assert (own[own.threshold == 1.0].strict == 1.0).all()
    assert (own.lenient == 1.0).all()
    for _, g in curves.groupby(["model", "city", "theta"]):
        g = g.sort_values("threshold")
        assert (g.strict.diff().dropna() >= -1e-12).all()
        assert (g.lenient.diff().dropna() <= 1e-12).all()
    # the same curves from the study itself, when the config names the annotations
    cfg2 = load_config(cfg.to_dict(), [f"analysis.annotations={ann}"])
    results = {r.stage: r.status for r in run_study(cfg2, progress=lambda s: None)}
    assert [s for s, v in results.items() if v == "ran"] == ["analyze", "report"]
    table = store.read_table(f"{store.record('analyze')['folder']}/agreement.parquet")
    got = table.to_pandas().sort_values(["model", "city", "theta", "threshold"])
    want = curves.sort_values(["model", "city", "theta", "threshold"])
    np.testing.assert_allclose(got.strict.to_numpy(), want.strict.to_numpy())
    np.testing.assert_allclose(got.lenient.to_numpy(), want.lenient.to_numpy())
    report = store.read_bytes("report.html").decode()
    assert 'id="agreement"' in report and "segmenter vs human annotation" in report
    run_study(cfg, progress=lambda s: None)  # back to the module's settings


def test_decoding_jpegs_in_the_actors_gives_the_same_explanations(study):
    """``explain.decode_on=gpu`` on a CPU-only Ray: the JPEGs cross Ray Data encoded and
    the actors decode them (on CPU here, the same libjpeg-turbo): same rows, new key."""
    cfg, store, _ = study
    before = _table(store, "explain", "data").sort_by(
        [("image_id", "ascending"), ("model", "ascending")]
    )
    messages: list[str] = []
    cfg2 = load_config(cfg.to_dict(), ["explain.decode_on=gpu"])
    results = {r.stage: r.status for r in run_study(cfg2, ["explain"], progress=messages.append)}
    assert results == {"explain": "ran"}
    assert any("plain JPEGs decoded in the actors (no GPU: on CPU)" in m for m in messages)
    after = _table(store, "explain", "data").sort_by(
        [("image_id", "ascending"), ("model", "ascending")]
    )
    assert after.num_rows == before.num_rows > 0
    assert after.equals(before)
    run_study(cfg, ["explain"], progress=lambda s: None)  # back to the module's settings


def _picks_by_hand(counts: list[int]) -> tuple[int, int, float]:
    """(top1, top2, share of the two) inside an explanation, class 0 ignored: plain loops."""
    best = second = -1
    for k in range(1, len(counts)):
        if counts[k] <= 0:
            continue
        if best < 0 or counts[k] > counts[best]:
            best, second = k, best
        elif second < 0 or counts[k] > counts[second]:
            second = k
    total = sum(counts[1:])
    share = ((counts[best] if best > 0 else 0) + (counts[second] if second > 0 else 0)) / total
    return best, second, share if total else 0.0


def test_annotation_page_to_agreement_curves(study, tmp_path, chromium):
    """The whole loop of issue 26: page, five answers by click and key, reload, export,
    ``citylens agree``, and the curves checked against plain loops over the overlaps."""
    import csv
    import io
    import re

    cfg, store, _ = study
    study_yaml = tmp_path / "study.yaml"
    study_yaml.write_text(dump_config(cfg))
    out = tmp_path / "annotate.html"
    assert main(["annotate-page", str(study_yaml), "--n", "12", "--out", str(out)]) == 0
    page_text = out.read_text()
    data = json.loads(re.search(r'id="citylens-data">(.*?)</script>', page_text, re.S).group(1))
    items = data["items"]
    assert len(items) == 12
    # stratified: the (model, city) strata with non-empty explanations (a one-epoch
    # model's Grad-CAM can be empty for a whole city) share the 12 as evenly as they can
    exp = _table(store, "explain", "data").to_pandas()
    sizes = exp[~exp["empty"]].groupby(["model", "city"]).size().to_dict()
    city_of = dict(zip(exp.image_id, exp.city))
    got = {k: 0 for k in sizes}
    for it in items:
        got[(it["model"], city_of[it["image"]])] += 1
    top = max(got.values())
    for key, k in got.items():
        assert k <= sizes[key] and (k >= top - 1 or k == sizes[key]), (key, k, sizes[key])

    context = chromium.new_context(accept_downloads=True)
    tab = context.new_page()
    tab.goto(out.as_uri())
    tab.fill("#annotator", "ann")
    tab.locator("body").click(position={"x": 5, "y": 5})
    answers = []  # what we gave, as class indices (None: none / unclear)
    for i, it in enumerate(items[:5]):
        offered = it["offered"]
        assert offered, "the segmenter's classes inside the explanation are offered"
        if i == 0:  # by click
            tab.click("#offered button:nth-child(1)")
            answers.append((offered[0],))
            tab.click("#next")
            tab.locator("body").click(position={"x": 5, "y": 5})
        elif i == 2:
            tab.keyboard.press("0")
            answers.append(())
            tab.keyboard.press("Enter")
        elif i == 3:  # a class by search, by a synonym (the study's vocabulary keeps them)
            tab.keyboard.press("/")
            tab.keyboard.type("edifice")
            tab.keyboard.press("Enter")
            tab.keyboard.press("Escape")
            answers.append((2,))  # building
            tab.keyboard.press("Enter")
        else:  # by keys: the last offered first, then the first
            tab.keyboard.press(str(len(offered)))
            if len(offered) > 1:
                tab.keyboard.press("1")
            answers.append((offered[-1], offered[0]) if len(offered) > 1 else (offered[0],))
            tab.keyboard.press("Enter")
    tab.reload()
    assert tab.text_content("#count") == "5 of 12 answered"
    with tab.expect_download() as got:
        tab.click("#export")
    exported = tmp_path / "ann.csv"
    got.value.save_as(exported)
    context.close()
    rows = list(csv.DictReader(io.StringIO(exported.read_text())))
    assert [r["image"] for r in rows] == [it["image"] for it in items[:5]]

    curves_csv = tmp_path / "curves.csv"
    thresholds = "0,0.5,0.9,1"
    argv = ["agree", str(study_yaml), str(exported), "--out", str(curves_csv)]
    assert main([*argv, "--thresholds", thresholds]) == 0
    import pandas as pd

    curves = pd.read_csv(curves_csv)
    assert set(curves.annotator) == {"ann"}
    ov = _table(store, "overlap", "data").to_pandas()
    by_key = {
        (r.image_id, r.model, round(float(r.theta), 4)): list(r.class_pixels_in_mask)
        for r in ov.itertuples()
    }
    for model in {it["model"] for it in items[:5]}:
        mine = [
            (by_key[(it["image"], it["model"], it["theta"])], ans)
            for it, ans in zip(items[:5], answers)
            if it["model"] == model
        ]
        for thr in (0.0, 0.5, 0.9, 1.0):
            strict = lenient = n = unclear = 0
            for counts, human in mine:
                if not human:
                    unclear += 1
                    continue
                top1, top2, share = _picks_by_hand(counts)
                if top1 < 0:
                    continue
                n += 1
                picked = [top1] + ([top2] if top2 > 0 and share > thr else [])
                strict += all(p in human for p in picked)
                lenient += any(p in human for p in picked)
            row = curves[
                (curves.model == model) & (curves.city == "all") & (curves.threshold == thr)
            ].iloc[0]
            assert (row.n, row.unclear) == (n, unclear)
            if n:
                assert row.strict == pytest.approx(strict / n)
                assert row.lenient == pytest.approx(lenient / n)
    # a second annotator, who disagrees on one main label: κ between the two files
    from sklearn.metrics import cohen_kappa_score

    lee = [dict(r, annotator="lee") for r in rows]
    lee[0]["label1"], lee[0]["label2"] = "none", ""
    other = tmp_path / "lee.csv"
    with open(other, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(lee)
    kappa_csv = tmp_path / "kappa.csv"
    argv = ["agree", str(study_yaml), str(exported), str(other), "--kappa-out", str(kappa_csv)]
    assert main(argv) == 0
    kappa = pd.read_csv(kappa_csv)
    assert kappa[["annotator_a", "annotator_b", "n"]].values.tolist() == [["ann", "lee", 5]]
    first = [r["label1"] for r in rows]
    want = cohen_kappa_score(first, [r["label1"] for r in lee])
    assert kappa.kappa.iloc[0] == pytest.approx(want)
    assert kappa.observed.iloc[0] == pytest.approx(4 / 5)
