"""Joining or starting Ray, and what the cluster offers."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

import ray

from citylens.config import StudyConfig
from citylens.errors import InputError
from citylens.pipeline import logs

__all__ = [
    "actor_count",
    "blocks",
    "check_reachable",
    "child_pids",
    "connect",
    "gpus",
    "node_cpus",
    "start_local",
    "start_retrying",
    "stop_pids",
    "total_cpus",
]

log = logging.getLogger("citylens")


def connect(cfg: StudyConfig) -> None:
    """Join ``run.address`` / ``RAY_ADDRESS``, else start a local Ray (:func:`start_local`).

    Does nothing when Ray is already initialised (tests, notebooks, ``ray job submit``
    entry points that called ``ray.init`` themselves).
    """
    if ray.is_initialized():
        return
    address = cfg.run.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING, **logs.init_args())
    else:
        start_local(include_dashboard=True)


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Refuse a ``host:port`` Ray address nothing answers at, naming it.

    ``ray.init`` would retry an unreachable GCS for minutes before failing. ``auto``,
    ``local`` and ``ray://`` client addresses are left to Ray.

    Raises:
        InputError: naming the address (and ``run.address`` / ``RAY_ADDRESS``).
    """
    if "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except ValueError:
        raise InputError(
            f"Ray address {address!r} (run.address or RAY_ADDRESS): bad port"
        ) from None
    except OSError as err:
        raise InputError(
            f"Ray address {address!r} (run.address or RAY_ADDRESS): nothing answers there "
            f"({err.strerror or err}); is the cluster up (`ray start --head`)?"
        ) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Set while a local Ray of ours starts, for the processes it starts (they inherit them).
_LOOPBACK_ENV = {
    # Ray's switch for single-machine clusters (its default on macOS and Windows): the
    # node's address is 127.0.0.1, so every server Ray starts — the Prometheus metrics
    # endpoints of the dashboard, its agent and the autoscaler among them — listens on
    # loopback instead of every interface.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Metrics servers on ports the system picks: the fixed defaults (44217, 44227)
    # collide when two local clusters run on one machine.
    "AUTOSCALER_METRIC_PORT": "0",
    "DASHBOARD_METRIC_PORT": "0",
}


def start_local(include_dashboard: bool = True, attempts: int = 3, **init_args) -> None:
    """Start a local Ray of our own that another local Ray on the machine cannot disturb.

    ``address="local"`` makes a new cluster, never a ``ray start`` cluster that happens to
    run here (plain ``ray.init()`` would join it, and die when it is stopped). Two more
    things keep concurrent studies apart:

    * Ray Train's placement-group cleaner (a detached actor) asks the state API whether
      its controller is alive, and finds "the" cluster by discovery: with two clusters on
      one machine it finds several, or the one ``ray start`` recorded, sees no such
      controller there and removes its own run's placement group, which kills the run's
      training workers. ``RAY_API_SERVER_ADDRESS``, inherited by every process of this
      cluster, names this cluster's own dashboard (on a port chosen here).
    * Every server binds to 127.0.0.1 (:data:`_LOOPBACK_ENV`): a local cluster has no
      business on the network, and its metrics endpoints have no authentication.

    Ray gives its raylet a fixed 30 s to register; on a machine busy with another study
    it can take longer. A start that times out is stopped (:func:`start_retrying`) and
    tried again, up to ``attempts`` times.

    Args:
        include_dashboard: Start the dashboard (on 127.0.0.1). Without it the state API
            is off: the cleaner's checks fail (it logs a warning and keeps its placement
            group), which is harmless; tests start no dashboard.
        attempts: Starts to try before the last timeout is raised.
        **init_args: More ``ray.init`` arguments (``num_cpus``, ``object_store_memory``).
    """
    init_args.setdefault("logging_level", logging.WARNING)
    for k, v in logs.init_args().items():
        init_args.setdefault(k, v)
    start_retrying(lambda: _init_local(include_dashboard, init_args), attempts=attempts)


