"""Stage *ablate*: remove each object from every test image; measure what each model loses.

Same shape as *explain*: Ray Data decodes the test images in tasks; a pool of actors,
each holding every model, reads the batch's class maps (segment shards) and
explanation masks (explain shards), removes every chosen object with
:func:`citylens.ablation.ablate_objects` — and, as its control, as many pixels where
the object is not — runs each model again, traces each explanation's deletion and
insertion curves, and writes one shard per batch (ABLATIONS: one row per image,
model and removal: every object, its control, every curve step). Forward passes only,
batched; resumable like explain.

Consumes the manifest's test rows, the models (``train``), the explanation shards
(``explain``, with the explanations ``explain.methods`` adds: each gets its own
deletion and insertion curves) and the class maps (``segment``). Writes
``ablate/<run>/data/*.parquet`` and ``errors/`` (images without a class map or an
explanation).
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch
import torch.nn.functional as F

from citylens.ablation import ablate_objects, ablation_rows, deletion_curves, objects_to_remove
from citylens.data.images import load_labels, normalize
from citylens.errors import InputError
from citylens.masks import upsample_masks
from citylens.pipeline import cluster
from citylens.pipeline.committed import committed, read_manifest, read_vocabulary
from citylens.pipeline.context import Context, StageResult
from citylens.pipeline.decode import decode_batch
from citylens.pipeline.shards import companions, reuse_earlier, run_sharded, summary, write_shard
from citylens.storage import Store, digest
from citylens.tables import ABLATIONS, error_row, method_label

__all__ = ["AblateWorker", "run_ablate", "shard_index"]


def shard_index(store: Store, folder: str, columns=("image_id",), files=None) -> dict[str, str]:
    """Image id -> the shard of ``folder/data`` (or of ``files``) holding its rows.

    Only the ids are read.
    """
    where: dict[str, str] = {}
    for rel in store.files(f"{folder}/data", ".parquet") if files is None else files:
        for iid in store.read_table(rel, columns=list(columns))["image_id"].to_pylist():
            where[iid] = rel
    return where


class AblateWorker:
    """Ray Data actor: holds every model; ablates, traces curves and writes batches.

    Args:
        store: Study store.
        models: model name -> checkpoint folder (relative to the store).
        folder: Output folder of this stage run.
        segment_of: image id -> segment shard holding its class map.
        explain_of: image id -> explain shard holding its masks.
        settings: ``fill, min_pixels, max_objects, classes (indices or None), steps,
            seed``.
        threads: Torch CPU threads.
        methods_of: image id -> explain's ``methods/`` shard holding the explanations
            ``explain.methods`` added; each is traced along the curves too, its ``order``
            its :func:`~citylens.tables.method_label`.
        compared: model name -> its added ``(method, layer)`` explanations.
    """

    def __init__(
        self,
        store: Store,
        models: dict[str, str],
        folder: str,
        segment_of: dict[str, str],
        explain_of: dict[str, str],
        settings: dict,
        threads: int,
        methods_of: dict[str, str] | None = None,
        compared: dict[str, list] | None = None,
    ) -> None:
        from citylens.train import load_checkpoint

        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.models = {}
        for name, rel in sorted(models.items()):
            model, _ = load_checkpoint(store.url(rel), str(self.device), store.options)
            self.models[name] = model.to(memory_format=torch.channels_last)
        self.store, self.folder, self.s = store, folder, settings
        self.segment_of, self.explain_of = segment_of, explain_of
        self.methods_of = methods_of or {}
        self.compared = {n: [tuple(p) for p in v] for n, v in (compared or {}).items()}

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last)

    def _rows(self, folder_of: dict[str, str], ids: list[str], columns: list[str]) -> list:
        shards: dict[str, list[str]] = {}
        for iid in ids:
            if iid in folder_of:
                shards.setdefault(folder_of[iid], []).append(iid)
        rows = []
        for rel, wanted in sorted(shards.items()):
            t = self.store.read_table(rel, columns=columns)
            rows += t.filter(pc.is_in(t["image_id"], value_set=pa.array(wanted))).to_pylist()
        return rows

    def _labels(self, ids: list[str], size: int) -> dict[str, torch.Tensor]:
        out = {}
        for r in self._rows(self.segment_of, ids, ["image_id", "labels"]):
            lab = torch.from_numpy(load_labels(r["labels"]).astype(np.int64))[None, None]
            lab = F.interpolate(lab.float(), size=(size, size), mode="nearest-exact")
            out[r["image_id"]] = lab[0, 0].long()
        return out

    def _masks(self, ids: list[str], size: int) -> dict[tuple, torch.Tensor]:
        """(image, model) -> its mask; (image, model, label) -> an added explanation's."""
        cols = ["image_id", "model", "cam_h", "cam_w", "mask"]
        out = {}
        for r in self._rows(self.explain_of, ids, cols):
            m = np.asarray(r["mask"], np.float32).reshape(r["cam_h"], r["cam_w"])
            out[(r["image_id"], r["model"])] = upsample_masks(m, (size, size))
        for r in self._rows(self.methods_of, ids, [*cols, "method", "layer"]):
            m = np.asarray(r["mask"], np.float32).reshape(r["cam_h"], r["cam_w"])
            label = method_label(r["method"], r["layer"])
            out[(r["image_id"], r["model"], label)] = upsample_masks(m, (size, size))
        return out

    def __call__(self, batch: dict) -> dict:
        """Ablate one batch with every model and write its shard; returns its summary."""
        ids = list(batch["image_id"])
        ok = np.asarray(batch["ok"], bool)
        images = torch.from_numpy(np.array(batch["image"]))
        size = images.shape[-1]
        good = [i for i in np.flatnonzero(ok)]
        labels = self._labels([ids[i] for i in good], size)
        masks = self._masks([ids[i] for i in good], size)
        errors = [
            error_row(
                "ablate", batch["error_kind"][i], batch["error_message"][i], ids[i], batch["uri"][i]
            )
            for i in np.flatnonzero(~ok)
        ]
        keep = []
        for i in good:
            missing = [m for m in self.models if (ids[i], m) not in masks] + [
                f"{m} {method_label(*p)}"
                for m, pairs in self.compared.items()
                for p in pairs
                if (ids[i], m, method_label(*p)) not in masks
            ]
            if ids[i] not in labels:
                errors.append(
                    error_row(
                        "ablate",
                        "no_segments",
                        "the image has no class map",
                        ids[i],
                        batch["uri"][i],
                    )
                )
            elif missing:
                errors.append(
                    error_row(
                        "ablate",
                        "not_explained",
                        f"no explanation by {', '.join(missing)}",
                        ids[i],
                        batch["uri"][i],
                    )
                )
            else:
                keep.append(i)
        cols: dict[str, list] = {f.name: [] for f in ABLATIONS}
        if keep:
            self._ablate(batch, keep, images, labels, masks, cols)
        table = pa.table(cols, schema=ABLATIONS)
        shard = write_shard(self.store, self.folder, ids, table, errors)
        return summary(shard, len(keep), table.num_rows, len(errors))

    def _ablate(self, batch, keep, images, labels, masks, cols) -> None:
        s, ids, dev = self.s, list(batch["image_id"]), self.device
        x = images[keep].to(dev)  # fills and forwards on the actor's device
        lab = torch.stack([labels[ids[i]] for i in keep]).to(dev)
        labels_of_batch = np.asarray(batch["label"])[keep]
        targets = torch.as_tensor(labels_of_batch).to(dev)
        objects = objects_to_remove(lab, s["min_pixels"], s["max_objects"], s["classes"])
        seeds = [zlib.crc32(ids[i].encode()) ^ s["seed"] for i in keep]
        kept_ids = [ids[i] for i in keep]
        cities = [batch["city"][i] for i in keep]
        for name, model in self.models.items():
            got = ablate_objects(model, x, lab, targets, self._prepare, objects, seeds, s["fill"])
            sal = torch.stack([masks[(ids[i], name)] for i in keep]).to(dev)
            args = (model, x, targets, sal, self._prepare, s["fill"], s["steps"])
            curves = {
                "mask": deletion_curves(*args),
                "random": deletion_curves(*args, True, seeds),
            }
            for pair in self.compared.get(name, []):  # explain.methods' explanations
                label = method_label(*pair)
                added = torch.stack([masks[(ids[i], name, label)] for i in keep]).to(dev)
                curves[label] = deletion_curves(model, x, targets, added, *args[4:])
            rows = ablation_rows(
                kept_ids,
                cities,
                name,
                labels_of_batch,
                got,
                curves,
                s["steps"],
                s["fill"],
                x.shape[-1],
            )
            for k, v in rows.items():
                cols[k].extend(v)


