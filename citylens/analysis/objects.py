"""The objects and top-objects tables: R_p^c per (model, city, θ) from summed pixel counts.

The overlap shards' reducers return ``{(model, city, θ): [Σ M (C,), Σ N (C,), images]}``
(:func:`citylens.analysis.reduce.sums_of_table`); these functions add them up and turn
them into rows, with :func:`citylens.analysis.ratios.city_objects` doing the science.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylens.analysis.ratios import city_objects, top_objects
from citylens.tables import OBJECTS, TOP_OBJECTS

__all__ = ["add_pixel_sums", "object_tables"]


def add_pixel_sums(total: dict, part: dict) -> dict:
    """Add one shard's ``{(model, city, θ): [Σ M, Σ N, images]}`` into ``total`` (returned)."""
    for key, (m, n, count) in part.items():
        if key not in total:
            total[key] = [np.zeros_like(m), np.zeros_like(n), 0]
        total[key][0] += m
        total[key][1] += n
        total[key][2] += count
    return total


def object_tables(
    totals: dict,
    names: tuple[str, ...],
    arch_of: dict[str, str],
    seed_of: dict[str, int],
    min_mean_pixels: float,
    top_k: int,
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

    Returns:
        ``(objects with schema OBJECTS, top objects with schema TOP_OBJECTS)``; one
        objects row per class that occurs in the city (``other`` excepted).
    """
    obj_rows, top_rows = [], []
    for (model, city, theta), (m, n, count) in sorted(totals.items()):
        co = city_objects(m, n, count, min_mean_pixels)
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
