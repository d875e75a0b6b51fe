"""Stage *ingest*: list every city's images, hash and probe them in parallel -> manifest.

A city whose listing (paths, sizes, versions) and settings are unchanged reuses its
cached rows, so adding a city or images to one city re-hashes only what changed.
With no cities configured, the synthetic corpus is generated into ``<store>/corpus``.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict

import pyarrow as pa
import ray

from citylens.config import CityConfig
from citylens.data.images import DecodeError, check_size, read_bytes
from citylens.data.listing import list_city
from citylens.data.manifest import ImageSource, image_id, make_manifest, probe, scan_city
from citylens.data.scenes import style_for
from citylens.data.synth import PLACE_REGEX, synthesize
from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store, digest
from citylens.tables import errors_table

__all__ = ["probe_batch", "resolve_cities", "run_ingest"]

_ROWS = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("city", pa.string()),
        ("place", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("label_uri", pa.string()),
        ("error_kind", pa.string()),
        ("error_message", pa.string()),
    ]
)


def resolve_cities(ctx: Context) -> dict[str, CityConfig]:
    """The study's cities; generates the synthetic corpus first if none are configured."""
    if ctx.cfg.cities:
        return dict(ctx.cfg.cities)
    syn = ctx.cfg.synthetic
    store = ctx.store
    want = asdict(syn)
    if (
        not store.exists("corpus/synthetic.json")
        or store.read_json("corpus/synthetic.json") != want
    ):
        ctx.progress(
            f"synthesizing {syn.cities} cities × {syn.places} places × {syn.views} views "
            f"at {syn.size} px into {store.url('corpus')}"
        )
        store.rm("corpus")
        if store.local:
            synthesize(store.path("corpus"), syn.cities, syn.places, syn.views, syn.size, syn.seed)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                synthesize(tmp, syn.cities, syn.places, syn.views, syn.size, syn.seed)
                store.fs.put(tmp + "/", store.path("corpus"), recursive=True)
        store.write_json("corpus/synthetic.json", want)
    names = [style_for(i).name for i in range(syn.cities)]
    return {
        n: CityConfig(store.url(f"corpus/{n}"), PLACE_REGEX, store.url(f"corpus/labels/{n}"))
        for n in names
    }


def probe_batch(batch: pa.Table, storage_options: dict) -> pa.Table:
    """Hash and probe a batch of images; unreadable ones become error rows."""
    out = {f.name: [] for f in _ROWS}
    for row in batch.to_pylist():
        kind = message = iid = None
        width = height = 0
        try:
            data = read_bytes(row["uri"], storage_options)
            iid = image_id(data)
            if not data:
                kind, message = "empty", "file is empty (0 bytes)"
            else:
                width, height = probe(data)
                check_size(width, height)  # a bomb or a speck never enters the manifest
        except DecodeError as err:
            kind, message, width, height = err.kind, str(err), 0, 0
        except ValueError as err:
            kind, message = "not_an_image", str(err)
        except OSError as err:
            kind, message = "unreadable", f"{type(err).__name__}: {err}"
        for k, v in (
            ("image_id", iid),
            ("uri", row["uri"]),
            ("city", row["city"]),
            ("place", row["place"]),
            ("width", width),
            ("height", height),
            ("label_uri", row["label_uri"]),
            ("error_kind", kind),
            ("error_message", message),
        ):
            out[k].append(v)
    return pa.table(out, schema=_ROWS)


def _probe_city(sources: list[ImageSource], storage_options: dict) -> pa.Table:
    items = [
        {"uri": s.uri, "city": s.city, "place": s.place, "label_uri": s.label_uri} for s in sources
    ]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // 64, 256)))
    ds = ds.map_batches(
        probe_batch,
        batch_format="pyarrow",
        batch_size=64,
        fn_kwargs={"storage_options": storage_options},
    )
    tables = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    return pa.concat_tables(tables).cast(_ROWS) if tables else _ROWS.empty_table()


