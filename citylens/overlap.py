"""Pixels per class inside visual explanations and in whole label maps."""

from __future__ import annotations

import numpy as np

__all__ = ["class_pixels", "class_pixels_in_masks"]


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
