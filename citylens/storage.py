"""The study store: a folder or URI prefix (path, ``file://``, ``s3://``) via fsspec.

Every write is atomic: a single file appears whole or not at all (a local write goes
to a temporary name and is renamed; an S3 PUT is atomic by itself). A stage's output
is a set of files in a fresh run folder, and it *exists* only once the stage's record
(``stages/<stage>.json``) naming that folder is written — the commit point. A crashed
stage leaves an unreferenced folder, never a half-written table.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "Store",
    "StoreWriteError",
    "digest",
    "filesystem",
    "new_run_id",
    "open_file",
    "read_bytes",
]

_LOCAL = ("file", "local")


def filesystem(
    uri: str, storage_options: dict | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of a path or URI.

    ``storage_options`` (e.g. ``{"endpoint_url": ...}`` for an S3-compatible store) are
    given to remote filesystems only, so one study can mix local folders and ``s3://``
    prefixes. Credentials come from the standard chain (environment, ``~/.aws``, instance
    role), never from the study config.
    """
    if fsspec.utils.get_protocol(uri) in _LOCAL:
        return fsspec.core.url_to_fs(uri)
    # Listings are not cached: Ray workers on other processes and nodes add shards to
    # the folders a driver lists, and a stale listing would drop them.
    options = {"use_listings_cache": False, **(storage_options or {})}
    if fsspec.utils.get_protocol(uri) in ("s3", "s3a"):
        # Throttling (503 SlowDown), 5xx and dropped connections are retried up to 10
        # times with backoff (botocore's default is 5): a 150k-image study makes millions
        # of requests from many workers, so rare faults are certain to happen.
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("retries", {"max_attempts": 10, "mode": "standard"})
        options["config_kwargs"] = config
    return fsspec.core.url_to_fs(uri, **options)


def open_file(uri: str, mode: str = "rb", storage_options: dict | None = None):
    """Open a path or URI (a context manager, as :func:`fsspec.open`)."""
    fs, path = filesystem(uri, storage_options)
    return fs.open(path, mode)


def read_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    """Read a whole file from a path or URI."""
    fs, path = filesystem(uri, storage_options)
    return fs.cat_file(path)


class StoreWriteError(OSError):
    """The store refused a write (full, read-only, no permission): names store and file.

    Attributes:
        message: What failed, e.g. ``store /data/s: cannot write report.html (OSError:
            No space left on device)``.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(*((errno, message) if errno else (message,)))
        self.message = message

    def __reduce__(self):  # crosses process boundaries (Ray workers) intact
        return (StoreWriteError, (self.message, self.errno))


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def new_run_id() -> str:
    """A sortable, unique folder name for one attempt of a stage."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


