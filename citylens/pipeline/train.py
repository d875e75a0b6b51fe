"""Stage *train*: every (architecture, seed) fitted concurrently with Ray Train.

Images of the train/val/test splits are decoded once by Ray Data tasks into blocks in
the object store (spilled to disk when large); every model reads the same blocks by
reference, in a seeded order per epoch. Models are fitted by ``TorchTrainer`` runs
(Train V2), one per slot the cluster has (a GPU each when it has real ones, else its
share of the CPUs), each launched from a zero-CPU Ray task. When there are more models
than slots, a run fits several one after another (split by expected cost, longest
first): starting a run (controller, worker process, torch import, process group) costs
~10 s on a small machine, which one-run-per-model paid per model. Each model is
committed by its run as soon as it is saved, so a crash loses only unfinished models.

(Giving each trial Ray Data ``datasets=`` instead costs three coordinator actors per
trial and a dataset execution per epoch: on 2 CPUs that made the demo's training
1.8x slower.) Checkpoints go to ``<store>/models/<arch>-s<seed>/``.
"""

from __future__ import annotations

import contextlib

import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.pipeline import cluster
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.decode import decode_batch
from citylens.pipeline.ingest import read_manifest
from citylens.pipeline.trainer import fit_run
from citylens.storage import digest
from citylens.tables import errors_table

__all__ = ["model_name", "run_train"]

# Rough relative cost of a training step at equal size; × epochs, a model's expected
# cost, by which models are split across runs (the costliest start first).
_COST = {"vgg11": 8.0, "simpler": 2.0, "resnet18": 1.6, "simple": 1.0}


def model_name(arch: str, seed: int) -> str:
    return f"{arch}-s{seed}"


def run_name(names: list[str], keys: list[str]) -> str:
    """Ray Train run fitting ``names`` in order: stable per training keys, so a re-run
    after a crash continues the same run (from its last checkpoint) and a changed setting
    or a different split of the models into runs starts anew."""
    if len(names) == 1:
        return f"{names[0]}-{keys[0][:12]}"
    return f"{names[0]}-group{len(names)}-{digest(list(zip(names, keys)))[:12]}"


def plan_runs(costs: dict[str, float], runs: int) -> list[list[str]]:
    """Split models into at most ``runs`` sequences of about equal total cost.

    Longest first, each to the least loaded run (ties: the earlier run), so the
    costliest models start at once and the cheap ones fill in behind them.

    Args:
        costs: Expected cost of each model (any unit).
        runs: Concurrent runs available (≥ 1).

    Returns:
        Non-empty lists of model names, each in the order its run fits them.
    """
    order = sorted(costs, key=lambda n: (-costs[n], n))
    plan: list[list[str]] = [[] for _ in range(max(1, min(runs, len(order))))]
    load = [0.0] * len(plan)
    for n in order:
        i = min(range(len(plan)), key=lambda j: (load[j], j))
        plan[i].append(n)
        load[i] += costs[n]
    return [p for p in plan if p]


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


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _done_line(name: str, rec: dict) -> str:
    resumed = rec.get("resumed_after", 0)
    return (
        f"train: {name} done: val {rec['val_acc']:.3f}, test {rec['test_acc']:.3f} "
        f"(best epoch {rec['best_epoch']})"
        + (f", resumed after epoch {resumed}" if resumed else "")
    )


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
    decoded_rows = 0
    if todo:
        ctx.ray()
        manifest = read_manifest(ctx)
        decoded_rows = manifest.num_rows
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
        # The split into runs is made over all the stage's models, so it (and each run's
        # name) is the same when a re-run after a crash has only some left to fit.
        slots = n_gpu if use_gpu else cluster.total_cpus()
        costs = {n: _COST.get(p[0], 1.0) * p[2]["epochs"] for n, p in plans.items()}
        plan = [ns for ns in plan_runs(costs, slots) if any(n in todo for n in ns)]
        cpus = 1 if use_gpu else min(cluster.total_cpus() // len(plan), cluster.node_cpus())
        ctx.progress(
            f"train: fitting {_count(len(todo), 'model')} in "
            f"{_count(len(plan), 'concurrent run')} "
            f"({'1 GPU' if use_gpu else f'{cpus} CPU'} each): "
            + "; ".join(", ".join(n for n in ns if n in todo) for ns in plan)
        )
        shared = {
            "cities": cities,
            "input_size": t.input_size,
            "batch_size": t.batch_size,
            "threads": cpus,
            "use_gpu": use_gpu,
            "manifest": up["ingest"],
            "store": store.uri,
            "storage_options": opts,
            "blocks": blocks,
            "checkpoint_every": t.checkpoint_every,
            "attempt": folder,
        }
        pending = {}
        for names in plan:
            specs = []
            for n in names:
                arch, seed, settings, init, key = plans[n]
                specs.append(
                    {
                        "name": n,
                        "arch": arch,
                        "seed": seed,
                        "settings": settings,
                        "init_weights": init,
                        "key": key,
                        "done": n not in todo,
                    }
                )
            run = run_name(names, [plans[n][4] for n in names])
            ref = fit_run.remote({**shared, "models": specs, "run": run})
            pending[ref] = run
        unreported = sorted(todo)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
                for ref in done:
                    ray.get(ref)  # a failed run raises here
                    # its models are committed: their training-state checkpoints are spent
                    store.rm(f"ray-train/{pending.pop(ref)}")
                # runs commit their models one by one: report each as it lands
                for n in list(unreported):
                    rec = store.record(f"train/{n}")
                    if rec is not None and rec.get("attempt") == folder:
                        unreported.remove(n)
                        ctx.progress(_done_line(n, rec))
        except KeyboardInterrupt:
            # On a cluster the runs would go on without us: end them (their Ray Train
            # controllers are owned by these tasks and end with them). Checkpoints stay.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        if unreported:
            raise RuntimeError(f"train: runs ended without committing {unreported}")
    store.write_table(f"{folder}/errors/errors.parquet", errors_table(errors))
    models = {n: {"arch": p[0], "seed": p[1], "key": p[4]} for n, p in plans.items()}
    rec = ctx.finish(
        "train",
        stage_key,
        folder,
        started,
        models=models,
        counts={
            # images decoded for the models fitted by this run (none if all were up to date)
            "inputs": decoded_rows,
            "images": decoded_rows - len(errors),
            "errors": len(errors),
            "models": len(plans),
            "trained": len(todo),
        },
    )
    return StageResult("train", "ran", rec)
