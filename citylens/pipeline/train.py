"""Stage *train*: every (architecture, seed) fitted concurrently with Ray Train.

Images of the train/val/test splits are decoded once by Ray Data tasks into blocks in
the object store (spilled to disk when large); every trial reads the same blocks by
reference, in a seeded order per epoch. Each trial is a ``TorchTrainer`` (Train V2)
launched from a zero-CPU Ray task, as many at once as the cluster has slots for, each
asking for a GPU when the cluster has real ones and CPUs otherwise.

(Giving each trial Ray Data ``datasets=`` instead costs three coordinator actors per
trial and a dataset execution per epoch: on 2 CPUs that made the demo's training
1.8x slower.) Checkpoints go to ``<store>/models/<arch>-s<seed>/``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from citylens.pipeline import cluster
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.decode import decode_batch
from citylens.pipeline.ingest import read_manifest
from citylens.storage import Store, digest
from citylens.tables import errors_table

__all__ = ["model_name", "run_train"]

# Rough relative cost of a training step at equal size: the costliest start first.
_COST = {"vgg11": 8.0, "simpler": 2.0, "resnet18": 1.6, "simple": 1.0}


def model_name(arch: str, seed: int) -> str:
    return f"{arch}-s{seed}"


def run_name(name: str, key: str) -> str:
    """Ray Train run of one model: stable per training key, so a re-run after a crash
    continues the same run (from its last checkpoint) and a changed setting starts anew."""
    return f"{name}-{key[:12]}"


def _decoded(manifest: pa.Table, split: str, size: int, cities, opts) -> ray.data.Dataset:
    rows = manifest.filter(pc.equal(manifest["split"], split)).select(["image_id", "uri", "city"])
    ds = cluster.blocks(rows, 64)
    ds = ds.map_batches(
        decode_batch,
        batch_format="pyarrow",
        batch_size=64,
        fn_kwargs={"size": size, "cities": cities, "storage_options": opts},
    )
    return ds.materialize()


@contextlib.contextmanager
def _block_order_kept():
    """Ray Data keeps block order inside: the seeded shuffle of training draws blocks by
    position, so their order must not depend on which task finished first (a re-run, or
    one resumed from a checkpoint, would train differently)."""
    options = ray.data.DataContext.get_current().execution_options
    before, options.preserve_order = options.preserve_order, True
    try:
        yield
    finally:
        options.preserve_order = before


class BlockBatches:
    """Batches from decoded blocks held in the object store (see :func:`_decoded`).

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
        rng = np.random.default_rng([self.seed, e]) if e is not None else None
        order = rng.permutation(len(self.refs)) if rng is not None else range(len(self.refs))
        for images, labels in self._blocks(list(order)):
            idx = rng.permutation(len(labels)) if rng is not None else np.arange(len(labels))
            for i in range(0, len(idx), self.batch_size):
                sel = idx[i : i + self.batch_size]
                yield torch.from_numpy(images[sel]), torch.from_numpy(labels[sel])


def _errors_of(ds: ray.data.Dataset, split: str) -> list[dict]:
    from ray.data.expressions import col

    bad = ds.filter(expr=col("ok") == False).select_columns(  # noqa: E712 (an expression)
        ["image_id", "uri", "error_kind", "error_message"]
    )
    return [
        {
            "image_id": r["image_id"],
            "uri": r["uri"],
            "stage": "train",
            "kind": r["error_kind"],
            "message": f"{split} split: {r['error_message']}",
        }
        for r in bad.take_all()
    ]


def _train_loop(config: dict) -> dict:
    """Runs on the Ray Train worker: fit one model, checkpoint it to the store.

    Every ``checkpoint_every`` epochs the whole training state is reported to Ray Train
    as a checkpoint (kept under ``<store>/ray-train/<run>/``); when the same run starts
    again after a crash, Ray Train hands the last one back and training resumes there.
    """
    import tempfile

    import ray.train

    from citylens.train import TrainSettings, fit, save_checkpoint

    torch.set_num_threads(max(1, config["threads"]))
    device = "cuda" if config["use_gpu"] and torch.cuda.is_available() else "cpu"
    bs, seed = config["batch_size"], config["seed"]
    data = {k: BlockBatches(refs, bs, seed) for k, refs in config["blocks"].items()}
    every = config["checkpoint_every"]
    resume = None
    if (last := ray.train.get_checkpoint()) is not None:
        with last.as_directory() as folder:
            resume = torch.load(f"{folder}/state.pt", map_location=device, weights_only=True)

    def batches(name: str, epoch: int | None = None):
        return data[name].epoch(epoch)

    def on_state(state: dict) -> None:
        row = state["history"][-1]
        last_epoch = state["epoch"] == config["settings"]["epochs"]
        if not every or (state["epoch"] % every and not last_epoch):
            ray.train.report(row)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, f"{tmp}/state.pt")
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    result = fit(
        config["arch"],
        seed,
        len(config["cities"]),
        config["input_size"],
        train=lambda e: batches("train", e),
        val=lambda: batches("val"),
        test=lambda: batches("test"),
        settings=TrainSettings(**config["settings"]),
        init_weights=config["init_weights"],
        device=device,
        storage_options=config["storage_options"],
        on_state=on_state,
        resume=resume,
    )
    meta = {
        "seed": seed,
        "cities": config["cities"],
        "val_acc": result.val_acc,
        "test_acc": result.test_acc,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "manifest": config["manifest"],
        "key": config["key"],
        "settings": config["settings"],
        "device": device,
    }
    if ray.train.get_context().get_world_rank() == 0:
        store = Store(config["store"], config["storage_options"])
        uri = store.url(f"models/{config['name']}")
        save_checkpoint(uri, result.model.cpu(), meta, config["storage_options"])
    out = {k: meta[k] for k in ("val_acc", "test_acc", "best_epoch")}
    return {**out, "resumed_after": int(resume["epoch"]) if resume is not None else 0}


