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
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray

from citylens.config.schema import TrainSettings
from citylens.data.block_cache import FORMAT
from citylens.pipeline import cluster
from citylens.pipeline.committed import read_manifest
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.decode import decode_batch
from citylens.pipeline.reuse import (
    TRAINED_ON,
    city_data,
    data_key,
    refit_models,
    take_models,
    trained_rows,
)
from citylens.pipeline.trainer import ROWS_PER_BLOCK, fit_run
from citylens.storage import digest
from citylens.tables import error_row, errors_table, model_name

__all__ = ["ModelPlan", "data_path", "plan_runs", "run_name", "run_train"]

SPLITS = ("train", "val", "test")

# Rough relative cost of a training step at equal size; × epochs, a model's expected
# cost, by which models are split across runs (the costliest start first).
_COST = {"vgg11": 8.0, "simpler": 2.0, "resnet18": 1.6, "simple": 1.0}


@dataclass(frozen=True)
class ModelPlan:
    """One model the stage is to have: what it is, how it is trained, and its key."""

    name: str  # model_name(arch, seed)
    arch: str
    seed: int
    settings: TrainSettings
    init: str | None  # starting weights (models.init_weights), or None
    key: str  # digest of the data (data_key), arch, seed, settings, input size and init
    city_key: str  # the same with the data of train.retrain: new_city (no manifest)

    @property
    def cost(self) -> float:
        """Expected cost of fitting it (relative units), by which runs are balanced."""
        return _COST.get(self.arch, 1.0) * self.settings.epochs

    def spec(self, done: bool) -> dict:
        """What a training run is told about it (``done``: committed already)."""
        return {
            "name": self.name,
            "arch": self.arch,
            "seed": self.seed,
            "settings": asdict(self.settings),
            "init_weights": self.init,
            "key": self.key,
            "city_key": self.city_key,
            "done": done,
        }


def run_name(names: list[str], keys: list[str]) -> str:
    """The name of the Ray Train run fitting ``names`` in order.

    Stable per training keys, so a re-run after a crash continues the same run (from its
    last checkpoint) and a changed setting or a different split of the models into runs
    starts anew.
    """
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
    ds = cluster.blocks(rows, ROWS_PER_BLOCK)
    ds = ds.map_batches(
        decode_batch,
        batch_format="pyarrow",
        batch_size=ROWS_PER_BLOCK,
        fn_kwargs={"size": size, "cities": cities, "storage_options": opts},
    )
    return ds.materialize()


@contextlib.contextmanager
def _blocks_kept(size: int):
    """Ray Data keeps block order, and blocks of 64 rows whole, inside.

    The seeded shuffle of training draws blocks by position, so their order must not
    depend on which task finished first (a re-run, or one resumed from a checkpoint,
    would train differently); and their rows must be the 64 a node cache's block holds
    (Ray Data splits an output block larger than its target, ~128 MiB: 64 images of
    1024 px), or the two data paths would train different models.
    """
    ctx = ray.data.DataContext.get_current()
    options = ctx.execution_options
    before = options.preserve_order, ctx.target_max_block_size
    options.preserve_order = True
    block = 2 * ROWS_PER_BLOCK * 3 * size * size
    if ctx.target_max_block_size is not None:
        ctx.target_max_block_size = max(ctx.target_max_block_size, block)
    try:
        yield
    finally:
        options.preserve_order, ctx.target_max_block_size = before


