"""The manifest: one row per image, with a train/val/test split grouped by place.

Views of one place (one panorama, one street corner) must never straddle train and
test, or accuracy and explanations measure memory, not cities. A place id comes from a
regex on the file name's stem (named group ``place``, else group 1); without one,
every file is its own place. Tokyo 24/7-style ``panoID_pitch_yaw`` names use
``TOKYO247_PLACE_REGEX``.

Where an image was taken comes from the same regex's groups named ``lat`` and ``lon``
(``51p36285``, ``m0p45047`` and ``-0.45`` all read; see :mod:`citylens.data.coords`)
or from ``lat`` / ``lon`` columns of a city's CSV manifest (which win over the name).
Unreadable or out-of-range values keep the image, without coordinates, and become an
error row of kind ``bad_coordinates``.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa

from citylens.data.coords import CoordinateError, coordinates
from citylens.data.images import DecodeError, open_image
from citylens.data.splits import KnownSplits, assign_splits
from citylens.storage import filesystem
from citylens.tables import MANIFEST, SPLITS, error_row, errors_table

__all__ = [
    "IMAGE_EXTENSIONS",
    "TOKYO247_PLACE_REGEX",
    "ImageSource",
    "KnownSplits",
    "assign_splits",
    "dedupe",
    "image_id",
    "image_source",
    "label_index",
    "located",
    "make_manifest",
    "manifest_of",
    "place_of",
    "probe",
    "scan_city",
    "source_files",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
TOKYO247_PLACE_REGEX = r"^(?P<place>.+)_\d{3}_\d{3}$"


def image_id(data: bytes) -> str:
    """Stable content hash of an image's bytes (BLAKE2b-128, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def probe(data: bytes, name: str = "image") -> tuple[int, int]:
    """``(width, height)`` of an image as displayed, from its header alone.

    EXIF orientation is applied; the pixels are not decoded.

    Args:
        data: The encoded image.
        name: The file's URI, for messages.

    Raises:
        DecodeError: ``empty``, ``not_an_image``, or ``too_large`` for a decompression
            bomb Pillow refuses from its header alone.
    """
    with open_image(data, name) as im:
        w, h = im.size
        try:
            transposed = im.getexif().get(0x0112) in (5, 6, 7, 8)  # rotated by 90°
        except Exception as err:  # a broken EXIF block
            raise DecodeError("not_an_image", f"{name}: unreadable EXIF ({err})") from None
        return (h, w) if transposed else (w, h)


def place_of(stem: str, regex: re.Pattern[str] | None) -> str | None:
    """Place id of a file stem; the stem itself without a regex, None if it does not match."""
    if regex is None:
        return stem
    m = regex.match(stem)
    if m is None:
        return None
    return m.group("place") if "place" in regex.groupindex else m.group(1)


def located(
    uri: str,
    stem: str,
    regex: re.Pattern[str] | None,
    lat: str | None = None,
    lon: str | None = None,
) -> tuple[float | None, float | None, str | None]:
    """An image's ``(lat, lon, problem)``.

    From ``lat`` / ``lon`` given (a manifest's columns), else from the regex's ``lat``
    / ``lon`` groups on the stem.

    Returns:
        ``(lat, lon, None)``; ``(None, None, None)`` when neither says; ``(None, None,
        message naming the file)`` for values that cannot be used.
    """
    if not str(lat or "").strip() and not str(lon or "").strip():
        lat = lon = None  # empty manifest cells: the name may still say
    if (
        lat is None
        and lon is None
        and regex is not None
        and {"lat", "lon"} <= set(regex.groupindex)
    ):
        m = regex.match(stem)
        if m is not None:
            lat, lon = m.group("lat"), m.group("lon")
    try:
        got = coordinates(lat, lon)
    except CoordinateError as err:
        return None, None, f"{uri}: {err}; kept without coordinates"
    return (None, None, None) if got is None else (got[0], got[1], None)


@dataclass(frozen=True)
class ImageSource:
    """One image found in a city's source.

    Attributes:
        uri: Full URI (or local path) of the image.
        city: City name.
        place: Place id (unique within the city).
        label_uri: Ground-truth label map, if the city has a label root and it exists.
        size: File size in bytes.
        version: Modification time or ETag: with size, it fingerprints the file so an
            unchanged city is not hashed again.
        place_found: The place id came from ``place_regex`` or the manifest; False when
            the name did not match and the file became a place of its own.
        lat: Latitude in degrees, if known.
        lon: Longitude in degrees, if known.
        coord_problem: Why the coordinates given could not be used (then lat and lon
            are None).
    """

    uri: str
    city: str
    place: str
    label_uri: str | None = None
    size: int = -1
    version: str = ""
    place_found: bool = True
    lat: float | None = None
    lon: float | None = None
    coord_problem: str | None = None