class Store:
    """A study's store.

    Args:
        uri: Path or URI of the store's root.
        storage_options: fsspec options (e.g. ``{"endpoint_url": ...}`` for S3).

    Paths given to methods are relative to the root, ``/``-separated.
    Picklable: Ray workers rebuild the filesystem from the URI and options.
    """

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.options = dict(storage_options or {})
        fs, root = filesystem(uri, self.options)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.local = protocol in ("file", "local")
        if self.local:
            root = os.path.abspath(root)
        self.fs = fs
        self.root = root.rstrip("/")
        self.uri = root if self.local else f"{protocol}://{self.root}"

    def __reduce__(self):
        return (Store, (self.uri, self.options))

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # ------------------------------------------------------------------ paths
    def path(self, rel: str = "") -> str:
        """Filesystem path (no protocol) of ``rel``."""
        return f"{self.root}/{rel}".rstrip("/") if rel else self.root

    def url(self, rel: str = "") -> str:
        """Full URI of ``rel`` (what other processes and Ray readers are given)."""
        return f"{self.uri}/{rel}".rstrip("/") if rel else self.uri

    def exists(self, rel: str) -> bool:
        """Whether a file or folder exists at ``rel``."""
        return self.fs.exists(self.path(rel))

    def ls(self, rel: str) -> list[str]:
        """Names (not paths) directly under ``rel``; empty if it does not exist."""
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(rel)))
        except FileNotFoundError:
            return []

    def rm(self, rel: str) -> None:
        """Remove a file or a whole folder (nothing if it does not exist)."""
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=True)

    # ------------------------------------------------------------------ bytes
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file atomically.

        Raises:
            StoreWriteError: the store refused it (full, read-only, no permission); a
                local partial file is removed, and what the store held is unchanged.
        """
        path = self.path(rel)
        try:
            if self.local:  # object stores have no folders (makedirs would create buckets)
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
            else:
                self.fs.pipe_file(path, data)
        except OSError as err:
            why = f"{type(err).__name__}: {err.strerror or err}"
            raise StoreWriteError(
                f"store {self.uri}: cannot write {rel} ({why})", err.errno
            ) from err

    def create_bytes(self, rel: str, data: bytes) -> bool:
        """Write a file only if none exists there, atomically.

        Of several writers racing for one name, exactly one wins.

        On a local disk the bytes go to a temporary name that is hard-linked into place
        (``link`` fails if the name exists); on S3 the PUT carries ``If-None-Match: *``,
        which S3 and S3-compatible stores with conditional writes refuse with 412 when
        the object exists. Other filesystems check, then write (not atomic).

        Returns:
            True if this call created the file, False if it existed. After a retried
            request whose first answer was lost, False can mean "created by this call":
            callers that need to know read the file back.

        Raises:
            StoreWriteError: the store refused the write for another reason.
        """
        path = self.path(rel)
        try:
            if self.local:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                finally:
                    os.remove(tmp)
                return True
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno == errno.EINVAL and self.fs.exists(path):  # a bare 412
                    return False
                raise
            return True
        except OSError as err:
            why = f"{type(err).__name__}: {err.strerror or err}"
            raise StoreWriteError(
                f"store {self.uri}: cannot write {rel} ({why})", err.errno
            ) from err

    def read_bytes(self, rel: str) -> bytes:
        """A whole file's bytes."""
        return self.fs.cat_file(self.path(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        """Write an object as indented JSON, atomically."""
        self.write_bytes(rel, (json.dumps(obj, indent=2, default=str) + "\n").encode())

    def read_json(self, rel: str) -> Any:
        """A JSON file's object."""
        return json.loads(self.read_bytes(rel))

    def write_text(self, rel: str, text: str) -> None:
        """Write UTF-8 text, atomically."""
        self.write_bytes(rel, text.encode())

    # ------------------------------------------------------------------ tables
    def write_table(self, rel: str, table: pa.Table) -> None:
        """Write a Parquet file atomically (zstd; its schema travels with it)."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue())

    def read_table(self, rel: str, columns: list[str] | None = None, schema=None) -> pa.Table:
        """Read one Parquet file, or every ``*.parquet`` file under a folder.

        With a ``schema``, a missing or empty folder reads as an empty table (a stage
        that recorded no errors wrote no error shard).
        """
        path = self.path(rel)
        if not self.fs.exists(path) and schema is not None:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        if self.fs.isdir(path):
            files = self.files(rel, ".parquet")
            if not files:
                if schema is None:
                    raise FileNotFoundError(f"no Parquet files under {self.url(rel)}")
                return schema.empty_table().select(columns) if columns else schema.empty_table()
            tables = [self.read_table(f, columns) for f in files]
            return pa.concat_tables(tables, promote_options="default")
        with self.fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns, schema=schema)

    def files(self, rel: str, suffix: str = "") -> list[str]:
        """Relative paths of the files under ``rel`` ending in ``suffix``, sorted."""
        base = self.path(rel)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root + "/"
        return sorted(p[len(root) :] for p in found if p.endswith(suffix) and ".tmp-" not in p)

    # ------------------------------------------------------------------ stage records
    def record(self, stage: str) -> dict | None:
        """The committed record of a stage, or None."""
        rel = f"stages/{stage}.json"
        return self.read_json(rel) if self.exists(rel) else None

    def commit(self, stage: str, record: dict) -> None:
        """Commit a stage: its record is written last, atomically."""
        self.write_json(f"stages/{stage}.json", {"stage": stage, **record})

    def prune(self, folder: str, keep: Iterable[str]) -> None:
        """Remove run folders under ``folder`` not in ``keep`` (after a commit)."""
        keep = set(keep)
        for name in self.ls(folder):
            if name not in keep:
                self.rm(f"{folder}/{name}")