def _errors_of(ds: ray.data.Dataset, split: str) -> list[dict]:
    from ray.data.expressions import col

    bad = ds.filter(expr=col("ok") == False).select_columns(  # noqa: E712 (an expression)
        ["image_id", "uri", "error_kind", "error_message"]
    )
    return [
        error_row(
            "train",
            r["error_kind"],
            f"{split} split: {r['error_message']}",
            r["image_id"],
            r["uri"],
        )
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


def _plans(ctx: Context, rows: pa.Table) -> dict[str, ModelPlan]:
    """Every (architecture, seed) of the study, by model name (``rows``: it learns from)."""
    t, plans = ctx.cfg.train, {}
    data, by_city = data_key(ctx, rows), city_data(ctx)
    for arch in ctx.cfg.models.archs:
        for seed in ctx.cfg.models.seeds:
            settings = t.settings_for(arch)
            init = ctx.cfg.models.init_weights.get(arch)
            own = {
                "arch": arch,
                "seed": seed,
                "settings": asdict(settings),
                "input_size": t.input_size,
                "init": init,
            }
            if t.precision != "fp32":  # fp32 models keep the keys they had before
                own["precision"] = t.precision
            key, city_key = (ctx.key("train", up, own) for up in (data, by_city))
            name = model_name(arch, seed)
            plans[name] = ModelPlan(name, arch, seed, settings, init, key, city_key)
    return plans


def _committed(ctx: Context, plan: ModelPlan) -> dict | None:
    """The model's record if it is up to date (``new_city``: by its city key)."""
    rec = ctx.up_to_date(f"train/{plan.name}", plan.key)
    if rec is None and ctx.cfg.train.retrain == "new_city" and not ctx.force:
        # fitted on other rows (or under ``always``): the same cities and split keep it
        rec = ctx.store.record(f"train/{plan.name}")
        if rec is None or rec.get("city_key") != plan.city_key:
            return None
    return rec


def _decode_splits(ctx: Context, cities: list[str]) -> tuple[dict, list[dict], int]:
    """Decode every split once into object-store blocks.

    Returns:
        ``(split -> block refs of image, label, ok; error rows; images decoded)``.
    """
    manifest = read_manifest(ctx.store)
    size = ctx.cfg.train.input_size
    ctx.progress(f"train: decoding {manifest.num_rows} images at {size} px")
    opts = ctx.cfg.run.storage_options
    with _blocks_kept(size):
        decoded = {s: _decoded(manifest, s, size, cities, opts) for s in SPLITS}
        # Blocks made here, while CPUs are free: trials that hold every CPU must not
        # need a Ray Data task to read their input (that deadlocks on a small cluster).
        blocks = {
            s: ds.select_columns(["image", "label", "ok"]).to_numpy_refs()
            for s, ds in decoded.items()
        }
    errors = [
        e
        for split, ds in decoded.items()
        for e in sorted(_errors_of(ds, split), key=lambda e: e["image_id"])
    ]
    return blocks, errors, manifest.num_rows


def _decoders() -> list[str]:
    """The versions of what decodes and resizes images (a new one may round otherwise)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "torchvision", "pillow")]


def data_path(setting: str, gpus: int, nodes: int) -> str:
    """The data path ``train.data`` asks for (``auto``: by the cluster).

    ``auto`` takes ``node_cache`` on a cluster that trains elsewhere than where the
    driver decodes — GPUs (``run.gpus`` or the cluster's) or more than one node — and
    ``store`` on a single CPU machine, where both paths read the same local memory.
    """
    if setting != "auto":
        return setting
    return "node_cache" if gpus > 0 or nodes > 1 else "store"


def _node_cache_splits(ctx: Context, cities: list[str]) -> tuple[dict, int]:
    """Each split's rows and cache key for the trials to decode on their nodes.

    Returns:
        ``(split -> {"rows": image_id, uri, city table, "key": digest}, images)``.
    """
    manifest = read_manifest(ctx.store)
    size = ctx.cfg.train.input_size
    ctx.progress(
        f"train: {manifest.num_rows} images at {size} px, decoded once on each training "
        f"node into {ctx.cfg.train.cache_dir}"
    )
    splits = {}
    for split in SPLITS:
        rows = manifest.filter(pc.equal(manifest["split"], split))
        rows = rows.select(["image_id", "uri", "city"])
        key = digest(
            [FORMAT, ROWS_PER_BLOCK, size, cities, _decoders()]
            + [rows[c].to_pylist() for c in ("image_id", "uri", "city")]
        )
        splits[split] = {"rows": rows, "key": f"{split}-{size}px-{key[:24]}"}
    return splits, manifest.num_rows


def _wait_for(ctx: Context, pending: dict, todo: set[str], attempt: str) -> list[dict]:
    """Wait for the runs, reporting each model as its run commits it.

    Returns:
        The runs' decode errors (``train.data: node_cache``), each row once.

    Raises:
        RuntimeError: a run ended without committing one of its models.
        KeyboardInterrupt: after cancelling every run still going.
    """
    unreported = sorted(todo)
    decode_errors: dict[tuple, dict] = {}
    seen_by_run: list[frozenset] = []
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            for ref in done:
                got = ray.get(ref) or {}  # a failed run raises here
                if "decode_errors" in got:
                    failed = {(e["split"], e["image_id"]): e for e in got["decode_errors"]}
                    decode_errors |= failed
                    seen_by_run.append(frozenset(failed))
                # its models are committed: their training-state checkpoints are spent
                ctx.store.rm(f"ray-train/{pending.pop(ref)}")
            # runs commit their models one by one: report each as it lands
            for n in list(unreported):
                rec = ctx.store.record(f"train/{n}")
                if rec is not None and rec.get("attempt") == attempt:
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
    if len(set(seen_by_run)) > 1:
        _forget_models(ctx, todo, attempt)
        differ = sorted(
            set.union(*map(set, seen_by_run)) - set.intersection(*map(set, seen_by_run))
        )
        raise RuntimeError(
            f"train: the training nodes could not read the same images ({len(differ)} "
            f"differ, e.g. {decode_errors[differ[0]]['uri']}: "
            f"{decode_errors[differ[0]]['error_message']}); their models would not be "
            "comparable, so none of this run's is kept. Run again (a storage error on some "
            "nodes only), or train.data=store to read them once on the driver."
        )
    return [
        error_row(
            "train",
            e["error_kind"],
            f"{split} split: {e['error_message']}",
            e["image_id"],
            e["uri"],
        )
        for (split, _), e in sorted(decode_errors.items(), key=_split_then_id)
    ]


def _split_then_id(item) -> tuple[int, str]:
    (split, image_id), _ = item
    return SPLITS.index(split), image_id


def _forget_models(ctx: Context, names: set[str], attempt: str) -> None:
    """Un-commit the models a run of ``attempt`` committed, so the next run fits them."""
    for n in sorted(names):
        rec = ctx.store.record(f"train/{n}")
        if rec is not None and rec.get("attempt") == attempt:
            ctx.store.rm(f"stages/train/{n}.json")


def _fit(
    ctx: Context, plans: dict[str, ModelPlan], todo: set[str], folder: str, cities: list[str]
) -> tuple[list[dict], int]:
    """Fit the models in ``todo`` on Ray; returns (decode error rows, images decoded)."""
    cfg, t = ctx.cfg, ctx.cfg.train
    n_gpu = cluster.gpus(cfg)
    if data_path(t.data, n_gpu, cluster.alive_nodes()) == "node_cache":
        splits, decoded = _node_cache_splits(ctx, cities)
        blocks, errors = {}, []
    else:
        blocks, errors, decoded = _decode_splits(ctx, cities)
        splits = None
    use_gpu = n_gpu > 0
    # The split into runs is made over all the stage's models, so it (and each run's
    # name) is the same when a re-run after a crash has only some left to fit.
    slots = n_gpu if use_gpu else cluster.total_cpus()
    costs = {n: p.cost for n, p in plans.items()}
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
        "manifest": ctx.upstream("ingest")["ingest"],
        "store": ctx.store.uri,
        "storage_options": cfg.run.storage_options,
        "blocks": blocks,
        "splits": splits,
        "cache_dir": t.cache_dir,
        "checkpoint_every": t.checkpoint_every,
        "max_failures": t.max_failures,
        "precision": t.precision,
        "attempt": folder,
        "trained_on": f"{folder}/{TRAINED_ON}",
    }
    pending = {}
    for names in plan:
        specs = [plans[n].spec(done=n not in todo) for n in names]
        run = run_name(names, [plans[n].key for n in names])
        pending[fit_run.remote({**shared, "models": specs, "run": run})] = run
    errors += _wait_for(ctx, pending, todo, folder)
    return errors, decoded


def run_train(ctx: Context) -> StageResult:
    """Fit every (architecture, seed) of the study that is not up to date.

    Consumes the manifest (train, val and test splits). Writes ``models/<name>/``
    (``model.pt``, ``meta.json``) and commits ``train/<name>`` per model as it is saved,
    then ``train`` with every model's arch, seed and key and an errors table of images
    that could not be decoded.
    """
    store = ctx.store
    if ctx.cfg.models.source:
        return take_models(ctx)
    cities = store.record("ingest")["cities"]
    rows = trained_rows(ctx)
    plans = _plans(ctx, rows)
    stage_key = digest(sorted((n, p.key) for n, p in plans.items()))
    kept = {n: rec for n, p in plans.items() if (rec := _committed(ctx, p)) is not None}
    refit = refit_models(ctx, sorted(kept))
    if not refit and (rec := ctx.up_to_date("train", stage_key)):
        return StageResult("train", "skipped", rec)
    folder, started = ctx.begin("train")
    todo = {n for n in plans if n in refit or n not in kept}
    for n in sorted(set(plans) - todo):
        ctx.progress(f"train: {n} up to date")
    errors: list[dict] = []
    decoded_rows = 0
    if todo:
        ctx.ray()
        # each model copies it beside its weights as it commits: a model is never
        # recorded as trained on rows other than its weights' (a crash keeps the old pair)
        store.write_table(f"{folder}/{TRAINED_ON}", rows)
        errors, decoded_rows = _fit(ctx, plans, todo, folder, cities)
    store.write_table(f"{folder}/errors/errors.parquet", errors_table(errors))
    # the models' own keys: a model kept under ``new_city`` keeps the key it was
    # trained under, so the output (what explain depends on) changes only with a model
    keys = {n: p.key if n in todo else kept[n]["key"] for n, p in plans.items()}
    models = {n: {"arch": p.arch, "seed": p.seed, "key": keys[n]} for n, p in plans.items()}
    rec = ctx.finish(
        "train",
        stage_key,
        folder,
        started,
        output=digest(sorted(keys.items())),
        models=models,
        retrain=ctx.cfg.train.retrain,
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
