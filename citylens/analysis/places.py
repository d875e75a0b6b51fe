"""Per place: explanations' objects, the models' hits, and shares of the city's R_p.

The maps and ``places.geojson`` are drawn from these numbers.

A place's *contribution* to R_p^c of object p is Σ_{i∈place} M_{p,i} / Σ_{i∈c} N_{p,i}:
the contributions of a city's places add up to its R_p^c exactly, so a map of them
shows where the ratio comes from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from citylens.analysis.reduce import list_matrix
from citylens.data.coords import place_centres
from citylens.tables import PLACES

__all__ = ["PlaceList", "key_objects", "place_list", "place_pixels", "place_table"]


class PlaceList:
    """A study's located test places, in (city, place) order.

    Attributes:
        city: ``(P,)`` city of each place.
        place: ``(P,)`` place id.
        lat: ``(P,)`` centre latitude (degrees; NaN: no image of it located).
        lon: ``(P,)`` centre longitude.
        index: image id -> place row.
    """

    def __init__(self, city, place, lat, lon, index: dict[str, int]) -> None:
        self.city, self.place = np.asarray(city, object), np.asarray(place, object)
        self.lat, self.lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        self.index = index

    def __len__(self) -> int:
        return len(self.city)

    def of(self, image_ids: Sequence[str]) -> np.ndarray:
        """``(n,)`` place row of each image, -1 for an image not among them."""
        return np.asarray([self.index.get(i, -1) for i in image_ids], np.int64)


def place_list(image_ids, cities, places, lat, lon) -> PlaceList:
    """The places of some images (the test split), each at the centre of its images.

    Args:
        image_ids: ``(I,)`` ids.
        cities: ``(I,)`` cities.
        places: ``(I,)`` place ids.
        lat: ``(I,)`` degrees, NaN where unknown.
        lon: ``(I,)`` degrees.
    """
    keys = sorted(set(zip(cities, places)))
    row = {k: r for r, k in enumerate(keys)}
    of_image = np.asarray([row[(c, p)] for c, p in zip(cities, places)], np.int64)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon)
    centres = place_centres(lat[ok], lon[ok], of_image[ok], len(keys))
    return PlaceList(
        [c for c, _ in keys],
        [p for _, p in keys],
        centres[:, 0],
        centres[:, 1],
        dict(zip(image_ids, of_image.tolist())),
    )


def place_pixels(t: pa.Table, places: PlaceList, theta: float) -> dict[str, tuple]:
    """Pixels of each class inside one shard's explanations at θ, summed per place.

    Args:
        t: overlap rows (``image_id, model, theta, class_pixels_in_mask``).
        places: The test places.
        theta: The threshold whose explanations are mapped.

    Returns:
        ``{model: (place rows (k,) int64, Σ M (k, C) int64, images (k,) int64)}``.
    """
    t = t.filter(pc.less(pc.abs(pc.subtract(pc.cast(t["theta"], pa.float64()), theta)), 1e-6))
    if t.num_rows == 0:
        return {}
    m = list_matrix(t["class_pixels_in_mask"], np.int64)
    row = places.of(t["image_id"].to_pylist())
    model = np.asarray(t["model"].to_pylist(), object)
    out = {}
    for name in sorted(set(model.tolist())):
        sel = (model == name) & (row >= 0)
        uniq, inv = np.unique(row[sel], return_inverse=True)
        sums = np.zeros((len(uniq), m.shape[1]), np.int64)
        np.add.at(sums, inv, m[sel])
        out[name] = (uniq, sums, np.bincount(inv, minlength=len(uniq)).astype(np.int64))
    return out


def key_objects(
    distinctive: pd.DataFrame | None, means: pd.DataFrame | None, theta: float
) -> dict[str, tuple[int, str, bool]]:
    """Each city's most discriminative object at θ: ``city -> (class, name, passes)``.

    The distinctive object with the largest lead over the other cities, those that pass
    the test first; a city with none tested takes its highest R_p (mean over models)
    among the selected objects, ``passes`` False.
    """
    out: dict[str, tuple[int, str, bool]] = {}
    if distinctive is not None and len(distinctive):
        d = distinctive[(distinctive.theta - theta).abs() < 1e-6]
        d = d.sort_values(["city", "passes", "diff"], ascending=[True, False, False])
        for city, rows in d.groupby("city", sort=True):
            r = rows.iloc[0]
            out[str(city)] = (int(r["class"]), str(r["name"]), bool(r["passes"]))
    if means is not None and len(means):
        m = means[(means.scope == "models") & ((means.theta - theta).abs() < 1e-6)]
        m = m[m.selected & (m["class"] != 0)].sort_values(["city", "r_p"], ascending=[True, False])
        for city, rows in m.groupby("city", sort=True):
            if str(city) not in out:
                r = rows.iloc[0]
                out[str(city)] = (int(r["class"]), str(r["name"]), False)
    return out


def place_table(
    places: PlaceList,
    pixels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    correct: Mapping[str, tuple[np.ndarray, np.ndarray]],
    city_pixels: Mapping[tuple[str, str], np.ndarray],
    keys: Mapping[str, tuple[int, str, bool]],
    names: Sequence[str],
) -> pa.Table:
    """One row per (model, place it explained): the maps' and the GeoJSON's numbers.

    Args:
        places: The test places.
        pixels: model -> ``(Σ M (P, C) over each place's explained images, images (P,))``.
        correct: model -> ``(correct (P,), explained (P,))`` counts per place.
        city_pixels: ``(model, city)`` -> Σ N (C,) over the city's explained test images.
        keys: city -> its key object (:func:`key_objects`).
        names: Class names (class 0 is ``other``).

    Returns:
        Schema :data:`~citylens.tables.PLACES`, sorted by model, city and place; the
        top object is the class with most pixels inside the place's explanations,
        ``other`` excepted (-1 when none is inside).
    """
    cols: dict[str, list] = {f.name: [] for f in PLACES}
    n = len(places)
    for model in sorted(set(pixels) | set(correct)):
        # a model without overlaps (no class maps) still has its calls on the map
        m_sum, images = pixels.get(
            model, (np.zeros((n, len(names)), np.int64), np.zeros(n, np.int64))
        )
        right, shown = correct.get(model, (np.zeros(n, np.int64), np.zeros(n, np.int64)))
        objects = m_sum[:, 1:]
        top = np.where(objects.sum(1) > 0, objects.argmax(1) + 1, -1)
        total = objects.sum(1)
        for r in np.flatnonzero((images > 0) | (shown > 0)):
            city = str(places.city[r])
            k_class, k_name, _ = keys.get(city, (-1, "", False))
            n_key = city_pixels.get((model, city))
            t = int(top[r])
            for name, value in (
                ("model", model),
                ("city", city),
                ("place", str(places.place[r])),
                ("lat", None if np.isnan(places.lat[r]) else float(places.lat[r])),
                ("lon", None if np.isnan(places.lon[r]) else float(places.lon[r])),
                ("images", int(images[r])),
                ("explained", int(shown[r])),
                ("correct", int(right[r])),
                ("top_class", t),
                ("top_name", names[t] if t >= 0 else None),
                ("top_share", float(m_sum[r, t] / total[r]) if t >= 0 else None),
                ("key_class", k_class if k_class >= 0 else None),
                ("key_name", k_name or None),
                (
                    "key_r_p",
                    float(m_sum[r, k_class] / n_key[k_class])
                    if k_class >= 0 and n_key is not None and n_key[k_class] > 0
                    else None,
                ),
            ):
                cols[name].append(value)
    return pa.table(cols, schema=PLACES)
