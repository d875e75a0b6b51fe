"""The store's lease: one run at a time, on a local disk and on S3 (moto's server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from citylens.lease import Lease, LeaseLost, StoreBusy
from citylens.storage import Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    s3 = request.getfixturevalue("s3_server")
    return Store(s3.bucket(f"lease-{uuid.uuid4().hex[:8]}"), s3.options)


def _fake(store: Store, generation: int, **fields) -> None:
    record = {
        "token": "x",
        "study": "other",
        "host": "elsewhere",
        "machine": "elsewhere|",
        "pid": 1,
        "started": "then",
        "heartbeat": time.time(),
        **fields,
    }
    store.write_bytes(f"lock/lease-{generation:08d}.json", json.dumps(record).encode())


def test_a_second_run_is_refused_naming_the_holder_until_the_first_ends(store):
    first = Lease(store, "study-a")
    first.acquire()
    try:
        with pytest.raises(StoreBusy) as err:
            Lease(store, "study-b").acquire()
        text = err.value.message
        assert "study 'study-a'" in text and f"pid {os.getpid()}" in text and "--wait" in text
    finally:
        first.release()
    second = Lease(store, "study-b")
    second.acquire()
    second.check()
    second.release()
    assert store.ls("lock") == []  # given back: nothing left behind


def test_a_waiting_run_takes_the_lease_when_the_holder_gives_it_back(store):
    first = Lease(store, "a")
    first.acquire()
    threading.Timer(1.0, first.release).start()
    said: list[str] = []
    second = Lease(store, "b")
    t = time.monotonic()
    second.acquire(wait=30, poll=0.2, progress=said.append)
    assert 0.9 < time.monotonic() - t < 20
    assert len(said) == 1 and said[0].startswith("waiting: store") and "study 'a'" in said[0]
    second.release()


def test_a_lease_without_heartbeat_is_taken_over_and_a_live_one_is_not(store):
    _fake(store, 3, heartbeat=time.time() - 3600)
    said: list[str] = []
    lease = Lease(store, "mine")
    lease.acquire(progress=said.append)
    assert lease.generation == 4 and "no heartbeat for" in said[0]
    assert store.ls("lock") == ["lease-00000004.json"]  # the superseded one is gone
    lease.release()
    _fake(store, 7)  # fresh, from another machine: alive as far as anyone here knows
    with pytest.raises(StoreBusy, match="host elsewhere, pid 1"):
        Lease(store, "mine").acquire()


def test_a_holder_killed_on_this_machine_is_taken_over_at_once(tmp_path):
    code = (
        "import sys, time; from citylens.lease import Lease; from citylens.storage import Store;"
        f"Lease(Store({str(tmp_path / 's')!r}), 'killed', heartbeat_s=60, stale_s=600).acquire();"
        "print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    store = Store(str(tmp_path / "s"))
    with pytest.raises(StoreBusy, match="study 'killed'"):
        Lease(store, "next").acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    said: list[str] = []
    lease = Lease(store, "next", heartbeat_s=60, stale_s=600)
    lease.acquire(progress=said.append)  # its heartbeat is fresh, but its process is gone
    assert f"its process {proc.pid} on this machine has ended" in said[0]
    lease.release()


def test_of_many_runs_racing_for_a_stale_lease_exactly_one_wins(store):
    _fake(store, 1, heartbeat=0.0)
    leases = [Lease(store, f"run{i}") for i in range(8)]
    won, busy = [], []
    start = threading.Barrier(len(leases))

    def race(lease):
        start.wait()
        try:
            lease.acquire()
            won.append(lease)
        except StoreBusy:
            busy.append(lease)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(busy) == 7
    won[0].check()
    won[0].release()


def test_a_stalled_holder_learns_its_lease_was_taken_and_stops(store):
    stalled = Lease(store, "slow", heartbeat_s=0.2, stale_s=1.0)
    stalled.acquire()
    path = f"lock/lease-{stalled.generation:08d}.json"
    beat = json.loads(store.read_bytes(path))["heartbeat"]
    time.sleep(0.7)
    assert json.loads(store.read_bytes(path))["heartbeat"] > beat  # the heartbeat runs
    stalled._stop.set()  # its process stalls: no more heartbeats
    stalled._thread.join()
    time.sleep(1.2)
    taker = Lease(store, "fast", heartbeat_s=0.2, stale_s=1.0)
    taker.acquire()
    with pytest.raises(LeaseLost, match="taken over by study 'fast'"):
        stalled.check()
    stalled.release()  # gives back nothing: the lease is the taker's
    taker.check()
    taker.release()
