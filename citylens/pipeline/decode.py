"""Decoding manifest rows in Ray Data tasks: bad files are flagged, never dropped."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylens.data.images import load_batch

__all__ = ["decode_batch"]


def decode_batch(batch: pa.Table, size: int, cities: list[str], storage_options: dict) -> dict:
    """Decode a batch of manifest rows into uint8 images (bad files flagged, not dropped).

    Returns:
        numpy columns: ``image`` uint8 ``(B, 3, S, S)`` (zeros where decoding failed),
        ``label`` int64 city index, ``ok`` bool, ``image_id``, ``city``, ``uri``,
        ``error_kind``, ``error_message``.
    """
    uris = batch["uri"].to_pylist()
    images, ok_idx, errors = load_batch(uris, size, storage_options)
    n = len(uris)
    out = np.zeros((n, 3, size, size), np.uint8)
    ok = np.zeros(n, bool)
    if ok_idx:
        out[ok_idx] = images.numpy()
        ok[ok_idx] = True
    kind = np.array([None] * n, dtype=object)
    message = np.array([None] * n, dtype=object)
    for i, k, m in errors:
        kind[i], message[i] = k, m
    return {
        "image": out,
        "label": np.array([cities.index(c) for c in batch["city"].to_pylist()], np.int64),
        "ok": ok,
        "image_id": np.array(batch["image_id"].to_pylist(), dtype=object),
        "city": np.array(batch["city"].to_pylist(), dtype=object),
        "uri": np.array(uris, dtype=object),
        "error_kind": kind,
        "error_message": message,
    }
