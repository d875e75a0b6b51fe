"""The causal check's and R_p's known answer, per architecture and seed (no Ray).

    python bench/known_answer.py [--archs vgg11,resnet18,simple,simpler] [--seeds 0,1]

Synthesizes towerville, signburg and the null city nullham (each non-null city differs
from the others only by its own objects; the null city has none), trains each
(architecture, seed) on it, removes every object of every test image with
:func:`citylens.ablation.ablate_objects` and reduces the drops with
:func:`citylens.analysis.causal.causal_table`. Prints, per model, its test accuracy,
each city's most decisive own object with its effect and interval, the largest effect
of removing sky or road, and the null city's largest effect — the numbers the README's
known-answer paragraph quotes. Then the coverage side: each model's Grad-CAM
explanations of the true city at θ = 0.6 give pixel sums per object (as the overlap
stage's), and :func:`citylens.analysis.claims.object_means` averages R_p over the models
run, with place-bootstrap intervals: each non-null city's own objects should lie above
every shared object (:func:`rp_verdict`); per model, :func:`citylens.analysis.claims.
top_settled` says whether its top object is settled. Last, the intervals' calibration:
:func:`calibration` draws study-sized test splits from a large fresh sample of the same
cities and counts how often each way of drawing R_p's interval covers R_p on the whole
sample. ``tests/test_causal_science.py`` runs part of it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from citylens.ablation import ablate_objects, ablation_rows, objects_to_remove
from citylens.analysis.bootstrap import (
    Resamples,
    percentile_interval,
    place_index,
    place_sums,
    place_weights,
    safe_ratio,
)
from citylens.analysis.causal import causal_table, object_effects
from citylens.analysis.claims import object_means, top_settled
from citylens.analysis.reduce import add_sums, sums_of_table
from citylens.cam import GRADIENT_METHODS, explain_batch
from citylens.config.schema import TrainSettings
from citylens.data.images import load_batch, load_labels, normalize
from citylens.data.manifest import image_id, make_manifest, probe, scan_city
from citylens.data.scenes import CLASS, STYLES
from citylens.data.synth import PLACE_REGEX, synthesize
from citylens.masks import explanation
from citylens.overlap import class_pixels, class_pixels_in_masks
from citylens.storage import read_bytes
from citylens.tables import ABLATIONS, model_name
from citylens.train import TensorBatches, fit
from citylens.vocabulary import ade20k

CITIES = ("towerville", "signburg", "nullham")
OWN = {st.name: {CLASS[o] for o in st.objects} for st in STYLES[:2]}
SHARED = {CLASS["sky"], CLASS["road"]}
SIZE = 96
THETA = 0.6
SPLITS = ("train", "val", "test")
MIN_MEAN_PIXELS = 20  # the demo's selection threshold at 96 px


def _rows(root: Path) -> list[dict]:
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
    return rows


def _split(t: pa.Table) -> tuple[torch.Tensor, torch.Tensor, pa.Table]:
    x, _, errors = load_batch(t["uri"].to_pylist(), SIZE)
    assert not errors, errors
    y = torch.tensor([CITIES.index(c) for c in t["city"].to_pylist()])
    return x, y, t


def corpus(root: Path, places: int = 40, seed: int = 3) -> dict:
    """Synthesize the three cities under ``root``; return each split's tensors and rows."""
    synthesize(root, cities=2, places=places, views=4, size=SIZE, seed=seed, null_city=True)
    manifest = make_manifest(_rows(root))[0]
    return {n: _split(manifest.filter(pc.equal(manifest["split"], n))) for n in SPLITS}


def population(root: Path, places: int = 200, seed: int = 1003) -> dict:
    """A fresh, larger sample of the same three cities (new places): every image a test
    image. Its R_p stands in for a model's R_p on the cities themselves, which the
    study's intervals, drawn from a few test places, should cover."""
    synthesize(root, cities=2, places=places, views=4, size=SIZE, seed=seed, null_city=True)
    return {"test": _split(pa.Table.from_pylist(_rows(root)))}


def _prepare(x: torch.Tensor) -> torch.Tensor:
    return normalize(x).contiguous(memory_format=torch.channels_last)


@dataclass
class Answer:
    """One model's known answer: test accuracy, causal table and coverage sums."""

    name: str
    acc: float
    causal: pd.DataFrame
    coverage: dict  # (model, city, θ) -> overlap sums (reduce.sums_of_table)
    model: torch.nn.Module


