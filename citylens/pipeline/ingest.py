"""Stage *ingest*: list every city's images, hash and probe them in parallel -> manifest.

A city whose listing (paths, sizes, versions) and settings are unchanged reuses its
cached rows, so adding a city or images to one city re-hashes only what changed.
With no cities configured, the synthetic corpus is generated into ``<store>/corpus``.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import ray

from citylens.config import CityConfig
from citylens.data.coords import nearest_train_m
from citylens.data.images import DecodeError, check_size
from citylens.data.listing import list_city
from citylens.data.manifest import (
    ImageSource,
    dedupe,
    image_id,
    manifest_of,
    probe,
    scan_city,
)
from citylens.data.scenes import NULL_STYLE, style_for
from citylens.data.splits import KnownSplits, assign_splits
from citylens.data.synth import PLACE_REGEX, synthesize
from citylens.errors import InputError
from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store, digest, read_bytes
from citylens.tables import PROBES, error_row, errors_table

__all__ = ["probe_batch", "resolve_cities", "run_ingest"]


def resolve_cities(ctx: Context) -> dict[str, CityConfig]:
    """The study's cities; generates the synthetic corpus first if none are configured."""
    if ctx.cfg.cities:
        return dict(ctx.cfg.cities)
    syn = ctx.cfg.synthetic
    store = ctx.store
    want = asdict(syn)
    if not syn.null_city:  # corpora of studies from before the option stay as they were
        del want["null_city"]
    if (
        not store.exists("corpus/synthetic.json")
        or store.read_json("corpus/synthetic.json") != want
    ):
        ctx.progress(
            f"synthesizing {syn.cities} cities × {syn.places} places × {syn.views} views "
            f"at {syn.size} px into {store.url('corpus')}"
        )
        store.rm("corpus")
        args = (syn.cities, syn.places, syn.views, syn.size, syn.seed)
        if store.local:
            synthesize(store.path("corpus"), *args, null_city=syn.null_city)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                synthesize(tmp, *args, null_city=syn.null_city)
                store.fs.put(tmp + "/", store.path("corpus"), recursive=True)
        store.write_json("corpus/synthetic.json", want)
    names = [style_for(i).name for i in range(syn.cities)]
    names += [NULL_STYLE.name] if syn.null_city else []
    return {
        n: CityConfig(store.url(f"corpus/{n}"), PLACE_REGEX, store.url(f"corpus/labels/{n}"))
        for n in names
    }


def probe_batch(batch: pa.Table, storage_options: dict) -> pa.Table:
    """Hash and probe a batch of images; unreadable ones become error rows."""
    out = {f.name: [] for f in PROBES}
    for row in batch.to_pylist():
        kind = message = iid = None
        width = height = 0
        try:
            data = read_bytes(row["uri"], storage_options)
            iid = image_id(data)
            width, height = probe(data, row["uri"])
            check_size(width, height, name=row["uri"])  # a bomb or a speck never enters
        except DecodeError as err:
            kind, message, width, height = err.kind, str(err), 0, 0
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
    return pa.table(out, schema=PROBES)


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
    return pa.concat_tables(tables).cast(PROBES) if tables else PROBES.empty_table()


def _list(ctx: Context, cities: dict[str, CityConfig]) -> tuple[dict, dict, dict]:
    """List every city's files, each city keyed by its settings and listing.

    Returns:
        ``(city -> ImageSources, city -> key, city -> refused entries as error rows)``.
    """
    opts = ctx.cfg.run.storage_options
    listings, city_keys, refused_of = {}, {}, {}
    for name, city in sorted(cities.items()):
        what = {"city": asdict(city)}
        if not city.follow_links:  # keys of studies from before the option stay as they were
            del what["city"]["follow_links"]
        try:
            if city.manifest:
                listings[name], refused_of[name] = list_city(
                    name,
                    city.source,
                    city.manifest,
                    city.place_regex,
                    city.labels,
                    opts,
                    city.follow_links,
                )
            else:
                listings[name], refused_of[name] = scan_city(
                    name, city.source, city.place_regex, city.labels, opts, city.follow_links
                )
        except FileNotFoundError as err:  # e.g. every manifest entry refused
            raise InputError(f"ingest: cities.{name}: {err}") from None
        if not city.manifest:
            del what["city"]["manifest"]  # keys of cities listed by scanning stay as they were
        if city.manifest or refused_of[name]:
            what["refused"] = [(r["uri"], r["kind"]) for r in refused_of[name]]
        if refused_of[name]:
            ctx.progress(
                f"ingest: {name}: {len(refused_of[name])} "
                f"{'manifest entries' if city.manifest else 'files'} refused "
                "(see the errors table)"
            )
        what["files"] = [(s.uri, s.size, s.version, s.label_uri) for s in listings[name]]
        city_keys[name] = digest(what)
    return listings, city_keys, refused_of


