"""Leakage baselines: telling the cities apart without looking at what is pictured.

A logistic regression on each image's mean colour, on its colour histogram, and on the
metadata words and years in its file name (a season, a capture year), fitted on the
train split and scored on the test split. A CNN beating chance by less than these
baselines beat it may be reading the same cue (the London set's seasons: a season-only
rule reaches 0.64). Intervals resample test places within each city, as every headline
number of the study does.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa

from citylens.analysis.bootstrap import (
    percentile_interval,
    place_index,
    place_weights,
    weighted_place_sums,
)
from citylens.tables import BASELINES

__all__ = ["HIST_BINS", "baseline_table", "colour_features", "name_tokens", "token_matrix"]

HIST_BINS = 4  # per channel: a 4 × 4 × 4 joint histogram
_SPLIT = re.compile(r"[_\-.\s]+")
_WORD = re.compile(r"^[a-z]{3,20}$")
_YEAR = re.compile(r"^(19[5-9]\d|20\d\d)(0[1-9]|1[0-2])?$")


def colour_features(rgb: np.ndarray) -> np.ndarray:
    """Mean colour and joint colour histogram of one image.

    Args:
        rgb: ``(H, W, 3)`` uint8.

    Returns:
        ``(3 + HIST_BINS³,)`` float32: mean R, G, B in [0, 1], then the histogram's
        shares (summing to 1), bin ``(r, g, b)`` at ``r·B² + g·B + b``.
    """
    x = np.asarray(rgb, np.uint8).reshape(-1, 3)
    mean = x.mean(0) / 255.0
    q = (x.astype(np.int64) * HIST_BINS) // 256
    code = q[:, 0] * HIST_BINS**2 + q[:, 1] * HIST_BINS + q[:, 2]
    hist = np.bincount(code, minlength=HIST_BINS**3) / max(len(code), 1)
    return np.concatenate([mean, hist]).astype(np.float32)


def name_tokens(uri: str, place: str, city: str) -> list[str]:
    """The metadata words and years in a file's name.

    Lower-case alphabetic words of 3–20 letters (``summer``, ``sharp``) and years
    (``2014``; ``201410`` gives ``2014`` and ``month 10``); the place id's parts and the
    city's name are left out (the place is not metadata, and a name that spells the
    city out is a labelling slip, not a confound of the pictures).
    """
    stem = PurePosixPath(uri).stem.lower()
    skip = set(_SPLIT.split(str(place).lower())) | set(_SPLIT.split(city.lower()))
    out = []
    for tok in _SPLIT.split(stem):
        if not tok or tok in skip:
            continue
        if m := _YEAR.match(tok):
            out.append(f"year {m.group(1)}")
            if m.group(2):
                out.append(f"month {int(m.group(2))}")
        elif _WORD.match(tok):
            out.append(tok)
    return out


def token_matrix(
    tokens: Sequence[Sequence[str]], train: np.ndarray, min_share: float = 0.02
) -> tuple[np.ndarray, list[str]]:
    """One-hot tokens kept when at least ``min_share`` of the train images carry them.

    Random parts of ids (a panorama's ``QbvF``) are rare and fall below the share.

    Returns:
        ``((I, V) float32, the V tokens)``; V may be 0.
    """
    counts = Counter(t for i in np.flatnonzero(train) for t in set(tokens[i]))
    n = max(int(np.sum(train)), 1)
    vocab = sorted(t for t, c in counts.items() if c / n >= min_share)
    col = {t: j for j, t in enumerate(vocab)}
    x = np.zeros((len(tokens), len(vocab)), np.float32)
    for i, toks in enumerate(tokens):
        for t in toks:
            if t in col:
                x[i, col[t]] = 1.0
    return x, vocab


def _fit_predict(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y[train])) < 2:
        return np.full(int(test.sum()), y[train][0] if train.any() else 0), None
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(x[train], y[train])
    return model.predict(x[test]), model


def baseline_table(
    features: np.ndarray,
    tokens: Sequence[Sequence[str]],
    cities: Sequence[str],
    places: Sequence[str],
    split: Sequence[str],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pa.Table:
    """Every baseline's test accuracy with its place-bootstrap interval.

    Args:
        features: ``(I, 3 + HIST_BINS³)`` :func:`colour_features` per image.
        tokens: ``(I,)`` :func:`name_tokens` per image.
        cities: ``(I,)`` the label.
        places: ``(I,)`` place ids (the resampled units).
        split: ``(I,)`` ``train | val | test``.
        n_boot: Resamples of the test places.
        ci: Interval coverage.
        seed: Bootstrap and solver seed.

    Returns:
        Schema :data:`~citylens.tables.BASELINES`: ``majority city``, ``mean colour``,
        ``colour histogram`` and, when the names carry metadata, ``file-name tokens``.
    """
    cities, places, split = (np.asarray(v, object) for v in (cities, places, split))
    labels = sorted(set(cities.tolist()))
    y = np.asarray([labels.index(c) for c in cities], np.int64)
    train, test = split == "train", split == "test"
    index = place_index(cities[test], places[test])
    weights = place_weights(index, n_boot, seed) if n_boot else None
    counts = np.bincount(y[train], minlength=len(labels))
    on_test = np.bincount(y[test], minlength=len(labels))
    chance = float(on_test.max() / max(on_test.sum(), 1))  # the best constant guess
    x_tok, vocab = token_matrix(tokens, train)
    runs = [
        (
            "majority city",
            np.zeros((len(y), 1), np.float32),
            "always the train split's largest city",
        ),
        ("mean colour", features[:, :3], ""),
        ("colour histogram", features, f"{HIST_BINS}×{HIST_BINS}×{HIST_BINS} bins and the mean"),
    ]
    if vocab:
        runs.append(("file-name tokens", x_tok, ""))
    rows = []
    for name, x, detail in runs:
        if name == "majority city":
            pred = np.full(int(test.sum()), int(counts.argmax()))
            model = None
        else:
            pred, model = _fit_predict(x, y, train, test, seed)
        hit = (pred == y[test]).astype(np.float64)
        acc = float(hit.mean()) if len(hit) else float("nan")
        lo = hi = float("nan")
        if weights is not None and len(hit):
            num = weighted_place_sums(weights, index.of_row, hit)
            den = weighted_place_sums(weights, index.of_row, np.ones_like(hit))
            lo_a, hi_a = percentile_interval(num / den, ci, index.n_places)
            lo, hi = float(lo_a), float(hi_a)
        if name == "file-name tokens" and model is not None:
            coef = np.abs(model[-1].coef_).max(0)
            detail = "strongest: " + ", ".join(vocab[j] for j in np.argsort(-coef)[:4])
        rows.append(
            {
                "baseline": name,
                "features": int(x.shape[1]) if name != "majority city" else 0,
                "accuracy": acc,
                "ci_low": lo,
                "ci_high": hi,
                "chance": chance,
                "n_test": int(test.sum()),
                "n_places": int(index.n_places),
                "detail": detail,
            }
        )
    return pa.Table.from_pylist(rows, schema=BASELINES)
