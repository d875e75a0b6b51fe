"""Place-clustered bootstrap: intervals that respect that views of one place are alike.

Several views of one place (one panorama's crops, one street corner's photos) are not
independent observations, so resampling single images would make every interval too
narrow. Here *places* are resampled, with replacement, within each city (a city keeps
its number of places), and a statistic is recomputed from per-place sums: a resample
is a vector of multinomial place weights, and a ratio statistic (a mean, R_p, an
accuracy) is ``(w · numerator sums) / (w · denominator sums)`` — no image, mask or
shard is read again. Percentile intervals; seeded, so a study's intervals repeat.

One set of resamples serves a whole study (:func:`place_weights` over the test split's
places; each city draws from its own stream, seeded by the study's seed and the city's
name), so every statistic of
the study — accuracy, AR, R_p, a difference of two of them — is computed under the
same resamples, and a difference of two statistics is *paired*: its interval is that of
the difference on the same resampled places, not a combination of two intervals.
Inside a reducer the place weights become row weights (:func:`row_weights`) and a
resampled sum is one matrix product, ``(B, rows) @ (rows, ...)``: a shard's partial
result is ``(B, ...)``, whatever its number of images.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import special

__all__ = [
    "PlaceIndex",
    "Resamples",
    "expanded_tail",
    "place_index",
    "place_sums",
    "place_weights",
    "percentile_interval",
    "ratio_samples",
    "row_weights",
    "safe_ratio",
    "two_sided_p",
    "weighted_place_sums",
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


class Resamples:
    """A study's resamples, as a reducer needs them: image id -> its place's weights.

    Built once by the driver from the test split and shipped to every reducer (the
    ``(B, P)`` uint8 weights are the only part that grows, with the number of places).

    Attributes:
        weights: ``(B, P)`` uint8 place weights (:func:`place_weights`).
        image_ids: ``(n,)`` the test images (Arrow strings).
        place_of_image: ``(n,)`` int64 place column of each.
        places_of_city: city -> its number of places (the resampled units).
    """

    def __init__(self, index: PlaceIndex, image_ids, n_boot: int, seed: int = 0) -> None:
        self.weights = place_weights(index, n_boot, seed)
        self.image_ids = pa.array(list(image_ids), pa.string())
        self.place_of_image = np.asarray(index.of_row, np.int64)
        cities, counts = np.unique(index.city_of_place.astype(str), return_counts=True)
        self.places_of_city = dict(zip(cities.tolist(), counts.tolist()))

    @property
    def n_boot(self) -> int:
        """Resamples ``B``."""
        return int(self.weights.shape[0])

    def rows(self, image_ids) -> np.ndarray:
        """Row weights of the given images.

        Args:
            image_ids: ``(m,)`` image ids (Arrow or a list), each in the test split.

        Returns:
            ``(B, m)`` float64.

        Raises:
            ValueError: naming an image that is not one of the resampled images.
        """
        return row_weights(self.weights, self.place_of(image_ids))

    def place_of(self, image_ids) -> np.ndarray:
        """``(m,)`` int64 place index of each image (as :meth:`rows` looks them up).

        Raises:
            ValueError: naming an image that is not one of the resampled images.
        """
        ids = (
            image_ids
            if isinstance(image_ids, (pa.Array, pa.ChunkedArray))
            else pa.array(list(image_ids), pa.string())
        )
        pos = pc.index_in(ids, value_set=self.image_ids)
        if pos.null_count:
            missing = ids.filter(pc.is_null(pos))[0].as_py()
            raise ValueError(f"image {missing} is not in the resampled test split")
        return self.place_of_image[pos.to_numpy()]

    def weighted(self, place: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``Σ_w values`` under every resample: rows summed per place, then weighted.

        Args:
            place: ``(m,)`` place index of each row (:meth:`place_of`).
            values: ``(m,)`` or ``(m, C)`` per-row values.

        Returns:
            ``(B,)`` or ``(B, C)`` float64; equals ``rows(ids) @ values`` with one
            multiply per place instead of per row.
        """
        return weighted_place_sums(self.weights, place, values)


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
    """Resamples of places within each city: multinomial weights, one stream per city.

    City ``c``'s ``k`` places (in :func:`place_index`'s sorted order) are drawn ``k``
    times with replacement in each of ``n_boot`` resamples, from a generator seeded with
    ``seed ^ crc32(c)``: a city's weights do not depend on which other cities the study
    has.

    Args:
        index: The places and their cities (e.g. of the test split).
        n_boot: Resamples ``B``.
        seed: The study's bootstrap seed.

    Returns:
        ``(B, P)`` uint8: how often each place is drawn; a city's weights sum to its
        number of places in every resample (a place drawn more than 255 times in one
        resample raises).
    """
    w = np.zeros((n_boot, index.n_places), np.uint8)
    for city in index.cities:
        members = np.flatnonzero(index.city_of_place == city)
        k = len(members)
        rng = np.random.default_rng(seed ^ zlib.crc32(str(city).encode()))
        draws = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
        if draws.max(initial=0) > 255:
            raise ValueError(f"city {city!r}: a place drawn over 255 times in one resample")
        w[:, members] = draws
    return w