def _init_local(include_dashboard: bool, init_args: dict) -> None:
    port = _free_port()  # a new one each try: a stopped try's dashboard may linger
    saved = {k: os.environ.get(k) for k in (*_LOOPBACK_ENV, "RAY_API_SERVER_ADDRESS")}
    os.environ.update(_LOOPBACK_ENV)
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    from ray._private import ray_constants  # read at import; the driver's copy is set here

    was, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        ray.init(
            address="local",
            include_dashboard=include_dashboard,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            **init_args,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = was
        # The driver's environment is as it was: the variables reached the processes the
        # cluster started, and RAY_API_SERVER_ADDRESS would override any address the
        # driver later gives a job client of its own.
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# What Ray's node start raises when the raylet did not register in time.
_STARTUP_TIMEOUT = "timed out during startup"


def start_retrying(start: Callable[[], None], attempts: int = 3) -> None:
    """Call ``start``; when it times out starting Ray, stop what it started and retry.

    A timed-out start leaves its GCS, raylet and dashboard running as children of this
    process (Ray shares their fate with the driver, so they would live as long as it
    does and compete with the next try): the children that appeared during the try are
    stopped before the next one. Other errors are raised at once.

    Args:
        start: Starts Ray (``ray.init``); raises on failure.
        attempts: Tries before the last timeout is raised (at least 1).
    """
    for attempt in range(1, max(1, attempts) + 1):
        before = child_pids()
        try:
            start()
            return
        except Exception as e:
            if _STARTUP_TIMEOUT not in str(e) or attempt >= attempts:
                raise
            log.warning(
                "the local Ray did not start in Ray's 30 s (a busy machine?): "
                "stopping it and trying again (%d of %d)",
                attempt + 1,
                attempts,
            )
            stop_pids(child_pids() - before)
            if ray.is_initialized():
                ray.shutdown()


def child_pids() -> set[int]:
    """Process ids whose parent is this process (Linux ``/proc``; empty elsewhere)."""
    me, found = os.getpid(), set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me:
            found.add(int(entry))
    return found


def stop_pids(pids: set[int], grace_s: float = 5.0) -> None:
    """SIGTERM ``pids``, SIGKILL those still running after ``grace_s``, and reap them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if not _reaped(p)}
            if pids:
                time.sleep(0.05)
        if not pids:
            return


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not ours to wait for, or already reaped
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return done == pid


def blocks(table, rows_per_block: int) -> ray.data.Dataset:
    """A dataset over ``table`` in blocks of ``rows_per_block`` rows.

    Slicing on the driver gives the downstream maps parallelism without an all-to-all
    repartition, whose tasks could wait forever behind actors holding every CPU.
    """
    n = max(1, rows_per_block)
    return ray.data.from_arrow([table.slice(i, n) for i in range(0, max(table.num_rows, 1), n)])


def gpus(cfg: StudyConfig | None = None) -> int:
    """GPUs the study uses: ``run.gpus`` when set, else the GPUs the cluster has now.

    An autoscaling cluster whose GPU workers start at zero sets ``run.gpus`` to the most
    it may grow to: the study then asks for GPUs and the autoscaler brings them up.
    (``ScalingConfig(use_gpu=True)`` fails on logical GPUs, so there is no guessing.)
    """
    if cfg is not None and cfg.run.gpus is not None:
        return cfg.run.gpus
    return int(ray.cluster_resources().get("GPU", 0))


def total_cpus() -> int:
    """CPUs of the whole cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def alive_nodes() -> int:
    """Nodes of the cluster alive now."""
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def node_cpus() -> int:
    """CPUs of the largest alive node: a single trial's CPUs must fit on one node."""
    per_node = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(max(per_node, default=1)))


def actor_count(cfg: StudyConfig) -> int:
    """Model-holding actors for explain/segment: one per GPU, else one per two CPUs."""
    if cfg.run.actors:
        return cfg.run.actors
    return gpus(cfg) or max(1, total_cpus() // 2)
