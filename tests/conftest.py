"""Shared fixtures: the real third-party test data and small synthetic corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citylens.data.synth import synthesize

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    for candidate in (
        os.environ.get("CITYLENS_SHARED_DATA"),
        REPO.parent / "shared" / "data",
        "/work/shared/data",
    ):
        if candidate and Path(candidate, "README.md").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (London/Ontario, Tokyo 24/7 samples, ADE20K samples)."""
    path = _shared_data()
    if path is None:
        pytest.skip("shared test data not found; set CITYLENS_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """Two synthetic cities, 12 places x 3 views, 64 px."""
    out = tmp_path_factory.mktemp("corpus")
    synthesize(out, cities=2, places=12, views=3, size=64, seed=5, workers=1)
    return out
