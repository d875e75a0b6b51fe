"""Killed mid-stage — the driver (and the Ray it started) or a model actor: re-running
the study resumes the stage, and the final tables equal an uninterrupted run's — same
rows, no duplicates, no gaps (slow). Training resumes from its last checkpoint."""

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


def _cli(store: Path, corpus: Path, tiny, stages: tuple = ()) -> list[str]:
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


def _start(cmd: list[str], log: Path | None = None) -> subprocess.Popen:
    """The study's CLI in its own process group, with the Ray it starts: killing the group
    is what the driver's machine dying does. Its output goes to ``log`` (unbuffered, so
    a kill loses none of it), else nowhere."""
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
    finally:
        if log is not None:
            out.close()  # the child has its own copy


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


_TRAIN = ["models.archs=[simple]", "models.seeds=[0]", "train.epochs=3", "train.input_size=96"]


def _train_cli(store: Path, corpus: Path, tiny) -> list[str]:
    cities = ("towerville", "signburg")
    cmd = _cli(store, corpus, tiny)[:5] + tiny.overrides(str(store), str(corpus), cities)
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


@pytest.fixture(scope="module")
def training(tmp_path_factory, tiny):
    """A corpus for the training crashes and the model an uninterrupted run trains on it.

    Enough training images for several blocks, so the seeded block order matters.
    """
    root = tmp_path_factory.mktemp("training")
    (root / "study.yaml").write_text("name: crash\n")
    corpus = root / "corpus"
    synthesize(corpus, cities=2, places=40, views=2, size=64, seed=5, workers=1)
    whole = root / "whole"
    _run(_train_cli(whole, corpus, tiny))
    return corpus, whole


def _same_model_as_uninterrupted(store_dir: Path, whole: Path) -> None:
    got, meta = load_checkpoint(str(store_dir / "models/simple-s0"))
    want, want_meta = load_checkpoint(str(whole / "models/simple-s0"))
    assert meta["history"] == want_meta["history"] and len(meta["history"]) == 3
    assert meta["best_epoch"] == want_meta["best_epoch"]
    for (k, a), b in zip(want.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), k


def test_killed_training_resumes_from_its_last_checkpoint(training, tiny):
    corpus, whole = training
    killed = corpus.parent / "killed"
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
    _same_model_as_uninterrupted(killed, whole)


def test_a_lost_training_worker_restarts_inside_the_run_from_its_checkpoint(training, tiny):
    """``train.max_failures``: the worker process dies (a spot node, an OOM kill), not the
    driver: the same run restarts it, it resumes from the last checkpoint, and the study
    finishes on its own with the model an uninterrupted run trains. Here the trial reads
    its node's cache (``train.data: node_cache``), which the restarted worker opens again,
    and the uninterrupted model read the object store: the same model either way."""
    corpus, whole = training
    lost, log = corpus.parent / "lost", corpus.parent / "lost.log"
    cmd = _train_cli(lost, corpus, tiny)
    at = cmd.index("--stages")  # overrides go before the options
    cache = ["train.data=node_cache", f"train.cache_dir={corpus.parent / 'cache'}"]
    proc = _start([*cmd[:at], *cache, *cmd[at:]], log)

    def kill_worker() -> bool:
        pids = tiny.pids_of("RayTrainWorker")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return bool(pids)

    _when(proc, lambda: _checkpoint_registered(lost), "its first checkpoint", kill_worker)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    out = log.read_text()
    assert "resumed after epoch" in out, out[-3000:]
    assert "decoded once on each training node" in out, out[-3000:]
    _same_model_as_uninterrupted(lost, whole)


def _ablations(store: Store) -> pd.DataFrame:
    df = store.read_table(f"{store.record('ablate')['folder']}/data").to_pandas()
    return df.sort_values(_ABLATE_KEY, na_position="first").reset_index(drop=True)


_ABLATE_KEY = ["image_id", "model", "kind", "order", "of_class", "step"]
# one shard per image in ablate too; the causal check small (3 objects, 2-step curves)
_ABLATE = ["ablate.batch_size=1", "ablate.max_objects=3", "ablate.steps=[0,0.2]"]
_THROUGH_ABLATE = ["--stages", "ingest,train,explain,segment,ablate,overlap"]


