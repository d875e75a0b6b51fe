"""The train stage's data path at scale, simulated on one machine (issue 27).

    python bench/train_data.py [--images 15000] [--size 224] [--store-mb 1024]
                               [--trials 2] [--epochs 2] [--paths store,node_cache]

On ``cluster.yaml`` the GPU workers start at zero, so the train stage's decode tasks run
on the head and its blocks sit in the head's object store (spilled to its disk when they
outgrow it); every trial then pulls every block from there every epoch. This script
builds that situation small: a two-node local cluster (``ray.cluster_utils.Cluster``)
whose object stores are capped at ``--store-mb``, a synthetic corpus whose decoded train
split is several times that, the split decoded on the head before the worker node
joins, then ``--trials`` concurrent trials on the worker node reading ``--epochs``
epochs each (the data path only: batches are read, not trained on). Then the same with
``train.data: node_cache`` (each node decodes once to its disk, trials read there).

Per trial-epoch it reports: seconds; MiB the trial pulled from another node (each block
it read that Ray's object directory did not list on its node, at the block's size);
MiB spilled and restored cluster-wide (Ray's store stats, over the run / trial-epochs);
and the trial's anonymous memory. "From memory" is the same epoch over blocks in the
reading process's RAM: the floor of the data path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table  # noqa: E402

from citylens.data.batches import ShuffledBlocks  # noqa: E402
from citylens.data.block_cache import open_or_build  # noqa: E402
from citylens.data.manifest import image_id  # noqa: E402
from citylens.data.synth import synthesize  # noqa: E402
from citylens.pipeline.decode import decode_batch  # noqa: E402

ROWS = 64  # per block, as the train stage
CITIES = ["towerville", "signburg"]
MIB = 2**20


def _rows(folder: Path, n: int) -> pa.Table:
    """``n`` manifest rows (image_id, uri, city) over the corpus's images, in a random
    order; a corpus of fewer images is cycled (the volume of decoded data is what the
    data path's cost depends on, not whether two rows hold the same picture)."""
    ids, uris, cities = [], [], []
    for city in CITIES:
        for p in sorted((folder / city).glob("*.jpg")):
            ids.append(image_id(p.read_bytes()))
            uris.append(str(p))
            cities.append(city)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(ids)) for _ in range(-(-n // len(ids)))])[:n]
    return pa.table(
        {
            "image_id": [ids[i] for i in order],
            "uri": [uris[i] for i in order],
            "city": [cities[i] for i in order],
        }
    )


def _anon_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _store_stats() -> dict:
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    s = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
    st = s.store_stats
    return {
        "spilled": st.spilled_bytes_total,
        "restored": st.restored_bytes_total,
        # in memory plus what Ray placed in disk-backed fallback files past its capacity
        "held": st.object_store_bytes_used + st.object_store_bytes_fallback,
        "fallback": st.object_store_bytes_fallback,
    }


def _epochs(batches: ShuffledBlocks, epochs: int, before_read=None) -> list[dict]:
    out = []
    for e in range(1, epochs + 1):
        t, images, peak = time.perf_counter(), 0, 0.0
        for x, _ in batches.epoch(e):
            images += len(x)
            peak = max(peak, _anon_mib())
        out.append({"s": time.perf_counter() - t, "images": images, "anon_mib": peak})
    return out


@ray.remote(num_cpus=1, resources={"trainer": 1})
def store_trial(refs: list, epochs: int, seed: int) -> list[dict]:
    """A trial reading the head's blocks from the object store (``train.data: store``)."""
    from ray.experimental import get_object_locations

    me = ray.get_runtime_context().get_node_id()
    pulled = [0]

    def read(js):
        chosen = [refs[j] for j in js]
        for info in get_object_locations(chosen).values():
            if me not in info["node_ids"]:
                pulled[0] += info["object_size"] or 0
        return ray.get(chosen)

    out = []
    for row in _epochs(ShuffledBlocks(len(refs), read, 32, seed), epochs):
        out.append({**row, "pulled_mib": pulled[0] / MIB})
        pulled[0] = 0
    return out


@ray.remote(num_cpus=1, resources={"trainer": 1})
def cache_trial(rows: pa.Table, size: int, root: str, epochs: int, seed: int) -> dict:
    """A trial reading its node's cache (``train.data: node_cache``), built if missing."""
    from citylens.pipeline.trainer import _decoded_blocks

    t = time.perf_counter()
    config = {"input_size": size, "cities": CITIES, "storage_options": {}}
    blocks = lambda: _decoded_blocks(rows, config)  # noqa: E731  (the train stage's own)
    cache, built = open_or_build(root, f"train-{size}", blocks, rows.num_rows, size)
    opened = time.perf_counter() - t
    epochs_out = _epochs(ShuffledBlocks(cache.n_blocks, cache.read, 32, seed), epochs)
    return {
        "open_s": opened,
        "built": built,
        "epochs": [{**r, "pulled_mib": 0.0} for r in epochs_out],
    }


def _cluster(store_mb: int):
    from ray.cluster_utils import Cluster

    head = {"num_cpus": 1, "object_store_memory": store_mb * MIB}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    return cluster


def _worker(cluster, store_mb: int, trials: int):
    node = cluster.add_node(
        num_cpus=trials, object_store_memory=store_mb * MIB, resources={"trainer": trials}
    )
    cluster.wait_for_nodes()
    return node


def run_store(rows: pa.Table, args) -> dict:
    """Today's path: decode on the head into blocks, trials on the worker pull them."""
    from citylens.pipeline import cluster as cl

    cluster = _cluster(args.store_mb)
    try:
        start = _store_stats()
        t = time.perf_counter()
        ds = cl.blocks(rows, ROWS).map_batches(
            decode_batch,
            batch_format="pyarrow",
            batch_size=ROWS,
            fn_kwargs={"size": args.size, "cities": CITIES, "storage_options": {}},
        )
        refs = ds.materialize().select_columns(["image", "label", "ok"]).to_numpy_refs()
        decode_s = time.perf_counter() - t
        decoded = _store_stats()
        _worker(cluster, args.store_mb, args.trials)
        before = _store_stats()
        t = time.perf_counter()
        results = ray.get([store_trial.remote(refs, args.epochs, s) for s in range(args.trials)])
        wall = time.perf_counter() - t
        after = _store_stats()
        memory = _from_memory(refs, args.epochs)
    finally:
        ray.shutdown()
        cluster.shutdown()
    n = args.trials * args.epochs
    return {
        "decode_s": decode_s,
        "wall_s": wall,
        "epochs": [r for trial in results for r in trial],
        "spilled_mib": (after["spilled"] - before["spilled"]) / MIB / n,
        "restored_mib": (after["restored"] - before["restored"]) / MIB / n,
        "decode_spilled_mib": (decoded["spilled"] - start["spilled"]) / MIB,
        "held_mib": decoded["held"] / MIB,
        "fallback_mib": decoded["fallback"] / MIB,
        "memory_s": memory,
    }


def _from_memory(refs: list, epochs: int) -> float:
    """Seconds of one epoch over the same blocks held in this process's RAM."""
    blocks = []
    for i in range(0, len(refs), 16):
        blocks += [{k: np.array(v) for k, v in b.items()} for b in ray.get(refs[i : i + 16])]
    batches = ShuffledBlocks(len(blocks), lambda js: [blocks[j] for j in js], 32, 0)
    return float(np.median([r["s"] for r in _epochs(batches, epochs)]))


def run_node_cache(rows: pa.Table, args) -> dict:
    """``train.data: node_cache``: the trials' node decodes once to its disk."""
    cluster = _cluster(args.store_mb)
    root = tempfile.mkdtemp(prefix="citylens-cache-", dir=args.cache_root)
    try:
        _worker(cluster, args.store_mb, args.trials)
        before = _store_stats()
        ref = ray.put(rows)
        t = time.perf_counter()
        results = ray.get(
            [cache_trial.remote(ref, args.size, root, args.epochs, s) for s in range(args.trials)]
        )
        wall = time.perf_counter() - t
        after = _store_stats()
    finally:
        ray.shutdown()
        cluster.shutdown()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    n = args.trials * args.epochs
    return {
        "decode_s": max(r["open_s"] for r in results),
        "wall_s": wall,
        "epochs": [e for r in results for e in r["epochs"]],
        "spilled_mib": (after["spilled"] - before["spilled"]) / MIB / n,
        "restored_mib": (after["restored"] - before["restored"]) / MIB / n,
        "decode_spilled_mib": 0.0,
        "held_mib": after["held"] / MIB,
        "fallback_mib": after["fallback"] / MIB,
        "rows_mib": rows.nbytes / MIB,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=15000, help="train images")
    p.add_argument(
        "--unique", type=int, default=3000, help="distinct pictures made (rows cycle over them)"
    )
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--store-mb", type=int, default=1024, help="each node's object store")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--paths", default="store,node_cache")
    p.add_argument("--corpus", help="a synthetic corpus folder to reuse (else one is made)")
    p.add_argument("--cache-root", default=tempfile.gettempdir())
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    print(machine())
    corpus = Path(args.corpus or tempfile.mkdtemp(prefix="citylens-train-data-"))
    if not (corpus / "corpus.json").exists():
        views = 5
        t = time.perf_counter()
        unique = min(args.unique, args.images)
        synthesize(corpus, 2, -(-unique // (2 * views)), views, args.size, seed=0)
        print(f"corpus: {unique} pictures at {args.size} px in {time.perf_counter() - t:.0f} s")
    rows = _rows(corpus, args.images)
    decoded = rows.num_rows * 3 * args.size**2 / MIB
    print(
        f"{rows.num_rows} train images at {args.size} px: {decoded:,.0f} MiB decoded; "
        f"object stores {args.store_mb} MiB per node; {args.trials} trials × {args.epochs} "
        "epochs on the worker node"
    )
    table = []
    for path in args.paths.split(","):
        got = {"store": run_store, "node_cache": run_node_cache}[path](rows, args)
        ep = got["epochs"]
        table.append(
            [
                path,
                f"{got['decode_s']:.0f}",
                f"{np.median([e['s'] for e in ep]):.1f}",
                f"{got['memory_s']:.1f}" if "memory_s" in got else "",
                f"{np.mean([e['pulled_mib'] for e in ep]):,.0f}",
                f"{got['spilled_mib']:,.0f}",
                f"{got['restored_mib']:,.0f}",
                f"{max(e['anon_mib'] for e in ep):,.0f}",
                f"{got['held_mib']:,.0f} ({got['fallback_mib']:,.0f} on disk)",
                f"{got['decode_spilled_mib']:,.0f}",
            ]
        )
    print_table(
        [
            "data path",
            "decode s (once)",
            "epoch s (median)",
            "epoch s from RAM",
            "MiB pulled / trial-epoch",
            "MiB spilled / trial-epoch",
            "MiB restored / trial-epoch",
            "trial anon MiB (peak)",
            "object stores hold MiB",
            "MiB spilled while decoding",
        ],
        table,
    )


if __name__ == "__main__":
    main()
