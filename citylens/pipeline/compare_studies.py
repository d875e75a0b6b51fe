"""``citylens compare``: read two studies' analysis tables and write their comparison page.

Reads each store's committed ``analyze`` tables (accuracy, ar_kinds, object_means), its
``study.yaml`` (name, θ, interval coverage) and ``ingest`` record (cities); no Ray.
"""

from __future__ import annotations

import pandas as pd
import yaml

from citylens.analysis.compare import accuracy_change, ar_change, largest_changes, object_change
from citylens.report.compare import compare_page
from citylens.storage import Store

__all__ = ["compare_studies", "read_study"]

_TABLES = ("accuracy", "ar_kinds", "object_means")


def read_study(uri: str, storage_options: dict | None = None) -> dict:
    """A study's name, cities, θ, coverage and analysis tables.

    Raises:
        RuntimeError: the store has no committed analysis.
    """
    store = Store(uri, storage_options)
    rec = store.record("analyze")
    if rec is None:
        raise RuntimeError(f"{uri}: no analysis in this store (run the study first)")
    study = yaml.safe_load(store.read_bytes("study.yaml").decode())
    out = {
        "name": study.get("name", uri),
        "cities": list(store.record("ingest")["cities"]),
        "thetas": [float(t) for t in study["explain"]["thetas"]],
        "ci": float(study["analysis"]["ci"]),
    }
    for name in _TABLES:
        rel = f"{rec['folder']}/{name}.parquet"
        out[name] = store.read_table(rel).to_pandas() if store.exists(rel) else pd.DataFrame()
    return out


def compare_studies(a_uri: str, b_uri: str, storage_options: dict | None = None) -> str:
    """The comparison page of study A (``a_uri``) and study B (``b_uri``), as HTML text.

    Raises:
        ValueError: the studies share no city or θ, or report intervals of other coverage.
    """
    a, b = read_study(a_uri, storage_options), read_study(b_uri, storage_options)
    if not set(a["cities"]) & set(b["cities"]):
        raise ValueError(f"the studies share no city: {a['cities']} and {b['cities']}")
    thetas = sorted(set(a["thetas"]) & set(b["thetas"]))
    if not thetas:
        raise ValueError(f"the studies share no θ: {a['thetas']} and {b['thetas']}")
    if a["ci"] != b["ci"]:
        raise ValueError(f"analysis.ci differs: {a['ci']} and {b['ci']}; compare like with like")
    ci, theta = a["ci"], thetas[0]
    objects = object_change(a["object_means"], b["object_means"], theta, ci)
    return compare_page(
        (a["name"], b["name"]),
        (a_uri, b_uri),
        (a["cities"], b["cities"]),
        theta,
        ci,
        accuracy_change(a["accuracy"], b["accuracy"], ci),
        ar_change(a["ar_kinds"], b["ar_kinds"], ci),
        objects,
        largest_changes(objects),
    )