@ray.remote(num_cpus=0)
def _fit_one(config: dict, use_gpu: bool, cpus: int) -> dict:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Ray Train keeps its run bookkeeping under the study store, through the store's own
    # filesystem (so an S3-compatible endpoint set in run.storage_options applies).
    store = Store(config["store"], config["storage_options"])
    if store.local:
        storage, storage_fs = store.path("ray-train"), None
    else:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        storage, storage_fs = store.path("ray-train"), PyFileSystem(FSSpecHandler(store.fs))
    resources = {"CPU": cpus, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name(config["name"], config["key"]),
            storage_path=storage,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    return trainer.fit().return_value


def run_train(ctx: Context) -> StageResult:
    cfg, store = ctx.cfg, ctx.store
    up = ctx.upstream("ingest")
    cities = store.record("ingest")["cities"]
    t = cfg.train
    plans = {}
    for arch in cfg.models.archs:
        for seed in cfg.models.seeds:
            settings = {
                "epochs": t.epochs_for(arch),
                "batch_size": t.batch_size,
                "lr": t.lr,
                "betas": list(t.betas),
                "eps": t.eps,
                "lr_step": t.lr_step,
                "lr_gamma": t.lr_gamma,
            }
            init = cfg.models.init_weights.get(arch)
            key = ctx.key(
                "train",
                up,
                {
                    "arch": arch,
                    "seed": seed,
                    "settings": settings,
                    "input_size": t.input_size,
                    "init": init,
                },
            )
            plans[model_name(arch, seed)] = (arch, seed, settings, init, key)
    stage_key = digest(sorted((n, p[4]) for n, p in plans.items()))
    if rec := ctx.up_to_date("train", stage_key):
        return StageResult("train", "skipped", rec)
    folder, started = ctx.begin("train")
    todo = {n: p for n, p in plans.items() if not ctx.up_to_date(f"train/{n}", p[4])}
    for n in sorted(set(plans) - set(todo)):
        ctx.progress(f"train: {n} up to date")
    errors: list[dict] = []
    if todo:
        manifest = read_manifest(ctx)
        opts = cfg.run.storage_options
        ctx.progress(f"train: decoding {manifest.num_rows} images at {t.input_size} px")
        with _block_order_kept():
            decoded = {
                s: _decoded(manifest, s, t.input_size, cities, opts)
                for s in ("train", "val", "test")
            }
            # Blocks made here, while CPUs are free: trials that hold every CPU must not
            # need a Ray Data task to read their input (that deadlocks on a small cluster).
            blocks = {
                s: ds.select_columns(["image", "label", "ok"]).to_numpy_refs()
                for s, ds in decoded.items()
            }
        for split, ds in decoded.items():
            errors += _errors_of(ds, split)
        n_gpu = cluster.gpus(cfg)
        use_gpu = n_gpu > 0
        cpus = 1 if use_gpu else max(1, cluster.total_cpus() // max(1, len(todo)))
        cpus = min(cpus, cluster.node_cpus())
        # Start only as many trials as can run; the rest start as slots free up (idle
        # controllers waiting for resources cost a process each).
        slots = n_gpu if use_gpu else max(1, cluster.total_cpus() // cpus)
        order = sorted(todo, key=lambda n: -_COST.get(todo[n][0], 1.0))
        ctx.progress(
            f"train: fitting {len(todo)} models concurrently "
            f"({'1 GPU' if use_gpu else f'{cpus} CPU'} each): {', '.join(order)}"
        )

        def launch(n: str):
            arch, seed, settings, init, key = todo[n]
            config = {
                "name": n,
                "arch": arch,
                "seed": seed,
                "cities": cities,
                "input_size": t.input_size,
                "settings": settings,
                "init_weights": init,
                "batch_size": t.batch_size,
                "threads": cpus,
                "use_gpu": use_gpu,
                "manifest": up["ingest"],
                "key": key,
                "store": store.uri,
                "storage_options": opts,
                "blocks": blocks,
                "checkpoint_every": t.checkpoint_every,
            }
            return _fit_one.remote(config, use_gpu, cpus)

        queue = list(order)
        pending = {}
        while queue or pending:
            while queue and len(pending) < slots:
                n = queue.pop(0)
                pending[launch(n)] = n
            done, _ = ray.wait(list(pending), num_returns=1)
            n = pending.pop(done[0])
            out = ray.get(done[0])
            resumed = out.pop("resumed_after")
            ctx.store.commit(
                f"train/{n}",
                {"key": todo[n][4], "output": todo[n][4], "folder": f"models/{n}", **out},
            )
            # the model is committed: its run's training-state checkpoints are spent
            ctx.store.rm(f"ray-train/{run_name(n, todo[n][4])}")
            ctx.progress(
                f"train: {n} done: val {out['val_acc']:.3f}, test {out['test_acc']:.3f} "
                f"(best epoch {out['best_epoch']})"
                + (f", resumed after epoch {resumed}" if resumed else "")
            )
    store.write_table(f"{folder}/errors/errors.parquet", errors_table(errors))
    models = {n: {"arch": p[0], "seed": p[1], "key": p[4]} for n, p in plans.items()}
    rec = ctx.finish(
        "train",
        stage_key,
        folder,
        started,
        models=models,
        counts={"models": len(plans), "trained": len(todo), "errors": len(errors)},
    )
    return StageResult("train", "ran", rec)
