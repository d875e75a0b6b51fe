"""Per-object ratios R_p^c (paper eq. 1) and the objects that explanations cover.

For city c and class p, over the test images i of c:

    R_p^c = Σ_i M_{p,i} / Σ_i N_{p,i}

M = pixels of p inside the visual explanation, N = pixels of p in the whole image.
R_p^c is undefined (NaN) for a class absent from every image of the city. An object is
*selected* for display when its mean pixels per image inside explanations exceeds a
threshold (100 in the paper).

The functions work on per-city sums so a reducer can stream over images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CityObjects", "city_objects", "r_p", "sum_by_city", "top_objects"]


def r_p(m_sum: np.ndarray, n_sum: np.ndarray) -> np.ndarray:
    """R_p from summed counts.

    Args:
        m_sum: ``(..., C)`` Σ_i M_{p,i}.
        n_sum: ``(..., C)`` Σ_i N_{p,i}.

    Returns:
        float64 ``(..., C)`` ratios in [0, 1]; NaN where ``n_sum == 0``.
    """
    m = np.asarray(m_sum, dtype=np.float64)
    n = np.asarray(n_sum, dtype=np.float64)
    if np.any(m > n):
        raise ValueError("pixels inside explanations exceed pixels in images")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, m / np.where(n > 0, n, 1.0), np.nan)


def sum_by_city(
    m: np.ndarray, n: np.ndarray, cities: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Group per-image counts by city.

    Args:
        m: ``(I, C)`` M_{p,i} per image.
        n: ``(I, C)`` N_{p,i} per image.
        cities: ``(I,)`` city of each image.

    Returns:
        ``{city: (Σ M (C,), Σ N (C,), image count)}``.
    """
    cities = np.asarray(cities)
    out = {}
    for city in np.unique(cities):
        sel = cities == city
        out[str(city)] = (
            m[sel].sum(axis=0, dtype=np.int64),
            n[sel].sum(axis=0, dtype=np.int64),
            int(sel.sum()),
        )
    return out


@dataclass(frozen=True)
class CityObjects:
    """What the explanations of one city cover, per class ``p`` of the vocabulary.

    Attributes:
        r_p: ``(C,)`` R_p^c (NaN where the class never occurs in the city).
        mean_in_mask: ``(C,)`` mean pixels per image inside explanations.
        mean_in_image: ``(C,)`` mean pixels per image.
        selected: ``(C,)`` bool, mean_in_mask > threshold (``other`` never selected).
        images: number of images.
    """

    r_p: np.ndarray
    mean_in_mask: np.ndarray
    mean_in_image: np.ndarray
    selected: np.ndarray
    images: int


def city_objects(
    m_sum: np.ndarray, n_sum: np.ndarray, images: int, min_mean_pixels: float = 100.0
) -> CityObjects:
    """R_p^c and object selection for one city from its summed counts.

    Args:
        m_sum: ``(C,)`` Σ_i M_{p,i}.
        n_sum: ``(C,)`` Σ_i N_{p,i}.
        images: number of images summed.
        min_mean_pixels: selection threshold on mean pixels inside explanations.
    """
    if images <= 0:
        raise ValueError("a city needs at least one image")
    mean_in_mask = np.asarray(m_sum, dtype=np.float64) / images
    selected = mean_in_mask > min_mean_pixels
    selected[0] = False  # 'other' is not an object
    return CityObjects(
        r_p=r_p(m_sum, n_sum),
        mean_in_mask=mean_in_mask,
        mean_in_image=np.asarray(n_sum, dtype=np.float64) / images,
        selected=selected,
        images=images,
    )


def top_objects(mean_in_mask: np.ndarray, k: int = 10) -> list[int]:
    """Class indices with the most pixels inside explanations, most first.

    Ties break by class index; ``other`` (0) and classes never inside are left out.
    """
    scores = np.asarray(mean_in_mask, dtype=np.float64)
    order = sorted(range(1, len(scores)), key=lambda p: (-scores[p], p))
    return [p for p in order if scores[p] > 0][:k]
