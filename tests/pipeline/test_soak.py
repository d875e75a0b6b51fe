"""Soak: the explain stage over 10k images with driver and actor memory sampled (slow).

Memory must stay flat as images go through: rows stream from the actors straight to
shards in the store, and only one-row summaries reach the driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from citylens.data.synth import synthesize
from citylens.storage import Store

pytestmark = pytest.mark.slow

_STUDY = [
    "name=soak",
    "models.archs=[simpler]",
    "models.seeds=[0]",
    "train.epochs=1",
    "train.input_size=64",
    "split.ratios=[0.04,0.02,0.94]",  # nearly everything is explained
    "explain.batch_size=64",
    "segmenter.batch_size=64",
]
_REGEX = r"^(?P<place>.+)_\d+$"


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _growth(done: np.ndarray, rss: np.ndarray) -> float:
    """MB gained between the first quarter of the images (once warm) and the end."""
    total = done.max()
    early = rss[(done >= 0.15 * total) & (done <= 0.35 * total)]
    late = rss[done >= 0.85 * total]
    return float(np.median(late) - np.median(early))


def test_explain_memory_stays_flat_over_10k_images(tmp_path, tiny):
    corpus = tmp_path / "corpus"
    # 10.8k images, ~10k explained in ~160 shards: enough for a trend in memory (CI's
    # minutes kept it from the 20k of earlier sessions)
    synthesize(corpus, cities=2, places=1350, views=4, size=64, seed=8, workers=2)
    store_dir = tmp_path / "store"
    cli = [sys.executable, "-m", "citylens.cli", "run", "demo", f"store={store_dir}", *_STUDY]
    for city in ("towerville", "signburg"):
        cli += [f"cities.{city}.source={corpus}/{city}", f"cities.{city}.place_regex={_REGEX}"]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    prep = subprocess.run(
        [*cli, "--stages", "ingest,train"], capture_output=True, text=True, env=env, timeout=1200
    )
    assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-2000:]

    proc = subprocess.Popen(
        [*cli, "--stages", "explain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    samples: list[tuple[int, float, float]] = []  # images done, driver MB, actor MB

    def sample() -> None:
        while proc.poll() is None:
            shards = list(store_dir.glob("explain/*/data/*.parquet"))
            driver = _rss_mb(proc.pid)
            actors = [m for p in tiny.pids_of("CamWorker") if (m := _rss_mb(p)) is not None]
            if driver is not None and actors:
                samples.append((len(shards), driver, max(actors)))
            time.sleep(0.25)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=1800)
    watcher.join()
    assert proc.returncode == 0, out[-3000:]
    rec = Store(str(store_dir)).record("explain")
    assert rec["counts"]["inputs"] >= 10_000
    assert rec["counts"]["images"] + rec["counts"]["errors"] == rec["counts"]["inputs"]

    data = np.array(samples)
    done, driver, actor = data[:, 0], data[:, 1], data[:, 2]
    assert done.max() >= 0.95 * rec["counts"]["inputs"] / 64 and len(data) > 50
    step = len(data) // 8
    lines = [f"{int(d)} shards: driver {a:.0f} MB, actor {b:.0f} MB" for d, a, b in data[::step]]
    print("\n".join(lines))
    (tmp_path / "memory.csv").write_text(
        "shards,driver_mb,actor_mb\n" + "\n".join(f"{int(d)},{a:.1f},{b:.1f}" for d, a, b in data)
    )
    # flat: what the driver or an actor holds does not grow with the images processed
    assert _growth(done, driver) < 64, lines
    assert _growth(done, actor) < 64, lines