def _probe(ctx: Context, listings: dict, city_keys: dict) -> list[dict]:
    """Hash and probe every listed file (a city whose key is cached is not re-read).

    Returns:
        PROBES rows with ``place_found`` (whether the place came from the regex or
        the manifest), cities in sorted order.
    """
    store, opts, rows = ctx.store, ctx.cfg.run.storage_options, []
    for name in sorted(listings):
        cache = f"manifest-cache/{name}-{city_keys[name]}.parquet"
        if store.exists(cache) and not ctx.force:
            ctx.progress(f"ingest: {name}: unchanged, {len(listings[name])} images reused")
            table = store.read_table(cache)
        else:
            ctx.progress(f"ingest: {name}: hashing and probing {len(listings[name])} images")
            ctx.ray()
            table = _probe_city(listings[name], opts)
            store.write_table(cache, table)
        src = {s.uri: s for s in listings[name]}
        for r in table.to_pylist():
            s = src.get(r["uri"])
            where = {"lat": None, "lon": None, "coord_problem": None, "place_found": True}
            if s is not None:
                where = {
                    "place": s.place,  # the listing's: a manifest's place column may change
                    "lat": s.lat,
                    "lon": s.lon,
                    "coord_problem": s.coord_problem,
                    "place_found": s.place_found,
                }
            rows.append({**r, **where})
    return rows


