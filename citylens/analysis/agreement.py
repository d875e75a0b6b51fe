"""Agreement between the segmenter and human annotation (thesis §4.3.3, Figs 11–12).

A human names the one or two dominating objects of each visual explanation. From the
segmenter's pixels per class inside the explanation, the top-1 class is always picked,
and the second class too when the top two together cover more than a threshold of the
explanation's labelled pixels. Against the human labels:

- **strict**: correct when *every* picked label is among the human labels
  (rises with the threshold: fewer second labels to get wrong);
- **lenient**: correct when *any* picked label is among them (falls with it).

Class 0 (``other``, unlabelled) is never picked. An explanation with no labelled pixel
picks nothing and is left out of the accuracies (counted as ``empty``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from citylens.tables import AGREEMENT

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PickedLabels",
    "agreement_curve",
    "agreement_table",
    "derive_annotations",
    "pick_labels",
]

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True)
class PickedLabels:
    """The segmenter's candidate labels per explanation.

    Attributes:
        top1: ``(N,)`` class with most pixels (-1 when the explanation is empty).
        top2: ``(N,)`` runner-up class (-1 when there is none with pixels).
        ratio: ``(N,)`` (pixels of top1 + top2) / labelled pixels in the explanation.
    """

    top1: np.ndarray
    top2: np.ndarray
    ratio: np.ndarray

    def second(self, threshold: float) -> np.ndarray:
        """``(N,)`` bool: is the second label picked at this threshold?"""
        return (self.top2 >= 0) & (self.ratio > threshold)


def pick_labels(counts: np.ndarray) -> PickedLabels:
    """Top-two classes inside each explanation.

    Args:
        counts: ``(N, C)`` pixels per class inside each explanation (M_p); column 0
            (``other``) is ignored.

    Returns:
        :class:`PickedLabels`; ties go to the lower class index.
    """
    m = np.asarray(counts, dtype=np.float64).copy()
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"counts must be (N, C) with C ≥ 2, got shape {m.shape}")
    m[:, 0] = 0
    total = m.sum(1)
    order = np.argsort(-m, axis=1, kind="stable")
    rows = np.arange(len(m))
    c1, c2 = order[:, 0], order[:, 1]
    n1, n2 = m[rows, c1], m[rows, c2]
    top1 = np.where(n1 > 0, c1, -1)
    top2 = np.where(n2 > 0, c2, -1)
    ratio = np.divide(n1 + n2, total, out=np.zeros_like(total), where=total > 0)
    return PickedLabels(top1, top2, ratio)


def agreement_curve(
    picked: PickedLabels, human: np.ndarray, thresholds=DEFAULT_THRESHOLDS
) -> dict[str, np.ndarray]:
    """Strict and lenient accuracy against human labels at each threshold.

    Args:
        picked: From :func:`pick_labels`.
        human: ``(N, 2)`` human class indices per explanation; -1 where the annotator
            named only one object.
        thresholds: Second-label thresholds in [0, 1].

    Returns:
        ``{"threshold": (T,), "strict": (T,), "lenient": (T,), "n": int, "empty": int}``;
        accuracies are NaN when no explanation is non-empty.
    """
    human = np.asarray(human)
    valid = picked.top1 >= 0
    in_h1 = (picked.top1[:, None] == human).any(1) & valid
    in_h2 = (picked.top2[:, None] == human).any(1) & (picked.top2 >= 0)
    n = int(valid.sum())
    strict, lenient = [], []
    for t in thresholds:
        two = picked.second(t)
        s = in_h1 & (~two | in_h2)
        le = in_h1 | (two & in_h2)
        strict.append(s[valid].mean() if n else np.nan)
        lenient.append(le[valid].mean() if n else np.nan)
    return {
        "threshold": np.asarray(thresholds, dtype=np.float64),
        "strict": np.asarray(strict, dtype=np.float64),
        "lenient": np.asarray(lenient, dtype=np.float64),
        "n": n,
        "empty": int((~valid).sum()),
    }


def derive_annotations(counts: np.ndarray, similar: float = 0.5) -> np.ndarray:
    """Simulated human annotation from ground-truth pixels inside explanations.

    The thesis's annotators named the main object, and a second one only when two main
    objects had similar areas. Here: the ground-truth top class, plus the runner-up when
    it covers at least ``similar`` × the top class's pixels.

    Args:
        counts: ``(N, C)`` ground-truth pixels per class inside each explanation.
        similar: Minimum runner-up / top area ratio for a second label.

    Returns:
        int ``(N, 2)`` class indices, -1 for none.
    """
    picked = pick_labels(counts)
    m = np.asarray(counts, dtype=np.float64)
    rows = np.arange(len(m))
    n1 = np.where(picked.top1 >= 0, m[rows, np.maximum(picked.top1, 0)], 0)
    n2 = np.where(picked.top2 >= 0, m[rows, np.maximum(picked.top2, 0)], 0)
    second = (picked.top2 >= 0) & (n2 >= similar * n1)
    return np.stack([picked.top1, np.where(second, picked.top2, -1)], 1).astype(np.int64)


def agreement_table(annotated: pa.Table, thresholds=DEFAULT_THRESHOLDS) -> pa.Table:
    """Strict / lenient curves of annotated explanations per annotator, model, θ and city.

    Each (annotator, model, θ) also gets a curve over all cities (city ``"all"``); with
    several annotators, annotator ``"all"`` pools every annotation (an explanation two
    people labelled counts twice).

    Args:
        annotated: Rows of :data:`~citylens.tables.ANNOTATED`
            (:func:`citylens.analysis.annotations.match_annotations`).
        thresholds: Second-label thresholds of the curve.

    Returns:
        A table with schema :data:`~citylens.tables.AGREEMENT`. "None / unclear" answers
        are counted in ``unclear`` and left out of the accuracies, as are explanations
        the segmenter labelled nothing of (``empty``).
    """
    rows: dict[str, list] = {f.name: [] for f in AGREEMENT}
    t = annotated.to_pandas()
    if len(t) == 0:
        return pa.table(rows, schema=AGREEMENT)
    annotators = sorted(t.annotator.unique())
    groups = [(a, t[t.annotator == a]) for a in annotators]
    if len(annotators) > 1:
        groups.append(("all", t))
    for who, g in groups:
        for (model, theta), gm in g.groupby(["model", "theta"], sort=True):
            for city in [*sorted(gm.city.unique()), "all"]:
                gc = gm if city == "all" else gm[gm.city == city]
                clear = gc[gc.label1 >= 0]
                picked = PickedLabels(
                    clear.top1.to_numpy(), clear.top2.to_numpy(), clear.ratio.to_numpy()
                )
                curve = agreement_curve(picked, clear[["label1", "label2"]].to_numpy(), thresholds)
                for j, thr in enumerate(curve["threshold"]):
                    for key, value in (
                        ("annotator", who),
                        ("model", model),
                        ("city", city),
                        ("theta", float(theta)),
                        ("threshold", float(thr)),
                        ("n", curve["n"]),
                        ("empty", curve["empty"]),
                        ("unclear", int(len(gc) - len(clear))),
                        ("strict", float(curve["strict"][j])),
                        ("lenient", float(curve["lenient"][j])),
                    ):
                        rows[key].append(value)
    return pa.table(rows, schema=AGREEMENT)
