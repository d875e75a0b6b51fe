"""Agreement with human annotation over a study's store (``citylens agree``).

Reads the overlaps table (the segmenter's pixels per class inside each explanation),
matches the annotated images to the manifest, and reduces to strict / lenient accuracy
curves per model, city and θ with :mod:`citylens.analysis.agreement`. Also derives
"human" labels from ground-truth label maps, so the curve can be checked on data with
ground truth (the synthetic corpus).
"""

from __future__ import annotations

import csv
import io
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.analysis.agreement import (
    DEFAULT_THRESHOLDS,
    Annotation,
    agreement_curve,
    derive_annotations,
    parse_annotations,
    pick_labels,
)
from citylens.data.images import load_labels, read_bytes
from citylens.pipeline.overlap import overlap_rows
from citylens.storage import Store
from citylens.vocabulary import Vocabulary

__all__ = [
    "AGREEMENT",
    "derived_annotations_csv",
    "resolve_annotations",
    "study_agreement",
    "study_vocabulary",
]

AGREEMENT = pa.schema(
    [
        ("model", pa.string()),
        ("city", pa.string()),  # a city, or "all"
        ("theta", pa.float32()),
        ("threshold", pa.float64()),
        ("n", pa.int64()),
        ("empty", pa.int64()),
        ("strict", pa.float64()),
        ("lenient", pa.float64()),
    ]
)


def _committed(store: Store, stage: str) -> dict:
    rec = store.record(stage)
    if rec is None:
        raise RuntimeError(f"the study at {store.url()} has no '{stage}' stage yet; run it first")
    return rec


def study_vocabulary(store: Store) -> Vocabulary:
    """The segment stage's vocabulary."""
    rel = f"{_committed(store, 'segment')['folder']}/vocabulary.csv"
    return Vocabulary.from_csv(store.read_bytes(rel).decode(), "segments")


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


def _overlaps_of(store: Store, image_ids: list[str]) -> pa.Table:
    folder = _committed(store, "overlap")["folder"]
    wanted = pa.array(image_ids, pa.string())
    cols = ["image_id", "city", "model", "theta", "class_pixels_in_mask"]
    parts = []
    for rel in store.files(f"{folder}/data", ".parquet"):
        t = store.read_table(rel, columns=cols)
        parts.append(t.filter(pc.is_in(t["image_id"], value_set=wanted)))
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in cols})


def study_agreement(
    store: Store, annotations_text: str, thresholds=DEFAULT_THRESHOLDS, source: str = "annotations"
) -> tuple[pa.Table, list[Annotation]]:
    """Agreement curves of a finished study against an annotation CSV.

    Returns:
        ``(table with schema AGREEMENT, annotations matching no image)``; one row per
        (model, city or "all", θ, threshold). Annotated images outside the test split
        have no explanation and add nothing.
    """
    vocabulary = study_vocabulary(store)
    annotations = parse_annotations(annotations_text, vocabulary, source)
    manifest = store.read_table(f"{_committed(store, 'ingest')['folder']}/manifest.parquet")
    human, unmatched = resolve_annotations(annotations, manifest)
    ov = _overlaps_of(store, sorted(human))
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
    return pa.table(rows, schema=AGREEMENT), unmatched


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
    vocabulary = study_vocabulary(store)
    manifest = store.read_table(f"{_committed(store, 'ingest')['folder']}/manifest.parquet")
    label_uri = dict(zip(manifest["image_id"].to_pylist(), manifest["label_uri"].to_pylist()))
    folder = _committed(store, "explain")["folder"]
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
