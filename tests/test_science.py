"""The science end to end, without Ray: train, explain, overlap, R_p (slow)."""

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from citylens.analysis.ratios import city_objects, sum_by_city
from citylens.cam import grad_cam
from citylens.config.schema import TrainSettings
from citylens.data.images import load_batch, load_labels, normalize
from citylens.data.manifest import image_id, make_manifest, probe, scan_city
from citylens.data.scenes import CLASS
from citylens.data.synth import PLACE_REGEX, synthesize
from citylens.masks import explanation
from citylens.overlap import class_pixels, class_pixels_in_masks
from citylens.storage import read_bytes
from citylens.train import TensorBatches, fit
from citylens.vocabulary import ade20k

CITIES = ("towerville", "signburg")


@pytest.mark.slow
def test_signboards_and_fences_explain_signburg(tmp_path):
    torch.set_num_threads(2)
    size = 128
    synthesize(tmp_path, cities=2, places=60, views=4, size=size, seed=0)
    rows = []
    for city in CITIES:
        for s in scan_city(
            city, str(tmp_path / city), PLACE_REGEX, str(tmp_path / "labels" / city)
        )[0]:
            data = read_bytes(s.uri)
            w, h = probe(data)
            rows.append(
                dict(
                    image_id=image_id(data),
                    uri=s.uri,
                    city=city,
                    place=s.place,
                    width=w,
                    height=h,
                    label_uri=s.label_uri,
                )
            )
    manifest, _ = make_manifest(rows)

    def split(name):
        t = manifest.filter(pc.equal(manifest["split"], name))
        x, ok, errors = load_batch(t["uri"].to_pylist(), size)
        assert not errors
        y = torch.tensor([CITIES.index(c) for c in t["city"].to_pylist()])
        return x, y, t

    (xtr, ytr, _), (xva, yva, _), (xte, yte, test) = split("train"), split("val"), split("test")
    result = fit(
        "simple",
        0,
        2,
        size,
        train=TensorBatches(xtr, ytr, 32, shuffle=True, seed=0).epoch,
        val=lambda: TensorBatches(xva, yva, 64),
        test=lambda: TensorBatches(xte, yte, 64),
        settings=TrainSettings(epochs=8),
    )
    assert result.test_acc >= 0.85  # chance is 0.5

    voc = ade20k()
    m_rows, n_rows = [], []
    labels_uris = test["label_uri"].to_pylist()
    for i in range(0, len(yte), 32):
        cam = grad_cam(result.model, normalize(xte[i : i + 32]), yte[i : i + 32])
        for j, uri in enumerate(labels_uris[i : i + 32]):
            lab = load_labels(read_bytes(uri))
            exp = explanation(cam.mask[j], lab.shape, 0.6).numpy()[None]
            m_rows.append(class_pixels_in_masks(lab, exp, len(voc))[0])
            n_rows.append(class_pixels(lab, len(voc)))
    sums = sum_by_city(np.array(m_rows), np.array(n_rows), np.array(test["city"].to_pylist()))
    signburg = city_objects(*sums["signburg"], min_mean_pixels=20)
    r = {c: signburg.r_p[CLASS[c]] for c in ("signboard", "fence", "sky", "road")}
    assert min(r["signboard"], r["fence"]) > max(r["sky"], r["road"]), r
    assert signburg.selected[CLASS["signboard"]] and signburg.selected[CLASS["fence"]]
    towerville = city_objects(*sums["towerville"], min_mean_pixels=20)
    assert np.isnan(towerville.r_p[CLASS["signboard"]])  # absent from that city
