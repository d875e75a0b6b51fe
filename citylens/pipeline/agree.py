"""Agreement with human annotation over a study's store.

Shared by the *analyze* stage and the ``citylens agree`` command (not a stage itself).

Reads the overlaps table (the segmenter's pixels per class inside each explanation),
matches the annotated images to the manifest, and reduces to strict / lenient accuracy
curves per model, city and θ with :mod:`citylens.analysis.agreement`. Also derives
"human" labels from ground-truth label maps, so the curve can be checked on data with
ground truth (the synthetic corpus).
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.analysis.agreement import (
    DEFAULT_THRESHOLDS,
    Annotation,
    agreement_table,
    derive_annotations,
    parse_annotations,
    resolve_annotations,
)
from citylens.data.images import load_labels
from citylens.overlap import overlap_rows
from citylens.pipeline.committed import committed, read_manifest, read_overlaps, read_vocabulary
from citylens.storage import Store, read_bytes

__all__ = ["derived_annotations_csv", "study_agreement"]


def study_agreement(
    store: Store, annotations_text: str, thresholds=DEFAULT_THRESHOLDS, source: str = "annotations"
) -> tuple[pa.Table, list[Annotation]]:
    """Agreement curves of a finished study against an annotation CSV.

    Returns:
        ``(table with schema AGREEMENT, annotations matching no image)``; one row per
        (model, city or "all", θ, threshold). Annotated images outside the test split
        have no explanation and add nothing.
    """
    vocabulary = read_vocabulary(store)
    annotations = parse_annotations(annotations_text, vocabulary, source)
    manifest = read_manifest(store)
    human, unmatched = resolve_annotations(annotations, manifest)
    ov = read_overlaps(
        store, ["image_id", "city", "model", "theta", "class_pixels_in_mask"], sorted(human)
    )
    return agreement_table(ov, human, thresholds), unmatched


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
        CSV text with columns ``image`` (image id), ``label1``, ``label2`` (class names).
    """
    vocabulary = read_vocabulary(store)
    manifest = read_manifest(store)
    label_uri = dict(zip(manifest["image_id"].to_pylist(), manifest["label_uri"].to_pylist()))
    folder = committed(store, "explain")["folder"]
    cols = ["image_id", "city", "model", "cam_h", "cam_w", "mask"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["image", "label1", "label2"])
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
                w.writerow([iid, vocabulary.names[a], vocabulary.names[b] if b >= 0 else ""])
                written += 1
        if limit is not None and written >= limit:
            break
    if written == 0:
        raise RuntimeError(
            f"no explanation of model {model!r} has a ground-truth label map to derive from"
        )
    return out.getvalue()
