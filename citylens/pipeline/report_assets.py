"""Images and masks the report needs: read only the few hundred rows it shows.

The report draws from the analysis tables; pictures of explanations additionally need
the images and the masks of a sample (mosaic, mask grid, galleries). This module reads
exactly those rows from the explanation shards and decodes those images, each once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.data.images import DecodeError, decode_rgb, load_labels
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
        self.labels: dict[str, np.ndarray] = {}  # image id -> class map, as segment wrote it
        self.images: dict[str, np.ndarray | None] = {}
        self.unreadable: dict[str, str] = {}  # image id -> why it is not in the pictures

    def load(self, pairs: set[tuple[str, str]]) -> None:
        """Read the masks of ``(image_id, model)`` pairs and decode their images."""
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
        self._decode(ids.to_pylist())

    def _decode(self, ids: list[str]) -> None:
        """Decode each image once, at the pictures' size (an unreadable one: None, why)."""
        from citylens.report.thumbs import square

        for iid in ids:
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

    def load_labels(self, ids: set[str]) -> None:
        """Read the class maps of ``ids`` (and decode their images) for the removal pictures."""
        want = pa.array(sorted(i for i in ids if i not in self.labels), pa.string())
        if not len(want):
            return
        folder = self.store.record("segment")["folder"]
        for rel in self.store.files(f"{folder}/data", ".parquet"):
            t = self.store.read_table(rel, columns=["image_id", "labels"])
            for r in t.filter(pc.is_in(t["image_id"], value_set=want)).to_pylist():
                self.labels[r["image_id"]] = load_labels(r["labels"])
        self._decode(want.to_pylist())

    def removed(self, image_id: str, cls: int, how: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(image, image with class cls filled by how)``, both ``(S, S, 3)`` uint8, or None."""
        import torch

        from citylens.fills import fill

        img, lab = self.images.get(image_id), self.labels.get(image_id)
        if img is None or lab is None:
            return None
        at = torch.from_numpy(lab.astype(np.float32))[None, None]
        at = torch.nn.functional.interpolate(at, size=img.shape[:2], mode="nearest-exact")
        mask = at[0].long() == cls
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]  # a writable copy
        return img, fill(x, mask, how)[0].permute(1, 2, 0).numpy()
