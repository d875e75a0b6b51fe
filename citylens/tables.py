"""Arrow schemas of every table a study writes (the contracts of DESIGN.md).

All tables are Parquet files with these explicit schemas; ``image_id`` is a content
hash of the image bytes, so rows are keyed by what the image *is*, not where it lies.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "ERRORS",
    "EXPLANATIONS",
    "MANIFEST",
    "OVERLAPS",
    "SEGMENTS",
    "SPLITS",
    "errors_table",
]

SPLITS = ("train", "val", "test")

MANIFEST = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("place", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("label_uri", pa.string(), nullable=True),
    ]
)

EXPLANATIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # "<arch>-s<seed>"
        pa.field("arch", pa.string(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
        pa.field("target", pa.int16(), nullable=False),
        pa.field("pred", pa.int16(), nullable=False),
        pa.field("prob", pa.list_(pa.float32()), nullable=False),
        pa.field("cam_h", pa.int16(), nullable=False),
        pa.field("cam_w", pa.int16(), nullable=False),
        pa.field("mask", pa.list_(pa.float32()), nullable=False),  # mask_norm, row-major
        pa.field("empty", pa.bool_(), nullable=False),
        pa.field("d_cam", pa.list_(pa.float32()), nullable=False),
        pa.field("d_short", pa.list_(pa.float32()), nullable=False),
    ]
)

SEGMENTS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("segmenter", pa.string(), nullable=False),
        pa.field("seg_h", pa.int32(), nullable=False),
        pa.field("seg_w", pa.int32(), nullable=False),
        pa.field("labels", pa.binary(), nullable=False),  # PNG-encoded class map
        pa.field("class_pixels", pa.list_(pa.int64()), nullable=False),
    ]
)

OVERLAPS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("theta", pa.float32(), nullable=False),
        pa.field("mask_pixels", pa.int64(), nullable=False),
        pa.field("class_pixels_in_mask", pa.list_(pa.int64()), nullable=False),
        pa.field("class_pixels", pa.list_(pa.int64()), nullable=False),
    ]
)

ERRORS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=True),
        pa.field("uri", pa.string(), nullable=True),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)


def errors_table(rows: list[dict]) -> pa.Table:
    """An errors table from dicts with the ERRORS fields (missing ids become null)."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in ERRORS}
    return pa.table(cols, schema=ERRORS)
