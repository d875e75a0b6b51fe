"""A split's decoded blocks on one node's local disk (the train stage's ``node_cache``).

Reading every decoded image from Ray's object store each epoch makes the node that holds
the blocks (on ``cluster.yaml``, the head) serve every trial's every epoch, and spill
when the blocks outgrow its store. Instead, each node that trains decodes the split once
into a folder on its own disk — ``images.npy`` (uint8 ``(N, 3, S, S)``, memory-mapped),
``labels.npy``, ``ok.npy``, the block boundaries and the decode errors — and every trial
on that node reads it from there: per epoch, nothing crosses the network and the
object store holds nothing of it.

A folder is named by a digest of what it holds (the rows, their order, the size, the
cities); it is written under a temporary name and renamed into place, so a reader never
sees half a cache, and two trials on one node build it once (a file lock).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

__all__ = ["BlockCache", "build_block_cache", "open_or_build", "prune"]

_META = "meta.json"
FORMAT = 1


class BlockCache:
    """A complete cache folder, memory-mapped.

    Args:
        folder: The cache's folder (made by :func:`build_block_cache`).

    Attributes:
        bounds: ``(n_blocks + 1,)`` row where each block starts (and the end).
        errors: ``[{image_id, uri, error_kind, error_message}]`` of rows that failed.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / _META).read_text())
        self.meta = meta
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.folder}: cache format {meta.get('format')}, not {FORMAT}")
        self.bounds = np.asarray(meta["bounds"], np.int64)
        self.errors: list[dict] = meta["errors"]
        self.images = np.load(self.folder / "images.npy", mmap_mode="r")
        self.labels = np.load(self.folder / "labels.npy")
        self.ok = np.load(self.folder / "ok.npy")

    @property
    def n_blocks(self) -> int:
        """Blocks in the split."""
        return len(self.bounds) - 1

    def read(self, indices: list[int]) -> list[dict]:
        """Blocks by index: ``image`` (a view of the mapped file), ``label``, ``ok``."""
        out = []
        for j in indices:
            a, b = int(self.bounds[j]), int(self.bounds[j + 1])
            out.append({"image": self.images[a:b], "label": self.labels[a:b], "ok": self.ok[a:b]})
        return out


