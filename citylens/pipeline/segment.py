"""Stage *segment*: a class map for every test image, streamed to Parquet shards.

Same shape as *explain*: Ray Data feeds batches of test rows to a pool of actors, each
holding the study's segmenter; every actor writes its batch as one shard of the
segments table (PNG-encoded class map + pixels per class) and returns a summary.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.allocator import worker_runtime_env
from citylens.data.images import DecodeError, decode_rgb, encode_labels_png, load_labels
from citylens.overlap import class_pixels
from citylens.pipeline import cluster
from citylens.pipeline.committed import read_manifest
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.shards import reuse_earlier, run_sharded, summary, write_shard
from citylens.segment import SEGMENTERS, build_segmenter, vocabulary_of
from citylens.segment.model import weights_fingerprint
from citylens.storage import Store, digest, read_bytes
from citylens.tables import SEGMENTS, error_row

__all__ = ["SegmentWorker", "run_segment"]


class SegmentWorker:
    """Ray Data actor: holds the segmenter; labels and writes batches of test rows.

    Args:
        store: Study store.
        folder: Output folder of this stage run.
        backend, weights, classes: The segmenter (see SegmenterConfig); ``classes`` is
            the class-file text.
        storage_options: fsspec options for reading images and label maps.
        options: Backend options (``SegmenterConfig.options``).
    """

    def __init__(
        self,
        store: Store,
        folder: str,
        backend: str,
        weights: str | None,
        classes: str | None,
        storage_options: dict,
        options: dict | None = None,
    ) -> None:
        self.segmenter = build_segmenter(backend, weights, classes, **(options or {}))
        self.store, self.folder, self.opts = store, folder, storage_options

    def _input(self, row: dict) -> np.ndarray:
        if self.segmenter.input_kind == "labels":
            if not row["label_uri"]:
                raise DecodeError("no_labels", "no ground-truth label map for this image")
            return load_labels(read_bytes(row["label_uri"], self.opts))
        return decode_rgb(read_bytes(row["uri"], self.opts), name=row["uri"])

    def __call__(self, batch: pa.Table) -> dict:
        """Segment one batch of test rows and write its shard; returns its summary."""
        rows = batch.to_pylist()
        inputs, good, errors = [], [], []
        for row in rows:
            try:
                inputs.append(self._input(row))
                good.append(row)
            except DecodeError as err:
                errors.append((row, err.kind, str(err)))
            except OSError as err:
                errors.append((row, "unreadable", f"{type(err).__name__}: {err}"))
        maps = self.segmenter(inputs) if inputs else []
        k = len(self.segmenter.vocabulary)
        cols: dict[str, list] = {f.name: [] for f in SEGMENTS}
        for row, lab in zip(good, maps):
            try:
                counts = class_pixels(lab, k)
            except ValueError as err:
                errors.append((row, "bad_labels", str(err)))
                continue
            cols["image_id"].append(row["image_id"])
            cols["city"].append(row["city"])
            cols["segmenter"].append(self.segmenter.name)
            cols["seg_h"].append(int(lab.shape[0]))
            cols["seg_w"].append(int(lab.shape[1]))
            cols["labels"].append(encode_labels_png(lab))
            cols["class_pixels"].append(counts.tolist())
        err_rows = [
            error_row("segment", kind, msg, r["image_id"], r["label_uri"] or r["uri"])
            for r, kind, msg in errors
        ]
        table = pa.table(cols, schema=SEGMENTS)
        ids = [r["image_id"] for r in rows]
        shard = write_shard(self.store, self.folder, ids, table, err_rows)
        return summary(shard, table.num_rows, table.num_rows, len(err_rows))


def _segment_in_task(batch: pa.Table, **worker_args) -> dict:
    return SegmentWorker(**worker_args)(batch)


def _settings(ctx: Context) -> tuple[dict, str | None]:
    """The segment stage's settings (what changes a class map) and the class file's text."""
    seg, opts = ctx.cfg.segmenter, ctx.cfg.run.storage_options
    classes = read_bytes(seg.classes, opts).decode() if seg.classes else None
    settings = {
        "backend": seg.backend,
        "weights": seg.weights,
        "classes": digest(classes) if classes else None,
    }
    if SEGMENTERS[seg.backend].input_kind == "image":  # what changes a model's maps
        settings |= {
            "weights": weights_fingerprint(seg.weights, opts),
            "scales": list(seg.scales),
            "max_size": seg.max_size,
            "precision": seg.precision,
        }
    return settings, classes


def run_segment(ctx: Context) -> StageResult:
    """A class map for every test image.

    Consumes the manifest's test rows (images, or their ground-truth label maps).
    Writes ``segment/<run>/vocabulary.csv``, ``data/*.parquet`` (SEGMENTS: one row per
    image) and ``errors/``, resumably; class maps of an earlier run with the same
    segmenter are carried over (``reused``), so a study that grew segments only its new
    images.
    """
    cfg, store = ctx.cfg, ctx.store
    settings, classes = _settings(ctx)
    key = ctx.key("segment", ctx.upstream("ingest"), settings)
    if rec := ctx.up_to_date("segment", key):
        return StageResult("segment", "skipped", rec)
    manifest = read_manifest(store)
    test = manifest.filter(pc.equal(manifest["split"], "test")).select(
        ["image_id", "uri", "city", "label_uri"]
    )
    prev = store.record("segment")

    # A class map depends only on the image and the segmenter: when the study grew (new
    # images, a new city) and the segmenter is unchanged, earlier maps are reused.
    same = prev is not None and prev.get("settings") == digest(settings)
    ids = dict(zip(test["image_id"].to_pylist(), test["city"].to_pylist()))
    carry = reuse_earlier(ctx, "segment", ids, prev["folder"] if same else None, what="class maps")

    def prepare(folder: str, resumed: bool) -> dict:
        voc = vocabulary_of(cfg.segmenter.backend, classes)
        store.write_text(f"{folder}/vocabulary.csv", voc.to_csv())
        return carry(folder, resumed)

    return run_sharded(
        ctx,
        "segment",
        key,
        test,
        lambda folder, todo: _segment(ctx, folder, todo, classes),
        prepare=prepare,
        batch_size=_batch_size(cfg),
        processed="segmented",
        segmenter=cfg.segmenter.backend,
        settings=digest(settings),
    )


def _batch_size(cfg) -> int:
    seg = cfg.segmenter
    labels = SEGMENTERS[seg.backend].input_kind == "labels"
    return cfg.explain.batch_size if labels else seg.batch_size


def _segment(ctx: Context, folder: str, test: pa.Table, classes: str | None) -> ray.data.Dataset:
    """Segment ``test``'s images on Ray into ``folder``.

    Returns:
        The dataset of the shards' summaries (lazy: iterating it does the work).
    """
    cfg, store, seg = ctx.cfg, ctx.store, ctx.cfg.segmenter
    bs = _batch_size(cfg)
    ds = cluster.blocks(test, bs)
    worker_args = {
        "store": store,
        "folder": folder,
        "backend": seg.backend,
        "weights": seg.weights,
        "classes": classes,
        "storage_options": cfg.run.storage_options,
        "options": seg.options(cfg.run.storage_options),
    }
    if SEGMENTERS[seg.backend].input_kind == "labels":
        # Nothing to hold in memory: plain tasks, as many as there are CPUs.
        ctx.progress(f"segment: {test.num_rows} test images with '{seg.backend}' (tasks)")
        ds = ds.map_batches(
            _segment_in_task, fn_kwargs=worker_args, batch_size=bs, batch_format="pyarrow"
        )
    else:
        n_gpu = cluster.gpus(cfg)
        n_actors = cluster.actor_count(cfg)
        ctx.progress(
            f"segment: {test.num_rows} test images with '{seg.backend}', {n_actors} actor(s)"
        )
        ds = ds.map_batches(
            SegmentWorker,
            fn_constructor_kwargs=worker_args,
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            batch_size=bs,
            batch_format="pyarrow",
            num_gpus=1 if n_gpu else 0,
            num_cpus=0 if n_gpu else 1,
            runtime_env=worker_runtime_env(),  # see citylens.allocator
        )
    return ds
