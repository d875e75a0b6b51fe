"""Stage *train*: models split into Ray Train runs, each run fitting several in turn."""

from __future__ import annotations

import pytest
import torch

from citylens.config import load_config
from citylens.pipeline.cluster import start_local
from citylens.pipeline.run import run_study
from citylens.pipeline.train import plan_runs, run_name
from citylens.storage import Store
from citylens.train import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_plan_runs_balances_cost_longest_first():
    costs = {"vgg-a": 8, "vgg-b": 8, "res-a": 2, "res-b": 2, "s-a": 1, "s-b": 1, "s-c": 1}
    plan = plan_runs(costs, 2)
    assert sorted(n for run in plan for n in run) == sorted(costs)  # each model once
    assert plan == [["vgg-a", "res-a", "s-a", "s-c"], ["vgg-b", "res-b", "s-b"]]
    loads = [sum(costs[n] for n in run) for run in plan]
    assert max(loads) - min(loads) <= 1
    assert plan_runs(costs, 2) == plan  # the same split every time (run names depend on it)


def test_plan_runs_gives_each_model_its_own_run_when_there_are_slots():
    costs = {"a": 3.0, "b": 1.0, "c": 2.0}
    assert plan_runs(costs, 8) == [["a"], ["c"], ["b"]]
    assert plan_runs(costs, 1) == [["a", "c", "b"]]
    assert plan_runs({}, 4) == []


def test_run_names_follow_the_models_and_their_keys():
    assert run_name(["simple-s0"], ["0123456789abcdef"]) == "simple-s0-0123456789ab"
    group = run_name(["a-s0", "b-s0"], ["k1", "k2"])
    assert group.startswith("a-s0-group2-")
    assert run_name(["a-s0", "b-s0"], ["k1", "k3"]) != group  # a changed setting
    assert run_name(["a-s0", "c-s0"], ["k1", "k2"]) != group  # a different split


@pytest.fixture(scope="module")
def local_ray():
    import ray

    start_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _train(store, corpus, tiny, seeds: str) -> list[str]:
    overrides = tiny.overrides(str(store), str(corpus)) + [
        "models.archs=[simple]",
        f"models.seeds={seeds}",
        "train.input_size=96",
        "train.checkpoint_every=1",
    ]
    lines: list[str] = []
    run_study(load_config(None, overrides), ["ingest", "train"], progress=lines.append)
    return lines


@pytest.mark.slow
def test_a_model_fitted_after_another_in_one_run_equals_one_fitted_alone(
    local_ray, three_cities, tiny, tmp_path
):
    # three models on two CPUs: two runs, one of which fits simple-s0 then simple-s2
    shared = tmp_path / "shared"
    lines = _train(shared, three_cities, tiny, "[0,1,2]")
    assert any("3 models in 2 concurrent runs" in s for s in lines), lines
    assert any("simple-s0, simple-s2; simple-s1" in s for s in lines), lines
    for n in ("simple-s0", "simple-s1", "simple-s2"):
        assert sum(s.startswith(f"train: {n} done") for s in lines) == 1, lines
    store = Store(str(shared))
    assert store.ls("ray-train") == []  # spent checkpoints removed
    records = {n: store.record(f"train/{n}") for n in ("simple-s0", "simple-s1", "simple-s2")}
    assert len({r["attempt"] for r in records.values()}) == 1

    # the reference: simple-s2 in a run of its own (1 CPU as above: simple-s1 takes the other)
    alone = tmp_path / "alone"
    lines = _train(alone, three_cities, tiny, "[1,2]")
    assert any("2 models in 2 concurrent runs" in s for s in lines), lines
    got, meta = load_checkpoint(str(shared / "models/simple-s2"))
    want, want_meta = load_checkpoint(str(alone / "models/simple-s2"))
    assert meta["history"] == want_meta["history"]
    assert records["simple-s2"]["test_acc"] == want_meta["test_acc"]
    for (k, a), b in zip(want.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_a_run_skips_models_committed_before_and_fits_the_rest(
    local_ray, three_cities, tiny, tmp_path
):
    store_dir = tmp_path / "store"
    _train(store_dir, three_cities, tiny, "[1,2]")
    store = Store(str(store_dir))
    first = {n: store.record(f"train/{n}") for n in ("simple-s1", "simple-s2")}
    before = (store_dir / "models/simple-s2/model.pt").read_bytes()

    # simple-s0 now shares a run with simple-s2, committed before: it fits simple-s0 only
    lines = _train(store_dir, three_cities, tiny, "[0,1,2]")
    assert "train: simple-s2 up to date" in lines
    assert any("1 model in 1 concurrent run" in s and s.endswith(": simple-s0") for s in lines)
    assert [s for s in lines if " done: " in s][0].startswith("train: simple-s0 done")
    assert sum(" done: " in s for s in lines) == 1, lines
    for n, rec in first.items():
        assert store.record(f"train/{n}") == rec
    assert (store_dir / "models/simple-s2/model.pt").read_bytes() == before
    assert store.record("train/simple-s0")["attempt"] != first["simple-s2"]["attempt"]


def test_ray_train_reports_stay_off_the_console_and_warnings_do_not():
    """The logger Ray Train V2 writes each report with (metrics and all, at INFO) drops
    INFO once the train loop has quieted it; its warnings still pass."""
    import logging

    from ray.train.v2._internal.execution import context

    from citylens.pipeline.trainer import quiet_reports

    seen: list[int] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.levelno)
    level, root = context.logger.level, logging.getLogger()
    root_level = root.level
    root.setLevel(logging.INFO)  # as Ray Train configures its workers
    context.logger.addHandler(handler)
    try:
        context.logger.info("Reporting training result 1")  # as Ray Train does
        assert seen == [logging.INFO]  # before: it reaches the console
        quiet_reports()
        context.logger.info("Reporting training result 2")
        context.logger.warning("a warning")
        assert seen == [logging.INFO, logging.WARNING]
    finally:
        context.logger.removeHandler(handler)
        context.logger.setLevel(level)
        root.setLevel(root_level)


