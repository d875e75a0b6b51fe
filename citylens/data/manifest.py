"""The manifest: one row per image, with a train/val/test split grouped by place.

Views of one place (one panorama, one street corner) must never straddle train and
test, or accuracy and explanations measure memory, not cities. A place id comes from a
regex on the file name's stem (named group ``place``, else group 1); without one,
every file is its own place. Tokyo 24/7-style ``panoID_pitch_yaw`` names use
``TOKYO247_PLACE_REGEX``.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
from PIL import Image

from citylens.storage import filesystem
from citylens.tables import MANIFEST, SPLITS, errors_table

__all__ = [
    "IMAGE_EXTENSIONS",
    "TOKYO247_PLACE_REGEX",
    "ImageSource",
    "assign_splits",
    "image_id",
    "image_source",
    "label_index",
    "make_manifest",
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


def probe(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed (EXIF orientation applied), from its
    header, without decoding its pixels.

    Raises:
        ValueError: the bytes are not an image Pillow can identify.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            transposed = im.getexif().get(0x0112) in (5, 6, 7, 8)  # rotated by 90°
            return (h, w) if transposed else (w, h)
    except Exception as err:  # PIL raises several types for non-images
        raise ValueError(f"not a readable image ({type(err).__name__}: {err})") from None


def place_of(stem: str, regex: re.Pattern[str] | None) -> str | None:
    """Place id of a file stem; the stem itself without a regex, None if it does not match."""
    if regex is None:
        return stem
    m = regex.match(stem)
    if m is None:
        return None
    return m.group("place") if "place" in regex.groupindex else m.group(1)


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
    """

    uri: str
    city: str
    place: str
    label_uri: str | None = None
    size: int = -1
    version: str = ""


def source_files(
    city: str, source: str, storage_options: dict | None = None
) -> tuple[str, dict[str, dict]]:
    """Every file under a city's source, listed once (paginated listings on S3).

    Returns:
        ``(root URI, {full URI: fsspec info})``; the root has no trailing slash.

    Raises:
        FileNotFoundError: the source does not exist.
    """
    fs, root = filesystem(source, storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"city {city!r}: source {source} does not exist")
    prefix = _prefix(fs)
    root = root.rstrip("/")
    found = fs.find(root, detail=True)
    return prefix + root, {prefix + path: info for path, info in sorted(found.items())}


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
    uri: str, rel: str, city: str, place: str, labels: dict[str, str], info: dict
) -> ImageSource:
    """The :class:`ImageSource` of a listed file (``rel``: its path under the source)."""
    return ImageSource(
        uri=uri,
        city=city,
        place=place,
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
) -> list[ImageSource]:
    """List a city's images under a folder or URI prefix (recursively), sorted.

    Args:
        city: City name.
        source: Folder, ``file://`` or ``s3://`` prefix.
        place_regex: Regex on the file stem giving the place id.
        labels: Optional root of label maps: ``<labels>/<relative path>.png`` per image.
        storage_options: fsspec options (e.g. an S3 endpoint).

    Raises:
        FileNotFoundError: the source does not exist or holds no images.
    """
    root, files = source_files(city, source, storage_options)
    label_set = label_index(labels, storage_options)
    regex = re.compile(place_regex) if place_regex else None
    out, unmatched = [], 0
    for uri, info in files.items():
        rel = uri[len(root) + 1 :]
        name = PurePosixPath(rel)
        if name.suffix.lower() not in IMAGE_EXTENSIONS or any(
            part.startswith(".") for part in name.parts
        ):
            continue
        place = place_of(name.stem, regex)
        if place is None:
            unmatched += 1
            place = name.stem
        out.append(image_source(uri, rel, city, place, label_set, info))
    if not out:
        raise FileNotFoundError(f"city {city!r}: no images under {source}")
    if unmatched:
        warnings.warn(
            f"city {city!r}: {unmatched} of {len(out)} file names do not match place_regex "
            f"{place_regex!r}; each of those is its own place",
            stacklevel=2,
        )
    return out


def _place_key(seed: int, city: str, place: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{city}\0{place}".encode(), digest_size=8).digest()


def assign_splits(
    cities: Sequence[str],
    places: Sequence[str],
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> np.ndarray:
    """Train/val/test split grouped by place, balanced by image count, per city.

    Places of each city are put in a seeded pseudo-random order (a hash of seed, city
    and place, so other cities never change a city's split) and dealt to the split
    furthest below its share of the city's images.

    Args:
        cities: ``(I,)`` city of each image.
        places: ``(I,)`` place of each image.
        ratios: train/val/test proportions (normalised).
        seed: Split seed.

    Returns:
        ``(I,)`` array of ``"train" | "val" | "test"``.

    Raises:
        ValueError: a city has fewer than three places.
    """
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ValueError(f"split ratios must be three positive numbers, got {ratios}")
    r = np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
    cities, places = np.asarray(cities), np.asarray(places)
    out = np.empty(len(cities), dtype=object)
    for city in np.unique(cities):
        idx = np.flatnonzero(cities == city)
        groups: dict[str, list[int]] = {}
        for i in idx:
            groups.setdefault(str(places[i]), []).append(int(i))
        if len(groups) < 3:
            raise ValueError(
                f"city {str(city)!r} has {len(groups)} place(s); a train/val/test split grouped "
                "by place needs at least 3"
            )
        order = sorted(groups, key=lambda p: _place_key(seed, str(city), p))
        target = r * len(idx)
        count = np.zeros(3)
        for rank, place in enumerate(order):
            # The first three places seed train, val and test so none is empty; each
            # later place goes to the split furthest below its share of images.
            k = rank if rank < 3 else int(np.argmax((target - count) / target))
            count[k] += len(groups[place])
            for i in groups[place]:
                out[i] = SPLITS[k]
    return out.astype(str)


def make_manifest(
    rows: Iterable[dict], ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[pa.Table, pa.Table]:
    """Assemble the manifest from probed images; duplicates go to the errors table.

    Args:
        rows: dicts with ``image_id, uri, city, place, width, height, label_uri``.
        ratios: train/val/test proportions.
        seed: Split seed.

    Returns:
        ``(manifest, errors)``; manifest sorted by city then uri, schema MANIFEST.
    """
    rows = sorted(rows, key=lambda r: (r["city"], r["uri"]))
    seen: dict[str, str] = {}
    keep, errors = [], []
    for r in rows:
        first = seen.setdefault(r["image_id"], r["uri"])
        if first != r["uri"]:
            errors.append(
                {
                    "image_id": r["image_id"],
                    "uri": r["uri"],
                    "stage": "ingest",
                    "kind": "duplicate",
                    "message": f"same bytes as {first}; kept that one",
                }
            )
        else:
            keep.append(r)
    cols = {f.name: [r.get(f.name) for r in keep] for f in MANIFEST if f.name != "split"}
    split = assign_splits(cols["city"], cols["place"], ratios, seed) if keep else []
    cols["split"] = list(split)
    manifest = pa.table({f.name: cols[f.name] for f in MANIFEST}, schema=MANIFEST)
    assert set(cols["split"]) <= set(SPLITS)
    return manifest, errors_table(errors)