def _settings(ctx: Context) -> dict:
    a = ctx.cfg.ablate
    return {
        "fill": a.fill,
        "min_pixels": a.min_pixels,
        "max_objects": a.max_objects,
        "classes": sorted(a.classes),
        "steps": list(a.steps),
        "seed": a.seed,
        "input_size": ctx.cfg.train.input_size,
    }


def run_ablate(ctx: Context) -> StageResult:
    """Remove every chosen object from every test image and measure what each model loses.

    See the module docstring for what it reads and writes.
    """
    cfg, store = ctx.cfg, ctx.store
    settings = _settings(ctx)
    key = ctx.key("ablate", ctx.upstream("ingest", "train", "explain", "segment"), settings)
    if rec := ctx.up_to_date("ablate", key):
        return StageResult("ablate", "skipped", rec)
    voc = read_vocabulary(store)
    unknown = [c for c in cfg.ablate.classes if c not in voc.names]
    if unknown:
        raise InputError(f"ablate.classes: {', '.join(unknown)} not in the segmenter's classes")
    classes = {voc.index(c) for c in cfg.ablate.classes} or None
    models = {name: f"models/{name}" for name in sorted(committed(store, "train")["models"])}
    manifest = read_manifest(store)
    test = manifest.filter(pc.equal(manifest["split"], "test")).select(["image_id", "uri", "city"])
    worker = {**settings, "classes": classes}

    def map_todo(folder: str, todo: pa.Table):
        return _ablate(ctx, folder, todo, models, worker)

    # An image's rows depend on it, the models and its explanations (explain's
    # ``explained_with``), its class map (segment's ``settings``) and these settings:
    # when only the set of images changed, earlier rows of the images still tested hold.
    exp, seg = committed(store, "explain"), committed(store, "segment")
    ablated_with = None
    if exp.get("explained_with") and seg.get("settings"):
        ablated_with = digest([exp["explained_with"], seg["settings"], settings])
    prev = store.record("ablate")
    same = (
        ablated_with is not None and prev is not None and prev.get("ablated_with") == ablated_with
    )
    ids = dict(zip(test["image_id"].to_pylist(), test["city"].to_pylist()))
    prepare = reuse_earlier(
        ctx, "ablate", ids, prev["folder"] if same else None, what="images' ablations"
    )

    return run_sharded(
        ctx,
        "ablate",
        key,
        test,
        map_todo,
        prepare=prepare,
        ablated_with=ablated_with,
        batch_size=cfg.ablate.batch_size,
        counts={"models": len(models)},
        processed="ablated",
        models=sorted(models),
    )


