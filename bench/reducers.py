"""The analyze stage's reducers (AR, R_p) over a large synthetic corpus: seconds and memory.

    python bench/reducers.py [--images 150000 37500] [--shard 1024] [--grid 224] [--boot 1000]

For each corpus size, writes synthetic shards to a temporary store — explanations of two
models per image (VGG11's 14×14 and ResNet18's 7×7 masks) and overlap rows (one θ,
150 ADE20K classes) — then runs the stage's own Ray tasks (``ar_of_shard``,
``sums_of_shard``) over every shard on a local Ray with all cores, and adds the partial
sums up as the stage does: once without the bootstrap, once with ``--boot`` place
resamples (4 views a place), whose added time the target compares with the reducers'
own. Peak memory (with the bootstrap) is the resident memory of the whole process tree
(driver and Ray workers) while reducing; comparing two corpus sizes shows whether it
grows with the corpus.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, fmt_rate, machine, print_table, row  # noqa: E402

from citylens.storage import Store  # noqa: E402
from citylens.tables import OVERLAPS  # noqa: E402

MODELS = {"vgg11-s0": 14, "resnet18-s0": 7}
CLASSES = 150


def _lists(values: np.ndarray, pa_type) -> pa.Array:
    n, width = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa_type))


def write_corpus(store: Store, images: int, shard: int, seed: int = 0) -> tuple[list, list]:
    """Synthetic explanation and overlap shards; returns their relative paths."""
    rng = np.random.default_rng(seed)
    exp_files, ov_files = [], []
    for s, start in enumerate(range(0, images, shard)):
        n = min(shard, images - start)
        ids = [f"{i:064x}" for i in range(start, start + n)]
        cities = ["towerville" if i % 2 else "signburg" for i in range(start, start + n)]
        parts = []
        for model, side in MODELS.items():
            masks = rng.random((n, side * side), dtype=np.float32)
            parts.append(
                pa.table(
                    {
                        "image_id": ids,
                        "city": cities,
                        "model": [model] * n,
                        "pred": pa.array(rng.integers(0, 2, n), pa.int16()),
                        "cam_h": pa.array([side] * n, pa.int16()),
                        "cam_w": pa.array([side] * n, pa.int16()),
                        "mask": _lists(masks, pa.float32()),
                    }
                )
            )
        rel = f"explain/data/part-{s:05d}.parquet"
        store.write_table(rel, pa.concat_tables(parts))
        exp_files.append(rel)
        n_px = rng.integers(0, 2000, (n * len(MODELS), CLASSES))
        m_px = (n_px * rng.random(n_px.shape)).astype(np.int64)
        ov = pa.table(
            {
                "image_id": ids * len(MODELS),
                "city": cities * len(MODELS),
                "model": [m for m in MODELS for _ in range(n)],
                "theta": pa.array([0.6] * (n * len(MODELS)), pa.float32()),
                "mask_pixels": pa.array(m_px.sum(1), pa.int64()),
                "class_pixels_in_mask": _lists(m_px, pa.int64()),
                "class_pixels": _lists(n_px, pa.int64()),
            },
            schema=OVERLAPS,
        )
        rel = f"overlap/data/part-{s:05d}.parquet"
        store.write_table(rel, ov)
        ov_files.append(rel)
    return exp_files, ov_files


CITIES = ["signburg", "towerville"]


def resamples_of(images: int, n_boot: int, views: int = 4):
    """The study's place resamples for the synthetic corpus: ``views`` images a place."""
    from citylens.analysis.bootstrap import Resamples, place_index

    ids = [f"{i:064x}" for i in range(images)]
    cities = [CITIES[i % 2] for i in range(images)]
    index = place_index(cities, [i // (2 * views) for i in range(images)])
    return Resamples(index, ids, n_boot, 0)


def reduce_all(
    store: Store, exp_files: list, ov_files: list, grid: int, resamples=None
) -> tuple[float, float]:
    """Seconds of the AR (+ accuracy) reducer and of the R_p reducer over every shard,
    on Ray, the partial sums added up as the stage adds them."""
    import ray

    from citylens.analysis.reduce import add_sums
    from citylens.pipeline.analyze import ar_of_shard, sums_of_shard

    t = time.perf_counter()
    res_ref = ray.put(resamples)
    refs = [
        ar_of_shard.remote(store, f, grid, f"analyze/ar/{i:05d}.parquet", CITIES, res_ref)
        for i, f in enumerate(exp_files)
    ]
    pair_sums: dict = {}
    for ref in refs:
        add_sums(pair_sums, ray.get(ref)[0])
    t_ar = time.perf_counter() - t
    t = time.perf_counter()
    totals: dict = {}
    for ref in [sums_of_shard.remote(store, f, res_ref) for f in ov_files]:
        add_sums(totals, ray.get(ref)[0])
    t_rp = time.perf_counter() - t
    if not pair_sums:
        raise RuntimeError("the AR reducer compared no images")
    return t_ar, t_rp


def measure(sizes: list[int], shard: int, grid: int, n_boot: int) -> list[dict]:
    import ray

    rows = []
    peaks = {}
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        for images in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                store = Store(tmp)
                exp_files, ov_files = write_corpus(store, images, shard)
                if not rows:  # warm the workers up: the first pass pays their start-up
                    reduce_all(store, exp_files[:2], ov_files[:2], grid)
                t_ar, t_rp = reduce_all(store, exp_files, ov_files, grid)
                total = t_ar + t_rp
                rows.append(
                    row(
                        "reducers",
                        f"AR + R_p, {images:,} images × 2 models, grid {grid}",
                        images / total,
                        reference="60 s for 150k images",
                        ratio=60.0 * images / 150_000 / total,
                        target=1.0,
                        note=f"AR {t_ar:.1f} s, R_p {t_rp:.1f} s",
                    )
                )
                resamples = resamples_of(images, n_boot)
                with PeakMemory(tree=True) as mem:
                    b_ar, b_rp = reduce_all(store, exp_files, ov_files, grid, resamples)
                peaks[images] = mem.peak_mb
                added = b_ar + b_rp - total
                rows.append(
                    row(
                        "reducers",
                        f"+ bootstrap B={n_boot}, {images:,} images × 2 models",
                        images / (b_ar + b_rp),
                        peak_mb=mem.peak_mb,
                        reference=f"reducers alone {total:.1f} s",
                        ratio=total / max(added, 1e-9),
                        target=1.0,
                        note=f"adds {added:.1f} s (AR {b_ar:.1f} s, R_p {b_rp:.1f} s)",
                    )
                )
    finally:
        ray.shutdown()
    if len(sizes) > 1:
        big, small = max(sizes), min(sizes)
        growth = peaks[big] / peaks[small]
        rows.append(
            row(
                "reducers",
                f"peak memory, {big:,} vs {small:,} images",
                0.0,
                "",
                peak_mb=peaks[big],
                reference=f"{peaks[small]:.0f} MB at {small:,}",
                ratio=1.0 / growth,
                target=0.9,
                note=f"memory × {growth:.2f} for × {big / small:.0f} images",
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", nargs="+", type=int, default=[150_000, 37_500])
    ap.add_argument("--shard", type=int, default=1024, help="images per shard")
    ap.add_argument("--grid", type=int, default=224)
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples B")
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    rows = measure(args.images, args.shard, args.grid, args.boot)
    if args.json:
        emit(rows)
        return
    print(f"reducers; {machine()}\n")
    print_table(
        ["case", "images/s", "peak MB", "note"],
        [[r["case"], fmt_rate(r["rate"]), f"{r['peak_mb'] or 0:.0f}", r["note"]] for r in rows],
    )


if __name__ == "__main__":
    main()
