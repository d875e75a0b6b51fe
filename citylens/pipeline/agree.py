"""Agreement with human annotation over a study's store.

Shared by the *analyze* stage and the ``citylens agree`` command (not a stage itself).

Reads the overlaps table (the segmenter's pixels per class inside each explanation),
matches the annotated explanations to it, and reduces to strict / lenient accuracy
curves per annotator, model, city and θ with :mod:`citylens.analysis.agreement`, and to
every pair of annotators' κ with :mod:`citylens.analysis.annotators`. Also derives
"human" labels from ground-truth label maps, so the curve can be checked on data with
ground truth (the synthetic corpus).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.analysis.agreement import DEFAULT_THRESHOLDS, agreement_table, derive_annotations
from citylens.analysis.annotations import (
    Annotation,
    match_annotations,
    parse_annotations,
    resolve_annotations,
)
from citylens.analysis.annotators import annotator_table
from citylens.data.images import load_labels
from citylens.overlap import overlap_rows
from citylens.pipeline.committed import committed, read_manifest, read_overlaps, read_vocabulary
from citylens.storage import Store, read_bytes
from citylens.tables import ANNOTATED
from citylens.vocabulary import Vocabulary

__all__ = ["Agreement", "derived_annotations_csv", "study_agreement", "study_vocabulary"]


def study_vocabulary(store: Store, cfg) -> Vocabulary:
    """The classes a study's explanations are labelled with, with their synonyms.

    The committed segment stage's vocabulary, or (before it ran) the one the study's
    segmenter settings name. A committed vocabulary file keeps names only; where its
    names are the settings' vocabulary's, that one's synonyms come with it.
    """
    from citylens.segment import vocabulary_of

    seg = cfg.segmenter
    classes = read_bytes(seg.classes, cfg.run.storage_options).decode() if seg.classes else None
    configured = vocabulary_of(seg.backend, classes)
    if store.record("segment") is None:
        return configured
    used = read_vocabulary(store)
    if not used.synonyms and used.names == configured.names:
        return replace(used, synonyms=configured.synonyms)
    return used


@dataclass(frozen=True)
class Agreement:
    """What a study's annotations say.

    Attributes:
        curves: The segmenter against each annotator (schema AGREEMENT; empty without
            a committed overlap stage).
        annotated: Each annotation beside the segmenter's picks (schema ANNOTATED).
        annotators: Every pair of annotators' κ (schema ANNOTATORS).
        unmatched: Annotations that name no image of the study.
        unexplained: Annotations of an image of the study that match none of its
            explanations with segmenter labels (a train image, another model, a θ the
            study has no overlaps at; all of them when it has no segmenter yet).
        annotations: The annotations that name an image (image ids).
    """

    curves: pa.Table
    annotated: pa.Table
    annotators: pa.Table
    unmatched: list[Annotation]
    unexplained: list[Annotation]
    annotations: list[Annotation]


def study_agreement(
    store: Store,
    files: list[tuple[str, str]],
    vocabulary: Vocabulary,
    thresholds=DEFAULT_THRESHOLDS,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> Agreement:
    """Agreement curves and the annotators' κ of a study against annotation CSVs.

    Args:
        store: The study's store.
        files: ``(name, CSV text)`` of each annotation file (one per annotator, or
            several annotators in one file with an ``annotator`` column).
        vocabulary: The classes the labels name (:func:`study_vocabulary`).
        thresholds: Second-label thresholds of the curves.
        n_boot: Place resamples of the κ intervals (0: none).
        seed: Their seed.
        ci: Their coverage.

    Returns:
        :class:`Agreement`. Annotated images outside the test split have no explanation
        and add no curve row.

    Raises:
        ValueError: a bad file (naming it, the line and the field), or one person's two
            answers for one explanation.
    """
    parsed = [a for name, text in files for a in parse_annotations(text, vocabulary, name)]
    manifest = read_manifest(store, ["image_id", "uri", "city", "place"])
    annotations, unmatched = resolve_annotations(parsed, manifest)
    ids = sorted({a.image for a in annotations})
    if store.record("overlap") is not None:
        cols = ["image_id", "city", "model", "theta", "class_pixels_in_mask"]
        annotated, unexplained = match_annotations(annotations, read_overlaps(store, cols, ids))
    else:
        annotated, unexplained = ANNOTATED.empty_table(), list(annotations)
    place_of = {
        i: (c, p)
        for i, c, p in zip(
            manifest["image_id"].to_pylist(),
            manifest["city"].to_pylist(),
            manifest["place"].to_pylist(),
        )
    }
    return Agreement(
        curves=agreement_table(annotated, thresholds),
        annotated=annotated,
        annotators=annotator_table(annotations, place_of, n_boot, seed, ci),
        unmatched=unmatched,
        unexplained=unexplained,
        annotations=annotations,
    )


def derived_annotations_csv(
    store: Store,
    model: str,
    theta: float,
    limit: int | None = None,
    similar: float = 0.5,
    storage_options: dict | None = None,
) -> str:
    """Simulated human annotation of one model's explanations from ground truth.

    For each test image with a ground-truth label map (``label_uri`` in the manifest),
    the explanation of ``model`` at ``theta`` is laid over the label map and
    :func:`~citylens.analysis.agreement.derive_annotations` names one or two classes.

    Returns:
        CSV text with columns ``image`` (image id), ``label1``, ``label2`` (class names),
        ``model`` and ``theta`` (the explanation the labels are of).
    """
    vocabulary = read_vocabulary(store)
    manifest = read_manifest(store)
    label_uri = dict(zip(manifest["image_id"].to_pylist(), manifest["label_uri"].to_pylist()))
    folder = committed(store, "explain")["folder"]
    cols = ["image_id", "city", "model", "cam_h", "cam_w", "mask"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["image", "label1", "label2", "model", "theta"])
    written = 0
    for rel in store.files(f"{folder}/data", ".parquet"):
        t = store.read_table(rel, columns=cols)
        exp = [
            r
            for r in t.filter(pc.equal(t["model"], model)).to_pylist()
            if label_uri.get(r["image_id"])
        ]
        if limit is not None:
            exp = exp[: max(0, limit - written)]
        segments = {}
        for r in exp:
            data = read_bytes(label_uri[r["image_id"]], storage_options)
            top = int(load_labels(data).max(initial=0))
            if top >= len(vocabulary):
                raise ValueError(
                    f"{label_uri[r['image_id']]}: class {top} is outside the study's "
                    f"vocabulary of {len(vocabulary) - 1} classes"
                )
            segments[r["image_id"]] = {"labels": data, "class_pixels": [0] * len(vocabulary)}
        table, _ = overlap_rows(exp, segments, [theta])
        counts = np.asarray(table["class_pixels_in_mask"].to_pylist(), dtype=np.int64)
        if counts.size:
            for iid, (a, b) in zip(
                table["image_id"].to_pylist(), derive_annotations(counts, similar)
            ):
                if a < 0:
                    continue
                second = vocabulary.names[b] if b >= 0 else ""
                w.writerow([iid, vocabulary.names[a], second, model, theta])
                written += 1
        if limit is not None and written >= limit:
            break
    if written == 0:
        raise RuntimeError(
            f"no explanation of model {model!r} has a ground-truth label map to derive from"
        )
    return out.getvalue()