def resamples(data: dict, n_boot: int = 500, seed: int = 0) -> Resamples:
    """The test split's place resamples, as a study's analyze stage draws them."""
    test = data["test"][2]
    index = place_index(test["city"].to_pylist(), test["place"].to_pylist())
    return Resamples(index, test["image_id"].to_pylist(), n_boot, seed)


def _test_labels(data: dict) -> torch.Tensor:
    if "labels" not in data:
        labels = []
        for uri in data["test"][2]["label_uri"].to_pylist():
            lab = torch.from_numpy(load_labels(read_bytes(uri)).astype(np.float32))[None, None]
            lab = F.interpolate(lab, size=(SIZE, SIZE), mode="nearest-exact")[0, 0].long()
            labels.append(lab)
        data["labels"] = torch.stack(labels)
    return data["labels"]


def image_sums(model, data: dict, method: str = "gradcam", layer: str | None = None) -> dict:
    """Per test image of ``data``: pixels per class inside the model's explanation
    (``method`` at ``layer``) of the true city at θ (``m``, ``(n, C)``), in the image
    (``n``), its city and place."""
    x, y, test = data["test"]
    labels = _test_labels(data).numpy()
    num_classes = len(ade20k().names)
    m = []
    for i in range(0, len(x), 64):  # in batches: a layer's activations for thousands of
        res = explain_batch(model, _prepare(x[i : i + 64]), y[i : i + 64], method, layer)
        inside = explanation(res.mask.cpu(), (SIZE, SIZE), THETA).numpy()  # images add up
        m += [
            class_pixels_in_masks(lab, e[None], num_classes)[0]
            for lab, e in zip(labels[i : i + 64], inside)
        ]
    m = np.stack(m)
    n = np.stack([class_pixels(lab, num_classes) for lab in labels])
    return {
        "m": m,
        "n": n,
        "city": np.asarray(test["city"].to_pylist(), object),
        "place": np.asarray(test["place"].to_pylist(), object),
    }


def coverage(model, name: str, data: dict, boot: Resamples | None) -> dict:
    """Pixels per object inside ``model``'s Grad-CAM explanations of the true city.

    Returns:
        ``{(name, city, θ): [Σ M, Σ N, images, Σ_w M, Σ_w N, Σ_w images]}`` as the
        analyze stage adds them up from the overlap shards.
    """
    sums, test = image_sums(model, data), data["test"][2]
    table = pa.table(
        {
            "model": [name] * test.num_rows,
            "city": test["city"],
            "theta": [THETA] * test.num_rows,
            "image_id": test["image_id"],
            "class_pixels_in_mask": pa.array(sums["m"].tolist(), pa.list_(pa.int64())),
            "class_pixels": pa.array(sums["n"].tolist(), pa.list_(pa.int64())),
        }
    )
    return sums_of_table(table, boot)[0]


def train(data: dict, arch: str, seed: int, epochs: int = 8, result: bool = False):
    """``(arch, seed)`` trained on :func:`corpus`'s train split (best val epoch kept).

    Returns:
        The model in eval mode, or with ``result`` the :class:`~citylens.train.TrainResult`.
    """
    (xtr, ytr, _), (xva, yva, _), (xte, yte, _) = data["train"], data["val"], data["test"]
    fitted = fit(
        arch,
        seed,
        len(CITIES),
        SIZE,
        train=lambda e: TensorBatches(xtr, ytr, 32, shuffle=True, seed=seed).epoch(e),
        val=lambda: TensorBatches(xva, yva, 64),
        test=lambda: TensorBatches(xte, yte, 64),
        settings=TrainSettings(epochs=epochs, lr=1e-3, lr_step=max(1, epochs - 2)),
    )
    return fitted if result else fitted.model.eval()


def known_answer(
    data: dict,
    arch: str,
    seed: int,
    epochs: int = 8,
    n_boot: int = 500,
    boot: Resamples | None = None,
) -> Answer:
    """Train ``(arch, seed)`` on :func:`corpus`'s splits; its accuracy, causal table and
    coverage sums (resampled with ``boot`` when given)."""
    (xte, yte, test) = data["test"]
    result = train(data, arch, seed, epochs, result=True)
    model, name = result.model.eval(), model_name(arch, seed)
    labels = _test_labels(data)
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
    sums = coverage(model, name, data, boot)
    return Answer(name, result.test_acc, causal.to_pandas(), sums, model)


