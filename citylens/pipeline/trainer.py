"""The Ray Train side of stage *train*: one ``TorchTrainer`` run fits its models in turn.

Each model is saved to ``<store>/models/<name>/`` and committed (``train/<name>``) by the
run itself as soon as it is fitted, so a crash later in the run keeps it. Ray and the
store are used here; the training itself is :func:`citylens.train.fit`, unchanged.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import ray
import torch

from citylens.allocator import worker_runtime_env
from citylens.data.batches import ShuffledBlocks
from citylens.data.block_cache import BlockCache, open_or_build, prune
from citylens.pipeline.shards import copy_file
from citylens.storage import Store
from citylens.weights import load_tensors

__all__ = ["ROWS_PER_BLOCK", "fit_run", "node_caches"]

ROWS_PER_BLOCK = 64  # images per decoded block, in either data path
CACHE_KEPT_S = 7 * 86400  # a node's caches no study opened for this long are removed
READ_RETRIES = (1.0, 4.0)  # seconds before each new read of a file a node could not read


def _object_store_batches(refs: list, batch_size: int, seed: int) -> ShuffledBlocks:
    """Batches from the driver's decoded blocks, read from Ray's object store."""
    return ShuffledBlocks(len(refs), lambda js: ray.get([refs[j] for j in js]), batch_size, seed)


def _decode_retrying(rows: pa.Table, config: dict, waits=READ_RETRIES) -> dict:
    """One block decoded; rows whose file could not be *read* are read again.

    A file that cannot be decoded fails the same way on every node, but a read can fail
    for a moment (a storage timeout, throttling): each node decodes for itself, so such
    rows are retried after each of ``waits`` seconds before they count as unreadable.
    """
    from citylens.pipeline.decode import decode_batch

    size, cities, opts = config["input_size"], config["cities"], config["storage_options"]
    block = decode_batch(rows, size, cities, opts)
    for wait in waits:
        again = np.flatnonzero(~block["ok"] & (block["error_kind"] == "unreadable"))
        if not len(again):
            break
        time.sleep(wait)
        redo = decode_batch(rows.take(pa.array(again)), size, cities, opts)
        for column, values in redo.items():
            block[column][again] = values
    return block


def _decoded_blocks(rows: pa.Table, config: dict):
    """The split's blocks of 64 rows decoded in order, on every CPU the node gives us."""
    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, rows.num_rows, ROWS_PER_BLOCK)
    with ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as pool:
        yield from pool.map(
            lambda i: _decode_retrying(rows.slice(i, ROWS_PER_BLOCK), config), starts
        )


def node_caches(config: dict) -> tuple[dict[str, BlockCache], list[dict]]:
    """Each split's cache on this node (``train.data: node_cache``), built if missing.

    Returns:
        ``(split -> cache, the decode errors of every split)``.
    """
    caches, errors = {}, []
    attempt = config["attempt"]

    def reusable(meta: dict) -> bool:
        # rows unreadable when it was built may be readable now: a cache that has any is
        # used only within the stage run that built it, so every trial of that run
        # reads the same rows, and the next run reads them again
        unreadable = any(e["error_kind"] == "unreadable" for e in meta["errors"])
        return not unreadable or meta.get("attempt") == attempt

    for split, spec in config["splits"].items():
        cache, built = open_or_build(
            config["cache_dir"],
            spec["key"],
            lambda spec=spec: _decoded_blocks(spec["rows"], config),
            spec["rows"].num_rows,
            config["input_size"],
            reusable=reusable,
            extra={"attempt": attempt},
        )
        if built:
            logging.getLogger(__name__).warning(
                "train: %s split decoded into this node's cache %s", split, cache.folder
            )
        caches[split] = cache
        errors += [{**e, "split": split} for e in cache.errors]
    keep = {spec["key"] for spec in config["splits"].values()}
    prune(config["cache_dir"], keep, older_than_s=CACHE_KEPT_S)
    return caches, errors


def quiet_reports() -> None:
    """Keep Ray Train from logging every ``ray.train.report`` to the console.

    Ray Train V2 logs each report, metrics and all, at INFO from a logger named after
    its source file, which ``LoggingConfig`` does not filter; citylens prints one line
    per fitted model instead. Warnings and errors still show. Where a later Ray moves
    that logger, its lines show again and nothing else changes.
    """
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    context.logger.setLevel(logging.WARNING)


