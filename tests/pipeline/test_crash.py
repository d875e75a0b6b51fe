"""The driver killed mid-explain: re-running the study resumes the stage, and the final
tables equal an uninterrupted run's — same rows, no duplicates, no gaps (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from citylens.data.synth import synthesize
from citylens.storage import Store
from citylens.train import load_checkpoint

pytestmark = pytest.mark.slow

_SETTINGS = [
    "models.archs=[resnet18]",
    "models.seeds=[0]",
    "train.input_size=160",
    "explain.batch_size=1",  # one shard per image: a kill lands between shards
]
# what a kill mid-explain can touch; ablate, analyze and report only read explain's
# committed record, and other tests cover them
_UP_TO_OVERLAP = ["--stages", "ingest,train,explain,segment,overlap"]


def _cli(store: Path, corpus: Path, tiny, stages: tuple = tuple(_UP_TO_OVERLAP)) -> list[str]:
    cities = ("towerville", "signburg")
    return [
        sys.executable,
        "-m",
        "citylens.cli",
        "run",
        str(store.parent / "study.yaml"),
        *tiny.overrides(str(store), str(corpus), cities),
        *_SETTINGS,
        *stages,
    ]


def _run(cmd: list[str]) -> str:
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _start(cmd: list[str], output: bool = False) -> subprocess.Popen:
    """The study's CLI in its own process group, with the Ray it starts: killing the group
    is what the driver's machine dying does."""
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    pipe = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen(
        cmd,
        stdout=pipe,
        stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )


def _when(proc: subprocess.Popen, ready, what: str, act) -> None:
    """Poll ``ready()`` while the study runs; then call ``act()`` (until it returns truthy)."""
    deadline = time.time() + 600
    while True:
        assert proc.poll() is None, f"the study ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        if ready() and act():
            return
        time.sleep(0.05)


def _kill_group(proc: subprocess.Popen) -> bool:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    return True


def _explanations(store: Store) -> pd.DataFrame:
    df = store.read_table(f"{store.record('explain')['folder']}/data").to_pandas()
    return df.sort_values(["image_id", "model"]).reset_index(drop=True)


def test_killed_driver_resumes_explain_and_loses_nothing(tmp_path, tiny):
    (tmp_path / "study.yaml").write_text("name: crash\n")
    corpus = tmp_path / "corpus"
    synthesize(corpus, cities=2, places=14, views=2, size=64, seed=4, workers=1)
    killed = tmp_path / "killed"
    proc = _start(_cli(killed, corpus, tiny))
    _when(
        proc,
        lambda: list(killed.glob("explain/*/data/*.parquet")),
        "explain wrote a shard",
        lambda: _kill_group(proc),
    )
    store = Store(str(killed))
    assert store.record("explain") is None and store.exists("stages/explain.pending.json")
    n_before = len(list(killed.glob("explain/*/data/*.parquet")))

    out = _run(_cli(killed, corpus, tiny))
    assert "explain: resuming" in out
    done = int(out.split("explain: resuming, ")[1].split(" ")[0])
    n_test = store.record("explain")["counts"]["inputs"]
    assert n_before <= done < n_test  # resumed mid-way, and only the rest was explained
    assert not store.exists("stages/explain.pending.json")

    got = _explanations(store)
    resumed_overlap = store.record("overlap")["counts"]

    # the same models and images, explained again from scratch, uninterrupted
    _run(_cli(killed, corpus, tiny, ("--stages", "explain,overlap", "--force")))
    want = _explanations(store)
    assert not got.duplicated(["image_id", "model"]).any()
    n_models = len(store.record("explain")["models"])
    assert len(got) == len(want) == n_test * n_models
    assert (
        (
            got[["image_id", "model", "pred", "target"]]
            == want[["image_id", "model", "pred", "target"]]
        )
        .all()
        .all()
    )
    np.testing.assert_allclose(np.stack(got["mask"]), np.stack(want["mask"]), atol=1e-6)
    assert resumed_overlap == store.record("overlap")["counts"]


_TRAIN = ["models.archs=[simple]", "models.seeds=[0]", "train.epochs=3", "train.input_size=96"]


def _train_cli(store: Path, corpus: Path, tiny) -> list[str]:
    cities = ("towerville", "signburg")
    cmd = _cli(store, corpus, tiny, ())[:5] + tiny.overrides(str(store), str(corpus), cities)
    return [*cmd, *_TRAIN, "--stages", "ingest,train"]


