"""Place-clustered bootstrap: intervals that respect that views of one place are alike.

Several views of one place (one panorama's crops, one street corner's photos) are not
independent observations, so resampling single images would make every interval too
narrow. Here *places* are resampled, with replacement, within each city (a city keeps
its number of places), and a statistic is recomputed from per-place sums: a resample
is a vector of multinomial place weights, and a ratio statistic (a mean, R_p, an
accuracy) is ``(w · numerator sums) / (w · denominator sums)`` — no image, mask or
shard is read again. Percentile intervals; seeded, so a study's intervals repeat.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PlaceIndex",
    "place_index",
    "place_sums",
    "place_weights",
    "percentile_interval",
    "ratio_samples",
    "two_sided_p",
]


class PlaceIndex:
    """Rows (images) mapped to places, and places to cities.

    Attributes:
        of_row: ``(n,)`` int place index of every row.
        city_of_place: ``(P,)`` city of every place.
        cities: The cities, sorted.
    """

    def __init__(self, of_row: np.ndarray, city_of_place: np.ndarray) -> None:
        self.of_row = of_row
        self.city_of_place = city_of_place
        self.cities = sorted(set(city_of_place.tolist()))

    @property
    def n_places(self) -> int:
        """Number of places ``P``."""
        return len(self.city_of_place)


def place_index(cities, places) -> PlaceIndex:
    """Index rows by (city, place); a place id is only unique within its city.

    Args:
        cities: ``(n,)`` city of every row.
        places: ``(n,)`` place of every row.
    """
    keys = [f"{c}\x00{p}" for c, p in zip(cities, places)]
    uniq, of_row = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    city_of_place = np.asarray([k.split("\x00", 1)[0] for k in uniq], dtype=object)
    return PlaceIndex(of_row.reshape(-1).astype(np.int64), city_of_place)


def place_sums(index: PlaceIndex, values: np.ndarray) -> np.ndarray:
    """Per-place sums of per-row values.

    Args:
        index: The rows' places.
        values: ``(n, ...)`` per-row values.

    Returns:
        ``(P, ...)`` float64 sums.
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros((index.n_places, *v.shape[1:]), np.float64)
    np.add.at(out, index.of_row, v)
    return out


def place_weights(index: PlaceIndex, n_boot: int, seed: int = 0) -> np.ndarray:
    """Multinomial weights of ``n_boot`` resamples of places within each city.

    Args:
        index: The places and their cities.
        n_boot: Resamples ``B``.
        seed: Seed of the draws.

    Returns:
        ``(B, P)`` int64: how often each place is drawn; a city's weights sum to its
        number of places in every resample.
    """
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, index.n_places), np.int64)
    for city in index.cities:
        members = np.flatnonzero(index.city_of_place == city)
        k = len(members)
        w[:, members] = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    return w


def ratio_samples(weights: np.ndarray, numerator: np.ndarray, denominator: np.ndarray):
    """A ratio statistic under each resample: ``(w · numerator) / (w · denominator)``.

    Args:
        weights: ``(B, P)`` place weights (:func:`place_weights`).
        numerator: ``(P, ...)`` per-place sums.
        denominator: ``(P, ...)`` per-place sums (e.g. image counts); broadcastable.

    Returns:
        ``(B, ...)`` float64 (NaN where a resample's denominator is 0).
    """
    w = np.asarray(weights, dtype=np.float64)
    num = np.tensordot(w, np.asarray(numerator, np.float64), axes=(1, 0))
    den = np.tensordot(w, np.asarray(denominator, np.float64), axes=(1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def percentile_interval(samples: np.ndarray, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The central ``ci`` percentile interval of bootstrap samples (NaNs ignored).

    Args:
        samples: ``(B, ...)`` a statistic under each resample.
        ci: Coverage, in (0, 1).

    Returns:
        ``(low (...), high (...))``.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    a = (1 - ci) / 2
    low, high = np.nanquantile(np.asarray(samples, np.float64), [a, 1 - a], axis=0)
    return low, high


def two_sided_p(samples: np.ndarray) -> np.ndarray:
    """Bootstrap p-value of "the statistic is 0": twice the smaller tail beyond 0.

    Args:
        samples: ``(B, ...)`` a statistic (e.g. a difference) under each resample.

    Returns:
        ``(...)`` in (0, 1]; with ``B`` resamples the smallest is ``2 / (B + 1)``.
    """
    s = np.asarray(samples, np.float64)
    n = np.sum(~np.isnan(s), axis=0)
    below = (np.sum(s <= 0, axis=0) + 1) / (n + 1)
    above = (np.sum(s >= 0, axis=0) + 1) / (n + 1)
    return np.minimum(1.0, 2 * np.minimum(below, above))
