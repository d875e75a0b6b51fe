"""Stage *explain*: Grad-CAM of every model over the test split, streamed to Parquet.

Ray Data decodes images in tasks; a fixed pool of actors, each holding all of the
study's models (loaded once), explains every batch with every model and writes the
batch's explanation rows as one shard of the explanations table. Only one-row
summaries come back to the driver, so memory stays bounded whatever the corpus size.

With ``explain.decode_on=gpu`` the tasks only read the files and check headers: plain
baseline JPEGs travel encoded to the actor, which decodes and resizes them on its GPU
in one batched nvJPEG call; every other file is decoded in the task as before.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from citylens.allocator import worker_runtime_env
from citylens.cam import explain_batch, mask_difference
from citylens.data.images import decode_jpegs, normalize
from citylens.pipeline import cluster
from citylens.pipeline.committed import committed, read_manifest
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.decode import decode_batch
from citylens.pipeline.shards import (
    reuse_earlier,
    run_sharded,
    shard_name,
    summary,
    write_shard,
)
from citylens.storage import Store, digest
from citylens.tables import EXPLANATIONS, METHOD_EXPLANATIONS, error_row

__all__ = ["CamWorker", "explain_rows", "run_explain"]


def _device_images(array: np.ndarray, device: str, writes: bool) -> torch.Tensor:
    """A batch's pixels (B, 3, H, W) uint8 as a tensor on ``device``.

    Ray Data hands the actor a read-only view of its object store (``map_batches``'
    ``zero_copy_batch``): it is only read, so it is wrapped as it is, except where
    actor-decoded JPEGs will be written into it on the CPU, which copies first (a copy
    to a GPU is new memory anyway).
    """
    if writes and not array.flags.writeable and torch.device(device).type == "cpu":
        array = array.copy()
    with warnings.catch_warnings():  # torch warns (once) of read-only arrays: never written
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)


def _inputs(model, images: torch.Tensor) -> torch.Tensor:
    x = normalize(images.to(next(model.parameters()).device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last)


def explain_rows(
    name: str,
    model,
    images: torch.Tensor,
    labels: np.ndarray,
    ids,
    cities,
    target: str,
    precision: str = "fp32",
    method: str = "gradcam",
    layer: str | None = None,
) -> dict[str, list]:
    """Explanation rows of one model for a batch (``method`` at the named ``layer``).

    Returns:
        Columns of :data:`~citylens.tables.EXPLANATIONS` but the model's ``arch`` and
        ``seed``, which its caller knows from the checkpoint (a name is never parsed).
    """
    x = _inputs(model, images)
    targets = None if target == "pred" else torch.as_tensor(labels)
    out = explain_batch(model, x, targets, method, layer, precision)
    h, w = out.mask.shape[1:]
    n = len(ids)
    return {
        "image_id": list(ids),
        "city": list(cities),
        "model": [name] * n,
        "target": out.target.cpu().tolist(),
        "pred": out.pred.cpu().tolist(),
        "prob": out.probs.cpu().numpy().tolist(),
        "cam_h": [h] * n,
        "cam_w": [w] * n,
        "mask": out.mask.flatten(1).cpu().float().numpy().tolist(),
        "empty": out.empty.cpu().tolist(),
        "d_cam": out.d_cam.cpu().float().numpy().tolist(),
        "d_short": out.d_short.cpu().float().numpy().tolist(),
    }


class CamWorker:
    """Ray Data actor: holds every model of the study; explains and writes batches.

    Args:
        store: Study store.
        models: model name -> checkpoint folder (relative to the store).
        folder: Output folder of this stage run.
        target: ``"true"`` or ``"pred"``.
        threads: Torch CPU threads.
        precision: ``fp32``, ``bf16`` or ``fp16`` for the trunks; each model's first batch
            is explained in fp32 too, and a model whose masks differ by ``tolerance`` or
            more (mean absolute difference) stays in fp32.
        tolerance: See ``precision``.
        method: The CAM method (:data:`citylens.cam.METHODS`).
        layers: model name -> the named layer it is explained at.
        compared: model name -> the ``(method, layer)`` explanations ``explain.methods``
            adds (in fp32). When any model has some, every shard gets a companion of
            the same name in ``folder/methods/`` (METHOD_EXPLANATIONS), written first:
            a data shard is the commit marker of both.

    Batches may carry a ``jpeg`` column (``decode_batch(..., pass_jpegs=True)``): those
    images are decoded on the actor's device, and one that cannot be decoded there or
    on the CPU goes to the errors table.
    """

    def __init__(
        self,
        store: Store,
        models: dict[str, str],
        folder: str,
        target: str,
        threads: int,
        precision: str = "fp32",
        tolerance: float = 1e-2,
        method: str = "gradcam",
        layers: dict[str, str] | None = None,
        compared: dict[str, list] | None = None,
    ) -> None:
        from citylens.train import load_checkpoint

        torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.models, self.seeds = {}, {}
        for name, rel in sorted(models.items()):
            model, meta = load_checkpoint(store.url(rel), device, store.options)
            self.models[name] = model.to(memory_format=torch.channels_last)
            self.seeds[name] = int(meta["seed"])
        self.store, self.folder, self.target = store, folder, target
        self.precision = {name: precision for name in self.models}
        self.checked = precision == "fp32"
        self.tolerance = tolerance
        self.method, self.layers = method, dict(layers or {})
        self.compared = {n: [tuple(p) for p in v] for n, v in (compared or {}).items() if v}

    def _check_precision(self, images: torch.Tensor, labels: np.ndarray) -> None:
        """Explain the first batch in fp32 too; keep reduced precision where masks agree."""
        for name, model in self.models.items():
            targets = None if self.target == "pred" else torch.as_tensor(labels)
            x, layer = _inputs(model, images), self.layers.get(name)
            diff = mask_difference(model, x, targets, self.precision[name], self.method, layer)
            if diff >= self.tolerance:
                print(
                    f"explain: {name}: {self.precision[name]} masks differ from fp32 by "
                    f"{diff:.2e} (tolerance {self.tolerance:g}); explaining it in fp32",
                    flush=True,
                )
                self.precision[name] = "fp32"
        self.checked = True

    def __call__(self, batch: dict) -> dict:
        """Explain one batch with every model and write its shard; returns its summary."""
        ok = np.asarray(batch["ok"], bool).copy()
        ids = list(batch["image_id"])
        kind, message = list(batch["error_kind"]), list(batch["error_message"])
        encoded = [i for i, j in enumerate(batch.get("jpeg", [None] * len(ids))) if j is not None]
        images = _device_images(np.asarray(batch["image"]), self.device, writes=bool(encoded))
        if encoded:
            pixels, done, failed = decode_jpegs(
                [batch["jpeg"][i] for i in encoded], images.shape[-1], self.device
            )
            if done:
                images[[encoded[j] for j in done]] = pixels
            for j, k, m in failed:
                ok[encoded[j]], kind[encoded[j]], message[encoded[j]] = False, k, m
        errors = [
            error_row("explain", kind[i], message[i], ids[i], batch["uri"][i])
            for i in np.flatnonzero(~ok)
        ]
        cols: dict[str, list] = {f.name: [] for f in EXPLANATIONS}
        if ok.any():
            images = images[torch.from_numpy(ok).to(self.device)]
            ok_ids = [ids[i] for i in np.flatnonzero(ok)]
            ok_cities = [batch["city"][i] for i in np.flatnonzero(ok)]
            labels = np.asarray(batch["label"])[ok]
            if not self.checked:
                self._check_precision(images, labels)
            for name, model in self.models.items():
                rows = explain_rows(
                    name,
                    model,
                    images,
                    labels,
                    ok_ids,
                    ok_cities,
                    self.target,
                    self.precision[name],
                    self.method,
                    self.layers.get(name),
                )
                for k, v in rows.items():
                    cols[k].extend(v)
                cols["arch"] += [model.arch] * len(ok_ids)
                cols["seed"] += [self.seeds[name]] * len(ok_ids)
        table = pa.table(cols, schema=EXPLANATIONS)
        if self.compared:  # before the data shard, which marks the batch done
            extra = self._compared_rows(images, cols, ok.any())
            self.store.write_table(f"{self.folder}/methods/{shard_name(ids)}", extra)
        shard = write_shard(self.store, self.folder, ids, table, errors)
        return summary(shard, int(ok.sum()), table.num_rows, len(errors))

    def _compared_rows(self, images: torch.Tensor, cols: dict, any_ok: bool) -> pa.Table:
        """The explanations ``explain.methods`` adds for the batch's decoded images."""
        out: dict[str, list] = {f.name: [] for f in METHOD_EXPLANATIONS}
        for name, pairs in (self.compared if any_ok else {}).items():
            sel = [i for i, m in enumerate(cols["model"]) if m == name]
            ids = [cols["image_id"][i] for i in sel]
            cities = [cols["city"][i] for i in sel]
            # the target the study's own explanation used: the true city or its prediction
            targets = np.asarray([cols["target"][i] for i in sel])
            model = self.models[name]
            for method, layer in pairs:
                rows = explain_rows(
                    name, model, images, targets, ids, cities, "true", "fp32", method, layer
                )
                for k in ("image_id", "city", "model", "target", "cam_h", "cam_w", "mask"):
                    out[k] += rows[k]
                out["empty"] += rows["empty"]
                n = len(ids)
                out["arch"] += [model.arch] * n
                out["seed"] += [self.seeds[name]] * n
                out["method"] += [method] * n
                out["layer"] += [layer] * n
        return pa.table(out, schema=METHOD_EXPLANATIONS)


