"""A city's images from a manifest file, every entry confined to the city's source root.

A researcher often has the list already (a curated subset, the query list of a
benchmark). A manifest is a text file with one image per line (``#`` comments and blank
lines skipped), or a CSV whose header names an ``image`` column and optionally
``place``, ``lat`` and ``lon`` columns (WGS84 degrees). Entries are paths relative to
the city's ``source``, or full URIs / absolute paths under it. An entry that would leave
the root — a ``..`` segment, another scheme (``file://`` in an ``s3://`` city,
``http://``), an absolute path elsewhere — is refused and recorded, never read: a
manifest from someone else cannot make a study read ``/etc/passwd`` or another bucket;
so is an entry that is a symbolic link leading out of the root (unless the city sets
``follow_links``). Listed files that do not exist are recorded too (``missing``), and an
entry listed again (``duplicate``, with its line).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import PurePosixPath

import fsspec

from citylens.data.manifest import (
    ImageSource,
    image_source,
    label_index,
    located,
    place_of,
    source_files,
)
from citylens.storage import read_bytes
from citylens.tables import error_row

__all__ = ["confine", "list_city", "read_entries"]

_LOCAL = ("file", "local")


def _split_scheme(uri: str) -> tuple[str, str]:
    protocol = fsspec.utils.get_protocol(uri)
    if protocol in _LOCAL:
        return "file", uri.removeprefix("file://")
    return protocol, uri.split("://", 1)[1] if "://" in uri else uri


def confine(entry: str, root: str) -> str:
    """The full URI of a manifest entry, which must lie under ``root``.

    Args:
        entry: A path relative to the root, or a URI / absolute path under it.
        root: The city's source (path or URI, no trailing slash needed).

    Returns:
        The entry as a URI of the root's scheme (a plain path for local roots).

    Raises:
        ValueError: the entry is empty, has a ``..`` segment or a NUL, names another
            scheme, or is absolute outside the root; the message says which.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty entry")
    if "\0" in text:
        raise ValueError("entry contains a NUL character")
    if any(part == ".." for part in re.split(r"[/\\]", text)):
        raise ValueError(f"{text!r} has a '..' segment: entries must stay under the source")
    scheme, base = _split_scheme(root)
    base = base.rstrip("/")
    has_scheme = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None
    if has_scheme or text.startswith("/"):
        e_scheme, path = _split_scheme(text) if has_scheme else ("file", text)
        if e_scheme != scheme:
            raise ValueError(f"{text!r} is a {e_scheme}:// entry in a {scheme}:// source: refused")
        if not path.startswith(base + "/"):
            raise ValueError(f"{text!r} is outside the source {root}")
        rel = path[len(base) + 1 :]
    else:
        rel = text.removeprefix("./")
    rel = str(PurePosixPath(rel))  # collapses '//' and '/./'
    if rel in ("", "."):
        raise ValueError(f"{text!r} names the source itself, not a file")
    return (base if scheme == "file" else f"{scheme}://{base}") + "/" + rel


def read_entries(uri: str, storage_options: dict | None = None) -> list[tuple]:
    """``(entry, place or None, where)`` of every image a manifest file lists, in order.

    ``where`` is ``line N`` of a plain list or ``row N`` of a CSV (the header is row 0),
    for messages. A CSV with ``lat`` or ``lon`` columns adds their two texts to each
    tuple (``""`` when empty).

    Raises:
        ValueError: a CSV manifest without an ``image`` column (naming the file).
    """
    text = read_bytes(uri, storage_options).decode("utf-8-sig")
    lines = [
        (n, ln)
        for n, ln in enumerate(text.splitlines(), 1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines:
        return []
    header = [h.strip().lower() for h in next(csv.reader([lines[0][1]]))]
    if len(header) > 1 or header == ["image"]:
        if "image" not in header:
            raise ValueError(f"{uri}: a CSV manifest needs an 'image' column, got {header}")
        rows = csv.DictReader(io.StringIO("\n".join(ln for _, ln in lines[1:])), fieldnames=header)
        coords = "lat" in header or "lon" in header
        return [
            (str(r["image"] or ""), (r.get("place") or "").strip() or None, f"row {i}")
            + ((r.get("lat") or "", r.get("lon") or "") if coords else ())
            for i, r in enumerate(rows, 1)
        ]
    return [(ln.strip(), None, f"line {n}") for n, ln in lines]


def list_city(
    city: str,
    source: str,
    manifest: str,
    place_regex: str | None = None,
    labels: str | None = None,
    storage_options: dict | None = None,
    follow_links: bool = False,
) -> tuple[list[ImageSource], list[dict]]:
    """A city's images as its manifest file lists them.

    Args:
        city: City name.
        source: The city's root; every entry must lie under it.
        manifest: Path/URI of the manifest file.
        place_regex: Regex on file stems giving the place id (when the manifest has no
            ``place`` column).
        labels: Optional root of label maps (same relative paths, ``.png``).
        storage_options: fsspec options for ``s3://`` URIs.
        follow_links: Keep entries that are symbolic links leading outside the source.

    Returns:
        ``(images sorted by URI, refused)``: refused entries are error rows (stage
        ``ingest``, the entry as ``uri``), kind ``outside_source`` (outside the source by
        name, or a link leading out of it), ``missing``, or ``duplicate`` (listed again:
        the first entry is kept).

    Raises:
        FileNotFoundError: the source or the manifest does not exist, or it lists nothing.
    """
    root, files, links_out = source_files(city, source, storage_options, follow_links)
    outside = {r["uri"]: r["message"] for r in links_out}
    label_set = label_index(labels, storage_options)
    regex = re.compile(place_regex) if place_regex else None
    images: dict[str, ImageSource] = {}
    first: dict[str, str] = {}
    refused: list[dict] = []

    def refuse(entry: str, kind: str, message: str) -> None:
        refused.append(error_row("ingest", kind, message, uri=entry))

    for entry, place, where, *lat_lon in read_entries(manifest, storage_options):
        try:
            uri = confine(entry, root)
        except ValueError as err:
            refuse(entry, "outside_source", f"manifest {manifest}: {err}")
            continue
        if uri in outside:
            refuse(entry, "outside_source", f"manifest {manifest}: {outside[uri]}")
            continue
        if uri not in files:
            refuse(entry, "missing", f"manifest {manifest} lists it; not found under {source}")
            continue
        if uri in images:
            refuse(
                entry,
                "duplicate",
                f"manifest {manifest} lists {uri} again ({where}); kept its first entry "
                f"({first[uri]})",
            )
            continue
        rel = uri[len(root) + 1 :]
        stem = PurePosixPath(rel).stem
        found = place or place_of(stem, regex)
        images[uri] = image_source(
            uri,
            rel,
            city,
            found or stem,
            label_set,
            files[uri],
            place_found=found is not None,
            where=located(f"{uri} ({manifest} {where})", stem, regex, *lat_lon),
        )
        first[uri] = where
    if not images:
        raise FileNotFoundError(f"city {city!r}: manifest {manifest} lists no image under {source}")
    return [images[u] for u in sorted(images)], refused