def source_files(
    city: str, source: str, storage_options: dict | None = None, follow_links: bool = False
) -> tuple[str, dict[str, dict], list[dict]]:
    """Every file under a city's source, listed once (paginated listings on S3).

    On a local disk a symbolic link whose target lies outside the source is refused
    (only links are resolved: a listing does not descend into linked folders, so no
    other file can lead out):
    reading it would take a study outside the folder it was given (a link to
    ``/etc/passwd``, to another city, to another user's data). Links inside the source
    are kept. ``follow_links`` keeps every link (caches that link into a shared pool).

    Returns:
        ``(root URI, {full URI: fsspec info}, refused)``; the root has no trailing
        slash; ``refused`` are error rows (stage ``ingest``, kind ``outside_source``).

    Raises:
        FileNotFoundError: the source does not exist.
    """
    fs, root = filesystem(source, storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"city {city!r}: source {source} does not exist")
    prefix = _prefix(fs)
    root = root.rstrip("/")
    found = fs.find(root, detail=True)
    files, refused = {}, []
    real_root = os.path.realpath(root) if not prefix else None
    for path, info in sorted(found.items()):
        if real_root is not None and not follow_links and info.get("islink"):
            target = os.path.realpath(path)
            if target != real_root and not target.startswith(real_root.rstrip("/") + "/"):
                refused.append(
                    error_row(
                        "ingest",
                        "outside_source",
                        f"{path}: a symbolic link to {target}, outside the source "
                        f"{source}; refused (cities.{city}.follow_links: true allows it)",
                        uri=path,
                    )
                )
                continue
        files[prefix + path] = info
    return prefix + root, files, refused


def label_index(labels: str | None, storage_options: dict | None = None) -> dict[str, str]:
    """Label maps under a label root: relative path without suffix -> full URI."""
    if not labels:
        return {}
    fs, root = filesystem(labels, storage_options)
    root, prefix = root.rstrip("/"), _prefix(fs)
    out = {}
    for path in fs.find(root):
        rel = path[len(root) + 1 :]
        out[str(PurePosixPath(rel).with_suffix(""))] = prefix + path
    return out


def _prefix(fs) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return "" if protocol in ("file", "local") else f"{protocol}://"


def image_source(
    uri: str,
    rel: str,
    city: str,
    place: str,
    labels: dict[str, str],
    info: dict,
    place_found: bool = True,
    where: tuple[float | None, float | None, str | None] = (None, None, None),
) -> ImageSource:
    """The :class:`ImageSource` of a listed file.

    ``rel`` is its path under the source; ``place_found`` says the place came from the
    regex or a manifest, not the file's stem; ``where`` is :func:`located`'s answer.
    """
    return ImageSource(
        lat=where[0],
        lon=where[1],
        coord_problem=where[2],
        uri=uri,
        city=city,
        place=place,
        place_found=place_found,
        label_uri=labels.get(str(PurePosixPath(rel).with_suffix(""))),
        size=int(info.get("size") or -1),
        version=str(info.get("ETag") or info.get("mtime") or info.get("LastModified", "")),
    )


def scan_city(
    city: str,
    source: str,
    place_regex: str | None = None,
    labels: str | None = None,
    storage_options: dict | None = None,
    follow_links: bool = False,
) -> tuple[list[ImageSource], list[dict]]:
    """List a city's images under a folder or URI prefix (recursively), sorted.

    Args:
        city: City name.
        source: Folder, ``file://`` or ``s3://`` prefix.
        place_regex: Regex on the file stem giving the place id.
        labels: Optional root of label maps: ``<labels>/<relative path>.png`` per image.
        storage_options: fsspec options (e.g. an S3 endpoint).
        follow_links: Keep symbolic links that lead outside the source.

    Returns:
        ``(images, refused)``: refused are error rows of image files that are links
        leading outside the source (kind ``outside_source``).

    Raises:
        FileNotFoundError: the source does not exist or holds no images.
    """
    root, files, refused = source_files(city, source, storage_options, follow_links)
    label_set = label_index(labels, storage_options)
    regex = re.compile(place_regex) if place_regex else None
    out, unmatched = [], 0
    for uri, info in files.items():
        rel = uri[len(root) + 1 :]
        name = PurePosixPath(rel)
        if not _is_image(name):
            continue
        place = place_of(name.stem, regex)
        if place is None:
            unmatched += 1
        out.append(
            image_source(
                uri,
                rel,
                city,
                place or name.stem,
                label_set,
                info,
                place_found=place is not None,
                where=located(uri, name.stem, regex),
            )
        )
    refused = [r for r in refused if _is_image(PurePosixPath(r["uri"][len(root) + 1 :]))]
    if not out:
        raise FileNotFoundError(f"city {city!r}: no images under {source}")
    if unmatched:
        warnings.warn(
            f"city {city!r}: {unmatched} of {len(out)} file names do not match place_regex "
            f"{place_regex!r}; each of those is its own place",
            stacklevel=2,
        )
    return out, refused