def run_ingest(ctx: Context) -> StageResult:
    store: Store = ctx.store
    cities = resolve_cities(ctx)
    opts = ctx.cfg.run.storage_options
    listings, city_keys, refused_of = {}, {}, {}
    for name, city in sorted(cities.items()):
        what = {"city": asdict(city)}
        if city.manifest:
            listings[name], refused_of[name] = list_city(
                name, city.source, city.manifest, city.place_regex, city.labels, opts
            )
            what["refused"] = [(r["uri"], r["kind"]) for r in refused_of[name]]
            if refused_of[name]:
                ctx.progress(
                    f"ingest: {name}: {len(refused_of[name])} manifest entries refused "
                    "(see the errors table)"
                )
        else:
            listings[name] = scan_city(name, city.source, city.place_regex, city.labels, opts)
            refused_of[name] = []
            del what["city"]["manifest"]  # keys of cities listed by scanning stay as they were
        what["files"] = [(s.uri, s.size, s.version, s.label_uri) for s in listings[name]]
        city_keys[name] = digest(what)
    refused = [r for name in sorted(cities) for r in refused_of[name]]
    split = asdict(ctx.cfg.split)
    key = ctx.key("ingest", {}, {"cities": city_keys, "split": split})
    if rec := ctx.up_to_date("ingest", key):
        return StageResult("ingest", "skipped", rec)
    folder, started = ctx.begin("ingest")
    rows = []
    for name in sorted(cities):
        cache = f"manifest-cache/{name}-{city_keys[name]}.parquet"
        if store.exists(cache) and not ctx.force:
            ctx.progress(f"ingest: {name}: unchanged, {len(listings[name])} images reused")
            table = store.read_table(cache)
        else:
            ctx.progress(f"ingest: {name}: hashing and probing {len(listings[name])} images")
            table = _probe_city(listings[name], opts)
            store.write_table(cache, table)
        rows.extend(table.to_pylist())
    probed = [r for r in rows if r["error_kind"] is None]
    bad = [
        {
            "image_id": r["image_id"],
            "uri": r["uri"],
            "stage": "ingest",
            "kind": r["error_kind"],
            "message": r["error_message"],
        }
        for r in rows
        if r["error_kind"] is not None
    ]
    manifest, dups = make_manifest(probed, ctx.cfg.split.ratios, ctx.cfg.split.seed)
    errors = pa.concat_tables([errors_table(refused), errors_table(bad), dups])
    store.write_table(f"{folder}/manifest.parquet", manifest)
    store.write_table(f"{folder}/errors/errors.parquet", errors)
    content = digest(
        manifest.select(["image_id", "uri", "city", "place", "split", "label_uri"]).to_pydict()
    )
    counts = {
        "images": manifest.num_rows,
        "errors": errors.num_rows,
        "inputs": len(rows) + len(refused),
        "cities": {c: manifest["city"].to_pylist().count(c) for c in sorted(cities)},
        "splits": {s: manifest["split"].to_pylist().count(s) for s in ("train", "val", "test")},
    }
    live = {f"{n}-{city_keys[n]}.parquet" for n in cities}
    for old in store.ls("manifest-cache"):
        if old not in live and old.rsplit("-", 1)[0] in cities:
            store.rm(f"manifest-cache/{old}")
    rec = ctx.finish(
        "ingest", key, folder, started, output=content, counts=counts, cities=sorted(cities)
    )
    ctx.progress(
        f"ingest: {counts['images']} images in {len(cities)} cities "
        f"({counts['splits']}), {counts['errors']} errors"
    )
    return StageResult("ingest", "ran", rec)


def read_manifest(ctx: Context) -> pa.Table:
    """The committed manifest."""
    rec = ctx.store.record("ingest")
    if rec is None:
        raise RuntimeError("stage 'ingest' has not run yet")
    return ctx.store.read_table(f"{rec['folder']}/manifest.parquet")
