"""One run at a time per store: a lease file with owner, host, pid and heartbeat.

Two ``citylens run`` on one store (a cron job overlapping a manual run) would each
commit stages and prune the other's run folders in flight. A run therefore holds the
store's lease while it works, and a second run waits for it or stops with a message
naming the holder.

The lease is a series of files ``<store>/lock/lease-<generation>.json``; the highest
generation is the current one. Taking the lease is creating the next generation's file
with an exclusive create (:meth:`~citylens.storage.Store.create_bytes`: a hard link on
disk, ``If-None-Match: *`` on S3), so of several runs racing for it exactly one wins,
on a local disk and on S3 alike, with no lock server. The holder rewrites its file with
a fresh heartbeat every ``heartbeat_s`` seconds and removes it when it ends.

A lease is *stale*, and is taken over by the next generation, when its heartbeat is
older than ``stale_s`` (the holder died on another machine, or its machine did), or at
once when its holder ran on this machine and its process is gone. A holder whose lease
was taken over (it stalled for longer than ``stale_s``) learns so at its next heartbeat
or commit and stops before writing anything more: :meth:`Lease.check`.
Clocks of the machines sharing a store must agree to well within ``stale_s``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from citylens.storage import Store

__all__ = ["Lease", "LeaseLost", "StoreBusy"]

FOLDER = "lock"
_NAME = re.compile(r"^lease-(\d{8})\.json$")


class StoreBusy(RuntimeError):
    """Another run holds the store's lease.

    Attributes:
        holder: The holder's lease record (study, host, pid, started, heartbeat).
        message: One line for the user, naming the holder.
    """

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.message, self.holder = message, holder


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it stalled longer than the stale timeout)."""


def _machine() -> str:
    """This machine and process namespace: pids compare only within one."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"{socket.gethostname()}|{ns}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Lease:
    """The store's lease, held by this process while a study runs.

    Args:
        store: The study's store.
        study: The study's name (shown to a run that finds the store busy).
        heartbeat_s: Seconds between heartbeats.
        stale_s: A lease whose heartbeat is older than this is taken over.
    """

    def __init__(
        self, store: Store, study: str, heartbeat_s: float = 20.0, stale_s: float = 120.0
    ) -> None:
        if stale_s <= 2 * heartbeat_s:
            raise ValueError("stale_s must exceed two heartbeats")
        self.store, self.study = store, study
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = uuid.uuid4().hex
        self.generation: int | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: dict[str, Any] = {}

    # ------------------------------------------------------------------ files
    def _rel(self, generation: int) -> str:
        return f"{FOLDER}/lease-{generation:08d}.json"

    def _generations(self) -> list[int]:
        return sorted(int(m[1]) for n in self.store.ls(FOLDER) if (m := _NAME.match(n)))

    def _read(self, generation: int) -> dict | None:
        try:
            return json.loads(self.store.read_bytes(self._rel(generation)))
        except FileNotFoundError:
            return None
        except ValueError:  # unreadable: treat as held, and stale once old enough
            return {"token": None, "heartbeat": 0.0, "study": "?", "host": "?", "pid": -1}

    def _body(self) -> bytes:
        self._record["heartbeat"] = time.time()
        return (json.dumps(self._record, indent=2) + "\n").encode()

    def stale(self, record: dict, now: float | None = None) -> str | None:
        """Why ``record`` is stale, or None while its holder counts as alive."""
        age = (now or time.time()) - float(record.get("heartbeat") or 0)
        if age > self.stale_s:
            return f"no heartbeat for {age:.0f} s"
        if record.get("machine") == _machine() and not _alive(int(record.get("pid", -1))):
            return f"its process {record.get('pid')} on this machine has ended"
        return None

    # ------------------------------------------------------------------ taking and giving back
    def acquire(
        self, wait: float = 0.0, poll: float = 2.0, progress: Callable[[str], None] | None = None
    ) -> None:
        """Take the lease, waiting up to ``wait`` seconds for a live holder to end.

        Raises:
            StoreBusy: a live run still holds it after ``wait`` seconds.
        """
        deadline = time.monotonic() + max(0.0, wait)
        told = False
        self._record = {
            "token": self.token,
            "study": self.study,
            "host": socket.gethostname(),
            "machine": _machine(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        while True:
            gens = self._generations()
            top = gens[-1] if gens else 0
            holder = self._read(top) if top else None
            if holder is not None and self.stale(holder) is None:
                if time.monotonic() >= deadline:
                    raise StoreBusy(self._busy_message(holder), holder)
                if progress is not None and not told:
                    progress(f"waiting: {self._busy_message(holder, waiting=True)}")
                    told = True
                time.sleep(poll)
                continue
            if holder is not None and progress is not None:
                progress(
                    f"store {self.store.uri}: taking over the lease of study "
                    f"{holder.get('study')!r} ({self.stale(holder)})"
                )
            mine = top + 1
            created = self.store.create_bytes(self._rel(mine), self._body())
            if not created:  # lost the race, unless a retried request of ours made it
                got = self._read(mine)
                if got is None or got.get("token") != self.token:
                    continue
            self.generation = mine
            for old in gens:  # superseded: nobody may act on them any more
                with contextlib.suppress(OSError):
                    self.store.rm(self._rel(old))
            self._thread = threading.Thread(target=self._beat, name="citylens-lease", daemon=True)
            self._thread.start()
            return

    def _busy_message(self, holder: dict, waiting: bool = False) -> str:
        age = time.time() - float(holder.get("heartbeat") or 0)
        what = (
            f"store {self.store.uri} is in use by study {holder.get('study')!r} "
            f"(host {holder.get('host')}, pid {holder.get('pid')}, since "
            f"{holder.get('started')}, last heartbeat {age:.0f} s ago)"
        )
        if waiting:
            return what
        return (
            f"{what}. Run again when it has finished, or with --wait SECONDS to queue "
            f"behind it; a lease without a heartbeat for {self.stale_s:.0f} s is taken over."
        )

    def _owned(self) -> str | None:
        """Why the lease is no longer this process's, or None if it still is."""
        if self.generation is None:
            return "never taken"
        gens = self._generations()
        if gens and gens[-1] > self.generation:
            newer = self._read(gens[-1]) or {}
            return (
                f"taken over by study {newer.get('study')!r} (host {newer.get('host')}, "
                f"pid {newer.get('pid')})"
            )
        got = self._read(self.generation)
        if got is None or got.get("token") != self.token:
            return "its lease file was removed"
        return None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.lost = self._owned()
                if self.lost is not None:
                    return
                self.store.write_bytes(self._rel(self.generation), self._body())
            except Exception:  # a transient store error: the next beat tries again
                continue

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this process still holds the lease.

        Call it before anything that must not happen twice: committing a stage.
        """
        why = self.lost or self._owned()
        if why is not None:
            self.lost = why
            raise LeaseLost(
                f"store {self.store.uri}: this run's lease was {why} after it stalled for "
                f"more than {self.stale_s:.0f} s; it stops here without committing"
            )

    def release(self) -> None:
        """Stop the heartbeat and give the lease back (if still held)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
        if self.generation is not None and self.lost is None:
            try:
                if self._owned() is None:
                    self.store.rm(self._rel(self.generation))
            except OSError:
                pass  # a stale lease is taken over by the next run anyway
        self.generation = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