def _shards(store_dir: Path, stage: str) -> list[Path]:
    return list(store_dir.glob(f"{stage}/*/data/*.parquet"))


def test_killed_driver_and_workers_resume_explain_and_ablate_and_lose_nothing(tmp_path, tiny):
    """The driver's machine dies mid-explain; the rerun resumes explain, a model actor
    killed on the way is replaced, and the driver dies again mid-ablate; the third run
    resumes ablate. The tables equal an uninterrupted run's: same rows, none twice."""
    (tmp_path / "study.yaml").write_text("name: crash\n")
    corpus = tmp_path / "corpus"
    synthesize(corpus, cities=2, places=14, views=2, size=64, seed=4, workers=1)
    killed = tmp_path / "killed"
    # what a kill mid-explain or mid-ablate can touch; analyze and report only read
    # committed records, and other tests cover them
    cmd = [*_cli(killed, corpus, tiny), *_ABLATE, *_THROUGH_ABLATE]
    store = Store(str(killed))

    # 1. killed mid-explain
    proc = _start(cmd)
    _when(
        proc, lambda: _shards(killed, "explain"), "explain wrote a shard", lambda: _kill_group(proc)
    )
    assert store.record("explain") is None and store.exists("stages/explain.pending.json")
    n_before = len(_shards(killed, "explain"))

    # 2. explain resumes; its model actors are killed once it has written more; the
    # driver is killed once ablate has written a shard
    log = tmp_path / "second.log"
    proc = _start(cmd, log)
    actors: list[int] = []

    def kill_actors() -> bool:
        for pid in tiny.pids_of("CamWorker"):
            os.kill(pid, signal.SIGKILL)
            actors.append(pid)
        return bool(actors)

    _when(
        proc,
        lambda: len(_shards(killed, "explain")) > n_before,
        "the resumed explain wrote a shard",
        kill_actors,
    )
    _when(
        proc, lambda: _shards(killed, "ablate"), "ablate wrote a shard", lambda: _kill_group(proc)
    )
    out = log.read_text()
    assert "explain: resuming" in out, out[-3000:]
    done = int(out.split("explain: resuming, ")[1].split(" ")[0])
    rec = store.record("explain")
    n_test, n_models = rec["counts"]["inputs"], len(rec["models"])
    assert n_before <= done < n_test  # resumed mid-way, and only the rest was explained
    assert rec["counts"]["errors"] == 0 and not store.exists("stages/explain.pending.json")
    assert store.record("ablate") is None and store.exists("stages/ablate.pending.json")
    n_ablated = len(_shards(killed, "ablate"))

    # 3. ablate resumes
    out = _run(cmd)
    assert "ablate: resuming" in out
    done = int(out.split("ablate: resuming, ")[1].split(" ")[0])
    assert n_ablated <= done < store.record("ablate")["counts"]["inputs"]
    explained, ablated = _explanations(store), _ablations(store)
    resumed_overlap = store.record("overlap")["counts"]
    # downstream stages read every explanation exactly once
    assert resumed_overlap["inputs"] == n_test * n_models

    # the same models and images, explained and ablated again from scratch, uninterrupted
    _run([*cmd[: -len(_THROUGH_ABLATE)], "--stages", "explain,ablate,overlap", "--force"])
    _same_explanations(explained, _explanations(store), n_test * n_models)
    assert resumed_overlap == store.record("overlap")["counts"]
    whole = _ablations(store)
    assert not ablated.duplicated(_ABLATE_KEY).any()
    assert ablated.groupby(["image_id", "model"]).ngroups == n_test * n_models
    assert len(ablated) == len(whole)
    for col in ("image_id", "model", "kind", "order", "class", "of_class", "pixels"):
        assert ablated[col].tolist() == whole[col].tolist(), col
    for col in ("prob_before", "prob_after", "logit_after"):
        np.testing.assert_allclose(ablated[col], whole[col], atol=1e-5, err_msg=col)


def _same_explanations(got: pd.DataFrame, want: pd.DataFrame, n: int) -> None:
    assert not got.duplicated(["image_id", "model"]).any()
    assert len(got) == len(want) == n
    cols = ["image_id", "model", "pred", "target"]
    assert (got[cols] == want[cols]).all().all()
    np.testing.assert_allclose(np.stack(got["mask"]), np.stack(want["mask"]), atol=1e-6)
