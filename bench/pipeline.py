"""Explain through Ray Data vs a bare single-process loop, same images and models.

    python bench/pipeline.py [--images 192] [--size 224] [--archs vgg11 resnet18 simple simpler]
                             [--decode-on cpu|gpu]

Both do the same work per batch: read and decode JPEGs, resize, Grad-CAM with every
model, build the explanation rows and write them as Parquet. The Ray side is the
real *explain* stage (decode tasks feeding a model-holding actor pool) on a local Ray
already started (its start-up is not counted; actor start-up and model loading are).
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, machine, print_table, row  # noqa: E402

from citylens.allocator import keep_freed_memory  # noqa: E402
from citylens.config import load_config  # noqa: E402
from citylens.data.images import load_batch  # noqa: E402
from citylens.data.manifest import image_id, make_manifest, probe, scan_city  # noqa: E402
from citylens.data.synth import PLACE_REGEX, synthesize  # noqa: E402
from citylens.models import build_model  # noqa: E402
from citylens.pipeline.context import Context  # noqa: E402
from citylens.pipeline.explain import explain_rows, run_explain  # noqa: E402
from citylens.storage import Store  # noqa: E402
from citylens.tables import EXPLANATIONS  # noqa: E402
from citylens.train import load_checkpoint, save_checkpoint  # noqa: E402


def setup(root: Path, images: int, size: int, archs: list[str]) -> tuple[Store, list[str]]:
    """A store holding a manifest (every image in the test split) and untrained models."""
    places = max(3, images // 8)
    synthesize(root / "corpus", cities=2, places=places, views=4, size=size, seed=0)
    rows = []
    for city in ("towerville", "signburg"):
        for s in scan_city(city, str(root / "corpus" / city), PLACE_REGEX)[0]:
            data = Path(s.uri).read_bytes()
            w, h = probe(data)
            rows.append(
                dict(
                    image_id=image_id(data),
                    uri=s.uri,
                    city=city,
                    place=s.place,
                    width=w,
                    height=h,
                    label_uri=None,
                )
            )
    manifest, _ = make_manifest(rows[:images])
    manifest = manifest.set_column(
        manifest.schema.get_field_index("split"), "split", pa.array(["test"] * manifest.num_rows)
    )
    store = Store(str(root / "store"))
    store.write_table("ingest/r/manifest.parquet", manifest)
    store.commit(
        "ingest",
        {"key": "k", "output": "m", "folder": "ingest/r", "cities": ["signburg", "towerville"]},
    )
    names = []
    for arch in archs:
        torch.manual_seed(0)
        name = f"{arch}-s0"
        save_checkpoint(
            store.url(f"models/{name}"),
            build_model(arch, 2, size),
            {"seed": 0, "cities": ["signburg", "towerville"]},
        )
        names.append(name)
    store.commit(
        "train",
        {
            "key": "t",
            "output": "t",
            "folder": "train/r",
            "models": {n: {"arch": n[:-3], "seed": 0} for n in names},
        },
    )
    return store, manifest["uri"].to_pylist()


def bare_loop(
    store: Store, uris: list[str], names: list[str], size: int, bs: int
) -> tuple[float, list[float]]:
    """The single-process reference: returns (seconds, when each batch was written).

    It keeps freed memory as the explain actor does (:mod:`citylens.allocator`), so the
    two differ only by Ray.
    """
    keep_freed_memory()
    t = time.perf_counter()
    written = []
    loaded = {n: load_checkpoint(store.url(f"models/{n}")) for n in names}
    models = {n: m.to(memory_format=torch.channels_last) for n, (m, _) in loaded.items()}
    cities = ["signburg", "towerville"]
    for i in range(0, len(uris), bs):
        images, ok, _ = load_batch(uris[i : i + bs], size)
        ids = [f"id{i + j}" for j in ok]
        city = [cities[j % 2] for j in ok]
        labels = np.array([j % 2 for j in ok])
        cols = {f.name: [] for f in EXPLANATIONS}
        for n, m in models.items():
            for k, v in explain_rows(n, m, images, labels, ids, city, "true").items():
                cols[k].extend(v)
            cols["arch"] += [m.arch] * len(ids)
            cols["seed"] += [int(loaded[n][1]["seed"])] * len(ids)
        store.write_table(f"bare/part-{i}.parquet", pa.table(cols, schema=EXPLANATIONS))
        written.append(time.time())
    return time.perf_counter() - t, written


def _bare_child(root: str, uris, names, size, bs, out) -> None:
    with PeakMemory() as mem:
        seconds, written = bare_loop(Store(root), uris, names, size, bs)
    out.put((seconds, written, mem.peak_mb))


def bare_loop_alone(
    store: Store, uris: list[str], names: list[str], size: int, bs: int
) -> tuple[float, list[float], float]:
    """:func:`bare_loop` in a process of its own: ``(seconds, written, peak MB)``.

    The bare loop keeps its freed memory (several GB of activations) until its process
    exits; run here, that heap would be counted again in the Ray row, whose peak includes
    the driver's memory.
    """
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_bare_child, args=(store.uri, uris, names, size, bs, out))
    child.start()
    while True:
        try:
            result = out.get(timeout=5)
            break
        except queue.Empty:
            if not child.is_alive():
                raise SystemExit(f"bare loop exited with {child.exitcode}") from None
    child.join()
    return result


def steady_rate(written: list[float], bs: int) -> float:
    """Images/s from the first batch written to the last: the rate once started, without
    start-up (actor start, model loading, worker processes importing torch)."""
    written = sorted(written)
    if len(written) < 2:
        return float("nan")
    return (len(written) - 1) * bs / (written[-1] - written[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--archs", nargs="+", default=["vgg11", "resnet18", "simple", "simpler"])
    ap.add_argument("--decode-on", choices=["cpu", "gpu"], default="cpu", help="explain.decode_on")
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    import ray

    if not args.json:
        print(
            f"explain: {args.images} images at {args.size} px, models {args.archs}, "
            f"batch {args.batch}; {machine()}\n"
        )
    with tempfile.TemporaryDirectory() as tmp:
        store, uris = setup(Path(tmp), args.images, args.size, args.archs)
        names = [f"{a}-s0" for a in args.archs]
        t_bare, bare_written, bare_peak_mb = bare_loop_alone(
            store, uris, names, args.size, args.batch
        )
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        cfg = load_config(
            None,
            [
                f"store={store.uri}",
                f"train.input_size={args.size}",
                f"explain.batch_size={args.batch}",
                f"explain.decode_on={args.decode_on}",
            ],
        )
        ctx = Context(cfg, store, force=True, progress=lambda s: None)
        with PeakMemory(tree=True) as mem_ray:
            t = time.perf_counter()
            res = run_explain(ctx)
            t_ray = time.perf_counter() - t
        ray.shutdown()
        assert res.record["counts"]["images"] == len(uris)
        shards = store.files(f"{res.record['folder']}/data", ".parquet")
        ray_written = [Path(store.path(f)).stat().st_mtime for f in shards]
    n = len(uris)
    if n % args.batch:
        raise SystemExit("--images must be a multiple of --batch (steady rates count batches)")
    bare_steady, ray_steady = (steady_rate(w, args.batch) for w in (bare_written, ray_written))
    if args.json:
        case = f"{n} images × {len(names)} models, {args.size} px"
        emit(
            [
                row(
                    "explain",
                    f"bare loop, {case}",
                    n / t_bare,
                    peak_mb=bare_peak_mb,
                    note=f"{bare_steady:.2f} img/s once started (model loading excluded)",
                ),
                row(
                    "explain",
                    f"Ray Data stage, {case}, end to end",
                    n / t_ray,
                    peak_mb=mem_ray.peak_mb,
                    reference="bare loop, end to end",
                    ratio=t_bare / t_ray,
                    note="worker and actor start-up, model loading counted",
                ),
                row(
                    "explain",
                    f"Ray Data stage, {case}, once started",
                    ray_steady,
                    reference="bare loop once started",
                    ratio=ray_steady / bare_steady,
                    target=0.8,
                    note="first to last batch written",
                ),
            ]
        )
        return
    print_table(
        ["path", "seconds", "images/s", "vs bare loop", "img/s once started", "vs bare loop"],
        [
            [
                "bare single-process loop",
                f"{t_bare:.1f}",
                f"{n / t_bare:.2f}",
                "1.00x",
                f"{bare_steady:.2f}",
                "1.00x",
            ],
            [
                "Ray Data explain stage",
                f"{t_ray:.1f}",
                f"{n / t_ray:.2f}",
                f"{t_bare / t_ray:.2f}x",
                f"{ray_steady:.2f}",
                f"{ray_steady / bare_steady:.2f}x",
            ],
        ],
    )


if __name__ == "__main__":
    main()
