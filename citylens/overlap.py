"""Pixels per class inside visual explanations and in whole label maps.

These make the overlaps table's rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylens.data.images import load_labels
from citylens.masks import upsample_masks
from citylens.tables import OVERLAPS

__all__ = ["class_pixels", "class_pixels_in_masks", "overlap_rows"]


def class_pixels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel count of each class in a label map.

    Args:
        labels: ``(H, W)`` integer class map with values in ``[0, num_classes)``.
        num_classes: Vocabulary size ``C`` (including ``other`` at 0).

    Returns:
        int64 ``(C,)`` counts N_p.
    """
    flat = np.asarray(labels).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
        raise ValueError(
            f"label map has class {int(flat.max())} outside the vocabulary of {num_classes}"
        )
    return np.bincount(flat, minlength=num_classes).astype(np.int64)


def class_pixels_in_masks(
    labels: np.ndarray, explanations: np.ndarray, num_classes: int
) -> np.ndarray:
    """Pixel count of each class inside each of several explanations of one image.

    Args:
        labels: ``(H, W)`` integer class map.
        explanations: ``(N, H, W)`` bool explanations on the label map's grid (e.g. one
            per model × θ).
        num_classes: Vocabulary size ``C``.

    Returns:
        int64 ``(N, C)`` counts M_p; row sums equal each explanation's pixel count.
    """
    lab = np.asarray(labels).astype(np.int64, copy=False)
    exp = np.asarray(explanations, dtype=bool)
    if exp.ndim != 3 or exp.shape[1:] != lab.shape:
        raise ValueError(f"explanations of shape {exp.shape} do not match label map {lab.shape}")
    n = exp.shape[0]
    idx, ys, xs = np.nonzero(exp)
    keys = idx * num_classes + lab[ys, xs]
    return np.bincount(keys, minlength=n * num_classes).reshape(n, num_classes)


def overlap_rows(
    explanations: list[dict], segments: dict[str, dict], thetas: list[float]
) -> tuple[pa.Table, list[dict]]:
    """Overlap rows for explanation rows whose image has a class map.

    Args:
        explanations: rows with ``image_id, city, model, cam_h, cam_w, mask``.
        segments: image id -> row with ``labels`` (PNG) and ``class_pixels``.
        thetas: thresholds θ.

    Returns:
        ``(table with schema OVERLAPS, explanation rows without a class map)``.
    """
    cols: dict[str, list] = {f.name: [] for f in OVERLAPS}
    missing = []
    decoded: dict[str, np.ndarray] = {}
    for row in explanations:
        iid = row["image_id"]
        seg = segments.get(iid)
        if seg is None:
            missing.append(row)
            continue
        if iid not in decoded:
            decoded[iid] = load_labels(seg["labels"])
        labels = decoded[iid]
        mask = np.asarray(row["mask"], np.float32).reshape(row["cam_h"], row["cam_w"])
        up = upsample_masks(mask, labels.shape).numpy()  # once, whatever the number of θ
        exps = np.stack([up >= t for t in thetas])
        inside = class_pixels_in_masks(labels, exps, len(seg["class_pixels"]))
        for theta, counts, exp in zip(thetas, inside, exps):
            cols["image_id"].append(iid)
            cols["city"].append(row["city"])
            cols["model"].append(row["model"])
            cols["theta"].append(float(theta))
            cols["mask_pixels"].append(int(exp.sum()))
            cols["class_pixels_in_mask"].append(counts.tolist())
            cols["class_pixels"].append(seg["class_pixels"])
    return pa.table(cols, schema=OVERLAPS), missing