def rp_verdict(answers: list[Answer], boot: Resamples, ci: float = 0.95) -> dict:
    """R_p's known answer over the models of ``answers``.

    Returns:
        ``{"means": per (city, object) R_p averaged over the models with its interval
        (object_means' rows, scope "models"), "cities": {city: {"own": {object: (r_p,
        ci_low)}, "shared_high": largest ci_high of a shared object, "shared_top": that
        object, "above_shared": every own object's ci_low above it}}, "tops": per model
        and city, its top object by R_p, whether it is the city's own and whether it is
        settled (top_settled)}``. Shared objects are those no city has as its own.
    """
    names = ade20k().names
    totals: dict = {}
    for a in answers:
        add_sums(totals, a.coverage)
    arch_of = {a.name: a.name.rsplit("-s", 1)[0] for a in answers}
    by_city = boot.places_of_city
    means = object_means(totals, names, arch_of, MIN_MEAN_PIXELS, ci, by_city).to_pandas()
    means = means[means.scope == "models"]
    own_any = set().union(*OWN.values())
    cities = {}
    for city, mine in OWN.items():
        d = means[means.city == city].set_index("class")
        shared = d[~d.index.isin(list(own_any)) & d.selected]
        own = {
            d.loc[c, "name"]: (float(d.loc[c, "r_p"]), float(d.loc[c, "ci_low"]))
            for c in mine
            if c in d.index
        }
        high = float(shared.ci_high.max()) if len(shared) else float("nan")
        cities[city] = {
            "own": own,
            "shared_high": high,
            "shared_top": shared.ci_high.idxmax() if len(shared) else None,
            "above_shared": bool(own) and all(lo > high for _, lo in own.values()),
        }
        if cities[city]["shared_top"] is not None:
            cities[city]["shared_top"] = names[cities[city]["shared_top"]]
    tops = top_settled(totals, names, MIN_MEAN_PIXELS, ci, by_city).to_pandas()
    tops["own"] = [c in OWN.get(city, ()) for c, city in zip(tops.top_class, tops.city)]
    return {"means": means, "cities": cities, "tops": tops}


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


# How an interval is drawn in :func:`calibration`: the resampled unit, and whether the
# percentile interval is expanded for few units. "place, expanded" is the study's.
METHODS = {
    "place, expanded": ("place", True),
    "place, plain": ("place", False),
    "image, expanded": ("image", True),
}