def _decode_memory(batch_size: int) -> int:
    """Bytes a decode task's worker holds at most, as Ray Data measures it.

    That is the worker's private memory: the process itself with torch, pyarrow and Ray
    loaded (~310 MB), one full-size photo at a time with its decoder's buffers, and the
    batch at model resolution (images are resized as they are decoded). Asking less
    makes Ray Data warn at the end of every run, and lets a cluster place more decode
    tasks than fit.
    """
    worker, photo = 384 * 2**20, 256 * 2**20  # the process: ~310 MB measured
    return worker + photo + batch_size * 3 * 512 * 512


def run_explain(ctx: Context) -> StageResult:
    """Grad-CAM of every model over the test split.

    Consumes the manifest's test rows and the committed models (``train``). Writes
    ``explain/<run>/data/*.parquet`` (EXPLANATIONS: one row per image and model) and
    ``errors/`` (images that could not be decoded), resumably; with ``explain.methods``
    also ``methods/*.parquet`` (METHOD_EXPLANATIONS), one beside each data shard.
    """
    cfg, store = ctx.cfg, ctx.store
    up = ctx.upstream("ingest", "train")
    settings = {"target": cfg.explain.target, "input_size": cfg.train.input_size}
    models = {name: f"models/{name}" for name in sorted(committed(store, "train")["models"])}
    metas = _metas(ctx, models)
    layers = _layers(ctx, metas)
    # the paper's method and layer keep older keys
    if cfg.explain.method != "gradcam" or any(
        layers[n] != m["target_layer"] for n, m in metas.items()
    ):
        settings["method"] = cfg.explain.method
        settings["layers"] = layers
    compared = _compared(ctx, metas)
    if any(compared.values()):  # none keeps older keys
        settings["compared"] = compared
    if cfg.explain.precision != "fp32":  # fp32 keeps older keys
        ctx.ray()  # reduced precision applies on GPUs only: ask the cluster
        if cluster.gpus(cfg):
            settings["precision"] = cfg.explain.precision
            settings["mask_tolerance"] = cfg.explain.mask_tolerance
    if cfg.explain.decode_on != "cpu":  # a GPU's JPEG decoder may differ by a grey level
        settings["decode_on"] = cfg.explain.decode_on
    key = ctx.key("explain", up, settings)
    if rec := ctx.up_to_date("explain", key):
        return StageResult("explain", "skipped", rec)
    cities = committed(store, "ingest")["cities"]
    manifest = read_manifest(store)
    test = manifest.filter(pc.equal(manifest["split"], "test")).select(["image_id", "uri", "city"])
    # An explanation depends only on the image, the models and these settings: when
    # only the images changed (a study that grew, train.retrain: new_city), earlier
    # explanations of the images still tested are carried over.
    explained_with = digest({"train": up["train"], "settings": settings})
    prev = store.record("explain")
    same = prev is not None and prev.get("explained_with") == explained_with
    ids = dict(zip(test["image_id"].to_pylist(), test["city"].to_pylist()))
    prepare = reuse_earlier(
        ctx, "explain", ids, prev["folder"] if same else None, "methods", "images' explanations"
    )
    return run_sharded(
        ctx,
        "explain",
        key,
        test,
        lambda folder, todo: _explain(ctx, folder, todo, models, cities, layers, metas, compared),
        prepare=prepare,
        counts={"models": len(models)},
        explained_with=explained_with,
        method=cfg.explain.method,
        layers=layers,
        compared=compared,
        processed="explained",
        batch_size=cfg.explain.batch_size,
        models=sorted(models),
    )


