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


# A secret that must never leave the environment: tests grep logs, tables and reports.
S3_SECRET = "citylens-test-secret-5f1c9e0b7a"


class S3:
    """A running S3-compatible server: its ``storage_options`` and a few helpers."""

    secret = S3_SECRET

    def __init__(self, endpoint: str) -> None:
        self.options = {"endpoint_url": endpoint}

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)

    def bucket(self, name: str) -> str:
        """Create a bucket (a fresh one per test keeps tests apart); returns its URI."""
        self.fs().mkdir(name)
        return f"s3://{name}"

    def upload(self, local, uri: str) -> None:
        """Copy a local folder's content to an ``s3://`` prefix."""
        self.fs().put(f"{local}/", uri.removeprefix("s3://"), recursive=True)

    def grep(self, uri: str, needle: bytes) -> list[str]:
        """Objects under ``uri`` whose bytes contain ``needle``."""
        fs = self.fs()
        return [p for p in fs.find(uri.removeprefix("s3://")) if needle in fs.cat_file(p)]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on 127.0.0.1 (moto's server mode), credentials in the environment.

    Credentials travel the standard chain (``AWS_*`` variables, inherited by the Ray
    workers a test starts afterwards); only the endpoint goes in ``storage_options``.
    """
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "citylens-test-key",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield S3(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
