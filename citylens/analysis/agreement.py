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

import csv
import io
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from citylens.tables import AGREEMENT
from citylens.vocabulary import Vocabulary

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Annotation",
    "PickedLabels",
    "agreement_curve",
    "agreement_table",
    "derive_annotations",
    "parse_annotations",
    "pick_labels",
    "resolve_annotations",
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


@dataclass(frozen=True)
class Annotation:
    """One annotated image: its key in the CSV and one or two class indices."""

    image: str
    labels: tuple[int, ...]


def parse_annotations(
    text: str, vocabulary: Vocabulary, source: str = "annotations"
) -> list[Annotation]:
    """Read an annotation CSV: columns ``image``, ``label1`` and optional ``label2``.

    ``image`` is an image id, URI or file name; labels are class names of the
    vocabulary (case-insensitive) or class indices.

    Raises:
        ValueError: naming the file, row and field of the first bad entry.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError(f"{source}: no annotation rows")
    fields = {k.strip().lower(): k for k in rows[0] if k}
    for need in ("image", "label1"):
        if need not in fields:
            raise ValueError(
                f"{source}: needs columns image, label1[, label2]; got {list(rows[0])}"
            )
    by_name = {n.lower(): i for i, n in enumerate(vocabulary.names) if i > 0}
    out = []
    for line, row in enumerate(rows, start=2):
        labels = []
        for col in ("label1", "label2"):
            raw = (row.get(fields.get(col, ""), "") or "").strip()
            if not raw:
                continue
            idx = int(raw) if raw.isdigit() else by_name.get(raw.lower())
            if idx is None or not 0 < idx < len(vocabulary):
                raise ValueError(
                    f"{source}, line {line}, {col}: {raw!r} is not a class of {vocabulary.name!r}"
                )
            labels.append(idx)
        image = (row[fields["image"]] or "").strip()
        if not image or not labels:
            raise ValueError(f"{source}, line {line}: needs an image and at least label1")
        out.append(Annotation(image, tuple(labels)))
    return out


def agreement_table(
    overlaps: pa.Table, human: dict[str, tuple[int, ...]], thresholds=DEFAULT_THRESHOLDS
) -> pa.Table:
    """Strict / lenient curves of annotated explanations per model, θ and city.

    Each (model, θ) also gets a curve over all cities (city ``"all"``).

    Args:
        overlaps: Overlap rows (``image_id, city, model, theta, class_pixels_in_mask``) of
            annotated images only.
        human: image id -> the one or two class indices a person named.
        thresholds: Second-label thresholds of the curve.

    Returns:
        A table with schema :data:`~citylens.tables.AGREEMENT`, one row per (model, city
        or ``"all"``, θ, threshold).
    """
    ov = overlaps
    rows: dict[str, list] = {f.name: [] for f in AGREEMENT}
    if ov.num_rows:
        ids = ov["image_id"].to_pylist()
        counts = np.asarray(ov["class_pixels_in_mask"].to_pylist(), dtype=np.int64)
        labels = np.full((len(ids), 2), -1, np.int64)
        for i, iid in enumerate(ids):
            h = human[iid]
            labels[i, : len(h)] = h[:2]
        model = np.asarray(ov["model"].to_pylist())
        city = np.asarray(ov["city"].to_pylist())
        theta = ov["theta"].to_numpy()
        for m in sorted(set(model)):
            for t in sorted(set(theta[model == m])):
                base = (model == m) & (theta == t)
                for c in [*sorted(set(city[base])), "all"]:
                    sel = base & ((city == c) if c != "all" else True)
                    curve = agreement_curve(pick_labels(counts[sel]), labels[sel], thresholds)
                    for j, thr in enumerate(curve["threshold"]):
                        for key, value in (
                            ("model", m),
                            ("city", c),
                            ("theta", float(t)),
                            ("threshold", float(thr)),
                            ("n", curve["n"]),
                            ("empty", curve["empty"]),
                            ("strict", float(curve["strict"][j])),
                            ("lenient", float(curve["lenient"][j])),
                        ):
                            rows[key].append(value)
    return pa.table(rows, schema=AGREEMENT)


def resolve_annotations(
    annotations: list[Annotation], manifest: pa.Table
) -> tuple[dict[str, tuple[int, ...]], list[Annotation]]:
    """Match annotated images to manifest image ids.

    An annotation's ``image`` may be the image id, its URI, ``<city>/<file name>`` or a
    file name unique in the manifest.

    Returns:
        ``(image id -> class indices, annotations that match no image)``.
    """
    keys: dict[str, str | None] = {}
    for iid, uri, city in zip(
        manifest["image_id"].to_pylist(), manifest["uri"].to_pylist(), manifest["city"].to_pylist()
    ):
        name = posixpath.basename(uri)
        keys[iid] = keys[uri] = keys[f"{city}/{name}"] = iid
        keys[name] = None if name in keys and keys[name] != iid else iid  # None: ambiguous
    found, unmatched = {}, []
    for a in annotations:
        iid = keys.get(a.image)
        if iid is None:
            unmatched.append(a)
        else:
            found[iid] = a.labels
    return found, unmatched
