"""The causal check's known answer, without Ray (slow): a null city beside two others.

Each non-null synthetic city differs from the others only by its own objects; the null
city has none. A model that tells them apart must use each city's own objects, so
removing them must cost it more than removing as many pixels elsewhere, and more than
removing a shared class (sky, road); in the null city nothing of its own can decide.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
import torch.nn.functional as F

from citylens.ablation import ablate_objects, objects_to_remove
from citylens.analysis.causal import causal_table, object_effects
from citylens.config.schema import TrainSettings
from citylens.data.images import load_batch, load_labels, normalize
from citylens.data.manifest import image_id, make_manifest, probe, scan_city
from citylens.data.scenes import CLASS, STYLES
from citylens.data.synth import PLACE_REGEX, synthesize
from citylens.storage import read_bytes
from citylens.tables import ABLATIONS
from citylens.train import TensorBatches, accuracy, fit
from citylens.vocabulary import ade20k

CITIES = ("towerville", "signburg", "nullham")
SIZE = 96


def _manifest(root):
    rows = []
    for city in CITIES:
        for s in scan_city(city, str(root / city), PLACE_REGEX, str(root / "labels" / city))[0]:
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
    return make_manifest(rows)[0]


@pytest.mark.slow
def test_removing_a_citys_own_objects_costs_the_model_and_a_null_city_has_none(tmp_path):
    torch.set_num_threads(2)
    synthesize(tmp_path, cities=2, places=40, views=4, size=SIZE, seed=3, null_city=True)
    manifest = _manifest(tmp_path)

    def split(name):
        t = manifest.filter(pc.equal(manifest["split"], name))
        x, ok, errors = load_batch(t["uri"].to_pylist(), SIZE)
        assert not errors
        y = torch.tensor([CITIES.index(c) for c in t["city"].to_pylist()])
        return x, y, t

    (xtr, ytr, _), (xva, yva, _), (xte, yte, test) = split("train"), split("val"), split("test")
    result = fit(
        "simple",
        0,
        len(CITIES),
        SIZE,
        train=lambda e: TensorBatches(xtr, ytr, 32, shuffle=True, seed=0).epoch(e),
        val=lambda: TensorBatches(xva, yva, 64),
        test=lambda: TensorBatches(xte, yte, 64),
        settings=TrainSettings(epochs=8, lr=1e-3, lr_step=6),
    )
    model = result.model
    assert result.test_acc > 0.8, result.test_acc  # the claim holds for models that work
    labels = []
    for uri in test["label_uri"].to_pylist():
        lab = torch.from_numpy(load_labels(read_bytes(uri)).astype(np.float32))[None, None]
        labels.append(F.interpolate(lab, size=(SIZE, SIZE), mode="nearest-exact")[0, 0].long())
    labels = torch.stack(labels)
    objects = objects_to_remove(labels, min_pixels=20, max_objects=8)
    ids = test["image_id"].to_pylist()
    seeds = list(range(len(ids)))

    def prepare(x):
        return normalize(x).contiguous(memory_format=torch.channels_last)

    got = ablate_objects(model, xte, labels, yte, prepare, objects, seeds, "inpaint")
    cols = {f.name: [] for f in ABLATIONS}
    for j, iid in enumerate(ids):
        r = got["image"] == j
        cols["image_id"].append(iid)
        cols["city"].append(test["city"][j].as_py())
        cols["model"].append("simple-s0")
        cols["target"].append(int(yte[j]))
        with torch.no_grad():
            p = model(prepare(xte[j : j + 1])).softmax(1)[0, int(yte[j])]
        cols["prob"].append(float(p))
        cols["logit"].append(0.0)
        cols["classes"].append(got["class"][r].tolist())
        cols["pixels"].append(got["pixels"][r].tolist())
        for k in ("prob_removed", "logit_removed", "prob_control", "logit_control"):
            cols[k].append(got[k][r].tolist())
        for k in ("deletion", "insertion", "deletion_random", "insertion_random"):
            cols[k].append([0.0, 0.0])
    table = pa.table(cols, schema=ABLATIONS)
    place_of = dict(zip(ids, test["place"].to_pylist()))
    causal = causal_table(
        object_effects(table),
        place_of,
        ade20k().names,
        {"simple-s0": "simple"},
        {"simple-s0": 0},
        n_boot=500,
    ).to_pandas()
    own = {st.name: {CLASS[o] for o in st.objects} for st in STYLES[:2]}
    shared = {CLASS["sky"], CLASS["road"]}
    for city, mine in own.items():
        d = causal[causal.city == city].set_index("class")
        present = [c for c in mine if c in d.index and d.loc[c, "images"] >= 10]
        assert present, (city, d)
        best = max(present, key=lambda c: d.loc[c, "effect"])
        # its own object costs more than its control (the interval says so) ...
        assert d.loc[best, "ci_low"] > 0, d
        # ... and more than removing a shared class
        for c in shared & set(d.index):
            assert d.loc[best, "effect"] > d.loc[c, "ci_high"], d
    null = causal[(causal.city == "nullham") & causal["class"].isin(shared)]
    decisive = min(
        causal[(causal.city == c) & causal["class"].isin(m)].effect.max() for c, m in own.items()
    )
    # in the null city, removing sky or road comes nowhere near what decides the others
    # (its sidewalk does: towerville's bare earth replaces sidewalks, so a sidewalk is
    # the absence of towerville's object; see the README)
    assert len(null) == 2 and (null.effect.abs() < 0.5 * decisive).all(), null
    assert accuracy(model, TensorBatches(xte, yte, 64)) == pytest.approx(result.test_acc)
