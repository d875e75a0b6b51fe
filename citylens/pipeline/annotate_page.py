"""The annotation page of a finished study (``citylens annotate-page``; not a stage).

Reads which explanations exist (the explain stage's ``image_id, city, model, empty``),
draws a stratified sample of (image, model, θ) with
:func:`citylens.annotate.sample.stratified_sample`, offers the segmenter's top classes
inside each (the overlap stage's rows, when it ran), reads only the sampled masks and
images, and builds the page with :func:`citylens.annotate.page.build_page`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from citylens.analysis.annotations import theta_key
from citylens.annotate.page import PageItem, build_page, item_pictures
from citylens.annotate.sample import stratified_sample
from citylens.pipeline.agree import study_vocabulary
from citylens.pipeline.committed import committed, read_manifest, read_overlaps
from citylens.pipeline.report_assets import ReportAssets
from citylens.storage import Store

__all__ = ["AnnotationPage", "annotation_page"]

PICTURE_SIDE = 288  # pixels per side of each picture on the page


@dataclass(frozen=True)
class AnnotationPage:
    """A built page and what went into it.

    Attributes:
        html: The page.
        items: ``(image_id, model, theta)`` of each explanation, in page order.
        strata: ``(model, city, theta)`` -> explanations of it on the page.
        unreadable: image id -> why its explanations were left out.
    """

    html: str
    items: list[tuple[str, str, float]]
    strata: dict[tuple[str, str, float], int]
    unreadable: dict[str, str]


def _explanations(store: Store) -> pa.Table:
    folder = committed(store, "explain")["folder"]
    parts = [
        store.read_table(rel, columns=["image_id", "city", "model", "empty"])
        for rel in store.files(f"{folder}/data", ".parquet")
    ]
    if not parts:
        raise RuntimeError(f"the study at {store.url()} has no explanations")
    return pa.concat_tables(parts)


def _pick(values: list[str], wanted: tuple[str, ...] | None, what: str) -> set[str]:
    known = sorted(set(values))
    if not wanted:
        return set(known)
    if unknown := [w for w in wanted if w not in known]:
        raise ValueError(f"--{what}: {', '.join(unknown)} not in the study ({', '.join(known)})")
    return set(wanted)


def _offered(store: Store, ids: list[str], k: int) -> dict[tuple[str, str, float], tuple]:
    """(image, model, θ) -> the segmenter's top ``k`` classes inside, in class-name order."""
    if store.record("overlap") is None or k <= 0:
        return {}
    cols = ["image_id", "model", "theta", "class_pixels_in_mask"]
    ov = read_overlaps(store, cols, ids)
    out = {}
    for iid, model, theta, counts in zip(*(ov[c].to_pylist() for c in cols)):
        c = np.asarray(counts, np.int64)
        c[0] = 0  # "other" is never offered
        top = [int(i) for i in np.argsort(-c, kind="stable")[:k] if c[i] > 0]
        out[(iid, model, theta_key(theta))] = tuple(top)
    return out


def annotation_page(
    cfg,
    n: int = 300,
    models: tuple[str, ...] | None = None,
    cities: tuple[str, ...] | None = None,
    thetas: tuple[float, ...] | None = None,
    seed: int | None = None,
    offered: int = 5,
) -> AnnotationPage:
    """The annotation page of a study's explanations.

    Args:
        cfg: The study's config (its store, θs and seed).
        n: Explanations on the page (fewer when the study has fewer).
        models: Only these models (default: all).
        cities: Only these cities (default: all).
        thetas: θs to show explanations at (default: the study's ``explain.thetas``).
        seed: The sample's seed (default: ``analysis.seed``).
        offered: Classes offered as one-click choices per explanation.

    Raises:
        ValueError: an unknown model or city, a θ not in ``explain.thetas``, or ``n < 1``.
        RuntimeError: the study has no explanations yet.
    """
    if n < 1:
        raise ValueError(f"--n: must be ≥ 1, got {n}")
    known = {theta_key(t) for t in cfg.explain.thetas}
    thetas = tuple(thetas or cfg.explain.thetas)
    if bad := [t for t in thetas if theta_key(t) not in known]:
        raise ValueError(
            f"--thetas: {', '.join(map(str, bad))} not among the study's explain.thetas "
            f"({', '.join(map(str, cfg.explain.thetas))}): answers at another θ could not be "
            "scored against the segmenter"
        )
    store = Store(cfg.store, cfg.run.storage_options)
    exp = _explanations(store)
    keep_models = _pick(exp["model"].to_pylist(), models, "models")
    keep_cities = _pick(exp["city"].to_pylist(), cities, "cities")
    rows = [
        (iid, city, model)
        for iid, city, model, empty in zip(*(exp[c].to_pylist() for c in exp.column_names))
        if not empty and model in keep_models and city in keep_cities
    ]
    cand = [(iid, city, model, theta_key(t)) for iid, city, model in rows for t in thetas]
    if not cand:
        raise RuntimeError("no explanation to annotate: every one selected is empty")
    strata = [(m, c, t) for _, c, m, t in cand]
    ids = [f"{i}|{m}|{t}" for i, _, m, t in cand]
    seed = cfg.analysis.seed if seed is None else seed
    chosen = [cand[i] for i in stratified_sample(strata, ids, n, seed)]
    tops = _offered(store, sorted({c[0] for c in chosen}), offered)
    manifest = read_manifest(store, ["image_id", "uri"])
    assets = ReportAssets(store, manifest, cfg.run.storage_options, PICTURE_SIDE)
    assets.load({(i, m) for i, _, m, _ in chosen})
    vocabulary = study_vocabulary(store, cfg)
    by_name = lambda cls: vocabulary.names[cls]  # noqa: E731
    items, counts = [], {}
    for iid, city, model, theta in chosen:
        got = assets.pair(iid, model)
        if got is None:
            continue
        photo, region, heat = item_pictures(*got, theta)
        offer = tuple(sorted(tops.get((iid, model, theta), ()), key=by_name))
        items.append(PageItem(iid, model, theta, photo, region, heat, offer))
        counts[(model, city, theta)] = counts.get((model, city, theta), 0) + 1
    page = build_page(
        items,
        vocabulary,
        f"Annotate the explanations of {cfg.name}",
        "The choices offered first are the segmenter's classes inside the explanation, "
        "in name order; search for any other.",
    )
    return AnnotationPage(
        page, [(i.image_id, i.model, i.theta) for i in items], counts, dict(assets.unreadable)
    )
