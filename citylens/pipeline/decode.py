"""Decoding manifest rows in Ray Data tasks: bad files are flagged, never dropped."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylens.data.images import DecodeError, decode_chw, device_decodable, failure_of, resize_chw
from citylens.storage import read_bytes

__all__ = ["decode_batch"]


def decode_batch(
    batch: pa.Table,
    size: int,
    cities: list[str],
    storage_options: dict,
    pass_jpegs: bool = False,
) -> dict:
    """Decode a batch of manifest rows into uint8 images (bad files flagged, not dropped).

    Args:
        batch: Manifest rows (``uri``, ``city``, ``image_id``).
        size: Square side of the model input.
        cities: City names; ``label`` is the index of the row's city.
        storage_options: fsspec options for remote URIs.
        pass_jpegs: Leave JPEGs a GPU decodes exactly
            (:func:`~citylens.data.images.device_decodable`) encoded, in ``jpeg``, for
            the model actor to decode on its device; decode everything else here.

    Returns:
        numpy columns: ``image`` uint8 ``(B, 3, S, S)`` (zeros where decoding failed or
        was passed on), ``label`` int64 city index, ``ok`` bool, ``image_id``, ``city``,
        ``uri``, ``error_kind``, ``error_message``; with ``pass_jpegs``, ``jpeg`` (bytes,
        or None where ``image`` holds the pixels).
    """
    uris = batch["uri"].to_pylist()
    n = len(uris)
    out = np.zeros((n, 3, size, size), np.uint8)
    ok = np.zeros(n, bool)
    jpeg = np.array([None] * n, dtype=object)
    kind = np.array([None] * n, dtype=object)
    message = np.array([None] * n, dtype=object)
    for i, uri in enumerate(uris):
        try:
            data = read_bytes(uri, storage_options)
            if pass_jpegs and device_decodable(data, name=uri):
                jpeg[i] = data
            else:
                out[i] = resize_chw(decode_chw(data, name=uri), size).numpy()
            ok[i] = True
        except (DecodeError, OSError) as err:
            kind[i], message[i] = failure_of(err)
    cols = {
        "image": out,
        "label": np.array([cities.index(c) for c in batch["city"].to_pylist()], np.int64),
        "ok": ok,
        "image_id": np.array(batch["image_id"].to_pylist(), dtype=object),
        "city": np.array(batch["city"].to_pylist(), dtype=object),
        "uri": np.array(uris, dtype=object),
        "error_kind": kind,
        "error_message": message,
    }
    if pass_jpegs:
        cols["jpeg"] = jpeg
    return cols
