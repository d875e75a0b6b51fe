"""The Ray Train side of stage *train*: one ``TorchTrainer`` run fits its models in turn.

Each model is saved to ``<store>/models/<name>/`` and committed (``train/<name>``) by the
run itself as soon as it is fitted, so a crash later in the run keeps it. Ray and the
store are used here; the training itself is :func:`citylens.train.fit`, unchanged.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile

import numpy as np
import ray
import torch

from citylens.allocator import worker_runtime_env
from citylens.pipeline.shards import copy_file
from citylens.storage import Store
from citylens.weights import load_tensors

__all__ = ["BlockBatches", "fit_run"]


class BlockBatches:
    """Batches from the train stage's decoded blocks, held in the object store.

    Training order is seeded: the block order is shuffled per epoch, then images are
    shuffled within windows of ``window`` blocks. Evaluation keeps the stored order.

    Args:
        refs: Object refs of dicts with ``image`` uint8 ``(n, 3, S, S)``, ``label``, ``ok``.
        batch_size: Images per batch.
        seed: Shuffle seed; epoch ``e`` uses ``(seed, e)``.
        window: Blocks shuffled together.
    """

    def __init__(self, refs: list, batch_size: int, seed: int = 0, window: int = 8) -> None:
        self.refs, self.batch_size, self.seed, self.window = refs, batch_size, seed, window

    def _blocks(self, order):
        for i in range(0, len(order), self.window):
            blocks = ray.get([self.refs[j] for j in order[i : i + self.window]])
            ok = np.concatenate([np.asarray(b["ok"], bool) for b in blocks])
            images = np.concatenate([np.asarray(b["image"]) for b in blocks])[ok]
            labels = np.concatenate([np.asarray(b["label"]) for b in blocks])[ok]
            yield images, labels

    def epoch(self, e: int | None = None):
        """One pass over the blocks: shuffled (seeded by ``e``) for training, else in order.

        Yields:
            ``(uint8 images (B, 3, S, S), int64 labels (B,))`` tensors.
        """
        rng = np.random.default_rng([self.seed, e]) if e is not None else None
        order = rng.permutation(len(self.refs)) if rng is not None else range(len(self.refs))
        for images, labels in self._blocks(list(order)):
            idx = rng.permutation(len(labels)) if rng is not None else np.arange(len(labels))
            for i in range(0, len(idx), self.batch_size):
                sel = idx[i : i + self.batch_size]
                yield torch.from_numpy(images[sel]), torch.from_numpy(labels[sel])


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
    data = {k: BlockBatches(refs, bs, seed) for k, refs in config["blocks"].items()}
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
