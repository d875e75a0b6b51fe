"""The objects and top-objects tables: R_p^c per (model, city, θ) from summed pixel counts.

The overlap shards' reducers return ``{(model, city, θ): [Σ M (C,), Σ N (C,), images]}``
(:func:`citylens.analysis.reduce.sums_of_table`); these functions add them up and turn
them into rows, with :func:`citylens.analysis.ratios.city_objects` doing the science.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylens.analysis.bootstrap import percentile_interval, safe_ratio
from citylens.analysis.ratios import city_objects, top_objects
from citylens.tables import OBJECTS, TOP_OBJECTS

__all__ = ["object_tables"]


def object_tables(
    totals: dict,
    names: tuple[str, ...],
    arch_of: dict[str, str],
    seed_of: dict[str, int],
    min_mean_pixels: float,
    top_k: int,
    ci: float = 0.95,
    places_of_city: dict[str, int] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """R_p^c of every object present in a city, and each city's top objects.

    Args:
        totals: ``{(model, city, θ): [Σ M (C,), Σ N (C,), images]}`` over the whole test
            split.
        names: The vocabulary's class names (``names[0]`` is ``other``).
        arch_of: model name -> architecture.
        seed_of: model name -> seed.
        min_mean_pixels: An object is *selected* when more than this many of its pixels
            per image lie inside explanations.
        top_k: Objects per (model, city, θ) in the top-objects table.
        ci: Coverage of the intervals (from the resampled sums, when ``totals`` has
            them: ``[..., Σ_w M (B, C), Σ_w N (B, C), Σ_w images (B,)]``; else NaN).
        places_of_city: city -> its number of test places (``n_places``).

    Returns:
        ``(objects with schema OBJECTS, top objects with schema TOP_OBJECTS)``; one
        objects row per class that occurs in the city (``other`` excepted).
    """
    obj_rows, top_rows = [], []
    for (model, city, theta), sums in sorted(totals.items()):
        m, n, count = sums[:3]
        co = city_objects(m, n, count, min_mean_pixels)
        if len(sums) > 3 and len(sums[3]):
            low, high = percentile_interval(
                safe_ratio(sums[3], sums[4]), ci, (places_of_city or {}).get(city)
            )
        else:
            low = high = np.full(len(names), np.nan)
        for p in range(1, len(names)):
            if co.mean_in_image[p] == 0:
                continue
            obj_rows.append(
                {
                    "model": model,
                    "arch": arch_of[model],
                    "seed": seed_of[model],
                    "city": city,
                    "theta": theta,
                    "class": p,
                    "name": names[p],
                    "r_p": float(co.r_p[p]),
                    "mean_in_mask": float(co.mean_in_mask[p]),
                    "mean_in_image": float(co.mean_in_image[p]),
                    "selected": bool(co.selected[p]),
                    "images": count,
                    "ci_low": float(low[p]),
                    "ci_high": float(high[p]),
                    "n_places": (places_of_city or {}).get(city),
                }
            )
        for rank, p in enumerate(top_objects(co.mean_in_mask, top_k), start=1):
            top_rows.append(
                {
                    "model": model,
                    "city": city,
                    "theta": theta,
                    "rank": rank,
                    "class": p,
                    "name": names[p],
                    "mean_in_mask": float(co.mean_in_mask[p]),
                }
            )
    return (
        pa.Table.from_pylist(obj_rows, schema=OBJECTS),
        pa.Table.from_pylist(top_rows, schema=TOP_OBJECTS),
    )