def _checkpoint_registered(store_dir: Path) -> bool:
    """Ray Train has recorded a checkpoint in its run's snapshot (written after the
    checkpoint's files: a kill in between loses that epoch, and a resume starts earlier)."""
    import re

    for snap in store_dir.glob("ray-train/simple-s0-*/**/checkpoint_manager_snapshot.json"):
        try:
            if re.search(r'"latest_checkpoint_result":\s*\{', snap.read_text()):
                return True
        except OSError:
            continue
    return False


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path, tiny):
    (tmp_path / "study.yaml").write_text("name: crash\n")
    corpus = tmp_path / "corpus"
    # enough training images for several blocks, so the seeded block order matters
    synthesize(corpus, cities=2, places=40, views=2, size=64, seed=5, workers=1)
    killed = tmp_path / "killed"
    proc = _start(_train_cli(killed, corpus, tiny))
    _when(
        proc,
        lambda: _checkpoint_registered(killed),
        "its first checkpoint",
        lambda: _kill_group(proc),
    )
    store = Store(str(killed))
    assert store.record("train/simple-s0") is None  # the model was not finished

    out = _run(_train_cli(killed, corpus, tiny))
    resumed = int(out.split("resumed after epoch ")[1].split()[0])
    assert 1 <= resumed < 3
    assert not list(killed.glob("ray-train/simple-s0-*"))  # spent checkpoints removed

    whole = tmp_path / "whole"
    _run(_train_cli(whole, corpus, tiny))
    got, meta = load_checkpoint(str(killed / "models/simple-s0"))
    want, want_meta = load_checkpoint(str(whole / "models/simple-s0"))
    assert meta["history"] == want_meta["history"] and len(meta["history"]) == 3
    assert meta["best_epoch"] == want_meta["best_epoch"]
    for (k, a), b in zip(want.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_killed_explain_actor_is_replaced_and_every_image_explained_once(tmp_path, tiny):
    (tmp_path / "study.yaml").write_text("name: crash\n")
    corpus = tmp_path / "corpus"
    synthesize(corpus, cities=2, places=14, views=2, size=64, seed=4, workers=1)
    store_dir = tmp_path / "store"
    proc = _start(_cli(store_dir, corpus, tiny), output=True)
    killed: list[int] = []

    def kill_actors() -> bool:
        for pid in tiny.pids_of("CamWorker"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return bool(killed)

    _when(
        proc,
        lambda: list(store_dir.glob("explain/*/data/*.parquet")),
        "an explain actor could be killed",
        kill_actors,
    )
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    store = Store(str(store_dir))
    rec = store.record("explain")
    got = _explanations(store)
    n_test = rec["counts"]["inputs"]
    assert not got.duplicated(["image_id", "model"]).any()
    assert len(got) == n_test * len(rec["models"]) and rec["counts"]["errors"] == 0
    # downstream stages read every explanation exactly once
    assert store.record("overlap")["counts"]["inputs"] == n_test * len(rec["models"])
    assert "explain" in out and killed


def _ablations(store: Store) -> pd.DataFrame:
    df = store.read_table(f"{store.record('ablate')['folder']}/data").to_pandas()
    key = ["image_id", "model", "kind", "order", "of_class", "step"]
    return df.sort_values(key, na_position="first").reset_index(drop=True)


def test_killed_driver_resumes_ablate_and_the_table_is_an_uninterrupted_runs(tmp_path, tiny):
    (tmp_path / "study.yaml").write_text("name: crash\n")
    corpus = tmp_path / "corpus"
    synthesize(corpus, cities=2, places=14, views=2, size=64, seed=4, workers=1)
    killed = tmp_path / "killed"
    stages = ["--stages", "ingest,train,explain,segment,ablate"]
    small = ["ablate.batch_size=1", "ablate.max_objects=3", "train.input_size=96"]
    small += ["models.archs=[simple]", "models.seeds=[0]"]  # one cheap model
    cmd = [*_cli(killed, corpus, tiny, ()), *small, *stages]
    proc = _start(cmd)
    _when(
        proc,
        lambda: list(killed.glob("ablate/*/data/*.parquet")),
        "ablate wrote a shard",
        lambda: _kill_group(proc),
    )
    store = Store(str(killed))
    assert store.record("ablate") is None and store.exists("stages/ablate.pending.json")
    n_before = len(list(killed.glob("ablate/*/data/*.parquet")))

    out = _run(cmd)
    assert "ablate: resuming" in out
    done = int(out.split("ablate: resuming, ")[1].split(" ")[0])
    n_test = store.record("ablate")["counts"]["inputs"]
    assert n_before <= done < n_test  # resumed mid-way
    resumed = _ablations(store)

    # the same models and images, ablate run again from scratch, uninterrupted
    out = _run([*cmd[: -len(stages)], "--stages", "ablate", "--force"])
    whole = _ablations(store)
    key = ["image_id", "model", "kind", "order", "of_class", "step"]
    assert not resumed.duplicated(key).any()
    pairs = resumed.groupby(["image_id", "model"]).ngroups
    assert pairs == n_test * len(store.record("ablate")["models"])
    assert len(resumed) == len(whole)
    for col in ("image_id", "model", "kind", "order", "class", "of_class", "pixels"):
        assert resumed[col].tolist() == whole[col].tolist(), col
    for col in ("prob_before", "prob_after", "logit_after"):
        np.testing.assert_allclose(resumed[col], whole[col], atol=1e-5, err_msg=col)
