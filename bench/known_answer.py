"""The causal check's known answer, per architecture and seed (a science run, no Ray).

    python bench/known_answer.py [--archs vgg11,resnet18,simple,simpler] [--seeds 0,1]

Synthesizes towerville, signburg and the null city nullham (each non-null city differs
from the others only by its own objects; the null city has none), trains each
(architecture, seed) on it, removes every object of every test image with
:func:`citylens.ablation.ablate_objects` and reduces the drops with
:func:`citylens.analysis.causal.causal_table`. Prints, per model, its test accuracy,
each city's most decisive own object with its effect and interval, the largest effect
of removing sky or road, and the null city's largest effect — the numbers the README's
known-answer paragraph quotes. ``tests/test_causal_science.py`` runs one model of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from citylens.ablation import ablate_objects, ablation_rows, objects_to_remove
from citylens.analysis.causal import causal_table, object_effects
from citylens.config.schema import TrainSettings
from citylens.data.images import load_batch, load_labels, normalize
from citylens.data.manifest import image_id, make_manifest, probe, scan_city
from citylens.data.scenes import CLASS, STYLES
from citylens.data.synth import PLACE_REGEX, synthesize
from citylens.storage import read_bytes
from citylens.tables import ABLATIONS, model_name
from citylens.train import TensorBatches, fit
from citylens.vocabulary import ade20k

CITIES = ("towerville", "signburg", "nullham")
OWN = {st.name: {CLASS[o] for o in st.objects} for st in STYLES[:2]}
SHARED = {CLASS["sky"], CLASS["road"]}
SIZE = 96


def corpus(root: Path, places: int = 40, seed: int = 3) -> dict:
    """Synthesize the three cities under ``root``; return each split's tensors and rows."""
    synthesize(root, cities=2, places=places, views=4, size=SIZE, seed=seed, null_city=True)
    rows = []
    for city in CITIES:
        for s in scan_city(city, str(root / city), PLACE_REGEX, str(root / "labels" / city))[0]:
            data = read_bytes(s.uri)
            w, h = probe(data)
            rows.append(
                {
                    "image_id": image_id(data),
                    "uri": s.uri,
                    "city": city,
                    "place": s.place,
                    "width": w,
                    "height": h,
                    "label_uri": s.label_uri,
                }
            )
    manifest = make_manifest(rows)[0]
    out = {}
    for name in ("train", "val", "test"):
        t = manifest.filter(pc.equal(manifest["split"], name))
        x, _, errors = load_batch(t["uri"].to_pylist(), SIZE)
        assert not errors, errors
        y = torch.tensor([CITIES.index(c) for c in t["city"].to_pylist()])
        out[name] = (x, y, t)
    return out


def _prepare(x: torch.Tensor) -> torch.Tensor:
    return normalize(x).contiguous(memory_format=torch.channels_last)


def known_answer(
    data: dict, arch: str, seed: int, epochs: int = 8, n_boot: int = 500
) -> tuple[float, pd.DataFrame]:
    """Train ``(arch, seed)`` on :func:`corpus`'s splits; its test accuracy and causal table."""
    (xtr, ytr, _), (xva, yva, _), (xte, yte, test) = data["train"], data["val"], data["test"]
    result = fit(
        arch,
        seed,
        len(CITIES),
        SIZE,
        train=lambda e: TensorBatches(xtr, ytr, 32, shuffle=True, seed=seed).epoch(e),
        val=lambda: TensorBatches(xva, yva, 64),
        test=lambda: TensorBatches(xte, yte, 64),
        settings=TrainSettings(epochs=epochs, lr=1e-3, lr_step=max(1, epochs - 2)),
    )
    model, name = result.model.eval(), model_name(arch, seed)
    labels = []
    for uri in test["label_uri"].to_pylist():
        lab = torch.from_numpy(load_labels(read_bytes(uri)).astype(np.float32))[None, None]
        labels.append(F.interpolate(lab, size=(SIZE, SIZE), mode="nearest-exact")[0, 0].long())
    labels = torch.stack(labels)
    objects = objects_to_remove(labels, min_pixels=20, max_objects=8)
    ids = test["image_id"].to_pylist()
    got = ablate_objects(model, xte, labels, yte, _prepare, objects, list(range(len(ids))))
    cities = test["city"].to_pylist()
    rows = ablation_rows(ids, cities, name, yte.numpy(), got, {}, (), "inpaint", SIZE)
    table = pa.table(rows, schema=ABLATIONS)
    place_of = dict(zip(ids, test["place"].to_pylist()))
    causal = causal_table(
        object_effects(table), place_of, ade20k().names, {name: arch}, {name: seed}, n_boot=n_boot
    )
    return result.test_acc, causal.to_pandas()