def _is_image(name: PurePosixPath) -> bool:
    """An image file by its name: an image extension, no hidden part."""
    return name.suffix.lower() in IMAGE_EXTENSIONS and not any(
        part.startswith(".") for part in name.parts
    )


def _best_copy(group: list[dict]) -> dict:
    """The copy of one image's bytes a city keeps.

    One with a label map and a place id first (what the segmenter and the split need),
    then the first by path.
    """
    return min(
        group,
        key=lambda r: (r.get("label_uri") is None, not r.get("place_found", True), r["uri"]),
    )


def dedupe(rows: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """Keep one row per image content; the rest become error rows.

    * The same bytes in two or more cities cannot carry one label: every copy is left
      out (kind ``duplicate_across_cities``), in every city.
    * Copies within one city keep :func:`_best_copy` (labels and a place first, then
      the first path); the others are ``duplicate``. The choice depends only on the
      rows, never on listing order.

    Args:
        rows: dicts with ``image_id, uri, city, label_uri`` and optionally
            ``place_found`` (default True).

    Returns:
        ``(kept rows sorted by city then uri, error rows)``.
    """
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["image_id"], []).append(r)
    keep, errors = [], []

    def error(r: dict, kind: str, message: str) -> None:
        errors.append(error_row("ingest", kind, message, r["image_id"], r["uri"]))

    for group in groups.values():
        group = sorted(group, key=lambda r: (r["city"], r["uri"]))
        cities = sorted({r["city"] for r in group})
        if len(cities) > 1:
            for r in group:
                others = [o["uri"] for o in group if o["city"] != r["city"]]
                error(
                    r,
                    "duplicate_across_cities",
                    f"same bytes as {others[0]}"
                    + (f" and {len(others) - 1} more" if len(others) > 1 else "")
                    + f" in another city ({', '.join(c for c in cities if c != r['city'])}): "
                    "one photo cannot carry two labels, so every copy is left out",
                )
            continue
        best = _best_copy(group)
        keep.append(best)
        has = [
            w
            for w, ok in (
                ("a label map", best.get("label_uri") is not None),
                ("a place id", best.get("place_found", True)),
            )
            if ok
        ]
        reason = f"it has {' and '.join(has)}" if has else "it is first by path"
        for r in group:
            if r is not best:
                error(r, "duplicate", f"same bytes as {best['uri']}; kept that one ({reason})")
    keep.sort(key=lambda r: (r["city"], r["uri"]))
    errors.sort(key=lambda e: (e["kind"], e["uri"]))
    return keep, errors


def make_manifest(
    rows: Iterable[dict],
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    block_m: float | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Assemble the manifest from probed images; duplicates go to the errors table.

    Args:
        rows: dicts with ``image_id, uri, city, place, width, height, label_uri`` (and
            optionally ``place_found``); see :func:`dedupe` for which copy is kept.
        ratios: train/val/test proportions.
        seed: Split seed.
        block_m: Cell size of a spatially blocked split (None: by place).

    Returns:
        ``(manifest, errors)``; manifest sorted by city then uri, schema MANIFEST.

    Raises:
        ValueError: a city has fewer than three places (see :func:`assign_splits`).
    """
    keep, errors = dedupe(rows)
    return manifest_of(keep, ratios, seed, block_m=block_m), errors_table(errors)


def manifest_of(
    rows: Sequence[dict],
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    known: KnownSplits | None = None,
    block_m: float | None = None,
) -> pa.Table:
    """The manifest (schema MANIFEST, in the rows' order) with every row's split.

    The rows are one per image already (:func:`dedupe`'s kept rows), with ``lat`` /
    ``lon`` where known; ``known``: earlier splits to keep; ``block_m``: draw the split
    over grid cells of that size (see :func:`assign_splits`).

    Raises:
        ValueError: a city has fewer than three places or cells (see
            :func:`assign_splits`).
    """
    keep = list(rows)
    cols = {f.name: [r.get(f.name) for r in keep] for f in MANIFEST if f.name != "split"}
    lat = [float("nan") if v is None else v for v in cols["lat"]]
    lon = [float("nan") if v is None else v for v in cols["lon"]]
    split = (
        assign_splits(
            cols["city"], cols["place"], ratios, seed, cols["image_id"], known, lat, lon, block_m
        )
        if keep
        else []
    )
    cols["split"] = list(split)
    manifest = pa.table({f.name: cols[f.name] for f in MANIFEST}, schema=MANIFEST)
    assert set(cols["split"]) <= set(SPLITS)
    return manifest
