"""Joining or starting Ray, and what the cluster offers."""

from __future__ import annotations

import logging
import os

import ray

from citylens.config import StudyConfig

__all__ = ["actor_count", "blocks", "connect", "gpus", "node_cpus", "total_cpus"]

log = logging.getLogger("citylens")


def connect(cfg: StudyConfig) -> None:
    """Join ``run.address`` / ``RAY_ADDRESS``, else start a local Ray (dashboard on 127.0.0.1).

    Does nothing when Ray is already initialised (tests, notebooks, ``ray job submit``
    entry points that called ``ray.init`` themselves).
    """
    if ray.is_initialized():
        return
    address = cfg.run.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # address="local": a new Ray of our own, never a `ray start` cluster that happens to
        # run on this machine (plain ray.init() would join it, and die when it is stopped)
        ray.init(
            address="local",
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level=logging.WARNING,
        )


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