def _ablate(ctx: Context, folder: str, test: pa.Table, models: dict, settings: dict):
    cfg, store = ctx.cfg, ctx.store
    n_actors = cluster.actor_count(cfg)
    n_gpu = cluster.gpus(cfg)
    threads = 1 if n_gpu else max(1, cluster.total_cpus() // n_actors)
    bs = cfg.ablate.batch_size
    segment_of = shard_index(store, committed(store, "segment")["folder"])
    exp_rec = committed(store, "explain")
    explain_of = shard_index(store, exp_rec["folder"])
    methods_of = shard_index(store, "", files=companions(store, exp_rec["folder"]))
    ctx.progress(
        f"ablate: {test.num_rows} test images × {len(models)} models, up to "
        f"{cfg.ablate.max_objects} objects each, fill '{cfg.ablate.fill}', {n_actors} actor(s)"
    )
    ds = cluster.blocks(test, bs)
    ds = ds.map_batches(
        decode_batch,
        batch_format="pyarrow",
        batch_size=bs,
        fn_kwargs={
            "size": cfg.train.input_size,
            "cities": committed(store, "ingest")["cities"],
            "storage_options": cfg.run.storage_options,
        },
    )
    return ds.map_batches(
        AblateWorker,
        fn_constructor_kwargs={
            "store": store,
            "models": models,
            "folder": folder,
            "segment_of": segment_of,
            "explain_of": explain_of,
            "settings": settings,
            "threads": threads,
            "methods_of": methods_of,
            "compared": exp_rec.get("compared", {}),
        },
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        batch_size=bs,
        batch_format="numpy",
        num_gpus=1 if n_gpu else 0,
        num_cpus=0 if n_gpu else 1,
    )
