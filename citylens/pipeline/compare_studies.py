"""``citylens compare``: read two studies' analysis tables and write their comparison page.

Reads each store's committed ``analyze`` tables (accuracy, ar_kinds, object_means), its
``study.yaml`` (name, θ, interval coverage) and ``ingest`` record (cities); no Ray.
"""

from __future__ import annotations

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
    study = yaml.safe_load(store.read_bytes("study.yaml").decode()) or {}
    train = store.record("train") or {}
    out = {
        "name": study.get("name", uri),
        "cities": list(store.record("ingest")["cities"]),
        "ci": float((study.get("analysis") or {}).get("ci", 0.95)),
        "models": {n: m.get("key") for n, m in train.get("models", {}).items()},
    }
    for name in _TABLES:  # a store from before a table existed: None
        rel = f"{rec['folder']}/{name}.parquet"
        out[name] = store.read_table(rel).to_pandas() if store.exists(rel) else None
    return out


def _same_models(a: dict, b: dict) -> bool:
    """Both studies use the same trained models (same names, same training keys)."""
    return bool(a["models"]) and a["models"] == b["models"]


def compare_studies(a_uri: str, b_uri: str, storage_options: dict | None = None) -> str:
    """The comparison page of study A (``a_uri``) and study B (``b_uri``), as HTML text.

    Raises:
        ValueError: the studies share no city, or report intervals of other coverage.
    """
    a, b = read_study(a_uri, storage_options), read_study(b_uri, storage_options)
    if not set(a["cities"]) & set(b["cities"]):
        raise ValueError(f"the studies share no city: {a['cities']} and {b['cities']}")
    if a["ci"] != b["ci"]:
        raise ValueError(f"analysis.ci differs: {a['ci']} and {b['ci']}; compare like with like")
    ci, same = a["ci"], _same_models(a, b)

    def both(name: str) -> bool:
        return a[name] is not None and b[name] is not None and len(a[name]) and len(b[name])

    sections = {}
    if both("accuracy"):
        sections["accuracy"] = accuracy_change(a["accuracy"], b["accuracy"], ci, same)
    if both("ar_kinds"):
        sections["ar"] = ar_change(a["ar_kinds"], b["ar_kinds"], ci, same)
    theta = None
    if both("object_means"):  # θ of the tables themselves, not of today's study.yaml
        thetas = sorted(set(a["object_means"].theta) & set(b["object_means"].theta))
        if thetas:
            theta = float(thetas[0])
            objects = object_change(a["object_means"], b["object_means"], theta, ci, same)
            sections["objects"] = objects
            sections["largest"] = largest_changes(objects)
    return compare_page(
        (a["name"], b["name"]),
        (a_uri, b_uri),
        (a["cities"], b["cities"]),
        (sorted(a["models"]), sorted(b["models"])),
        same,
        theta,
        ci,
        sections,
    )
