"""A tiny study for the scale-out tests: three synthetic cities, one small model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from citylens.config import load_config
from citylens.data.synth import synthesize
from citylens.pipeline.cluster import start_local
from citylens.pipeline.run import run_study
from citylens.storage import Store

TINY = [
    "name=tiny",
    "models.archs=[simpler]",
    "models.seeds=[0,1]",
    "train.epochs=1",
    "train.input_size=96",
    "explain.batch_size=8",
    "segmenter.batch_size=8",
    # the causal check, small: 3 objects, 2-step curves (11 forwards per image and model)
    "ablate.max_objects=3",
    "ablate.steps=[0,0.2]",
    "ablate.batch_size=8",
    "analysis.min_mean_pixels=5",
    "analysis.pca=[5]",
    "analysis.perplexity=3",
    "analysis.mosaic=20",
]
REGEX = r"^(?P<place>.+)_\d+$"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs, one per test module."""
    import ray

    start_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def three_cities(tmp_path_factory) -> Path:
    """towerville, signburg and treeham: 8 places x 2 views each, 64 px, with labels."""
    out = tmp_path_factory.mktemp("three")
    synthesize(out, cities=3, places=8, views=2, size=64, seed=11, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_study(three_cities, tmp_path_factory) -> Path:
    """The tiny two-city study (towerville, signburg), every stage, run once a session.

    Tests that need a finished study to start from, or to compare with, copy its store
    (:func:`copy_store`) instead of training the same two models again; a copy's stages
    are up to date, so a changed setting re-runs only what depends on it.
    """
    import ray

    store = tmp_path_factory.mktemp("tiny-study") / "store"
    cfg = load_config(None, tiny_overrides(str(store), str(three_cities)))
    started = not ray.is_initialized()
    if started:
        start_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_study(cfg, progress=lambda s: None)
    finally:
        if started:
            ray.shutdown()
    return store


def copy_store(src: Path, dst: Path) -> Path:
    """A copy of a finished study's store (records, shards and models)."""
    shutil.copytree(src, dst)
    return dst


def tiny_overrides(store: str, root: str, cities=("towerville", "signburg")) -> list[str]:
    """Overrides of the tiny study over city folders (or prefixes) under ``root``."""
    out = [f"store={store}", *TINY]
    for city in cities:
        out += [
            f"cities.{city}.source={root}/{city}",
            f"cities.{city}.labels={root}/labels/{city}",
            f"cities.{city}.place_regex={REGEX}",
        ]
    return out


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float))


def analysis_tables(store: Store) -> dict:
    """Every table the analyze stage wrote (sharded ones concatenated), as DataFrames in a
    canonical row order: shard names and row order depend on how work was split."""
    folder = store.record("analyze")["folder"]
    names = {rel[len(folder) + 1 :].split("/")[0] for rel in store.files(folder, ".parquet")}
    out = {}
    for name in sorted(names):
        df = store.read_table(f"{folder}/{name}").to_pandas()
        df = df.drop(columns=[c for c in df.columns if "uri" in c])
        keys = [c for c in df.columns if df[c].map(_is_scalar).all()]
        out[name] = df.sort_values(keys).reset_index(drop=True)
    return out


def pids_of(needle: str) -> list[int]:
    """Processes whose command line (a Ray worker's process title) contains ``needle``."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


@pytest.fixture(scope="session")
def tiny():
    """The helpers above, for test modules (conftest is not importable by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        overrides=tiny_overrides, tables=analysis_tables, pids_of=pids_of, copy=copy_store
    )
