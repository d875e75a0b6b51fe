"""Stage *overlap*: pixels per class inside each visual explanation.

Explanations × segments by image id, for every (image, model, θ), at the label map's
resolution.

A broadcast-index join: the driver maps every image id to the segment shard holding it
(ids only, a few MB for 150k images); one Ray task per explanation shard reads that
shard and the segment shards its images live in, counts, and writes its own output
shard. No shuffle, bounded memory per task, nothing large on the driver.
"""

from __future__ import annotations

import pyarrow as pa
import ray

from citylens.overlap import overlap_rows
from citylens.pipeline.committed import read_manifest
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.shards import companions, copy_file
from citylens.storage import Store, digest
from citylens.tables import ERRORS, METHOD_OVERLAPS, error_row, errors_table

__all__ = ["overlap_shard", "run_overlap"]

_EXPLAIN_COLS = ["image_id", "city", "model", "cam_h", "cam_w", "mask"]
_SEGMENT_COLS = ["image_id", "labels", "class_pixels"]


@ray.remote
def overlap_shard(
    store: Store,
    exp_rel: str,
    seg_rels: list[str],
    thetas: list[float],
    out_rel: str,
    methods: tuple[str, str] | None = None,
) -> tuple[int, int, list[dict]]:
    """Overlaps of one explanation shard; returns (explanations, rows, errors).

    ``methods`` = (its companion of ``explain.methods``' explanations, where their
    overlaps go); an image without a class map is recorded once, by its own explanation.
    """
    exp = store.read_table(exp_rel, columns=_EXPLAIN_COLS).to_pylist()
    wanted = {r["image_id"] for r in exp}
    segments = {}
    for rel in seg_rels:
        for r in store.read_table(rel, columns=_SEGMENT_COLS).to_pylist():
            if r["image_id"] in wanted:
                segments[r["image_id"]] = r
    table, missing = overlap_rows(exp, segments, thetas)
    store.write_table(out_rel, table)
    if methods is not None:  # explain.methods' explanations, of the same images
        store.write_table(methods[1], _method_overlaps(store, methods[0], segments, thetas))
    errors = [
        error_row(
            "overlap", "no_segments", f"{r['model']}: the image has no class map", r["image_id"]
        )
        for r in missing
    ]
    return len(exp), table.num_rows, errors


def _method_overlaps(store: Store, rel: str, segments: dict, thetas: list[float]) -> pa.Table:
    """METHOD_OVERLAPS of one companion shard of explanations by ``explain.methods``."""
    exp = store.read_table(rel, columns=[*_EXPLAIN_COLS, "method", "layer"]).to_pylist()
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in exp:
        groups.setdefault((r["method"], r["layer"]), []).append(r)
    parts = [METHOD_OVERLAPS.empty_table()]
    for (method, layer), rows in sorted(groups.items()):
        t, _ = overlap_rows(rows, segments, thetas)
        n = t.num_rows
        t = t.append_column("method", pa.array([method] * n, pa.string()))
        t = t.append_column("layer", pa.array([layer] * n, pa.string()))
        parts.append(t.select(METHOD_OVERLAPS.names).cast(METHOD_OVERLAPS))
    return pa.concat_tables(parts)


