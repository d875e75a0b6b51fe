"""The *analyze* stage's comparison of explanation methods (``explain.methods``).

Reads the explain stage's ``methods/`` companions (the explanations ``explain.methods``
adds, beside each data shard) and overlap's ``methods/`` shards, reduces them shard by
shard in Ray tasks like the rest of analyze, and writes, into the analyze folder:
``method_pairs.parquet`` (METHOD_PAIRS), ``method_objects.parquet`` (METHOD_OBJECTS),
``method_faithfulness.parquet`` (METHOD_FAITHFULNESS) and ``method_rankings.parquet``
(METHOD_RANKINGS). A study without ``explain.methods`` writes none of them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from citylens.analysis.bootstrap import Resamples
from citylens.analysis.methods import (
    Explanation,
    explanations_of,
    method_faithfulness_table,
    method_object_table,
    method_pair_table,
    method_ranking_table,
    untraced_explanations,
)
from citylens.analysis.objects import object_tables
from citylens.analysis.reduce import add_sums, ar_of_table, sums_of_table
from citylens.pipeline.committed import committed
from citylens.pipeline.shards import companions
from citylens.storage import Store

__all__ = ["method_ar_of_shard", "method_sums_of_shard", "study_explanations", "write_methods"]

_MASK_COLS = ["image_id", "city", "model", "cam_h", "cam_w", "mask"]


def _keyed(t: pa.Table, explanations: list[Explanation], own: bool) -> pa.Table:
    """``t`` with its ``model`` column replaced by each row's :attr:`Explanation.key`."""
    if own:
        of = {e.model: e.key for e in explanations if e.own}
        keys = [of[m] for m in t["model"].to_pylist()]
    else:
        of = {(e.model, e.method, e.layer): e.key for e in explanations if not e.own}
        keys = [
            of[k]
            for k in zip(t["model"].to_pylist(), t["method"].to_pylist(), t["layer"].to_pylist())
        ]
    t = t.set_column(t.schema.get_field_index("model"), "model", pa.array(keys, pa.string()))
    return t.drop_columns([c for c in ("method", "layer") if c in t.column_names])


@ray.remote
def method_ar_of_shard(
    store: Store,
    data_rel: str,
    methods_rel: str,
    grid: int,
    explanations: list[Explanation],
    resamples: Resamples | None = None,
) -> dict:
    """AR between every two explanations of each model over one explain shard.

    Returns:
        ``{(key_a, key_b): [Σ AR, Σ AR², n, ...]}`` (keys: :attr:`Explanation.key`).
    """
    own = _keyed(store.read_table(data_rel, columns=_MASK_COLS), explanations, own=True)
    added = store.read_table(methods_rel, columns=[*_MASK_COLS, "method", "layer"])
    t = pa.concat_tables([own, _keyed(added, explanations, own=False)])
    sums: dict = {}
    keys = np.asarray(t["model"].to_pylist(), dtype=object)
    for model in sorted({e.model for e in explanations}):
        mine = {e.key for e in explanations if e.model == model}
        rows = np.flatnonzero([k in mine for k in keys])
        add_sums(sums, ar_of_table(t.take(rows), grid, resamples)[1])
    return sums


@ray.remote
def method_sums_of_shard(
    store: Store, rel: str, explanations: list[Explanation], resamples: Resamples | None = None
) -> dict:
    """Pixel sums per (explanation key, city, θ) of one overlap ``methods/`` shard."""
    t = _keyed(store.read_table(rel), explanations, own=False)
    return sums_of_table(t, resamples)[0]


def study_explanations(store: Store) -> list[Explanation]:
    """The study's explanations, from the train and explain records; [] without any added."""
    exp = committed(store, "explain")
    compared = exp.get("compared") or {}
    if not any(compared.values()):
        return []
    models = committed(store, "train")["models"]
    own = {n: (exp["method"], exp["layers"][n]) for n in models}
    return explanations_of(models, own, compared)


def write_methods(
    store: Store,
    folder: str,
    explanations: list[Explanation],
    totals: dict,
    names: tuple[str, ...],
    cfg,
    resamples: Resamples | None,
    causal: tuple[pa.Table, dict[str, str], pa.Table],
) -> dict:
    """Write the four method tables into ``folder``; returns counts for the record.

    Args:
        store: Study store.
        folder: The analyze run's folder.
        explanations: :func:`study_explanations`.
        totals: The study's own explanations' pixel sums per (model, city, θ).
        names: The vocabulary's class names.
        cfg: The study config.
        resamples: The study's place resamples (None with bootstrap 0).
        causal: ``(ablations, image id -> place, the causal table)``.
    """
    a = cfg.analysis
    exp_folder = committed(store, "explain")["folder"]
    ov_folder = committed(store, "overlap")["folder"]
    places = sum(resamples.places_of_city.values()) if resamples else None
    by_city = resamples.places_of_city if resamples else None
    res_ref, exp_ref = ray.put(resamples), ray.put(explanations)
    grid = cfg.explain.ar_grid or cfg.train.input_size
    ar_refs = [
        method_ar_of_shard.remote(
            store, f"{exp_folder}/data/{rel.rsplit('/', 1)[1]}", rel, grid, exp_ref, res_ref
        )
        for rel in companions(store, exp_folder)
    ]
    sum_refs = [
        method_sums_of_shard.remote(store, rel, exp_ref, res_ref)
        for rel in store.files(f"{ov_folder}/methods", ".parquet")
    ]
    pair_sums: dict = {}
    for part in ray.get(ar_refs):
        add_sums(pair_sums, part)
    store.write_table(
        f"{folder}/method_pairs.parquet",
        method_pair_table(pair_sums, explanations, a.ci, places),
    )
    key_of = {e.model: e.key for e in explanations if e.own}
    keyed = {(key_of[m], c, t): v for (m, c, t), v in totals.items() if m in key_of}
    for part in ray.get(sum_refs):
        add_sums(keyed, part)
    arch_of = {e.key: e.arch for e in explanations}
    seed_of = {e.key: e.seed for e in explanations}
    objects, _ = object_tables(
        keyed, names, arch_of, seed_of, a.min_mean_pixels, a.top_k, a.ci, by_city
    )
    method_objects = method_object_table(objects, explanations)
    store.write_table(f"{folder}/method_objects.parquet", method_objects)
    ablations, place_of, causal_rows = causal
    if untraced := untraced_explanations(ablations, explanations):
        raise RuntimeError(
            f"analyze: the ablations have no curves of {', '.join(untraced)}: ablate ran "
            "before explain.methods named them; run the ablate stage again"
        )
    boot = {"n_boot": a.bootstrap, "ci": a.ci, "seed": a.seed}
    faithful = method_faithfulness_table(
        ablations, tuple(cfg.ablate.steps), place_of, explanations, **boot
    )
    store.write_table(f"{folder}/method_faithfulness.parquet", faithful)
    rankings = method_ranking_table(method_objects, causal_rows, min(cfg.explain.thetas))
    store.write_table(f"{folder}/method_rankings.parquet", rankings)
    return {"explanations": len(explanations), "method_pairs": len(pair_sums)}
