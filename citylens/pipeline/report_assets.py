"""Images and masks the report needs: read only the few hundred rows it shows.

The report draws from the analysis tables; pictures of explanations additionally need
the images and the masks of a sample (mosaic, mask grid, galleries). This module reads
exactly those rows from the explanation shards and decodes those images, each once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.data.images import DecodeError, decode_rgb
from citylens.storage import Store, read_bytes

__all__ = ["ReportAssets"]


class ReportAssets:
    """Masks and decoded images for a set of (image id, model) pairs.

    Args:
        store: Study store.
        manifest: The manifest table (image_id -> uri).
        storage_options: fsspec options for reading images.
        size: Side the images are kept at (square, as the models see them).
    """

    def __init__(self, store: Store, manifest: pa.Table, storage_options: dict, size: int = 160):
        self.store, self.opts, self.size = store, storage_options, size
        self.uri = dict(zip(manifest["image_id"].to_pylist(), manifest["uri"].to_pylist()))
        self.masks: dict[tuple[str, str], np.ndarray] = {}
        self.images: dict[str, np.ndarray | None] = {}
        self.unreadable: dict[str, str] = {}  # image id -> why it is not in the pictures

    def load(self, pairs: set[tuple[str, str]]) -> None:
        """Read the masks of ``(image_id, model)`` pairs and decode their images."""
        from citylens.report.thumbs import square

        pairs = {p for p in pairs if p not in self.masks}
        if not pairs:
            return
        ids = pa.array(sorted({i for i, _ in pairs}), pa.string())
        folder = self.store.record("explain")["folder"]
        cols = ["image_id", "model", "cam_h", "cam_w", "mask"]
        for rel in self.store.files(f"{folder}/data", ".parquet"):
            t = self.store.read_table(rel, columns=cols)
            t = t.filter(pc.is_in(t["image_id"], value_set=ids))
            for r in t.to_pylist():
                if (r["image_id"], r["model"]) in pairs:
                    m = np.asarray(r["mask"], np.float32).reshape(r["cam_h"], r["cam_w"])
                    self.masks[(r["image_id"], r["model"])] = m
        for iid in ids.to_pylist():
            if iid in self.images:
                continue
            try:
                img = decode_rgb(read_bytes(self.uri[iid], self.opts), name=self.uri[iid])
                self.images[iid] = square(img, self.size)
            except (DecodeError, OSError, KeyError) as err:
                self.images[iid] = None  # gone since explain: left out of the pictures
                self.unreadable[iid] = f"{type(err).__name__}: {err}"

    def pair(self, image_id: str, model: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(image, mask)`` or None when either is missing."""
        img, mask = self.images.get(image_id), self.masks.get((image_id, model))
        return None if img is None or mask is None else (img, mask)