def run_ingest(ctx: Context) -> StageResult:
    """List, hash and probe every city's images into the manifest.

    Consumes the cities' folders or manifest files (or generates the synthetic corpus).
    Writes ``ingest/<run>/manifest.parquet`` (MANIFEST: usable images with their split)
    and ``errors/`` (refused, unreadable and duplicate files), and caches each city's
    probed rows in ``manifest-cache/``. Stops (InputError) before anything downstream
    when a city cannot be split into train, val and test.
    """
    store: Store = ctx.store
    cities = resolve_cities(ctx)
    listings, city_keys, refused_of = _list(ctx, cities)
    # a manifest's place and lat / lon columns can change with no file changing: they
    # are in the stage's key (not in the probe cache's name: probing reads only bytes)
    entries = {
        n: digest([(s.place, s.lat, s.lon, s.coord_problem) for s in listings[n]])
        for n, c in sorted(cities.items())
        if c.manifest
    }
    refused = [r for name in sorted(cities) for r in refused_of[name]]
    split = asdict(ctx.cfg.split)
    if split["block_m"] is None:  # keys of studies from before the option stay as they were
        del split["block_m"]
    own = {"cities": city_keys, "split": split} | ({"entries": entries} if entries else {})
    key = ctx.key("ingest", {}, own)
    if rec := ctx.up_to_date("ingest", key):
        return StageResult("ingest", "skipped", rec)
    folder, started = ctx.begin("ingest")
    rows = _probe(ctx, listings, city_keys)
    probed = [r for r in rows if r["error_kind"] is None]
    bad = [
        error_row("ingest", r["error_kind"], r["error_message"], r["image_id"], r["uri"])
        for r in rows
        if r["error_kind"] is not None
    ]
    usable, dups = dedupe(probed)
    unlocated = [
        error_row("ingest", "bad_coordinates", r["coord_problem"], r["image_id"], r["uri"])
        for r in usable
        if r.get("coord_problem")
    ]
    errors = pa.concat_tables(
        [errors_table(refused), errors_table(bad), errors_table(dups), errors_table(unlocated)]
    )
    store.write_table(f"{folder}/errors/errors.parquet", errors)
    city_of = {r["uri"]: r["city"] for r in rows}
    failed: dict[str, Counter] = {c: Counter() for c in cities}
    for name in cities:
        failed[name].update(r["kind"] for r in refused_of[name])
    for e in [*bad, *dups]:
        failed[city_of[e["uri"]]][e["kind"]] += 1
    _check_cities(ctx, usable, failed, f"{folder}/errors")
    known = _known_splits(ctx, split)
    block_m = ctx.cfg.split.block_m
    try:
        manifest = manifest_of(usable, ctx.cfg.split.ratios, ctx.cfg.split.seed, known, block_m)
    except ValueError as err:  # too few cells of block_m
        raise InputError(f"ingest: split.block_m: {err}") from None
    store.write_table(f"{folder}/manifest.parquet", manifest)
    content = digest(
        manifest.select(["image_id", "uri", "city", "place", "split", "label_uri"]).to_pydict()
    )
    counts = {
        "images": manifest.num_rows,
        "errors": errors.num_rows - len(unlocated),  # a bad_coordinates image is kept
        "inputs": len(rows) + len(refused),
        "cities": {c: manifest["city"].to_pylist().count(c) for c in sorted(cities)},
        "splits": {s: manifest["split"].to_pylist().count(s) for s in ("train", "val", "test")},
    }
    extra = {}
    located = manifest["lat"].null_count < manifest.num_rows
    if block_m is not None and not located:
        ctx.progress(
            f"ingest: warning: split.block_m = {block_m:g} but no image has coordinates "
            "(place_regex groups lat / lon, or a manifest's lat / lon columns): the split "
            "is by place"
        )
    if unlocated or located:
        extra = _where_taken(manifest, ctx.cfg.split.ratios, ctx.cfg.split.seed, block_m)
        counts |= {"located": extra["near_train"]["located"], "bad_coordinates": len(unlocated)}
        ctx.progress(_near_line(extra["near_train"], len(unlocated)))
    live = {f"{n}-{city_keys[n]}.parquet" for n in cities}
    for old in store.ls("manifest-cache"):
        if old not in live and old.rsplit("-", 1)[0] in cities:
            store.rm(f"manifest-cache/{old}")
    if known is not None:
        counts["kept_split"] = sum(
            (c, p) in known.places or i in known.images
            for i, c, p in zip(*(manifest[k].to_pylist() for k in ("image_id", "city", "place")))
        )
        ctx.progress(
            f"ingest: {counts['kept_split']} images of known places keep their split "
            f"(train.retrain: new_city); {manifest.num_rows - counts['kept_split']} of new "
            "places were dealt around them"
        )
    rec = ctx.finish(
        "ingest",
        key,
        folder,
        started,
        output=content,
        counts=counts,
        cities=sorted(cities),
        split=split,
        **extra,
    )
    ctx.progress(
        f"ingest: {counts['images']} images in {len(cities)} cities "
        f"({counts['splits']}), {counts['errors']} errors"
    )
    return StageResult("ingest", "ran", rec)


def _where_taken(manifest: pa.Table, ratios, seed: int, block_m: float | None) -> dict[str, object]:
    """Where the images were taken, and how near test images lie to train ones.

    Returns:
        ``coords`` (a digest of every image's lat / lon: the maps' input) and
        ``near_train``: the share of located test images with a train image of their
        city within ``block_m`` (200 m without one) and their median distance to the
        nearest; for a blocked split also both under the split by place
        (``*_by_place``).
    """
    cols = manifest.select(["city", "place", "split", "lat", "lon"]).to_pydict()
    lat = np.asarray([np.nan if v is None else v for v in cols["lat"]], np.float64)
    lon = np.asarray([np.nan if v is None else v for v in cols["lon"]], np.float64)
    radius = float(block_m or 200.0)

    def near(split, suffix: str = "") -> dict:
        d = nearest_train_m(lat, lon, np.asarray(split), np.asarray(cols["city"]))
        finite = d[np.isfinite(d)]  # inf: the city has no located train image
        return {
            f"share{suffix}": float(np.mean(d <= radius)) if len(d) else None,
            f"median_m{suffix}": float(np.median(finite)) if len(finite) else None,
        }

    test = np.asarray(cols["split"]) == "test"
    out = {
        "radius_m": radius,
        "located": int(np.isfinite(lat).sum()),
        "test_located": int((np.isfinite(lat) & test).sum()),
        **near(cols["split"]),
    }
    if block_m is not None:
        unblocked = assign_splits(cols["city"], cols["place"], ratios, seed)
        out |= near(unblocked, "_by_place")
    where = digest(manifest.select(["image_id", "lat", "lon"]).to_pydict())
    return {"coords": where, "near_train": out}