def calibration(
    sums: dict,
    test_places: int = 8,
    reps: int = 200,
    n_boot: int = 400,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Do R_p intervals from ``test_places`` places per city cover R_p on all of them?

    ``sums`` (:func:`image_sums` over a large fresh sample, :func:`population`) stands
    in for the cities themselves: its R_p^c (ΣM / ΣN over every image of the city) is
    the truth. Each repetition draws ``test_places`` places per city without
    replacement — a study's test split — and draws the 95 % interval of each selected
    object's R_p^c from them, by each of :data:`METHODS`. Objects are those selected
    on the whole sample (mean pixels inside explanations above ``MIN_MEAN_PIXELS``).

    Returns:
        One row per (method, city, object): ``truth``, ``coverage`` (share of
        repetitions whose interval holds the truth) and ``width`` (mean).
    """
    names = ade20k().names
    rng = np.random.default_rng(seed)
    rows = []
    for city in sorted(set(sums["city"].tolist())):
        sel = sums["city"] == city
        m, n, place = sums["m"][sel], sums["n"][sel], sums["place"][sel]
        truth = m.sum(0) / np.maximum(n.sum(0), 1)
        chosen = np.flatnonzero((m.mean(0) > MIN_MEAN_PIXELS) & (n.sum(0) > 0))
        chosen = chosen[chosen > 0]  # "other" is never an object
        places = np.unique(place)
        hits = {k: np.zeros(len(chosen)) for k in METHODS}
        width = {k: np.zeros(len(chosen)) for k in METHODS}
        for r in range(reps):
            picked = rng.choice(places, size=test_places, replace=False)
            rows_in = np.isin(place, picked)
            for method, (unit, expanded) in METHODS.items():
                units = place[rows_in] if unit == "place" else np.arange(rows_in.sum())
                idx = place_index([city] * int(rows_in.sum()), units.tolist())
                w = place_weights(idx, n_boot, seed + r).astype(np.float64)
                mp = place_sums(idx, m[rows_in][:, chosen].astype(np.float64))
                np_ = place_sums(idx, n[rows_in][:, chosen].astype(np.float64))
                samples = safe_ratio(w @ mp, w @ np_)
                low, high = percentile_interval(samples, ci, idx.n_places if expanded else None)
                t = truth[chosen]
                hits[method] += (low <= t) & (t <= high)
                width[method] += high - low
        for method in METHODS:
            for j, cls in enumerate(chosen):
                rows.append(
                    {
                        "method": method,
                        "city": city,
                        "name": names[cls],
                        "truth": float(truth[cls]),
                        "coverage": hits[method][j] / reps,
                        "width": width[method][j] / reps,
                    }
                )
    return pd.DataFrame(rows)


def own_object_coverage(sums: dict) -> dict:
    """How much of each non-null city's own objects its explanations hold, from
    :func:`image_sums`.

    Returns:
        Per city: ``r_p_own`` (Σ M / Σ N over its own objects: the share of their pixels
        inside the explanations), ``own_share`` (their share of the explanations'
        pixels) and ``area`` (the explanations' share of the images).
    """
    out = {}
    for city, mine in OWN.items():
        sel = sums["city"] == city
        m, n = sums["m"][sel], sums["n"][sel]
        own = sorted(mine)
        out[city] = {
            "r_p_own": float(m[:, own].sum() / max(n[:, own].sum(), 1)),
            "own_share": float(m[:, own].sum() / max(m.sum(), 1)),
            "area": float(m.sum() / max(n.sum(), 1)),
        }
    return out


def _causal_line(a: Answer) -> str:
    v = verdict(a.causal)
    parts = [f"{a.name}: test accuracy {a.acc:.3f}"]
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
    return " | ".join(parts)


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
        boot = resamples(data)
        answers = []
        for arch in args.archs.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                a = known_answer(data, arch, seed, args.epochs, boot=boot)
                answers.append(a)
                print(_causal_line(a), flush=True)
        pop = population(Path(tmp) / "population")
        print(
            "# R_p intervals from 8 places per city (200 draws) against R_p on 200 fresh "
            "places per city: mean coverage (nominal 0.95) and width"
        )
        for a in answers:
            cal = calibration(image_sums(a.model, pop))
            by = cal.groupby("method")
            print(
                f"{a.name}: "
                + "; ".join(
                    f"{k} {by.coverage.mean()[k]:.3f} (width {by.width.mean()[k]:.2f}, "
                    f"lowest {by.coverage.min()[k]:.2f})"
                    for k in METHODS
                ),
                flush=True,
            )
        print("# Own objects inside the explanations, per method and layer (test split)")
        for a in answers:
            for layer in list(a.model.layers)[-2:]:
                for method in GRADIENT_METHODS:
                    cov = own_object_coverage(image_sums(a.model, data, method, layer))
                    print(
                        f"{a.name} {layer} {method}: "
                        + "; ".join(
                            f"{c} R_p(own) {v['r_p_own']:.2f}, own share {v['own_share']:.2f},"
                            f" area {v['area']:.2f}"
                            for c, v in cov.items()
                        ),
                        flush=True,
                    )
        rp = rp_verdict(answers, boot)
        print(f"# R_p at θ = {THETA}, averaged over {len(answers)} models (95 % intervals)")
        for city, c in rp["cities"].items():
            own = ", ".join(f"{n} {r:.2f} (low {lo:.2f})" for n, (r, lo) in c["own"].items())
            print(
                f"{city}: own {own}; shared, highest upper bound {c['shared_high']:.2f} "
                f"({c['shared_top']}); every own object above it: {c['above_shared']}"
            )
        for t in rp["tops"].itertuples():
            print(
                f"{t.model} {t.city}: top {t.top_name} {t.top_r_p:.2f}, runner-up "
                f"{t.second_name} {t.second_r_p:.2f}, gap [{t.diff_low:+.2f}, {t.diff_high:+.2f}]"
                f" settled {t.settled}, own object {t.own}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
