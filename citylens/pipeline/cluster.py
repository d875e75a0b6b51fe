"""Joining or starting Ray, and what the cluster offers."""

from __future__ import annotations

import logging
import os
import socket

import ray

from citylens.config import StudyConfig

__all__ = [
    "actor_count",
    "blocks",
    "connect",
    "gpus",
    "node_cpus",
    "start_local",
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
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        start_local(include_dashboard=True)


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


def start_local(include_dashboard: bool = True, **init_args) -> None:
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

    Args:
        include_dashboard: Start the dashboard (on 127.0.0.1). Without it the state API
            is off: the cleaner's checks fail (it logs a warning and keeps its placement
            group), which is harmless; tests start no dashboard.
        **init_args: More ``ray.init`` arguments (``num_cpus``, ``object_store_memory``).
    """
    port = _free_port()
    saved = {k: os.environ.get(k) for k in (*_LOOPBACK_ENV, "RAY_API_SERVER_ADDRESS")}
    os.environ.update(_LOOPBACK_ENV)
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    from ray._private import ray_constants  # read at import; the driver's copy is set here

    was, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        init_args.setdefault("logging_level", logging.WARNING)
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


def node_cpus() -> int:
    """CPUs of the largest alive node: a single trial's CPUs must fit on one node."""
    per_node = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(max(per_node, default=1)))


def actor_count(cfg: StudyConfig) -> int:
    """Model-holding actors for explain/segment: one per GPU, else one per two CPUs."""
    if cfg.run.actors:
        return cfg.run.actors
    return gpus(cfg) or max(1, total_cpus() // 2)
