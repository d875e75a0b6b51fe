"""Shared fixtures: the real third-party test data and small synthetic corpora."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import ray.data  # noqa: F401  (see below)

from citylens.data.synth import synthesize

# Ray Data binds its console handler to the ``sys.stderr`` of its first import. Imported
# here, that is pytest's capture for the whole session; imported first inside a test
# with ``capsys`` (the CLI's log set-up imports it), later tests would log to that test's
# closed stream ("--- Logging error --- ValueError: I/O operation on closed file").

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


class FlakyS3:
    """A fault-injecting HTTP proxy in front of the S3 server, on 127.0.0.1.

    A seeded ``rate`` of requests fail, in turn: a 503 SlowDown, a 500 InternalError, a
    connection closed before any answer, and a request the server *did* carry out whose
    answer is lost (so a retried write lands twice, and must be harmless). ``faults``
    counts them by kind; ``requests`` counts everything seen. With ``deny_writes`` set,
    writes to paths containing it are denied (403) — ``""`` makes the store read-only,
    as for credentials that may only read. ``deny_reads`` does the same to GETs (an
    object listed but not readable: another owner's ACL, an archived storage class).
    """

    KINDS = ("slowdown", "internal", "dropped", "lost_answer")

    def __init__(self, endpoint: str, rate: float = 0.1, seed: int = 0) -> None:
        import random
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(endpoint)
        self.rate, self.random, self.lock = rate, random.Random(seed), threading.Lock()
        self.deny_writes: str | None = None  # writes to paths containing it get a 403
        self.deny_reads: str | None = None  # GETs of paths containing it get a 403
        self.requests, self.faults = 0, dict.fromkeys(self.KINDS, 0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, headers: list, body: bytes) -> None:
                self.send_response(status)
                head = self.command == "HEAD"  # keeps the object's Content-Length
                for k, v in headers:
                    if k.lower() in ("transfer-encoding", "connection") or (
                        k.lower() == "content-length" and not head
                    ):
                        continue
                    self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str) -> None:
                xml = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
                self._answer(status, [("Content-Type", "application/xml")], xml.encode())

            def _handle(self) -> None:
                import http.client

                body = self._body()
                writes = self.command in ("PUT", "POST", "DELETE")
                denied = proxy.deny_writes if writes else proxy.deny_reads
                if denied is not None and denied in self.path and (writes or self.command == "GET"):
                    self._error(403, "AccessDenied")
                    return
                kind = proxy._draw()
                if kind in ("slowdown", "internal"):
                    self._error(
                        *((503, "SlowDown") if kind == "slowdown" else (500, "InternalError"))
                    )
                    return
                if kind == "dropped":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"
                }
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if kind == "lost_answer":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._answer(resp.status, resp.getheaders(), data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.options = {"endpoint_url": self.endpoint}

    def _draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.random.random() >= self.rate:
                return None
            kind = self.KINDS[sum(self.faults.values()) % len(self.KINDS)]
            self.faults[kind] += 1
            return kind

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_s3(s3_server):
    """:class:`FlakyS3` failing 10 % of requests in front of the session's S3 server."""
    proxy = FlakyS3(s3_server.options["endpoint_url"], rate=0.1)
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def dump_dom():
    """``dump_dom(path) -> str``: the DOM headless Chromium (Debian's package) renders."""
    import subprocess

    def dump(path: Path) -> str:
        cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
        return subprocess.run(
            [*cmd, path.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout

    return dump


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium driven through Playwright (no browser download)."""
    import shutil

    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Ray's own console lines, as a run's log shows them: Python log records with Ray's
# timestamp format, C++ glog lines, lines forwarded from workers and the raylet (with or
# without their colour codes), Ray Train's per-report lines.
_RAY_LINE = re.compile(
    r"^(\x1b\[\d+m)?\((\w+ )?pid=\d+[^)]*\)"
    r"|^(\x1b\[\d+m)?\(raylet\)"
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"|^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\]"
    r"|Reporting training result"
)
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|\[\d{4}-\d\d-\d\d [\d:,]+ [EF] \d+ \d+\]")


@pytest.fixture(scope="session")
def ray_lines():
    """``ray_lines(text) -> (lines of Ray's own, those at ERROR level)`` of a run's log."""

    def split(text: str) -> tuple[list[str], list[str]]:
        theirs = [line for line in text.splitlines() if _RAY_LINE.search(line)]
        return theirs, [line for line in theirs if _ERROR_LINE.search(line)]

    return split