@pytest.mark.slow
def test_the_node_cache_trains_the_same_model_and_records_the_same_errors(
    local_ray, three_cities, tiny, tmp_path
):
    """``train.data: node_cache`` decodes on the training node instead of into the
    object store: the same blocks in the same order, so the same model, bit for bit."""
    import shutil

    import pyarrow.compute as pc

    corpus = tmp_path / "corpus"
    shutil.copytree(three_cities, corpus)
    base = tiny.overrides(str(tmp_path / "a"), str(corpus)) + [
        "models.archs=[simple]",
        "models.seeds=[0]",
        "train.input_size=96",
    ]
    run_study(load_config(None, base), ["ingest"], progress=lambda s: None)
    store_a = Store(str(tmp_path / "a"))
    manifest = store_a.read_table(f"{store_a.record('ingest')['folder']}/manifest.parquet")
    train_rows = manifest.filter(pc.equal(manifest["split"], "train"))
    broken = train_rows["uri"][0].as_py()  # unreadable since ingest probed it
    with open(broken, "r+b") as f:
        f.write(b"\0" * 64)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    lines: list[str] = []
    run_study(load_config(None, base), ["train"], progress=lambda s: None)
    cache_dir = tmp_path / "cache"
    node = base[:]
    node[0] = f"store={tmp_path / 'b'}"
    node += ["train.data=node_cache", f"train.cache_dir={cache_dir}"]
    run_study(load_config(None, node), ["train"], progress=lines.append)
    assert any(f"decoded once on each training node into {cache_dir}" in s for s in lines)
    assert sorted(p.name.split("-")[0] for p in cache_dir.iterdir() if p.is_dir()) == [
        "test",
        "train",
        "val",
    ]
    got, meta = load_checkpoint(str(tmp_path / "b/models/simple-s0"))
    want, want_meta = load_checkpoint(str(tmp_path / "a/models/simple-s0"))
    assert meta["history"] == want_meta["history"]
    for (k, a), b in zip(want.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), k
    store_b = Store(str(tmp_path / "b"))
    errors = [
        s.read_table(f"{s.record('train')['folder']}/errors/errors.parquet").to_pylist()
        for s in (store_a, store_b)
    ]
    assert errors[0] == errors[1] and [e["uri"] for e in errors[0]] == [broken]
    assert errors[0][0]["message"].startswith("train split: ")
    assert store_b.record("train")["key"] == store_a.record("train")["key"]  # not in the key


def test_auto_reads_from_the_nodes_where_training_is_elsewhere():
    from citylens.pipeline.train import data_path

    assert data_path("auto", gpus=0, nodes=1) == "store"  # one CPU machine
    assert data_path("auto", gpus=8, nodes=1) == "node_cache"  # GPU workers to come
    assert data_path("auto", gpus=0, nodes=3) == "node_cache"
    assert data_path("store", gpus=8, nodes=3) == "store"  # asked for
    assert data_path("node_cache", gpus=0, nodes=1) == "node_cache"