def _metas(ctx: Context, models: dict[str, str]) -> dict[str, dict]:
    import json

    return {n: json.loads(ctx.store.read_bytes(f"{rel}/meta.json")) for n, rel in models.items()}


def _layers(ctx: Context, metas: dict[str, dict]) -> dict[str, str]:
    """Model name -> the named layer it is explained at (``explain.layer``).

    Each model's named layers and their map sizes come from the registry (checkpoints
    written before layers were named list none); ``meta["layers"]`` gets the sizes.
    """
    import torch

    from citylens.models import build_model

    out = {}
    for name, meta in metas.items():
        with torch.device("meta"):
            model = build_model(meta["arch"], meta["num_classes"], meta["input_size"])
        meta["layers"] = {k: list(v) for k, v in model.map_sizes().items()}
        meta["target_layer"] = model.target_layer
        meta["layer_names"] = list(model.layers)
        out[name] = ctx.cfg.explain.layer_for(meta["arch"], list(model.layers))
    return out


def _compared(ctx: Context, metas: dict[str, dict]) -> dict[str, list[list[str]]]:
    """Model name -> the ``[method, layer]`` explanations ``explain.methods`` adds."""
    e = ctx.cfg.explain
    return {
        n: [list(p) for p in e.compared_for(m["arch"], m["layer_names"])] for n, m in metas.items()
    }


