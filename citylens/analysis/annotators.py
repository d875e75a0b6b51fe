"""How far annotators agree with each other: Cohen's κ with a place-bootstrap interval.

Before a segmenter's labels are judged against a person's, the person's labels need a
measure of their own noise: when two people annotate the same explanations, the
segmenter cannot be expected to agree with either more than they agree with each other.

For each pair of annotators, over the explanations both answered:

- **κ** (Cohen 1960) of the *first* label (the main object; "none / unclear" is a
  category of its own): ``(p_o - p_e) / (1 - p_e)``, ``p_o`` the share of equal first
  labels, ``p_e`` the share expected from each annotator's own label frequencies;
- its interval from the place-clustered bootstrap
  (:mod:`citylens.analysis.bootstrap`): views of one place are resampled together;
- ``same_labels``: the share with equal label *sets* (both "none" counts as equal);
  ``any_label``: sharing at least one label (or both "none") — the strict and lenient
  readings of the segmenter's agreement curves, applied between people.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pyarrow as pa

from citylens.analysis.annotations import Annotation, annotation_key
from citylens.analysis.bootstrap import percentile_interval, place_index, place_weights
from citylens.tables import ANNOTATORS

__all__ = ["annotator_table", "cohen_kappa"]

_NONE = -1  # the first-label category of a "none / unclear" answer


def cohen_kappa(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Cohen's κ of two raters' categories, optionally under row weights.

    Args:
        a: ``(N,)`` categories of rater A (any integers).
        b: ``(N,)`` categories of rater B.
        weights: ``(B, N)`` non-negative row weights (e.g. bootstrap resamples), or None.

    Returns:
        ``(B,)`` κ per weight row, or a 0-d array without weights; NaN where undefined
        (no weight, or both raters always gave one and the same category: ``p_e = 1``).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be (N,) alike, got {a.shape} and {b.shape}")
    cats = np.union1d(a, b)
    one_a = (a[:, None] == cats[None]).astype(np.float64)
    one_b = (b[:, None] == cats[None]).astype(np.float64)
    w = np.ones((1, len(a))) if weights is None else np.asarray(weights, np.float64)
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = (w @ (a == b).astype(np.float64)) / total
        p_e = ((w @ one_a) * (w @ one_b)).sum(1) / total**2
        kappa = np.where(p_e < 1, (p_o - p_e) / (1 - p_e), np.nan)
    return kappa[0] if weights is None else kappa


def _first(labels: tuple[int, ...]) -> int:
    return labels[0] if labels else _NONE


def annotator_table(
    annotations: list[Annotation],
    place_of: dict[str, tuple[str, str]],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pa.Table:
    """Agreement of every pair of annotators on the explanations both answered.

    Args:
        annotations: Resolved annotations (image ids), several annotators'.
        place_of: image id -> ``(city, place)``, the bootstrap's units.
        n_boot: Place resamples (0: no interval).
        seed: The bootstrap's seed.
        ci: The interval's coverage.

    Returns:
        :data:`~citylens.tables.ANNOTATORS` rows, one per pair sharing at least one
        explanation (none with a single annotator).
    """
    answers: dict[str, dict[tuple, tuple[int, ...]]] = {}
    for a in annotations:
        _, image, model, theta = annotation_key(a)
        answers.setdefault(a.annotator, {})[(image, model, theta)] = a.labels
    rows: dict[str, list] = {f.name: [] for f in ANNOTATORS}
    for who_a, who_b in combinations(sorted(answers), 2):
        shared = sorted(set(answers[who_a]) & set(answers[who_b]), key=repr)
        if not shared:
            continue
        la = [answers[who_a][k] for k in shared]
        lb = [answers[who_b][k] for k in shared]
        first_a = np.asarray([_first(x) for x in la])
        first_b = np.asarray([_first(x) for x in lb])
        same = np.asarray([set(x) == set(y) for x, y in zip(la, lb)])
        anyl = np.asarray([bool(set(x) & set(y)) or x == y == () for x, y in zip(la, lb)])
        cities, places = zip(*(place_of[k[0]] for k in shared))
        index = place_index(cities, places)
        fewest = min(np.unique(index.city_of_place.astype(str), return_counts=True)[1])
        low = high = np.nan
        if n_boot > 0:
            w = place_weights(index, n_boot, seed)[:, index.of_row]
            low, high = percentile_interval(cohen_kappa(first_a, first_b, w), ci, fewest)
        for key, value in (
            ("annotator_a", who_a),
            ("annotator_b", who_b),
            ("n", len(shared)),
            ("places", index.n_places),
            ("observed", float((first_a == first_b).mean())),
            ("kappa", float(cohen_kappa(first_a, first_b))),
            ("ci_low", float(low)),
            ("ci_high", float(high)),
            ("same_labels", float(same.mean())),
            ("any_label", float(anyl.mean())),
        ):
            rows[key].append(value)
    return pa.table(rows, schema=ANNOTATORS)
