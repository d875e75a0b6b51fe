"""Which objects and images the report shows: pure selections over the analysis tables.

- :func:`unique_objects`: the objects discriminative for one city only (selected by
  most models for that city, and by most models for no other city).
- :func:`urban_symbols` / :func:`architecture_styles`: gallery picks (thesis §4.4) —
  explanations most covered by their city's unique objects, and explanations whose top
  object is a building.
- :func:`sample_per_city`: a seeded, balanced sample of images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "ARCHITECTURE_CLASSES",
    "architecture_styles",
    "describe_unique",
    "sample_per_city",
    "unique_objects",
    "urban_symbols",
]

ARCHITECTURE_CLASSES = ("building", "house", "skyscraper", "tower")


def unique_objects(
    objects: pd.DataFrame, theta: float, quorum: float = 0.5
) -> dict[str, list[str]]:
    """Objects selected for exactly one city, by city, ordered by mean R_p (descending).

    Args:
        objects: The analysis ``objects`` table (model, city, theta, name, r_p, selected).
        theta: Which θ.
        quorum: Share of models that must select an object for it to count for a city.

    Returns:
        city -> object names (every city of the table is a key).
    """
    d = objects[objects.theta.round(6) == round(theta, 6)]
    cities = sorted(objects.city.unique())
    if d.empty:
        return {c: [] for c in cities}
    n_models = d.groupby("city").model.nunique()
    share = d[d.selected].groupby(["city", "name"]).model.nunique().div(n_models, level="city")
    chosen = share[share >= quorum].reset_index()
    where = chosen.groupby("name").city.nunique()
    only = set(where[where == 1].index)
    r_p = d.groupby(["city", "name"]).r_p.mean()
    out = {}
    for city in cities:
        names = [n for n in chosen[chosen.city == city].name if n in only]
        out[city] = sorted(names, key=lambda n: -r_p.get((city, n), 0.0))
    return out


def describe_unique(unique: dict[str, list[str]], objects: pd.DataFrame, theta: float) -> list[str]:
    """One sentence per city naming its unique objects with their mean R_p."""
    d = objects[objects.theta.round(6) == round(theta, 6)]
    r_p = d.groupby(["city", "name"]).r_p.mean()
    lines = []
    for city, names in unique.items():
        if names:
            parts = ", ".join(f"{n} (R_p {r_p.get((city, n), float('nan')):.2f})" for n in names)
            lines.append(f"Only {city} has {parts} among its discriminative objects.")
        else:
            lines.append(f"{city} has no discriminative object that another city lacks.")
    return lines


def sample_per_city(frame: pd.DataFrame, per_city: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_city`` rows of each city, seeded, in a stable order."""
    parts = []
    for i, (_, g) in enumerate(frame.sort_values("image_id").groupby("city", sort=True)):
        rng = np.random.default_rng(seed + i)
        parts.append(g.iloc[np.sort(rng.permutation(len(g))[:per_city])])
    return pd.concat(parts) if parts else frame.iloc[:0]


def urban_symbols(
    counts: pd.DataFrame,
    unique: dict[str, list[str]],
    names: tuple[str, ...],
    per_city: int,
    min_share: float = 0.2,
) -> pd.DataFrame:
    """Explanations most covered by objects that only their own city has.

    Args:
        counts: Rows with ``image_id, city, class_pixels_in_mask`` (one model, one θ).
        unique: From :func:`unique_objects`.
        names: Vocabulary names (index -> name).
        per_city: Images per city.
        min_share: Least share of the explanation's pixels on the city's unique objects.

    Returns:
        The chosen rows with a ``share`` column, highest share first within each city.
    """
    index = {n: k for k, n in enumerate(names)}
    shares = []
    for city, row in zip(counts.city, counts.class_pixels_in_mask):
        m = np.asarray(row, np.float64)
        cls = [index[n] for n in unique.get(city, []) if n in index]
        total = m[1:].sum()
        shares.append(m[cls].sum() / total if cls and total > 0 else 0.0)
    d = counts.assign(share=shares)
    d = d[d.share >= min_share].sort_values(
        ["city", "share", "image_id"], ascending=[True, False, True]
    )
    return d.groupby("city", sort=True).head(per_city)


def architecture_styles(
    tops: pd.DataFrame, names: tuple[str, ...], per_city: int, seed: int = 0
) -> pd.DataFrame:
    """Explanations whose top object is a building (building, house, skyscraper, tower).

    Rows without a top class (no class map for the image) are never picked.
    """
    tops = tops[tops.top_class.notna()]
    hit = tops.top_class.map(lambda c: names[int(c)] in ARCHITECTURE_CLASSES).astype(bool)
    return sample_per_city(tops[hit.to_numpy()], per_city, seed)