def _reserve(path: Path, nbytes: int) -> None:
    """Claim the file's blocks on disk now.

    A full disk is then an OSError here, not a SIGBUS (the process killed) later, when a
    write to the memory map finds no block.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without it
            return
        raise
    finally:
        os.close(fd)


def _check_space(root: Path, rows: int, size: int) -> int:
    """Bytes of a cache of ``rows`` images; OSError ``ENOSPC`` if ``root`` cannot hold it."""
    need = rows * 3 * size * size
    free = shutil.disk_usage(root).free
    if free < need * 1.02 + 2**20:
        raise OSError(
            errno.ENOSPC,
            f"{root} has {free / 2**30:.1f} GiB free; the decoded split needs "
            f"{need / 2**30:.1f} GiB (set train.cache_dir to a larger disk, or "
            "train.data=store)",
        )
    return need


def build_block_cache(
    folder: str | os.PathLike,
    blocks: Iterable[dict],
    rows: int,
    size: int,
    extra: dict | None = None,
) -> BlockCache:
    """Write decoded blocks, in order, into a new cache folder.

    Args:
        folder: Where the cache goes (must not exist yet).
        blocks: Decoded blocks (:func:`citylens.pipeline.decode.decode_batch`'s columns:
            ``image`` uint8 ``(n, 3, S, S)``, ``label``, ``ok``, ``image_id``, ``uri``,
            ``error_kind``, ``error_message``), in the split's order.
        rows: Total rows of all blocks.
        size: Image side ``S``.
        extra: More fields for the cache's ``meta.json`` (``BlockCache.meta``).

    Returns:
        The cache, opened.

    Raises:
        ValueError: the blocks hold another number of rows than ``rows``.
        OSError: ``ENOSPC``, naming the folder and the sizes, when its disk cannot hold
            the cache (checked before anything is decoded).
    """
    folder = Path(folder)
    need = _check_space(folder.parent, rows, size)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    tmp.mkdir(parents=True)
    try:
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(rows, 3, size, size)
        )
        _reserve(tmp / "images.npy", images.offset + need)
        labels = np.zeros(rows, np.int64)
        ok = np.zeros(rows, bool)
        bounds, errors, at = [0], [], 0
        for block in blocks:
            n = len(block["label"])
            if at + n > rows:
                raise ValueError(f"the blocks hold more than the {rows} rows announced")
            images[at : at + n] = block["image"]
            labels[at : at + n] = block["label"]
            ok[at : at + n] = block["ok"]
            for i in np.flatnonzero(~np.asarray(block["ok"], bool)):
                errors.append(
                    {k: block[k][i] for k in ("image_id", "uri", "error_kind", "error_message")}
                )
            at += n
            bounds.append(at)
        if at != rows:
            raise ValueError(f"the blocks hold {at} rows, not the {rows} announced")
        images.flush()
        del images
        np.save(tmp / "labels.npy", labels)
        np.save(tmp / "ok.npy", ok)
        meta = {"format": FORMAT, "rows": rows, "size": size, "bounds": bounds, "errors": errors}
        meta |= extra or {}
        (tmp / _META).write_text(json.dumps(meta))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BlockCache(folder)


def _leftovers(root: Path, key: str) -> list[Path]:
    """Folders of ``key`` that are not a complete cache: dead builds, cut prunes."""
    out = [p for p in root.glob(f"{key}.tmp-*") if p.is_dir()]
    if (root / key).is_dir() and not (root / key / _META).exists():
        out.append(root / key)
    return out


def open_or_build(
    root: str | os.PathLike,
    key: str,
    blocks: Callable[[], Iterable[dict]],
    rows: int,
    size: int,
    reusable: Callable[[dict], bool] | None = None,
    extra: dict | None = None,
) -> tuple[BlockCache, bool]:
    """The cache ``key`` under ``root``, built first if this node has none.

    Trials on one node wait for each other (a lock file): the first builds, the others
    open what it built. Under the lock no one else builds ``key``, so what a build that
    died left behind is removed first.

    Args:
        root: The node's cache folder (``train.cache_dir``).
        key: Digest of what the cache holds.
        blocks: Makes the decoded blocks, called only to build.
        rows: Total rows.
        size: Image side.
        reusable: ``reusable(meta) -> bool``: may an existing cache be used (default:
            always)? One that may not is built again.
        extra: More ``meta.json`` fields of a cache built here.

    Returns:
        ``(cache, built here)``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (folder / _META).exists():
                cache = BlockCache(folder)
                if reusable is None or reusable(cache.meta):
                    os.utime(folder / _META)  # in use: pruning keeps it
                    return cache, False
                del cache
                shutil.rmtree(folder)
            for left in _leftovers(root, key):
                shutil.rmtree(left, ignore_errors=True)
            _check_space(root, rows, size)  # before anything is decoded
            return build_block_cache(folder, blocks(), rows, size, extra), True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prune(root: str | os.PathLike, keep: set[str], older_than_s: float) -> list[str]:
    """Remove caches under ``root`` not in ``keep`` and unused for ``older_than_s``.

    A cache's ``meta.json`` is touched each time a trial opens it; one that no study has
    opened for that long goes, and so do leftovers of builds that died, whatever their
    age; nothing whose lock someone holds is touched. Returns the names removed.
    """
    root, gone = Path(root), []
    if not root.is_dir():
        return gone
    for entry in sorted(root.iterdir()):
        name = entry.name.split(".tmp-")[0]
        if not entry.is_dir() or name in keep:
            continue
        with open(root / f"{name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built or opened now
            try:
                meta = entry / _META
                complete = ".tmp-" not in entry.name and meta.exists()
                # a leftover goes whatever its age: no one builds it (its lock is free)
                if complete and time.time() - meta.stat().st_mtime < older_than_s:
                    continue
                # renamed first: a cut removal leaves a leftover, never a broken cache
                doomed = (
                    entry
                    if not complete
                    else entry.rename(entry.with_name(f"{name}.tmp-prune-{time.monotonic_ns()}"))
                )
                shutil.rmtree(doomed, ignore_errors=True)
                gone.append(entry.name)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return gone