def run_overlap(ctx: Context) -> StageResult:
    """Pixels per class inside every explanation, at every θ.

    Consumes the committed explanation and segment shards. Writes
    ``overlap/<run>/data/*.parquet`` (OVERLAPS: one row per image, model and θ, one
    shard per explanation shard), ``errors/`` (explanations of images without a
    class map) and, for the explanations ``explain.methods`` adds, ``methods/*.parquet``
    (METHOD_OVERLAPS).
    """
    cfg, store = ctx.cfg, ctx.store
    up = ctx.upstream("explain", "segment")
    thetas = sorted(cfg.explain.thetas)
    key = ctx.key("overlap", up, {"thetas": thetas})
    if rec := ctx.up_to_date("overlap", key):
        return StageResult("overlap", "skipped", rec)
    folder, started = ctx.begin("overlap")
    exp_rec, seg_rec = store.record("explain"), store.record("segment")
    exp_files = store.files(f"{exp_rec['folder']}/data", ".parquet")
    seg_files = store.files(f"{seg_rec['folder']}/data", ".parquet")
    where: dict[str, str] = {}
    for rel in seg_files:
        for iid in store.read_table(rel, columns=["image_id"])["image_id"].to_pylist():
            where[iid] = rel
    ctx.progress(
        f"overlap: {exp_rec['counts']['rows']} explanations × {len(where)} class maps, θ = {thetas}"
    )
    extra = {r.rsplit("/", 1)[1]: r for r in companions(store, exp_rec["folder"])}
    made_with = _made_with(exp_rec, seg_rec, thetas)
    reuse = _reusable(ctx, made_with)
    refs, done = [], []
    for rel in exp_files:
        exp_ids = store.read_table(rel, columns=["image_id"])["image_id"]
        ids = set(exp_ids.to_pylist())
        needed = sorted({where[i] for i in ids if i in where})
        name = rel.rsplit("/", 1)[1]
        out = f"{folder}/data/{name}"
        methods = (extra[name], f"{folder}/methods/{name}") if name in extra else None
        if (rows := reuse(name, ids, methods is not None, where)) is not None:
            if methods is not None:  # the companion first, as overlap_shard writes them
                copy_file(store, f"{reuse.folder}/methods/{name}", methods[1])
            copy_file(store, f"{reuse.folder}/data/{name}", out)
            done.append((len(exp_ids), rows, []))
        else:
            if not refs:
                ctx.ray()  # only when a shard is to be made
            refs.append(overlap_shard.remote(store, rel, needed, thetas, out, methods))
    if done:
        ctx.progress(f"overlap: {len(done)} of {len(exp_files)} shards reused from the last run")
    n_exp = n_rows = 0
    errors: list[dict] = []
    for n, rows, errs in done + (ray.get(refs) if refs else []):
        n_exp += n
        n_rows += rows
        errors += errs
    if errors:  # an error row names its file: the manifest has it
        man = read_manifest(store, ["image_id", "uri"])
        uri_of = dict(zip(man["image_id"].to_pylist(), man["uri"].to_pylist()))
        errors = [{**e, "uri": uri_of.get(e["image_id"])} for e in errors]
    store.write_table(f"{folder}/errors/errors.parquet", errors_table(errors))
    counts = {
        "inputs": n_exp,
        "explanations": n_exp - len(errors),
        "rows": n_rows,
        "errors": len(errors),
    }
    if counts["inputs"] != exp_rec["counts"]["rows"]:
        raise RuntimeError(
            f"overlap: read {n_exp} explanations, explain wrote {exp_rec['counts']['rows']}"
        )
    counts["reused_shards"] = len(done)
    rec = ctx.finish(
        "overlap", key, folder, started, counts=counts, thetas=thetas, made_with=made_with
    )
    return StageResult("overlap", "ran", rec)


def _made_with(exp_rec: dict, seg_rec: dict, thetas: list[float]) -> str | None:
    """What an overlap shard depends on beside its images (None: cannot tell).

    The explanations' models and settings (explain's ``explained_with``), the
    segmenter's settings and θ.
    """
    if exp_rec.get("explained_with") is None or seg_rec.get("settings") is None:
        return None
    return digest([exp_rec["explained_with"], seg_rec["settings"], thetas])


class _Reuse:
    """Which of the previous run's output shards hold for an explanation shard now.

    An explanation shard's name is a hash of its images: one of the same name, from
    explanations made the same way (``made_with``) over the same class maps, has the
    same overlaps, unless one of its images had no class map then (an error, retried).
    """

    def __init__(self, store: Store, prev: dict | None, made_with: str | None):
        self.store = store
        ok = prev is not None and made_with is not None and prev.get("made_with") == made_with
        self.folder = prev["folder"] if ok else None
        self.names: set[str] = set()
        self.methods: set[str] = set()
        self.failed: set[str] = set()
        if self.folder is not None:
            self.names, self.methods = (_names(store, f"{self.folder}/{sub}") for sub in DIRS)
            bad = store.read_table(f"{self.folder}/errors", schema=ERRORS)
            self.failed = {i for i in bad["image_id"].to_pylist() if i is not None}

    def __call__(self, name: str, ids: set[str], methods: bool, where: dict) -> int | None:
        """Rows of the reusable output shard ``name``, or None when it must be made."""
        if name not in self.names or (methods and name not in self.methods):
            return None
        if ids & self.failed or any(i not in where for i in ids):
            return None
        return self.store.read_table(f"{self.folder}/data/{name}", columns=["image_id"]).num_rows


DIRS = ("data", "methods")


def _names(store: Store, folder: str) -> set[str]:
    return {rel.rsplit("/", 1)[1] for rel in store.files(folder, ".parquet")}


def _reusable(ctx: Context, made_with: str | None) -> _Reuse:
    prev = None if ctx.force else ctx.store.record("overlap")
    return _Reuse(ctx.store, prev, made_with)