def verdict(causal: pd.DataFrame) -> dict:
    """The known answer's checks on one model's causal table.

    Returns:
        Per non-null city, its most decisive own object (``best``, its ``effect`` and
        interval) and whether it beats its control (``above_control``: interval above
        0) and the shared classes (``above_shared``: effect above sky's and road's
        interval); for the null city, its largest effect, whether any object's
        interval lies above 0 (``null_stands_out``) and whether that largest effect is
        below the largest decisive own-object effect of the other cities
        (``null_below_decisive``).
    """
    out: dict = {}
    for city, mine in OWN.items():
        d = causal[causal.city == city].set_index("class")
        present = [c for c in mine if c in d.index and d.loc[c, "images"] >= 10]
        if not present:
            out[city] = {"best": None, "above_control": False, "above_shared": False}
            continue
        best = max(present, key=lambda c: d.loc[c, "effect"])
        shared = [d.loc[c, "ci_high"] for c in SHARED & set(d.index)]
        out[city] = {
            "best": d.loc[best, "name"],
            "effect": float(d.loc[best, "effect"]),
            "ci": (float(d.loc[best, "ci_low"]), float(d.loc[best, "ci_high"])),
            "above_control": bool(d.loc[best, "ci_low"] > 0),
            "above_shared": bool(all(d.loc[best, "effect"] > h for h in shared)),
            "shared_max": float(d.loc[list(SHARED & set(d.index)), "effect"].max()),
        }
    null = causal[causal.city == "nullham"]
    top = null.loc[null.effect.idxmax()]
    decisive = max((v["effect"] for v in out.values() if v["best"] is not None), default=0.0)
    out["nullham"] = {
        "top": top["name"],
        "effect": float(top.effect),
        "ci": (float(top.ci_low), float(top.ci_high)),
        "null_stands_out": bool((null.ci_low > 0).any()),
        "null_below_decisive": bool(top.effect < decisive),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the known answer for each (architecture, seed) and print its verdicts."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="vgg11,resnet18,simple,simpler")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"# {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = corpus(Path(tmp))
        for arch in args.archs.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                acc, causal = known_answer(data, arch, seed, args.epochs)
                v = verdict(causal)
                parts = [f"{model_name(arch, seed)}: test accuracy {acc:.3f}"]
                for city in OWN:
                    c = v[city]
                    if c["best"] is None:
                        parts.append(f"{city}: no own object in 10+ images")
                        continue
                    parts.append(
                        f"{city}: {c['best']} {c['effect']:+.2f} [{c['ci'][0]:+.2f}, "
                        f"{c['ci'][1]:+.2f}] (> control: {c['above_control']}, > sky/road "
                        f"{c['shared_max']:+.2f}: {c['above_shared']})"
                    )
                n = v["nullham"]
                parts.append(
                    f"nullham: top {n['top']} {n['effect']:+.2f} [{n['ci'][0]:+.2f}, "
                    f"{n['ci'][1]:+.2f}] (any above its control: {n['null_stands_out']}; "
                    f"below the decisive: {n['null_below_decisive']})"
                )
                print(" | ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