def _near_line(near: dict, unlocated: int) -> str:
    """The progress line of :func:`_where_taken`'s figures."""
    line = f"ingest: {near['located']} images located ({unlocated} with bad coordinates)"
    if near["share"] is None:
        return line + "; no located test image"
    line += (
        f"; {near['share']:.1%} of {near['test_located']} located test images have a train "
        f"image of their city within {near['radius_m']:g} m"
    )
    if near["median_m"] is not None:
        line += f", median distance {near['median_m']:.0f} m"
    if near.get("share_by_place") is not None:
        line += f" (by place: {near['share_by_place']:.1%}"
        if near.get("median_m_by_place") is not None:
            line += f", median {near['median_m_by_place']:.0f} m"
        line += ")"
    return line


def _known_splits(ctx: Context, split: dict) -> KnownSplits | None:
    """The previous manifest's splits, to keep (``train.retrain: new_city``), or None.

    Kept only when the split settings are the same: new ones draw a new split (and
    retrain every model).
    """
    prev = ctx.store.record("ingest")
    # (compared as digests: the record's JSON holds the ratios as a list, not a tuple)
    if ctx.cfg.train.retrain != "new_city" or prev is None or "split" not in prev:
        return None
    if digest(prev["split"]) != digest(split):
        return None
    cols = ["image_id", "city", "place", "split"]
    manifest = ctx.store.read_table(f"{prev['folder']}/manifest.parquet")
    if "lat" in manifest.column_names:
        cols += ["lat", "lon"]
    return KnownSplits.of_manifest(manifest.select(cols), ctx.cfg.split.block_m)


def _check_cities(
    ctx: Context, usable: list[dict], failed: dict[str, Counter], errors_at: str
) -> None:
    """Stop before training if a city cannot be split into train, val and test.

    A city whose files all fail (text named ``.jpg``, every copy also in another city)
    would otherwise drop out silently: the models would learn the other cities, and
    test accuracy would be measured without it. A city that loses more than a tenth of
    its files goes on, with a warning.

    Args:
        ctx: The study.
        usable: Manifest rows kept (one per image).
        failed: City -> error kind -> files refused.
        errors_at: Where the errors table was written (for the message).

    Raises:
        InputError: naming every such city with its counts and the errors table.
    """
    places: dict[str, set] = {c: set() for c in failed}
    images: Counter = Counter()
    for r in usable:
        places[r["city"]].add(r["place"])
        images[r["city"]] += 1
    short = []
    for c in sorted(failed):
        n_bad = sum(failed[c].values())
        why = ", ".join(f"{n} {k}" for k, n in sorted(failed[c].items(), key=lambda kv: -kv[1]))
        listed = images[c] + n_bad
        if len(places[c]) < 3:
            short.append(
                f"{c}: {images[c]} usable of {listed} listed, in {len(places[c])} place(s)"
                + (f" (refused: {why})" if why else "")
            )
        elif n_bad > 0.1 * listed:
            ctx.progress(f"ingest: warning: {c}: {n_bad} of {listed} files unusable ({why})")
    if short:
        raise InputError(
            "ingest: a city needs usable images in at least 3 places (one each for train, "
            "val and test); " + "; ".join(short) + ". Every refused file is listed in "
            f"{ctx.store.url(errors_at)}."
        )