def _where(layer: str, meta: dict) -> str:
    """``"resnet18 layer3 (6×6)"``: a model's layer and its map size."""
    size = (meta.get("layers") or {}).get(layer, meta.get("cam_size"))
    return f"{meta['arch']} {layer} ({'×'.join(map(str, size))})"


def _explain(
    ctx: Context,
    folder: str,
    test: pa.Table,
    models: dict[str, str],
    cities: list[str],
    layers: dict[str, str],
    metas: dict[str, dict],
    compared: dict[str, list[list[str]]],
) -> ray.data.Dataset:
    """Grad-CAM of ``test``'s images on Ray, into ``folder``.

    Returns:
        The dataset of the shards' summaries (lazy: iterating it does the work).
    """
    cfg, store = ctx.cfg, ctx.store
    n_actors = cluster.actor_count(cfg)
    n_gpu = cluster.gpus(cfg)
    threads = 1 if n_gpu else max(1, cluster.total_cpus() // n_actors)
    bs = cfg.explain.batch_size
    pass_jpegs = cfg.explain.decode_on == "gpu"
    where = sorted({_where(layers[n], metas[n]) for n in models})
    ctx.progress(f"explain: {cfg.explain.method} at {', '.join(where)}")
    also = sorted(
        {f"{m} at {_where(layer, metas[n])}" for n, pairs in compared.items() for m, layer in pairs}
    )
    if also:
        ctx.progress(f"explain: compared with {'; '.join(also)} (fp32)")
    ctx.progress(
        f"explain: {test.num_rows} test images × {len(models)} models, {n_actors} actor(s)"
        f"{' on GPU' if n_gpu else f' with {threads} threads'}, batches of {bs}"
        + (
            f"; plain JPEGs decoded in the actors ({'nvJPEG' if n_gpu else 'no GPU: on CPU'})"
            if pass_jpegs
            else ""
        )
    )
    ds = cluster.blocks(test, bs)
    ds = ds.map_batches(
        decode_batch,
        batch_format="pyarrow",
        batch_size=bs,
        fn_kwargs={
            "size": cfg.train.input_size,
            "cities": cities,
            "storage_options": cfg.run.storage_options,
            "pass_jpegs": pass_jpegs,
        },
        # Decoding reserves memory for a batch of full-size images. Besides being true,
        # remote args that differ from the actors' keep Ray Data from fusing decoding
        # into the model actors: images decode in parallel tasks while actors compute.
        memory=_decode_memory(bs),
    )
    ds = ds.map_batches(
        CamWorker,
        fn_constructor_kwargs={
            "store": store,
            "models": models,
            "folder": folder,
            "target": cfg.explain.target,
            "threads": threads,
            # reduced precision is for GPUs; CPUs without bf16 units only get slower
            "precision": cfg.explain.precision if n_gpu else "fp32",
            "tolerance": cfg.explain.mask_tolerance,
            "method": cfg.explain.method,
            "layers": layers,
            "compared": compared,
        },
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        batch_size=bs,
        batch_format="numpy",
        num_gpus=1 if n_gpu else 0,
        num_cpus=0 if n_gpu else 1,
        runtime_env=worker_runtime_env(),  # activations reuse their pages: citylens.allocator
    )
    return ds