def weighted_place_sums(weights: np.ndarray, of_row: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``row_weights(weights, of_row) @ values``, summing rows per place first.

    Args:
        weights: ``(B, P)`` place weights.
        of_row: ``(n,)`` place index of each row.
        values: ``(n,)`` or ``(n, C)`` per-row values.

    Returns:
        ``(B,)`` or ``(B, C)`` float64.
    """
    v = np.asarray(values, np.float64)
    if not len(v):
        return np.zeros((weights.shape[0], *v.shape[1:]))
    flat = v.reshape(len(v), -1)
    places, inv = np.unique(np.asarray(of_row, np.int64), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(len(places)))
    per_place = np.add.reduceat(flat[order], starts, axis=0)
    out = np.asarray(weights)[:, places].astype(np.float64) @ per_place
    return out.reshape(weights.shape[0], *v.shape[1:])


def row_weights(weights: np.ndarray, of_row: np.ndarray) -> np.ndarray:
    """Place weights as row weights: each row (image) weighs what its place weighs.

    Args:
        weights: ``(B, P)`` place weights.
        of_row: ``(n,)`` place index of each row.

    Returns:
        ``(B, n)`` float64; ``row_weights(w, i) @ values`` is ``w @ place_sums(values)``.
    """
    return np.asarray(weights)[:, np.asarray(of_row, np.int64)].astype(np.float64)


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
    return safe_ratio(num, den)


def safe_ratio(numerator, denominator) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0 (nothing drawn).

    Args:
        numerator: ``(...)`` e.g. resampled sums ``Σ_w x``.
        denominator: ``(...)`` broadcastable, e.g. ``Σ_w n``.

    Returns:
        ``(...)`` float64.
    """
    num = np.asarray(numerator, np.float64)
    den = np.asarray(denominator, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def expanded_tail(alpha: float, n_units) -> np.ndarray:
    """The tail share an expanded percentile interval cuts off on each side.

    Percentile intervals are too narrow with few resampled units: the bootstrap's
    spread is the plug-in standard error (short by ``sqrt((n-1)/n)``) and a normal
    quantile ignores that the error is itself estimated. Hesterberg's expanded
    percentile interval (Hesterberg 2015, "What teachers should know about the
    bootstrap", *The American Statistician* 69(4)) cuts ``Φ(-sqrt(n/(n-1)) ·
    t_{n-1, 1-α/2})`` off each side instead of ``α/2``; as ``n`` grows it is ``α/2``.

    Args:
        alpha: ``1 - ci``.
        n_units: ``(...)`` independent units resampled (places; for a statistic of
            several cities, the fewest any of them has); None: ``α/2`` (plain).

    Returns:
        ``(...)`` tail shares (NaN where ``n_units < 2``: no interval from one place).
    """
    if n_units is None:
        return np.asarray(alpha / 2)
    n = np.asarray(n_units, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = special.stdtrit(n - 1, 1 - alpha / 2)
        return np.where(n >= 2, special.ndtr(-np.sqrt(n / (n - 1)) * t), np.nan)


def percentile_interval(
    samples: np.ndarray, ci: float = 0.95, n_units=None
) -> tuple[np.ndarray, np.ndarray]:
    """The central ``ci`` percentile interval of bootstrap samples (NaNs ignored).

    Args:
        samples: ``(B, ...)`` a statistic under each resample.
        ci: Coverage, in (0, 1).
        n_units: ``(...)`` or a number: the places resampled; given, the interval is
            the expanded percentile interval (:func:`expanded_tail`).

    Returns:
        ``(low (...), high (...))``.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    s = np.asarray(samples, np.float64)
    tail = expanded_tail(1 - ci, n_units)
    with warnings.catch_warnings():  # an all-NaN column (never defined) gives NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        if tail.ndim == 0 and not np.isnan(tail):
            low, high = np.nanquantile(s, [float(tail), 1 - float(tail)], axis=0)
            return low, high
        tail = np.broadcast_to(tail, s.shape[1:])
        low, high = np.full(s.shape[1:], np.nan), np.full(s.shape[1:], np.nan)
        for pos in np.ndindex(s.shape[1:]):
            if not np.isnan(tail[pos]):
                col = s[(slice(None), *pos)]
                low[pos], high[pos] = np.nanquantile(col, [tail[pos], 1 - tail[pos]])
    return low, high


def two_sided_p(samples: np.ndarray, n_units=None, estimate=None) -> np.ndarray:
    """Bootstrap p-value of "the statistic is 0".

    Without ``n_units``: twice the smaller share of resamples beyond 0 (the smallest
    p is ``2 / (B + 1)``). With ``n_units``: a t-test of the estimate on the bootstrap's
    standard error, expanded as :func:`expanded_tail` expands intervals —
    ``t = |estimate| / (se · sqrt(n/(n-1)))`` on Student's t with ``n - 1`` degrees of
    freedom. Its resolution is not bounded by ``B``, which Benjamini–Hochberg over many
    tests needs (with ``m`` tests the smallest q is ``m`` times the smallest p).

    Args:
        samples: ``(B, ...)`` a statistic (e.g. a difference) under each resample.
        n_units: ``(...)`` or a number: the places resampled.
        estimate: ``(...)`` the statistic's point estimate (default: the resamples'
            mean).

    Returns:
        ``(...)`` in (0, 1] (NaN where undefined: fewer than 2 places or resamples).
    """
    s = np.asarray(samples, np.float64)
    if n_units is None:
        n = np.sum(~np.isnan(s), axis=0)
        below = (np.sum(s <= 0, axis=0) + 1) / (n + 1)
        above = (np.sum(s >= 0, axis=0) + 1) / (n + 1)
        return np.minimum(1.0, 2 * np.minimum(below, above))
    units = np.asarray(n_units, np.float64)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        est = np.nanmean(s, axis=0) if estimate is None else np.asarray(estimate, np.float64)
        se = np.nanstd(s, axis=0, ddof=1) * np.sqrt(units / (units - 1))
        t = np.abs(est) / se
        p = np.where(se > 0, 2 * special.stdtr(units - 1, -t), np.where(est == 0, 1.0, 0.0))
    return np.where((units >= 2) & ~np.isnan(se), np.minimum(1.0, p), np.nan)
