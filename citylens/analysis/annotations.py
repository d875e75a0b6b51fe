"""Human annotations of explanations: reading them, and matching each to its explanation.

A person names the one or two objects that dominate a visual explanation (thesis §4.3.3),
or answers "none / unclear". An annotation CSV (what ``citylens annotate-page``'s page
exports, or one made by hand) has the columns ``image, label1[, label2]`` and, optionally,
``model, theta, annotator, seconds_spent``:

- ``image``: an image id, URI, ``<city>/<file name>`` or a file name unique in the study;
- ``label1``, ``label2``: class names of the study's vocabulary (case-insensitive, any of
  a class's synonyms) or class indices; ``label1`` = ``none`` for "none / unclear";
- ``model``, ``theta``: whose explanation, at which θ, the person looked at. Without them
  the labels stand for the image's explanation by every model at every θ (an annotation
  made without the page);
- ``annotator``: who (default: the file's name without its extension);
- ``seconds_spent``: how long they took.

Matching (:func:`match_annotations`) turns each annotation into rows of the
:data:`~citylens.tables.ANNOTATED` table beside the segmenter's picks inside the same
explanation; the agreement curves and the annotators' κ are computed from those rows.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from citylens.analysis.agreement import pick_labels
from citylens.tables import ANNOTATED
from citylens.vocabulary import Vocabulary

__all__ = [
    "NONE_LABEL",
    "Annotation",
    "annotation_key",
    "class_lookup",
    "label_tokens",
    "match_annotations",
    "parse_annotations",
    "resolve_annotations",
    "theta_key",
]

NONE_LABEL = "none"  # label1 of a "none / unclear" answer (no class of ADE20K is named so)
_THETA_DIGITS = 4  # θ is matched to the explanations' θ at this many decimals


@dataclass(frozen=True)
class Annotation:
    """One person's answer for one explanation.

    Attributes:
        image: The image as the CSV names it (an image id once resolved).
        labels: One or two class indices, the main object first; ``()`` for "none /
            unclear".
        model: Whose explanation (None: every model's).
        theta: At which θ (None: every θ).
        annotator: Who answered.
        seconds: Seconds spent (None: not recorded).
        where: ``<file>, line <n>`` for messages.
    """

    image: str
    labels: tuple[int, ...]
    model: str | None = None
    theta: float | None = None
    annotator: str = ""
    seconds: float | None = None
    where: str = ""


def theta_key(theta: float) -> float:
    """θ as annotations and explanations are matched on.

    The float32 the tables store, rounded to 4 decimals: a θ from the study's settings,
    a page or a CSV meets the overlaps' float32 θ whichever way it was written.
    """
    return round(float(np.float32(theta)), _THETA_DIGITS)


def annotation_key(a: Annotation) -> tuple:
    """``(annotator, image, model, θ key)``: one answer per person and explanation."""
    theta = None if a.theta is None else theta_key(a.theta)
    return (a.annotator, a.image, a.model, theta)


def class_lookup(vocabulary: Vocabulary) -> dict[str, int | tuple[int, ...]]:
    """Lower-cased names and synonyms -> class index.

    A name wins over another class's synonym. A word that names several classes (ADE20K
    has two ``screen``), or is a synonym of several and the name of none, maps to all of
    them: reading it is refused, asking for the class index.
    """
    out: dict[str, set[int]] = {}
    for k, aliases in enumerate(vocabulary.synonyms):
        for alias in aliases:
            out.setdefault(alias.lower(), set()).add(k)
    names: dict[str, set[int]] = {}
    for k, n in enumerate(vocabulary.names):
        if k > 0:
            names.setdefault(n.lower(), set()).add(k)
    out.update(names)
    out.pop("other", None)
    return {w: (min(ks) if len(ks) == 1 else tuple(sorted(ks))) for w, ks in out.items()}


def label_tokens(vocabulary: Vocabulary) -> list[str]:
    """How each class is written in an annotation CSV.

    Its name, or its index where another class has the same name, so that every token
    reads back as its class.
    """
    lookup = class_lookup(vocabulary)
    return [
        n if isinstance(lookup.get(n.lower()), int) else str(k)
        for k, n in enumerate(vocabulary.names)
    ]


def _number(raw: str, where: str, field: str) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{where}, {field}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}, {field}: {raw!r} must be a finite number ≥ 0")
    return value


def parse_annotations(
    text: str, vocabulary: Vocabulary, source: str = "annotations", annotator: str | None = None
) -> list[Annotation]:
    """Read an annotation CSV (columns in the module docstring).

    Args:
        text: The CSV's text.
        vocabulary: The study's classes.
        source: The file's name, for messages (and the default annotator).
        annotator: Who answered, where the CSV has no ``annotator`` value (default: the
            file's name without its folder and extension).

    Returns:
        One :class:`Annotation` per row, in file order.

    Raises:
        ValueError: naming the file, line and field of the first bad entry.
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
    default = annotator or posixpath.splitext(posixpath.basename(source.replace("\\", "/")))[0]
    by_name = class_lookup(vocabulary)

    def cell(row: dict, col: str) -> str:
        return (row.get(fields.get(col, ""), "") or "").strip()

    out = []
    for line, row in enumerate(rows, start=2):
        where = f"{source}, line {line}"
        labels: list[int] = []
        first = cell(row, "label1")
        if first.lower() == NONE_LABEL:
            if cell(row, "label2"):
                raise ValueError(f"{where}, label2: must be empty when label1 is {NONE_LABEL!r}")
        else:
            for col in ("label1", "label2"):
                raw = cell(row, col)
                if not raw:
                    continue
                idx = int(raw) if raw.isdigit() else by_name.get(raw.lower())
                if isinstance(idx, tuple):
                    raise ValueError(
                        f"{where}, {col}: {raw!r} names classes {', '.join(map(str, idx))} "
                        f"of {vocabulary.name!r}: write the class index instead"
                    )
                if idx is None or not 0 < idx < len(vocabulary):
                    raise ValueError(
                        f"{where}, {col}: {raw!r} is not a class of {vocabulary.name!r}"
                    )
                labels.append(idx)
            if len(labels) == 2 and labels[0] == labels[1]:
                raise ValueError(f"{where}: label2 repeats label1 ({first!r})")
        image = cell(row, "image")
        if not image or not (labels or first.lower() == NONE_LABEL):
            raise ValueError(
                f"{where}: needs an image and label1 (a class, or {NONE_LABEL!r} for "
                "none / unclear)"
            )
        out.append(
            Annotation(
                image=image,
                labels=tuple(labels),
                model=cell(row, "model") or None,
                theta=_number(cell(row, "theta"), where, "theta"),
                annotator=cell(row, "annotator") or default,
                seconds=_number(cell(row, "seconds_spent"), where, "seconds_spent"),
                where=where,
            )
        )
    return out


def resolve_annotations(
    annotations: list[Annotation], manifest: pa.Table
) -> tuple[list[Annotation], list[Annotation]]:
    """Name each annotated image by its manifest image id.

    An annotation's ``image`` may be the image id, its URI, ``<city>/<file name>`` or a
    file name unique in the manifest.

    Returns:
        ``(annotations with image ids, annotations that match no image)``.

    Raises:
        ValueError: one person answered for one explanation twice (naming both lines).
    """
    keys: dict[str, str | None] = {}
    for iid, uri, city in zip(
        manifest["image_id"].to_pylist(), manifest["uri"].to_pylist(), manifest["city"].to_pylist()
    ):
        name = posixpath.basename(uri)
        keys[iid] = keys[uri] = keys[f"{city}/{name}"] = iid
        keys[name] = None if name in keys and keys[name] != iid else iid  # None: ambiguous
    found, unmatched, seen = [], [], {}
    for a in annotations:
        iid = keys.get(a.image)
        if iid is None:
            unmatched.append(a)
            continue
        a = replace(a, image=iid)
        key = annotation_key(a)
        if key in seen:
            raise ValueError(
                f"{a.where}: {a.annotator!r} already answered for this explanation at "
                f"{seen[key]} (one answer per person and explanation; give each file once)"
            )
        seen[key] = a.where
        found.append(a)
    return found, unmatched


def match_annotations(
    annotations: list[Annotation], overlaps: pa.Table
) -> tuple[pa.Table, list[Annotation]]:
    """Each resolved annotation beside the segmenter's picks in the explanation it labels.

    Args:
        annotations: Resolved annotations (:func:`resolve_annotations`).
        overlaps: Overlap rows ``image_id, city, model, theta, class_pixels_in_mask`` of
            the annotated images. An annotation without a model or θ matches each of the
            image's rows; one whose explanation has no row matches nothing.

    Returns:
        ``(ANNOTATED rows, one per (annotation, explanation); the annotations that
        match no explanation)`` — e.g. of a train image, another model, or a θ the
        study has no overlaps at.
    """
    by_image: dict[str, list[int]] = {}
    for i, iid in enumerate(overlaps["image_id"].to_pylist()):
        by_image.setdefault(iid, []).append(i)
    models = overlaps["model"].to_pylist()
    thetas = [theta_key(t) for t in overlaps["theta"].to_numpy()]
    rows, which, unexplained = [], [], []
    for a in annotations:
        theta = None if a.theta is None else theta_key(a.theta)
        found = [
            i
            for i in by_image.get(a.image, [])
            if (a.model is None or models[i] == a.model) and (theta is None or thetas[i] == theta)
        ]
        rows += [a] * len(found)
        which += found
        if not found:
            unexplained.append(a)
    take = overlaps.take(pa.array(which, pa.int64()))
    counts = take["class_pixels_in_mask"].to_pylist()
    width = max((len(c) for c in counts), default=2)
    matrix = np.zeros((len(counts), max(width, 2)), np.int64)
    for i, c in enumerate(counts):
        matrix[i, : len(c)] = c
    picked = pick_labels(matrix)
    labels = np.full((len(rows), 2), -1, np.int32)
    for i, a in enumerate(rows):
        labels[i, : len(a.labels)] = a.labels[:2]
    table = pa.table(
        {
            "annotator": [a.annotator for a in rows],
            "image_id": take["image_id"],
            "city": take["city"],
            "model": take["model"],
            "theta": take["theta"].cast(pa.float32()),
            "label1": labels[:, 0],
            "label2": labels[:, 1],
            "seconds": pa.array([a.seconds for a in rows], pa.float64()),
            "top1": picked.top1.astype(np.int32),
            "top2": picked.top2.astype(np.int32),
            "ratio": picked.ratio,
        },
        schema=ANNOTATED,
    )
    return table, unexplained