def _train_loop(config: dict) -> dict:
    """Fit the run's models in order, on the Ray Train worker.

    Each is saved to the store and committed (``train/<name>``) before the next starts.

    Every ``checkpoint_every`` epochs a model's whole training state is reported to Ray
    Train as a checkpoint, with the model's name (kept under ``<store>/ray-train/<run>/``);
    when the same run starts again after a crash — or Ray Train restarts its worker
    inside the run (``train.max_failures``) — Ray Train hands the last one back and that
    model resumes at its epoch; models committed before are skipped.

    With ``train.data: node_cache`` the splits are first opened from (or decoded into)
    this node's cache, and the decode errors come back under ``decode_errors``.
    """
    import ray.train

    quiet_reports()
    torch.set_num_threads(max(1, config["threads"]))
    device = "cuda" if config["use_gpu"] and torch.cuda.is_available() else "cpu"
    resume, resume_of = None, None
    if (last := ray.train.get_checkpoint()) is not None:
        with last.as_directory() as folder:
            with open(f"{folder}/model.json") as f:
                of = json.load(f)
            resume_of = (of["name"], of["key"])
            resume = load_tensors(f"{folder}/state.pt", f"{last.path}/state.pt", device)
    out = {}
    if config.get("splits"):  # train.data: node_cache
        caches, out["decode_errors"] = node_caches(config)
        config = {**config, "caches": caches}
    store = Store(config["store"], config["storage_options"])
    for spec in config["models"]:
        if spec["done"]:  # committed by an earlier attempt
            continue
        rec = store.record(f"train/{spec['name']}")
        if (
            rec is not None
            and rec.get("key") == spec["key"]
            and rec.get("attempt") == config["attempt"]
        ):
            out[spec["name"]] = {k: rec.get(k) for k in ("val_acc", "test_acc")}
            continue  # committed before a lost worker restarted this run
        state = resume if (spec["name"], spec["key"]) == resume_of else None
        out[spec["name"]] = _fit_model(config, spec, device, state)
        gc.collect()  # the finished model's weights and optimiser state
    return out


def _fit_model(config: dict, spec: dict, device: str, resume: dict | None) -> dict:
    """Fit one model of a run (see :func:`_train_loop`); returns its accuracies."""
    import ray.train

    from citylens.config.schema import TrainSettings
    from citylens.train import fit, save_checkpoint

    bs, seed, name = config["batch_size"], spec["seed"], spec["name"]
    if "caches" in config:
        data = {
            k: ShuffledBlocks(c.n_blocks, c.read, bs, seed) for k, c in config["caches"].items()
        }
    else:
        data = {k: _object_store_batches(refs, bs, seed) for k, refs in config["blocks"].items()}
    every = config["checkpoint_every"]

    def batches(split: str, epoch: int | None = None):
        return data[split].epoch(epoch)

    def on_state(state: dict) -> None:
        row = {"model": name, **state["history"][-1]}
        last_epoch = state["epoch"] == spec["settings"]["epochs"]
        if not every or (state["epoch"] % every and not last_epoch):
            ray.train.report(row)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, f"{tmp}/state.pt")
            with open(f"{tmp}/model.json", "w") as f:
                json.dump({"name": name, "key": spec["key"]}, f)
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    result = fit(
        spec["arch"],
        seed,
        len(config["cities"]),
        config["input_size"],
        train=lambda e: batches("train", e),
        val=lambda: batches("val"),
        test=lambda: batches("test"),
        settings=TrainSettings(**spec["settings"]),
        init_weights=spec["init_weights"],
        device=device,
        storage_options=config["storage_options"],
        on_state=on_state,
        resume=resume,
        precision=config.get("precision", "fp32"),
    )
    out = {
        "val_acc": result.val_acc,
        "test_acc": result.test_acc,
        "best_epoch": result.best_epoch,
        "resumed_after": int(resume["epoch"]) if resume is not None else 0,
    }
    if ray.train.get_context().get_world_rank() == 0:
        meta = {
            "seed": seed,
            "cities": config["cities"],
            "val_acc": result.val_acc,
            "test_acc": result.test_acc,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "manifest": config["manifest"],
            "key": spec["key"],
            "settings": spec["settings"],
            "precision": config.get("precision", "fp32"),
            "device": device,
        }
        store = Store(config["store"], config["storage_options"])
        save_checkpoint(
            store.url(f"models/{name}"), result.model.cpu(), meta, config["storage_options"]
        )
        if config.get("trained_on"):  # after the weights: see run_train
            copy_file(store, config["trained_on"], f"models/{name}/trained_on.parquet")
        # committed here, not when the run ends: a crash later in the run keeps it
        store.commit(
            f"train/{name}",
            {
                "key": spec["key"],
                "output": spec["key"],
                # the key train.retrain: new_city checks (no manifest in it)
                "city_key": spec.get("city_key"),
                "folder": f"models/{name}",
                "attempt": config["attempt"],
                **out,
            },
        )
    return out


@ray.remote(num_cpus=0)
def fit_run(config: dict) -> dict:
    """One ``TorchTrainer`` run fitting ``config["models"]`` in order; their accuracies."""
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    # Ray Train keeps its run bookkeeping under the study store, through the store's own
    # filesystem (so an S3-compatible endpoint set in run.storage_options applies).
    store = Store(config["store"], config["storage_options"])
    if store.local:
        storage, storage_fs = store.path("ray-train"), None
    else:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        storage, storage_fs = store.path("ray-train"), PyFileSystem(FSSpecHandler(store.fs))
    use_gpu = config["use_gpu"]
    resources = {"CPU": config["threads"], **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=config["run"],
            storage_path=storage,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            # a lost worker (a spot node, an OOM kill) restarts inside this run, from
            # the last checkpoint Ray Train hands back (see _train_loop)
            failure_config=FailureConfig(max_failures=config.get("max_failures", 0)),
            worker_runtime_env=worker_runtime_env(),  # see citylens.allocator
            # Ray Train's own INFO lines (resources requested, worker group started) stay
            # in its log files; the console gets citylens's lines and any warning
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    return trainer.fit().return_value
